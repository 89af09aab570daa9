// Walks the two CUDA passes of the table gradient on the CPU (every block,
// thread and grid-stride step), with chunks of 4 tokens so that rows cross
// chunk boundaries, and compares with learned_add's weight gradient on the CPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "grid_walk.h"
#include "posemb/learned.h"
#include "table_grad.h"

namespace {

TEST(TableGradGridWalk, MatchesCpuOpWithRowsAcrossChunks) {
  torch::manual_seed(3);
  for (const int64_t dim : {40, 33}) {
    const auto x = torch::randn({3, 9, dim});
    const auto w = torch::randn({50, dim}).requires_grad_(true);
    const auto some = torch::randint(0, 50, {7});
    const auto positions = torch::cat({some, torch::full({20}, 3)}).reshape({3, 9});  // row 3: hot
    const auto grad = torch::randn({3, 9, dim});
    posemb::learned_add(x, w, positions, std::nullopt, 0, -2, /*padding_idx=*/7).backward(grad);

    auto grad_weight = grid_walk::poisoned({50, dim});
    std::vector<torch::Tensor> keep;
    auto p = posemb::detail::make_table_grad_params(grad, posemb::detail::XDims{1, 0}, positions,
                                                    grad_weight, 7, keep);
    p.chunk_tokens = 4;
    auto partials = grid_walk::poisoned({posemb::table_grad_chunks(p), 2, dim});
    p.partials = partials.data_ptr();
    const auto chunks = posemb::plan_table_grad_chunks(p, 3);
    grid_walk::each_thread(chunks, posemb::table_grad_chunks(p), [&](int64_t j, int64_t thread) {
      posemb::table_grad_chunk<float, float>(p, j, thread, chunks.block);
    });
    const auto rows = posemb::plan_table_grad_rows(p, 3);
    grid_walk::each_thread(rows, p.num_embeddings, [&](int64_t n, int64_t thread) {
      posemb::table_grad_combine<float>(p, n, thread, rows.block);
    });
    EXPECT_TRUE(torch::allclose(grad_weight, w.grad(), 1e-5, 1e-5)) << "dim " << dim;
    EXPECT_EQ(grad_weight[7].abs().sum().item<float>(), 0.0f);
  }
}

// Implicit positions (offset + t): the sorted order is written down instead
// of sorted; it must be the stable sort's, to the element.
TEST(TableGradParams, ImplicitPositionsGiveTheStableSortsOrder) {
  for (const int64_t batch : {1, 3}) {
    const int64_t seq = 9, offset = 5, dim = 4;
    const auto grad = torch::randn({batch, seq, dim});
    const auto positions = (torch::arange(seq, torch::kLong) + offset).unsqueeze(0).expand({batch, seq});
    const auto grad_weight = torch::empty({20, dim});
    std::vector<torch::Tensor> keep_sorted, keep_written;
    const auto sorted = posemb::detail::make_table_grad_params(grad, posemb::detail::XDims{1, 0}, positions,
                                                               grad_weight, std::nullopt, keep_sorted);
    const auto written = posemb::detail::make_table_grad_params(grad, posemb::detail::XDims{1, 0}, positions,
                                                                grad_weight, std::nullopt, keep_written, offset);
    ASSERT_EQ(sorted.num_tokens, written.num_tokens);
    for (int64_t k = 0; k < sorted.num_tokens; ++k) {
      EXPECT_EQ(sorted.sorted_rows[k], written.sorted_rows[k]) << k;
      EXPECT_EQ(sorted.order[k], written.order[k]) << k;
    }
  }
}

}  // namespace
