// posemb::nn::LearnedPositionalEmbedding and learned_add from C++, and the
// CUDA launch grids of learned_add and its weight gradient walked on the CPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>
#include <tuple>

#include "cpu/scalar_ops.h"
#include "kernels/learned.cuh"
#include "kernels/table_grad.cuh"
#include "positions.h"
#include "dtype_device.h"
#include "posemb/posemb.h"

namespace {

using LearnedTest = DtypeDeviceTest;

TEST_P(LearnedTest, ModuleMatchesGatherAndTrains) {
  torch::manual_seed(0);
  posemb::nn::LearnedPositionalEmbedding pe(
      posemb::nn::LearnedPositionalEmbeddingOptions(16, 8).padding_idx(1));
  pe->to(torch::Device(device()), dtype());
  const auto ids = torch::tensor({{1, 1, 5, 6}, {5, 6, 7, 1}}, torch::dtype(torch::kLong).device(device()));
  const auto x = torch::randn({2, 4, 8}, options().requires_grad(true));
  const auto y = pe->forward_ids(x, ids);
  const auto positions = posemb::make_positions(ids, 1);
  const auto expected = (x.to(torch::kFloat64) + pe->weight.to(torch::kFloat64).index({positions})).to(dtype());
  EXPECT_TRUE(torch::equal(y, expected)) << dtype();

  y.sum().backward();
  const auto grad = pe->weight.grad().cpu().to(torch::kFloat64);
  EXPECT_EQ(grad[1].abs().sum().item<double>(), 0.0);  // the padding row learns nothing
  EXPECT_EQ(grad[2][0].item<double>(), 2.0);           // position 2: two tokens
  EXPECT_EQ(grad[5][0].item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(x.grad(), torch::ones_like(x)));
}

TEST_P(LearnedTest, OffsetsAndSeqFirst) {
  const auto w = torch::randn({32, 8}, options());
  const auto x = torch::randn({6, 3, 8}, options());  // (seq, batch, dim)
  const auto offsets = torch::tensor({0, 10, 20}, torch::dtype(torch::kInt32).device(device()));
  const auto y = posemb::learned_add(x, w, std::nullopt, offsets, 0, /*seq_dim=*/0);
  for (int64_t b = 0; b < 3; ++b) {
    EXPECT_TRUE(torch::equal(y.select(1, b), (x.select(1, b).to(torch::kFloat64) +
                                              w.narrow(0, 10 * b, 6).to(torch::kFloat64)).to(dtype())));
  }
}

POSEMB_TEST_ALL_DTYPES_AND_DEVICES(LearnedTest);

TEST(LearnedErrors, OutOfRangePositionsAreAnError) {
  const auto x = torch::randn({2, 3, 4});
  const auto w = torch::randn({5, 4});
  try {
    posemb::learned_add(x, w, torch::tensor({0, 7, 1}));
    ADD_FAILURE() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("posemb.learned_add: positions must be in [0, num_embeddings=5)"),
              std::string::npos)
        << e.what();
  }
  posemb::nn::LearnedPositionalEmbedding pe(5, 4);
  std::ostringstream s;
  s << *pe;
  EXPECT_EQ(s.str(), "posemb::nn::LearnedPositionalEmbedding(5, 4)");
}

// Walks both CUDA launch grids (every block, thread and grid-stride step) on
// the CPU and compares with the CPU ops.
TEST(LearnedGridWalk, MatchesCpuOps) {
  torch::manual_seed(3);
  for (const bool aligned : {true, false}) {
    const auto base = torch::randn({3, 9, 40});
    const auto x = aligned ? base : base.narrow(2, 1, 33);  // misaligned: scalar path
    const int64_t dim = x.size(-1);
    const auto w = torch::randn({50, dim});
    const auto positions = torch::randint(0, 50, {3, 9});
    const auto expected = posemb::learned_add(x, w, positions);

    posemb::LearnedParams p;
    auto y = torch::full(x.sizes(), 1234.0);
    p.x = x.data_ptr();
    p.y = y.data_ptr();
    p.weight = w.data_ptr();
    p.batch = 3;
    p.seq = 9;
    p.dim = dim;
    p.num_embeddings = 50;
    p.x_rows = {x.stride(0), x.stride(1), x.stride(2)};
    p.y_rows = {y.stride(0), y.stride(1), y.stride(2)};
    p.w_stride_n = w.stride(0);
    p.w_stride_d = w.stride(1);
    p.pos.positions = positions.data_ptr();
    p.pos.pos_stride_b = positions.stride(0);
    p.pos.pos_stride_t = positions.stride(1);
    for (int64_t sms : {1, 132}) {
      const auto plan = posemb::plan_learned_add(p, sizeof(float), sms);
      EXPECT_EQ(plan.vector, aligned);
      for (int64_t block = 0; block < plan.grid; ++block)
        for (int64_t thread = 0; thread < plan.block; ++thread)
          for (int64_t row = block; row < p.batch * p.seq; row += plan.grid) {
            if (plan.vector) posemb::learned_add_row<float, true>(p, row, thread, plan.block);
            else posemb::learned_add_row<float, false>(p, row, thread, plan.block);
          }
      EXPECT_TRUE(torch::equal(y, expected)) << "aligned " << aligned << " sms " << sms;
    }

    // The weight gradient's two GPU passes, tokens sorted as the glue sorts
    // them, with chunks of 4 tokens so that rows cross chunk boundaries.
    const auto hot = torch::cat({positions.reshape({-1}).narrow(0, 0, 7), torch::full({20}, 3)});
    const auto hot_positions = hot.reshape({3, 9});  // row 3: 20+ tokens over many chunks
    const auto grad = torch::randn({3, 9, dim});
    const auto wr = w.clone().requires_grad_(true);
    posemb::learned_add(x, wr, hot_positions, std::nullopt, 0, -2, /*padding_idx=*/7).backward(grad);
    const auto tokens = hot_positions.reshape({-1}).contiguous();
    const auto [sorted, order] = torch::sort(tokens, /*stable=*/true, 0, false);
    auto grad_weight = torch::full({50, dim}, 1234.0);
    posemb::TableGradParams g;
    g.grad = grad.data_ptr();
    g.batch = 3;
    g.seq = 9;
    g.dim = dim;
    g.grad_rows = {grad.stride(0), grad.stride(1), grad.stride(2)};
    g.sorted_rows = sorted.data_ptr<int64_t>();
    g.order = order.data_ptr<int64_t>();
    g.num_tokens = tokens.numel();
    g.grad_weight = grad_weight.data_ptr();
    g.num_embeddings = 50;
    g.has_padding_idx = true;
    g.padding_idx = 7;
    g.chunk_tokens = 4;
    auto partials = torch::full({posemb::table_grad_chunks(g), 2, dim}, 1234.0);
    g.partials = partials.data_ptr();
    const auto chunks = posemb::plan_table_grad_chunks(g, 3);
    for (int64_t block = 0; block < chunks.grid; ++block)
      for (int64_t thread = 0; thread < chunks.block; ++thread)
        for (int64_t j = block; j < posemb::table_grad_chunks(g); j += chunks.grid)
          posemb::table_grad_chunk<float, float>(g, j, thread, chunks.block);
    const auto rows = posemb::plan_table_grad_rows(g, 3);
    for (int64_t block = 0; block < rows.grid; ++block)
      for (int64_t thread = 0; thread < rows.block; ++thread)
        for (int64_t n = block; n < g.num_embeddings; n += rows.grid)
          posemb::table_grad_combine<float>(g, n, thread, rows.block);
    EXPECT_TRUE(torch::allclose(grad_weight, wr.grad(), 1e-5, 1e-5)) << "aligned " << aligned;
    EXPECT_EQ(grad_weight[7].abs().sum().item<float>(), 0.0f);
  }
}

}  // namespace
