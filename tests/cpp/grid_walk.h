// Walking a CUDA launch on the CPU (README: Architecture): every block, every
// thread and every grid-stride step of the production plan, over params built
// by the production make_X_params. Each tests/cpp/test_X_grid.cpp walks one
// family's kernels this way and compares with its CPU op.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "cpu/scalar_ops.h"  // c10::Half and c10::BFloat16 for the kernel bodies
#include "kernels/launch_plan.cuh"

namespace grid_walk {

/// Calls row_body(row) for each row of `rows` that the blocks of `plan` visit,
/// block by block (block b: rows b, b + grid, ...). For kernels whose threads
/// cooperate on a row (block sums), the body runs the threads itself.
template <typename F>
void each_block_row(const posemb::RowLaunch& plan, int64_t rows, F row_body) {
  for (int64_t block = 0; block < plan.grid; ++block) {
    for (int64_t row = block; row < rows; row += plan.grid) row_body(row);
  }
}

/// Calls body(row, thread) for every thread of every block row.
template <typename F>
void each_thread(const posemb::RowLaunch& plan, int64_t rows, F body) {
  each_block_row(plan, rows, [&](int64_t row) {
    for (int64_t thread = 0; thread < plan.block; ++thread) body(row, thread);
  });
}

/// Calls body(block_x, block_y, thread) for every thread of a 2-D grid.
template <typename F>
void each_thread_2d(int64_t grid_x, int64_t grid_y, int64_t block, F body) {
  for (int64_t by = 0; by < grid_y; ++by) {
    for (int64_t bx = 0; bx < grid_x; ++bx) {
      for (int64_t tx = 0; tx < block; ++tx) body(bx, by, tx);
    }
  }
}

/// A warp's xor-butterfly sum as the CUDA shells do it (v += __shfl_xor_sync(
/// v, o) for o = 16, 8, 4, 2, 1): lane l adds lane l ^ o's value, in that
/// order, so every lane ends with the bits the GPU's lanes get.
template <typename A>
void warp_butterfly_sum(A (&v)[32]) {
  for (int o = 16; o > 0; o >>= 1) {
    A next[32];
    for (int lane = 0; lane < 32; ++lane) next[lane] = v[lane] + v[lane ^ o];
    for (int lane = 0; lane < 32; ++lane) v[lane] = next[lane];
  }
}

/// An output the walk must overwrite entirely: a value no kernel writes.
inline torch::Tensor poisoned(at::IntArrayRef sizes, const torch::TensorOptions& options = {}) {
  return torch::full(sizes, 1234.0, options);
}

}  // namespace grid_walk
