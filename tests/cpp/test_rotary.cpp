// posemb::nn::RotaryEmbedding and rotary from C++. (The CUDA launch walked
// on the CPU: test_rotary_grid.cpp.)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>
#include <string>
#include <vector>

#include "dtype_device.h"
#include "posemb/posemb.h"

namespace {

// fp64 rotation of (batch, seq, heads, head_dim) x, Llama pairing.
torch::Tensor reference(const torch::Tensor& x, const torch::Tensor& inv_freq,
                        const torch::Tensor& positions) {
  const auto theta = positions.to(torch::kFloat64).unsqueeze(-1) * inv_freq.to(torch::kFloat64);
  const auto c = torch::cos(theta).unsqueeze(-2), s = torch::sin(theta).unsqueeze(-2);
  const int64_t half = inv_freq.size(0);
  const auto xd = x.cpu().to(torch::kFloat64);
  const auto a = xd.narrow(-1, 0, half), b = xd.narrow(-1, half, half);
  return torch::cat({a * c - b * s, b * c + a * s, xd.narrow(-1, 2 * half, x.size(-1) - 2 * half)}, -1);
}

using RotaryTest = DtypeDeviceTest;

TEST_P(RotaryTest, ModuleMatchesReferenceAndTrains) {
  torch::manual_seed(0);
  posemb::nn::RotaryEmbedding rope(posemb::nn::RotaryEmbeddingOptions(16).rotary_dim(12));
  rope->to(torch::Device(device()));
  const auto q = torch::randn({2, 5, 4, 16}, options().requires_grad(true));
  const auto k = torch::randn({2, 5, 2, 16}, options().requires_grad(true));
  const auto [q_out, k_out] = rope->forward(q, k, {}, 7);
  const auto positions = torch::arange(7, 12);
  const double tol = dtype() == torch::kFloat32 || dtype() == torch::kFloat64 ? 2e-6 : 2e-2;
  EXPECT_LE((q_out.cpu().to(torch::kFloat64) - reference(q, rope->inv_freq.cpu(), positions)).abs().max().item<double>(), tol);
  EXPECT_LE((k_out.cpu().to(torch::kFloat64) - reference(k, rope->inv_freq.cpu(), positions)).abs().max().item<double>(), tol);
  (q_out.sum() + k_out.sum()).backward();  // the inverse rotation of ones
  EXPECT_TRUE(q.grad().defined() && k.grad().defined());
  EXPECT_EQ(q.grad().sizes(), q.sizes());
}

POSEMB_TEST_ALL_DTYPES_AND_DEVICES(RotaryTest);

TEST(Rotary, ErrorsAndPrettyPrint) {
  try {
    posemb::nn::RotaryEmbedding(posemb::nn::RotaryEmbeddingOptions(16).rotary_dim(7));
    ADD_FAILURE() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rotary_dim must be even"), std::string::npos);
  }
  posemb::nn::RotaryEmbedding rope(posemb::nn::RotaryEmbeddingOptions(64).interleaved(true));
  std::ostringstream s;
  rope->pretty_print(s);
  EXPECT_EQ(s.str(), "posemb::nn::RotaryEmbedding(head_dim=64, rotary_dim=64, interleaved=true)");
}

// A model cast to bf16 keeps its rotary frequencies float32: the module
// turns bf16 q and k as it turned fp32 ones.
TEST(Rotary, CastsKeepInvFreqFloat32) {
  posemb::nn::RotaryEmbedding rope(16);
  const auto before = rope->inv_freq.clone();
  rope->to(torch::kBFloat16);
  rope->to(torch::kCPU, torch::kHalf);
  EXPECT_TRUE(torch::equal(rope->inv_freq, before));
  const auto q = torch::randn({1, 4, 2, 16}).to(torch::kBFloat16);
  auto [q_out, k_out] = rope->forward(q, q.slice(2, 0, 1).clone(), {}, 3);
  EXPECT_EQ(q_out.scalar_type(), torch::kBFloat16);
}

// Multimodal rope from C++: positions (t, h, w), each frequency run on its axis.
TEST(Rotary, ModuleWithPositionAxes) {
  torch::manual_seed(1);
  posemb::nn::RotaryEmbedding rope(posemb::nn::RotaryEmbeddingOptions(16).mrope_section(std::vector<int64_t>{2, 3, 3}));
  const auto q = torch::randn({2, 5, 4, 16}), k = torch::randn({2, 5, 2, 16});
  const auto positions = torch::randint(0, 1000, {3, 2, 5});
  const auto [q_out, k_out] = rope->forward(q, k, positions);
  // Frequencies 0-1 turn by axis 0, 2-4 by axis 1, 5-7 by axis 2.
  const auto axis = torch::tensor({0, 0, 1, 1, 1, 2, 2, 2});
  const auto per_freq = positions.permute({1, 2, 0}).index_select(-1, axis);  // (batch, seq, rotary_dim / 2)
  const auto theta = per_freq.to(torch::kFloat64) * rope->inv_freq.to(torch::kFloat64);
  const auto c = torch::cos(theta).unsqueeze(-2), s = torch::sin(theta).unsqueeze(-2);
  const auto a = q.to(torch::kFloat64).narrow(-1, 0, 8), b = q.to(torch::kFloat64).narrow(-1, 8, 8);
  const auto expected = torch::cat({a * c - b * s, b * c + a * s}, -1);
  EXPECT_LE((q_out.to(torch::kFloat64) - expected).abs().max().item<double>(), 2e-6);
  std::ostringstream p;
  rope->pretty_print(p);
  EXPECT_EQ(p.str(), "posemb::nn::RotaryEmbedding(head_dim=16, rotary_dim=16, interleaved=false, "
                     "mrope_section=[2, 3, 3], mrope_interleaved=false)");
}

}  // namespace
