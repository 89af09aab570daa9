// Walks the CUDA launch of rotary on the CPU (every block, thread and
// grid-stride step, both pairings) and compares with the CPU op.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "grid_walk.h"
#include "posemb/rotary.h"
#include "rotary_op.h"

namespace {

TEST(RotaryGridWalk, MatchesCpuOp) {
  torch::manual_seed(4);
  const auto q = torch::randn({3, 7, 5, 40}), k = torch::randn({3, 7, 2, 40});
  const auto inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0, 36, 2).to(torch::kFloat) / 36);
  const auto positions = torch::randint(0, 1 << 20, {3, 7});
  for (const bool interleaved : {false, true}) {
    const auto [eq, ek] = posemb::rotary(q, k, inv_freq, positions, std::nullopt, 0, std::nullopt,
                                         1.0, interleaved);
    for (int64_t sms : {1, 132}) {
      auto q_out = grid_walk::poisoned(q.sizes()), k_out = grid_walk::poisoned(k.sizes());
      std::vector<torch::Tensor> keep;
      const auto p = posemb::detail::make_rotary_params("rotary", q, k, q_out, k_out, inv_freq,
                                                        positions, std::nullopt, 0, std::nullopt,
                                                        1.0, interleaved, 1, keep);
      const auto plan = posemb::plan_rotary(p, sms);
      grid_walk::each_thread(plan, p.batch * p.seq, [&](int64_t row, int64_t thread) {
        if (p.interleaved) {
          posemb::rotary_token<float, true>(p, row, thread, plan.block);
        } else {
          posemb::rotary_token<float, false>(p, row, thread, plan.block);
        }
      });
      EXPECT_TRUE(torch::allclose(q_out, eq, 1e-6, 1e-6)) << "interleaved " << interleaved << " sms " << sms;
      EXPECT_TRUE(torch::allclose(k_out, ek, 1e-6, 1e-6)) << "interleaved " << interleaved << " sms " << sms;
    }
  }
}

}  // namespace
