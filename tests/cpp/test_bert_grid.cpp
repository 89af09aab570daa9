// Walks the CUDA kernels of bert_embeddings on the CPU with the production
// plans (plan_bert_forward / plan_bert_backward) and params:
// - the warp path: every block, warp and grid-stride row, the 32 lanes' bodies
//   (kernels/bert.cuh) with the warp sums added in the shells' xor-butterfly
//   order (grid_walk::warp_butterfly_sum), the backward's warps folding their
//   gamma/beta sums in warp order; both the 16-byte (kVector) and the
//   channel-by-channel bodies;
// - the block path (rows wider than a warp's registers): every block row, the
//   block sums emulated by adding the threads' parts, then the gamma/beta
//   chunk pass;
// and the final gamma/beta pass. Compared with the CPU op, with an fp64
// reference of the LayerNorm backward, and with the dropout mask contract
// (element (row, d) kept when uniform(seed, row * dim + d) >= p).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "bert_op.h"
#include "grid_walk.h"

namespace {

template <typename T>
struct TorchType;
template <>
struct TorchType<float> {
  static constexpr auto value = torch::kFloat32;
};
template <>
struct TorchType<double> {
  static constexpr auto value = torch::kFloat64;
};
template <>
struct TorchType<c10::BFloat16> {
  static constexpr auto value = torch::kBFloat16;
};
template <>
struct TorchType<c10::Half> {
  static constexpr auto value = torch::kFloat16;
};

// ------------------------------------------------------------------ forward

template <typename T, bool kVector>
void walk_warp_forward(const posemb::BertParams& p, const posemb::BertLaunch& plan) {
  using A = posemb::detail::acc_t<T>;
  constexpr int V = posemb::bert_piece<T, kVector>(), K = posemb::bert_lane_elems<A>() / V;
  const int64_t warps = plan.block / 32, rows = p.batch * p.seq;
  const uint64_t seed = posemb::detail::dropout_seed(p);
  for (int64_t block = 0; block < plan.grid; ++block) {
    for (int64_t warp = 0; warp < warps; ++warp) {
      for (int64_t row = block * warps + warp; row < rows; row += plan.grid * warps) {
        std::vector<posemb::BertLane<A, V, K>> lanes(32);
        A part[32], mean[32];
        for (int l = 0; l < 32; ++l) part[l] = posemb::bert_warp_gather<T, V, K>(p, row, l, lanes[l]);
        grid_walk::warp_butterfly_sum(part);
        for (int l = 0; l < 32; ++l) mean[l] = part[l] / A(p.dim);
        for (int l = 0; l < 32; ++l) part[l] = posemb::bert_warp_sq<T, V, K>(p, l, lanes[l], mean[l]);
        grid_walk::warp_butterfly_sum(part);
        for (int l = 0; l < 32; ++l) {
          posemb::bert_warp_write<T, V, K>(p, row, l, lanes[l], mean[l], posemb::bert_rstd<A>(p, part[l]), seed);
        }
      }
    }
  }
}

// The block path's launch as the row walk takes it.
posemb::RowLaunch block_rows(const posemb::BertLaunch& plan) {
  posemb::RowLaunch rows;
  rows.grid = plan.grid;
  rows.block = plan.block;
  return rows;
}

template <typename T>
void walk_block_forward(const posemb::BertParams& p, const posemb::BertLaunch& plan) {
  using A = posemb::detail::acc_t<T>;
  const int64_t block = plan.block;
  grid_walk::each_block_row(block_rows(plan), p.batch * p.seq, [&](int64_t row) {
    A sum = 0, sq = 0;
    for (int64_t tid = 0; tid < block; ++tid) sum += posemb::bert_row_sum<T>(p, row, tid, block);
    const A m = sum / A(p.dim);
    for (int64_t tid = 0; tid < block; ++tid) sq += posemb::bert_row_sq<T>(p, row, tid, block, m);
    const A r = posemb::bert_rstd<A>(p, sq);
    for (int64_t tid = 0; tid < block; ++tid) posemb::bert_row_write<T>(p, row, tid, block, m, r);
    static_cast<A*>(p.mean)[row] = m;
    static_cast<A*>(p.rstd)[row] = r;
  });
}

// The forward kernel the launcher picks for p (forward fields set), walked on `sms` SMs.
template <typename T>
posemb::BertLaunch walk_forward(const posemb::BertParams& p, int64_t sms = 1) {
  const auto plan = posemb::plan_bert_forward(p, sizeof(T), sizeof(posemb::detail::acc_t<T>), sms);
  if (!plan.warp) {
    walk_block_forward<T>(p, plan);
  } else if (plan.vector) {
    walk_warp_forward<T, true>(p, plan);
  } else {
    walk_warp_forward<T, false>(p, plan);
  }
  return plan;
}

// ----------------------------------------------------------------- backward

template <typename T, bool kVector>
void walk_warp_backward(const posemb::BertParams& p, const posemb::BertLaunch& plan) {
  using A = posemb::detail::acc_t<T>;
  constexpr int V = posemb::bert_piece<T, kVector>(), K = posemb::bert_lane_elems<A>() / V;
  const int warps = static_cast<int>(plan.block / 32);
  const uint64_t seed = posemb::detail::dropout_seed(p);
  std::vector<A> fold(2 * 32 * posemb::bert_lane_elems<A>(), A(1234));  // the block's shared memory
  for (int64_t chunk = 0; chunk < plan.grid; ++chunk) {
    std::vector<posemb::BertNormLane<A, V, K>> acc(warps * 32);
    for (auto& a : acc) a.zero();
    int64_t begin, end;
    posemb::detail::bert_chunk_rows(p, chunk, &begin, &end);
    for (int warp = 0; warp < warps; ++warp) {
      for (int64_t row = begin + warp; row < end; row += warps) {
        std::vector<posemb::BertGradLane<A, V, K>> lanes(32);
        A s1[32], s2[32];
        for (int l = 0; l < 32; ++l) {
          posemb::bert_warp_grad_load<T, V, K>(p, row, l, seed, lanes[l], acc[warp * 32 + l], &s1[l], &s2[l]);
        }
        grid_walk::warp_butterfly_sum(s1);
        grid_walk::warp_butterfly_sum(s2);
        for (int l = 0; l < 32; ++l) posemb::bert_warp_grad_write<T, V, K>(p, row, l, lanes[l], s1[l], s2[l]);
      }
    }
    for (int w = 0; w < warps; ++w) {  // a barrier between the steps
      for (int l = 0; l < 32; ++l) posemb::bert_warp_fold<T, V, K>(p, chunk, w, warps, l, acc[w * 32 + l], fold.data());
    }
  }
}

template <typename T>
void walk_block_backward(const posemb::BertParams& p, const posemb::BertLaunch& plan) {
  using A = posemb::detail::acc_t<T>;
  const int64_t block = plan.block;
  grid_walk::each_block_row(block_rows(plan), p.batch * p.seq, [&](int64_t row) {
    A s1 = 0, s2 = 0;
    for (int64_t tid = 0; tid < block; ++tid) {
      A a, b;
      posemb::bert_row_grad_sums<T>(p, row, tid, block, &a, &b);
      s1 += a;
      s2 += b;
    }
    for (int64_t tid = 0; tid < block; ++tid) posemb::bert_row_grad_write<T>(p, row, tid, block, s1, s2);
  });
  for (int64_t chunk = 0; chunk < p.row_chunks; ++chunk)
    for (int64_t d = 0; d < p.dim; ++d) posemb::bert_norm_grad_chunk<T>(p, chunk, d);
}

// The backward kernels the launcher picks for p (backward fields set): grad_x
// and the gamma/beta partials, then the final pass.
template <typename T>
posemb::BertLaunch walk_backward(const posemb::BertParams& p, int64_t sms = 1) {
  const auto plan = posemb::plan_bert_backward(p, sizeof(T), sizeof(posemb::detail::acc_t<T>), sms);
  if (!plan.warp) {
    walk_block_backward<T>(p, plan);
  } else if (plan.vector) {
    walk_warp_backward<T, true>(p, plan);
  } else {
    walk_warp_backward<T, false>(p, plan);
  }
  for (int64_t d = 0; d < p.dim; ++d) posemb::bert_norm_grad_final<T>(p, d);
  return plan;
}

// -------------------------------------------------------------------- tests

// In a captured CUDA graph the seed lives on the device and the host range
// check is skipped: the kernels read the seed themselves, and a token with an
// index outside its table gets NaN without any table being read. On all
// three paths: warp with 16-byte pieces (64), warp channel by channel (13),
// block (1100).
TEST(BertGridWalk, DeviceSeedAndIndicesOutsideTheTables) {
  for (const int64_t D : {64, 13, 1100}) {
    SCOPED_TRACE("dim " + std::to_string(D));
    torch::manual_seed(12);
    const int64_t B = 2, T = 5;
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
      const auto plan = walk_forward<float>(p);
      EXPECT_EQ(plan.warp, D <= 1024);
      EXPECT_EQ(plan.vector, D % 4 == 0 && D <= 1024);
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
}

struct Case {
  int64_t dim;
  bool misaligned;  // the word table a view one element into its rows: no 16-byte pieces
  double dropout;
  bool warp, vector;  // the path the plans must pick
};

// Relative tolerance of an output rounded to T (one ulp of it), fp32 for the rest.
template <typename T>
double out_rtol() {
  if constexpr (std::is_same_v<T, c10::BFloat16>) return 8e-3;
  if constexpr (std::is_same_v<T, c10::Half>) return 1e-3;
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  return 1e-5;
}

template <typename T>
void forward_and_backward(const Case& c) {
  using A = posemb::detail::acc_t<T>;
  const auto dtype = TorchType<T>::value;
  const auto acc_dtype = std::is_same_v<A, double> ? torch::kFloat64 : torch::kFloat32;
  const double acc_tol = std::is_same_v<A, double> ? 1e-12 : 1e-4;
  torch::manual_seed(11 + c.dim);
  const int64_t B = 2, T_ = 37, D = c.dim, offset = 2;
  const auto ids = torch::randint(0, 20, {B, T_});
  const auto types = torch::randint(0, 2, {B, T_});
  const auto word_storage = (torch::randn({20, D + 1}, torch::kFloat64) * 2 + 1).to(dtype);
  const auto word = c.misaligned ? word_storage.narrow(1, 1, D) : word_storage.narrow(1, 0, D).contiguous();
  auto pos = torch::randn({40, D}, torch::kFloat64).to(dtype), type = torch::randn({2, D}, torch::kFloat64).to(dtype);
  auto gamma = (1 + 0.2 * torch::randn({D}, torch::kFloat64)).to(dtype);
  auto beta = (0.1 * torch::randn({D}, torch::kFloat64)).to(dtype);
  const auto grad = torch::randn({B, T_, D}, torch::kFloat64).to(dtype);
  const int64_t seed_value = 5;
  const auto seed = torch::tensor(seed_value);
  for (auto* t : {&type, &gamma, &beta}) t->requires_grad_(true);

  // The CPU op, forward and backward.
  const auto [out, mean, rstd] = posemb::detail::BertEmbeddingsOp::handle().call(
      ids, word, pos, type, gamma, beta, std::nullopt, types, c10::SymInt(offset), 1e-12, c.dropout, seed, 0,
      std::nullopt);
  out.backward(grad);

  // The walks, with the params as bert_embeddings and its backward build them.
  std::vector<torch::Tensor> keep;
  auto p = posemb::detail::make_bert_params(ids, word, pos, type, gamma, std::nullopt, types, offset, c.dropout,
                                            seed, keep);
  auto walk_out = grid_walk::poisoned({B, T_, D}, dtype);
  auto walk_mean = torch::empty({B, T_}, acc_dtype), walk_rstd = torch::empty({B, T_}, acc_dtype);
  posemb::detail::set_bert_forward(p, beta, 1e-12, walk_out, walk_mean, walk_rstd, keep);
  const auto fplan = walk_forward<T>(p, 2);
  EXPECT_EQ(fplan.warp, c.warp);
  EXPECT_EQ(fplan.vector, c.vector);
  EXPECT_TRUE(torch::allclose(walk_out.to(torch::kFloat64), out.detach().to(torch::kFloat64), out_rtol<T>(), 1e-5));
  EXPECT_TRUE(torch::allclose(walk_mean, mean, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(walk_rstd, rstd, 1e-5, 1e-6));

  // The mask: element (row, d) kept when uniform(seed, row * dim + d) >= p.
  auto keep_mask = torch::ones({B, T_, D}, torch::kBool);
  if (c.dropout > 0) {
    auto m = keep_mask.view({-1});
    auto* k = m.data_ptr<bool>();
    for (int64_t i = 0; i < B * T_ * D; ++i) {
      k[i] = posemb::detail::uniform(static_cast<uint64_t>(seed_value), static_cast<uint64_t>(i)) >=
             static_cast<float>(c.dropout);
    }
    EXPECT_TRUE(torch::equal(walk_out != 0, keep_mask));
    EXPECT_TRUE(torch::equal(out.detach() != 0, keep_mask));
  }

  // Backward, three row chunks of 25, 25 and 24 rows (4 warps each on the warp path).
  auto grad_x = grid_walk::poisoned({B * T_, D}, acc_dtype);
  p.row_chunks = 3;
  auto partials = grid_walk::poisoned({2, p.row_chunks, D}, acc_dtype);
  auto grad_gamma = torch::empty({D}, dtype), grad_beta = torch::empty({D}, dtype);
  posemb::detail::set_bert_backward(p, grad, walk_mean, walk_rstd, grad_x, partials, grad_gamma, grad_beta, keep);
  const auto bplan = walk_backward<T>(p, 2);
  EXPECT_EQ(bplan.warp, c.warp);
  EXPECT_EQ(bplan.vector, c.vector);

  // The fp64 reference on the same (rounded) inputs and mask.
  const auto positions = torch::arange(T_) + offset;
  auto x64 = (word.to(torch::kFloat64).index({ids}) + pos.detach().to(torch::kFloat64).index({positions}) +
              type.detach().to(torch::kFloat64).index({types}))
                 .requires_grad_(true);
  auto g64 = gamma.detach().to(torch::kFloat64).requires_grad_(true);
  auto b64 = beta.detach().to(torch::kFloat64).requires_grad_(true);
  auto y64 = torch::layer_norm(x64, {D}, g64, b64, 1e-12);
  // The kernels scale kept elements by 1 / (1 - p), worked out in double.
  if (c.dropout > 0) y64 = y64 * keep_mask.to(torch::kFloat64) / (1 - double(c.dropout));
  y64.backward(grad.to(torch::kFloat64));
  EXPECT_TRUE(torch::allclose(grad_x.view({B, T_, D}).to(torch::kFloat64), x64.grad(), acc_tol, acc_tol))
      << (grad_x.view({B, T_, D}).to(torch::kFloat64) - x64.grad()).abs().max().template item<double>();
  const double rtol = std::max(out_rtol<T>(), acc_tol), atol = 1e-4;
  EXPECT_TRUE(torch::allclose(grad_gamma.to(torch::kFloat64), g64.grad(), rtol, atol));
  EXPECT_TRUE(torch::allclose(grad_beta.to(torch::kFloat64), b64.grad(), rtol, atol));
  EXPECT_TRUE(torch::allclose(grad_gamma.to(torch::kFloat64), gamma.grad().to(torch::kFloat64), rtol, atol));
  EXPECT_TRUE(torch::allclose(grad_beta.to(torch::kFloat64), beta.grad().to(torch::kFloat64), rtol, atol));
  // The type table's gradient is the per-type sum of grad_x (the CPU op's, in T).
  const auto expected_type = torch::zeros({2, D}, acc_dtype).index_add_(0, types.view(-1), grad_x);
  EXPECT_TRUE(torch::allclose(expected_type.to(torch::kFloat64), type.grad().to(torch::kFloat64), rtol, atol));
}

TEST(BertGridWalk, Float32) {
  const Case cases[] = {
      {768, false, 0.2, true, true},    // BERT-base: 16-byte pieces, 6 of 8 per lane
      {1024, false, 0.0, true, true},   // the widest row in registers
      {40, false, 0.2, true, true},     // fewer pieces than lanes
      {13, false, 0.2, true, false},    // odd: channel by channel
      {300, true, 0.2, true, false},    // misaligned rows: channel by channel
      {1100, false, 0.2, false, false}, // wider than a warp's registers: the block path
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("dim " + std::to_string(c.dim) + (c.misaligned ? " misaligned" : ""));
    forward_and_backward<float>(c);
  }
}

TEST(BertGridWalk, BFloat16AndHalf) {
  const Case cases[] = {
      {768, false, 0.2, true, true},   // 8 channels a piece, 3 of 4 per lane
      {1024, false, 0.0, true, true},
      {36, false, 0.2, true, false},   // 36 % 8 != 0: channel by channel
      {13, false, 0.0, true, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("bf16 dim " + std::to_string(c.dim));
    forward_and_backward<c10::BFloat16>(c);
  }
  for (const Case& c : {Case{64, false, 0.2, true, true}, Case{40, true, 0.2, true, false}}) {
    SCOPED_TRACE("fp16 dim " + std::to_string(c.dim));
    forward_and_backward<c10::Half>(c);
  }
}

TEST(BertGridWalk, Float64) {
  // Two channels a piece (dropout draws element by element), 512 channels at most in registers.
  const Case cases[] = {
      {512, false, 0.2, true, true},
      {30, false, 0.2, true, true},
      {13, false, 0.2, true, false},
      {600, false, 0.2, false, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("fp64 dim " + std::to_string(c.dim));
    forward_and_backward<double>(c);
  }
}

}  // namespace
