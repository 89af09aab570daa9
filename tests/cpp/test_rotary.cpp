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

}  // namespace
