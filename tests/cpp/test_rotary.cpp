// posemb::nn::RotaryEmbedding and rotary from C++, and the CUDA launch grid
// of rotary walked on the CPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "cpu/scalar_ops.h"
#include "dtype_device.h"
#include "posemb/posemb.h"
#include "kernels/rotary.cuh"

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

// Every block, thread and grid-stride step of the CUDA launch, on the CPU.
TEST(RotaryGridWalk, MatchesCpuOp) {
  torch::manual_seed(4);
  const auto q = torch::randn({3, 7, 5, 40}), k = torch::randn({3, 7, 2, 40});
  const auto inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0, 36, 2).to(torch::kFloat) / 36);
  const auto positions = torch::randint(0, 1 << 20, {3, 7});
  const auto [eq, ek] = posemb::rotary(q, k, inv_freq, positions);
  auto q_out = torch::full_like(q, 1234.0), k_out = torch::full_like(k, 1234.0);
  posemb::RotaryParams p;
  auto fill = [](posemb::RotaryTensor& r, const torch::Tensor& in, torch::Tensor& out) {
    r.in = in.data_ptr();
    r.out = out.data_ptr();
    r.heads = in.size(2);
    r.in_rows = {in.stride(0), in.stride(1), in.stride(2)};
    r.out_rows = {out.stride(0), out.stride(1), out.stride(2)};
  };
  fill(p.q, q, q_out);
  fill(p.k, k, k_out);
  p.batch = 3;
  p.seq = 7;
  p.head_dim = 40;
  p.inv_freq = inv_freq.data_ptr<float>();
  p.half = 18;
  p.pos.positions = positions.data_ptr();
  p.pos.pos_stride_b = positions.stride(0);
  p.pos.pos_stride_t = positions.stride(1);
  for (int64_t sms : {1, 132}) {
    const auto plan = posemb::plan_rotary(p, sms);
    for (int64_t b = 0; b < plan.grid; ++b)
      for (int64_t t = 0; t < plan.block; ++t)
        for (int64_t row = b; row < p.batch * p.seq; row += plan.grid)
          posemb::rotary_token<float, false>(p, row, t, plan.block);
    EXPECT_TRUE(torch::allclose(q_out, eq, 1e-6, 1e-6)) << "sms " << sms;
    EXPECT_TRUE(torch::allclose(k_out, ek, 1e-6, 1e-6)) << "sms " << sms;
  }
}

}  // namespace
