// Walks the CUDA kernels of bert_embeddings on the CPU: every block's row
// passes (kernels/bert.cuh) for every thread of the production plan, the
// block sums emulated by adding the threads' parts, and the gamma/beta chunk
// and final passes; compares with the CPU op. What stays for the GPU battery
// is the warp-shuffle sum.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "bert_op.h"
#include "grid_walk.h"

namespace {

// bert_forward_kernel walked on one SM for params p (forward fields set).
void walk_forward(const posemb::BertParams& p, const torch::Tensor& mean, const torch::Tensor& rstd) {
  const auto plan = posemb::plan_bert_rows(p, 1);
  const int64_t block = plan.block, D = p.dim;
  grid_walk::each_block_row(plan, p.batch * p.seq, [&](int64_t row) {
    float sum = 0, sq = 0;
    for (int64_t tid = 0; tid < block; ++tid) sum += posemb::bert_row_sum<float>(p, row, tid, block);
    const float m = sum / D;
    for (int64_t tid = 0; tid < block; ++tid) sq += posemb::bert_row_sq<float>(p, row, tid, block, m);
    const float r = 1.0f / std::sqrt(sq / D + 1e-12f);
    for (int64_t tid = 0; tid < block; ++tid) posemb::bert_row_write<float>(p, row, tid, block, m, r);
    mean.view(-1)[row] = m;
    rstd.view(-1)[row] = r;
  });
}

// In a captured CUDA graph the seed lives on the device and the host range
// check is skipped: the kernels read the seed themselves, and a token with an
// index outside its table gets NaN without any table being read.
TEST(BertGridWalk, DeviceSeedAndIndicesOutsideTheTables) {
  torch::manual_seed(12);
  const int64_t B = 2, T = 5, D = 64;
  auto ids = torch::randint(0, 20, {B, T});
  const auto types = torch::randint(0, 2, {B, T});
  const auto word = torch::randn({20, D}), pos = torch::randn({16, D}), type = torch::randn({2, D});
  const auto gamma = torch::randn({D}), beta = torch::randn({D});
  auto forward = [&](const torch::Tensor& token_ids, const torch::Tensor& token_types,
                     const int64_t* seed_on_device) {
    std::vector<torch::Tensor> keep;
    auto p = posemb::detail::make_bert_params(token_ids, word, pos, type, gamma, std::nullopt,
                                              token_types, 0, 0.3, torch::tensor(int64_t(9)), keep);
    if (seed_on_device != nullptr) {
      p.seed = 0;
      p.seed_on_device = seed_on_device;
    }
    auto out = grid_walk::poisoned({B, T, D}), mean = torch::empty({B, T}), rstd = torch::empty({B, T});
    posemb::detail::set_bert_forward(p, beta, 1e-12, out, mean, rstd, keep);
    walk_forward(p, mean, rstd);
    return out;
  };
  const auto host_seed = forward(ids, types, nullptr);
  const int64_t nine = 9;
  EXPECT_TRUE(torch::equal(forward(ids, types, &nine), host_seed));

  auto bad_ids = ids.clone(), bad_types = types.clone();
  bad_ids[0][1] = 20;
  bad_ids[1][3] = -1;
  bad_types[1][0] = 2;
  const auto out = forward(bad_ids, bad_types, nullptr);
  const auto bad = torch::zeros({B, T}, torch::kBool);
  bad[0][1] = bad[1][3] = bad[1][0] = true;
  EXPECT_TRUE(out.index({bad}).isnan().all().item<bool>());
  EXPECT_TRUE(torch::equal(out.index({bad.logical_not()}), host_seed.index({bad.logical_not()})));
}

TEST(BertGridWalk, ForwardAndBackwardMatchCpuOps) {
  torch::manual_seed(11);
  const int64_t B = 3, T = 7, D = 300;  // D > 256 threads: grid-stride over channels
  const auto ids = torch::randint(0, 20, {B, T});
  const auto types = torch::randint(0, 2, {B, T});
  auto word = torch::randn({20, D}), pos = torch::randn({16, D}), type = torch::randn({2, D});
  auto gamma = torch::randn({D}), beta = torch::randn({D});
  const auto seed = torch::tensor(int64_t(5));
  for (auto* t : {&word, &pos, &type, &gamma, &beta}) t->requires_grad_(true);
  const auto [out, mean, rstd] = posemb::detail::BertEmbeddingsOp::handle().call(
      ids, word, pos, type, gamma, beta, std::nullopt, types, c10::SymInt(2), 1e-12, 0.2, seed, 0,
      std::nullopt);
  const auto grad = torch::randn({B, T, D});
  out.backward(grad);

  // The forward's params as bert_embeddings builds them: positions 2 + t, dropout 0.2.
  std::vector<torch::Tensor> keep;
  auto p = posemb::detail::make_bert_params(ids, word, pos, type, gamma, std::nullopt, types, 2,
                                            0.2, seed, keep);
  auto walk_out = grid_walk::poisoned({B, T, D}), walk_mean = torch::empty({B, T}),
       walk_rstd = torch::empty({B, T});
  posemb::detail::set_bert_forward(p, beta, 1e-12, walk_out, walk_mean, walk_rstd, keep);

  // bert_forward_kernel on one SM (rows by grid-stride), its threads' parts summed.
  walk_forward(p, walk_mean, walk_rstd);
  const auto plan = posemb::plan_bert_rows(p, 1);
  const int64_t block = plan.block;
  EXPECT_TRUE(torch::allclose(walk_out, out, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(walk_mean, mean, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(walk_rstd, rstd, 1e-5, 1e-6));

  // bert_grad_x_kernel, then the gamma/beta chunk and final kernels, with the
  // backward's fields as bert_embeddings_backward sets them (but two chunks).
  auto grad_x = torch::empty({B * T, D});
  p.row_chunks = 2;
  auto partials = torch::empty({2, p.row_chunks, D});
  auto grad_gamma = torch::empty({D}), grad_beta = torch::empty({D});
  posemb::detail::set_bert_backward(p, grad, mean, rstd, grad_x, partials, grad_gamma, grad_beta,
                                    keep);
  grid_walk::each_block_row(plan, B * T, [&](int64_t row) {
    float s1 = 0, s2 = 0;
    for (int64_t tid = 0; tid < block; ++tid) {
      float a, b;
      posemb::bert_row_grad_sums<float>(p, row, tid, block, &a, &b);
      s1 += a;
      s2 += b;
    }
    for (int64_t tid = 0; tid < block; ++tid) posemb::bert_row_grad_write<float>(p, row, tid, block, s1, s2);
  });
  for (int64_t chunk = 0; chunk < p.row_chunks; ++chunk)
    for (int64_t d = 0; d < D; ++d) posemb::bert_norm_grad_chunk<float>(p, chunk, d);
  for (int64_t d = 0; d < D; ++d) posemb::bert_norm_grad_final<float>(p, d);
  EXPECT_TRUE(torch::allclose(grad_gamma, gamma.grad(), 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(grad_beta, beta.grad(), 1e-4, 1e-5));
  // The type table's gradient is the per-type sum of grad_x.
  const auto expected_type = torch::zeros({2, D}).index_add_(0, types.view(-1), grad_x);
  EXPECT_TRUE(torch::allclose(expected_type, type.grad(), 1e-4, 1e-5));
}

}  // namespace
