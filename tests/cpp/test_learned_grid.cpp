// Walks the CUDA launch of learned_add on the CPU (every block, thread and
// grid-stride step, vector and scalar paths) and compares with the CPU op.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "grid_walk.h"
#include "learned_op.h"
#include "posemb/learned.h"

namespace {

TEST(LearnedGridWalk, MatchesCpuOp) {
  torch::manual_seed(3);
  for (const bool aligned : {true, false}) {
    const auto base = torch::randn({3, 9, 40});
    const auto x = aligned ? base : base.narrow(2, 1, 33);  // misaligned: scalar path
    const auto w = torch::randn({50, x.size(-1)});
    const auto positions = torch::randint(0, 50, {3, 9});
    const auto expected = posemb::learned_add(x, w, positions);
    for (int64_t sms : {1, 132}) {
      auto y = grid_walk::poisoned(x.sizes());
      std::vector<torch::Tensor> keep;
      const auto p = posemb::detail::make_learned_params(x, y, w, positions, std::nullopt, 0, -2, keep);
      const auto plan = posemb::plan_learned_add(p, sizeof(float), sms);
      EXPECT_EQ(plan.vector, aligned);
      grid_walk::each_thread(plan, p.batch * p.seq, [&](int64_t row, int64_t thread) {
        if (plan.vector) {
          posemb::learned_add_row<float, true>(p, row, thread, plan.block);
        } else {
          posemb::learned_add_row<float, false>(p, row, thread, plan.block);
        }
      });
      EXPECT_TRUE(torch::equal(y, expected)) << "aligned " << aligned << " sms " << sms;
    }
  }
}

}  // namespace
