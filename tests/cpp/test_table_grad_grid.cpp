// Walks the two CUDA passes of the table gradient on the CPU (every block,
// thread and grid-stride step of the production plan), with chunks of 4
// tokens so that rows cross chunk boundaries, and compares with learned_add's
// weight gradient on the CPU: with 16-byte vectors and channel by channel.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "grid_walk.h"
#include "posemb/learned.h"
#include "table_grad.h"

namespace {

// Calls body(item) for every item the flat grid-stride plan visits.
template <typename F>
void each_item(const posemb::RowLaunch& plan, int64_t items, F body) {
  for (int64_t block = 0; block < plan.grid; ++block) {
    for (int64_t thread = 0; thread < plan.block; ++thread) {
      for (int64_t i = block * plan.block + thread; i < items; i += plan.grid * plan.block) body(i);
    }
  }
}

// The gradient of a float table walked with vector width V (both passes),
// for tokens reading rows `positions` (values outside [0, rows) allowed).
template <int V>
torch::Tensor walk(const torch::Tensor& grad, const torch::Tensor& positions, int64_t rows,
                   std::optional<int64_t> padding_idx) {
  const int64_t dim = grad.size(-1);
  auto grad_weight = grid_walk::poisoned({rows, dim});
  std::vector<torch::Tensor> keep;
  auto p = posemb::detail::make_table_grad_params(grad, posemb::detail::XDims{1, 0}, positions,
                                                  grad_weight, padding_idx, keep,
                                                  /*arange_offset=*/std::nullopt, /*gpu_indices=*/true);
  p.chunk_tokens = 4;
  auto partials = grid_walk::poisoned({posemb::table_grad_chunks(p), 2, dim});
  p.partials = partials.data_ptr();
  EXPECT_EQ(posemb::table_grad_vector(p, sizeof(float), true), dim % 4 == 0 ? 4 : 1);
  const int64_t chunk_items = posemb::table_grad_chunks(p) * (dim / V);
  each_item(posemb::plan_table_grad_items(chunk_items, 3), chunk_items,
            [&](int64_t i) { posemb::table_grad_chunk<float, float, V>(p, i); });
  const int64_t row_items = rows * (dim / V);
  each_item(posemb::plan_table_grad_items(row_items, 3), row_items,
            [&](int64_t i) { posemb::table_grad_combine<float, V>(p, i); });
  return grad_weight;
}

TEST(TableGradGridWalk, MatchesCpuOpWithRowsAcrossChunks) {
  torch::manual_seed(3);
  for (const int64_t dim : {40, 33}) {
    const auto x = torch::randn({3, 9, dim});
    const auto w = torch::randn({50, dim}).requires_grad_(true);
    const auto some = torch::randint(0, 50, {7});
    const auto positions = torch::cat({some, torch::full({20}, 3)}).reshape({3, 9});  // row 3: hot
    const auto grad = torch::randn({3, 9, dim});
    posemb::learned_add(x, w, positions, std::nullopt, 0, -2, /*padding_idx=*/7).backward(grad);

    const auto scalar = walk<1>(grad, positions, 50, 7);
    EXPECT_TRUE(torch::allclose(scalar, w.grad(), 1e-5, 1e-5)) << "dim " << dim;
    EXPECT_EQ(scalar[7].abs().sum().item<float>(), 0.0f);
    if (dim % 4 == 0) {
      // Each channel adds the same values in the same order: bitwise equal.
      EXPECT_TRUE(torch::equal(walk<4>(grad, positions, 50, 7), scalar)) << "dim " << dim;
    }
  }
}

// In a captured CUDA graph the host range check is skipped: rows outside
// the table must get nothing and be written nowhere.
TEST(TableGradGridWalk, RowsOutsideTheTableAreDropped) {
  torch::manual_seed(4);
  const auto grad = torch::randn({2, 8, 16});
  const auto positions = torch::tensor({-3, 0, 0, 2, 5, 5, 9, 40, 1, 1, 1, 1, 1, 2, 6, 6}).reshape({2, 8});
  const auto inside = positions.ge(0).logical_and(positions.lt(6));
  const auto expected = torch::zeros({6, 16}).index_add_(
      0, positions.masked_select(inside), grad.reshape({16, 16}).index({inside.reshape({16})}));
  EXPECT_TRUE(torch::allclose(walk<4>(grad, positions, 6, std::nullopt), expected, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(walk<1>(grad, positions, 6, std::nullopt), expected, 1e-6, 1e-6));
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
