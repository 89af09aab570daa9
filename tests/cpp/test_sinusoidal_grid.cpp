// Walks the CUDA kernel body of sinusoidal_add over its whole launch grid on
// the CPU (every block, every thread, every grid-stride step) and compares
// with the CPU op, bitwise: the GPU's indexing, masking, vector paths and
// tails are checked without a GPU (README: Architecture).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "grid_walk.h"
#include "posemb/sinusoidal.h"
#include "sinusoidal_op.h"

namespace {

using posemb::SinusoidalLaunch;
using posemb::SinusoidalLayout;
using posemb::SinusoidalParams;

template <typename T, SinusoidalLayout L>
void walk_layout(const SinusoidalParams& p, const SinusoidalLaunch& plan) {
  grid_walk::each_thread_2d(plan.grid_x, plan.grid_y, plan.block_dim,
                            [&](int64_t bx, int64_t by, int64_t tx) {
    const posemb::GridCoord at{bx, by, tx};
    if (plan.vector) {
      posemb::sinusoidal_add_body<T, L, true>(p, plan, at);
    } else {
      posemb::sinusoidal_add_body<T, L, false>(p, plan, at);
    }
  });
}

template <typename T>
void walk(const SinusoidalParams& p, const SinusoidalLaunch& plan) {
  if (p.layout == SinusoidalLayout::Interleaved) {
    walk_layout<T, SinusoidalLayout::Interleaved>(p, plan);
  } else {
    walk_layout<T, SinusoidalLayout::Half>(p, plan);
  }
}

struct Case {
  std::string name;
  std::function<torch::Tensor(torch::TensorOptions)> make_x;
  std::optional<torch::Tensor> positions;
  std::optional<torch::Tensor> offsets;
  int64_t offset = 0;
  int64_t seq_dim = -2;
  std::string layout = "interleaved";
  std::string freqs = "vaswani";
  std::optional<int64_t> padding_idx;
  bool expect_vector;  // for float32; which path the plan must take
};

std::vector<Case> cases() {
  auto randn = [](std::vector<int64_t> shape) {
    return [shape](torch::TensorOptions o) { return torch::randn(shape, o); };
  };
  std::vector<Case> c;
  c.push_back({"contiguous", randn({3, 37, 64}), {}, {}, 5, -2, "interleaved", "vaswani", {}, true});
  c.push_back({"half-layout", randn({2, 33, 96}), {}, {}, 0, -2, "half", "fairseq", {}, true});
  c.push_back({"odd-dim", randn({2, 9, 13}), {}, {}, 0, -2, "half", "vaswani", {}, false});
  c.push_back({"channel-stride", [](torch::TensorOptions o) { return torch::randn({2, 5, 32}, o).slice(2, 0, 32, 2); },
               {}, {}, 0, -2, "interleaved", "vaswani", {}, false});
  c.push_back({"seq-first-view", [](torch::TensorOptions o) { return torch::randn({2, 70, 32}, o).transpose(0, 1); },
               {}, {}, 0, 0, "interleaved", "vaswani", {}, true});
  c.push_back({"misaligned-offset", [](torch::TensorOptions o) { return torch::randn({2, 5, 33}, o).slice(2, 1, 33); },
               {}, {}, 0, -2, "interleaved", "vaswani", {}, false});
  c.push_back({"per-seq-offsets", randn({5, 3, 32}), {}, torch::tensor({0, 4, 9, 1 << 20, 7}), 0, -2,
               "half", "vaswani", {}, true});
  c.push_back({"decode-batch-split", randn({300, 1, 16}), {}, {}, 42, -2, "interleaved", "vaswani", {}, true});
  c.push_back({"positions-2d-padding", randn({2, 6, 16}),
               torch::tensor({{1, 2, 3, 1, 1, 4}, {5, 1, 6, 7, 8, 9}}, torch::kInt32), {}, 0, -2, "half",
               "fairseq", 1, true});
  c.push_back({"stride0-positions", randn({3, 4, 8}), torch::tensor(11).expand({4}), {}, 0, -2, "interleaved",
               "vaswani", {}, true});
  c.push_back({"2d", randn({50, 24}), {}, {}, 3, -2, "half", "vaswani", {}, true});
  return c;
}

template <typename T>
void check_case(const Case& c, torch::Dtype dtype, int64_t num_sms) {
  torch::manual_seed(7);
  const auto x = c.make_x(torch::dtype(dtype));
  const auto expected = posemb::sinusoidal_add(x, c.positions, c.offsets, c.offset, c.seq_dim, c.layout,
                                               c.freqs, 10000.0, 1.5, c.padding_idx);
  auto y = grid_walk::poisoned(x.sizes(), torch::dtype(dtype));
  const auto spec = posemb::detail::check_sinusoidal_add("walk", x, c.positions, c.offsets, c.offset,
                                                         c.seq_dim, c.layout, c.freqs, 10000.0,
                                                         c.padding_idx);
  std::vector<torch::Tensor> keep;
  const auto p = posemb::detail::make_sinusoidal_params(spec, x, y, c.positions, c.offsets, c.offset,
                                                        c.seq_dim, 1.5, c.padding_idx, keep);
  const auto plan = posemb::plan_sinusoidal_launch(p, sizeof(T), num_sms);
  if (dtype == torch::kFloat32) EXPECT_EQ(plan.vector, c.expect_vector) << c.name;
  walk<T>(p, plan);
  // Bitwise: the same angles (kernels/turns.cuh) and x * 1.5 + PE rounded once (mul_add) on both.
  EXPECT_TRUE(torch::equal(y, expected))
      << c.name << " dtype " << dtype << " sms " << num_sms << " vector " << plan.vector << " grid "
      << plan.grid_x << "x" << plan.grid_y << " block " << plan.block_dim;
}

TEST(SinusoidalGridWalk, MatchesCpuOpOnEveryPath) {
  for (const auto& c : cases()) {
    for (int64_t sms : {1, 3, 132}) {  // few SMs force grid-stride loops; many split the batch
      check_case<float>(c, torch::kFloat32, sms);
      check_case<double>(c, torch::kFloat64, sms);
      check_case<c10::Half>(c, torch::kFloat16, sms);
      check_case<c10::BFloat16>(c, torch::kBFloat16, sms);
    }
  }
}

TEST(SinusoidalGridWalk, PlanSplitsDecodeBatchAcrossBlocks) {
  SinusoidalParams p;
  p.batch = 256;
  p.seq = 1;
  p.dim = 128;
  p.x_rows.stride_b = p.y_rows.stride_b = 128;
  p.x_rows.stride_t = p.y_rows.stride_t = 128;
  const auto plan = posemb::plan_sinusoidal_launch(p, 4, 132);
  EXPECT_EQ(plan.rows, 1);
  EXPECT_GT(plan.grid_y, 1);
  EXPECT_GE(plan.grid_y * plan.batch_chunk, p.batch);
}

}  // namespace
