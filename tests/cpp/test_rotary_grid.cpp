// Walks the CUDA tile kernel of rotary on the CPU and compares with the CPU
// op: per block, the angle phase for every thread, then (what is the barrier
// on a GPU) the rotation phase for every thread; params from the production
// make_rotary_params, the launch from the production plan_rotary.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "grid_walk.h"
#include "posemb/rotary.h"
#include "rotary_op.h"

namespace {

void walk(const posemb::RotaryParams& p, const posemb::RotaryLaunch& plan) {
  std::vector<int64_t> smem(plan.smem_bytes / sizeof(int64_t) + 1);
  for (int64_t by = 0; by < plan.grid_y; ++by) {
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
  for (int64_t sms : {1, 132}) {
    auto q_out = grid_walk::poisoned(q.sizes()), k_out = grid_walk::poisoned(k.sizes());
    std::vector<torch::Tensor> keep;
    const auto p = posemb::detail::make_rotary_params("rotary", q, k, q_out, k_out, inv_freq, positions,
                                                      std::nullopt, 0, std::nullopt, 1.0, c.interleaved, 1, std::nullopt,
                                                      false, keep);
    const auto plan = posemb::plan_rotary(p, sizeof(float), sizeof(float), sms);
    EXPECT_EQ(plan.vector, c.vector);
    walk(p, plan);
    EXPECT_TRUE(torch::equal(q_out, eq)) << "sms " << sms;
    EXPECT_TRUE(torch::equal(k_out, ek)) << "sms " << sms;
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

// Positions with axes (multimodal rope): each frequency reads its axis'
// position in the angle phase.
TEST(RotaryGridWalk, PositionAxesMatchCpuOp) {
  torch::manual_seed(5);
  const auto q = torch::randn({2, 6, 4, 32}), k = torch::randn({2, 6, 2, 32});
  const auto inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0, 32, 2).to(torch::kFloat) / 32);
  const auto positions = torch::randint(0, 1 << 20, {3, 2, 6});
  for (bool interleaved_sections : {false, true}) {
    // Runs of 4, 6, 6 frequencies; or Qwen3-VL's layout, 6 on t and 5 each on h and w.
    const std::vector<int64_t> sections = interleaved_sections ? std::vector<int64_t>{6, 5, 5}
                                                               : std::vector<int64_t>{4, 6, 6};
    const auto [eq, ek] = posemb::rotary(q, k, inv_freq, positions, std::nullopt, 0, std::nullopt, 1.0, false, 1,
                                         sections, interleaved_sections);
    auto q_out = grid_walk::poisoned(q.sizes()), k_out = grid_walk::poisoned(k.sizes());
    std::vector<torch::Tensor> keep;
    const auto p = posemb::detail::make_rotary_params("rotary", q, k, q_out, k_out, inv_freq, positions,
                                                      std::nullopt, 0, std::nullopt, 1.0, false, 1, sections,
                                                      interleaved_sections, keep);
    walk(p, posemb::plan_rotary(p, sizeof(float), sizeof(float), 132));
    EXPECT_TRUE(torch::equal(q_out, eq)) << "interleaved " << interleaved_sections;
    EXPECT_TRUE(torch::equal(k_out, ek)) << "interleaved " << interleaved_sections;
    // Each axis matters: moving one axis' positions changes the result.
    for (int64_t a = 0; a < 3; ++a) {
      auto moved = positions.clone();
      moved[a] += 1;
      const auto [mq, mk] = posemb::rotary(q, k, inv_freq, moved, std::nullopt, 0, std::nullopt, 1.0, false, 1,
                                           sections, interleaved_sections);
      EXPECT_FALSE(torch::allclose(mq, eq, 1e-4, 1e-4)) << "axis " << a;
    }
  }
}

}  // namespace
