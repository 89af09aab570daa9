// posemb::nn::RotaryEmbedding and rotary from C++, and the CUDA launch grid
// of rotary walked on the CPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>
#include <string>
#include <vector>

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
// Walks the CUDA tile kernel over its whole grid on the CPU: per block, the
// angle phase for every thread, then (after what is the barrier on a GPU) the
// rotation phase for every thread; compared with the CPU op.
void walk_rotary(const posemb::RotaryParams& p, int64_t sms) {
  const auto plan = posemb::plan_rotary(p, sizeof(float), sizeof(float), sms);
  std::vector<int64_t> smem(plan.smem_bytes / sizeof(int64_t) + 1);
  for (int64_t by = 0; by < plan.grid_y; ++by)
    for (int64_t bx = 0; bx < plan.grid_x; ++bx) {
      for (int64_t t = 0; t < plan.block; ++t) posemb::rotary_tile_angles<float>(p, plan, bx, t, smem.data());
      for (int64_t t = 0; t < plan.block; ++t) {
        if (plan.vector) {
          p.interleaved ? posemb::rotary_tile_rotate<float, true, true>(p, plan, bx, by, t, smem.data())
                        : posemb::rotary_tile_rotate<float, false, true>(p, plan, bx, by, t, smem.data());
        } else {
          p.interleaved ? posemb::rotary_tile_rotate<float, true, false>(p, plan, bx, by, t, smem.data())
                        : posemb::rotary_tile_rotate<float, false, false>(p, plan, bx, by, t, smem.data());
        }
      }
    }
}

struct WalkCase {
  int64_t batch, seq, q_heads, k_heads, head_dim, rotary_dim;
  bool interleaved;
  bool vector;  // what the plan must choose for these shapes
};

class RotaryGridWalk : public ::testing::TestWithParam<WalkCase> {};

TEST_P(RotaryGridWalk, MatchesCpuOp) {
  const WalkCase c = GetParam();
  torch::manual_seed(4);
  const auto q = torch::randn({c.batch, c.seq, c.q_heads, c.head_dim});
  const auto k = torch::randn({c.batch, c.seq, c.k_heads, c.head_dim});
  const auto inv_freq =
      1.0 / torch::pow(10000.0, torch::arange(0, c.rotary_dim, 2).to(torch::kFloat) / c.rotary_dim);
  const auto positions = torch::randint(0, 1 << 20, {c.batch, c.seq});
  const auto [eq, ek] = posemb::rotary(q, k, inv_freq, positions, std::nullopt, 0, std::nullopt, 1.0, c.interleaved);
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
  p.batch = c.batch;
  p.seq = c.seq;
  p.head_dim = c.head_dim;
  p.inv_freq = inv_freq.data_ptr<float>();
  p.half = c.rotary_dim / 2;
  p.interleaved = c.interleaved;
  p.pos.positions = positions.data_ptr();
  p.pos.pos_stride_b = positions.stride(0);
  p.pos.pos_stride_t = positions.stride(1);
  for (int64_t sms : {1, 132}) {
    EXPECT_EQ(posemb::plan_rotary(p, sizeof(float), sizeof(float), sms).vector, c.vector);
    q_out.fill_(1234.0);
    k_out.fill_(1234.0);
    walk_rotary(p, sms);
    EXPECT_TRUE(torch::allclose(q_out, eq, 1e-6, 1e-6)) << "sms " << sms;
    EXPECT_TRUE(torch::allclose(k_out, ek, 1e-6, 1e-6)) << "sms " << sms;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, RotaryGridWalk,
    ::testing::Values(WalkCase{3, 7, 5, 2, 40, 36, false, false},   // scalar: 18 pairs, a 4-channel tail
                      WalkCase{3, 7, 5, 2, 40, 36, true, true},     // interleaved: 36 channels, 16-byte chunks
                      WalkCase{2, 9, 4, 1, 64, 48, false, true},    // vector halves and a 16-channel tail
                      WalkCase{2, 5, 3, 3, 64, 64, true, true},     // full rotation
                      WalkCase{33, 1, 8, 2, 128, 128, false, true}, // decode: heads split across blocks
                      WalkCase{1, 300, 2, 0, 16, 16, false, true}), // no k, many tokens per tile
    [](const auto& info) { return "case" + std::to_string(info.index); });

}  // namespace
