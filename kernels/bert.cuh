// bert_embeddings: LayerNorm(E_word[id] + E_pos[position] + E_type[type]),
// then dropout; and its backward.
//
// Torch-free. Two CUDA paths, both walked on the CPU by
// tests/cpp/test_bert_grid.cpp (kernels/bert.cu holds the __global__ shells):
//
// - The warp path (rows up to 32 * bert_lane_elems channels: 1024 in fp32
//   accumulation, 512 in fp64): a warp per token row, the row held in
//   registers. Lane l owns the row's pieces l, l + 32, ..., each a 16-byte
//   vector of the tables' type when every pointer and stride allows it (the
//   kVector path: LDG.E.128 / STG.E.128), else one channel. The bodies are
//   per lane; the sums across the warp are the shells' xor butterflies
//   (warp_sum), which the CPU walk repeats in the same order. Dropout draws
//   one Philox call per four channels. The backward's warps share a chunk of
//   rows (a block per chunk) and keep the chunk's gamma/beta sums in
//   registers, folded across the block's warps in warp order at the end.
// - The block path (wider rows): a block per row over the channels first,
//   first + stride, ..., re-reading the tables on each pass, block sums.
//
// The CPU kernels (csrc/cpu/bert_cpu.cpp) run each row whole with the same
// formulas and share only bert_norm_grad_final.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/launch_plan.cuh"
#include "kernels/math.cuh"
#include "kernels/positions.cuh"
#include "kernels/random.cuh"
#include "kernels/vector.cuh"

namespace posemb {

/// Arguments of bert_embeddings and of its backward. Tokens are rows
/// row = b * seq + t; out, grad_out and grad_x are (rows, dim) contiguous.
struct BertParams {
  int64_t batch = 0, seq = 0, dim = 0;
  // Token ids, positions (the shared position schemes) and token types; index
  // widths are runtime values, as in PositionParams.
  const void* ids = nullptr;  // [batch, seq] int32/int64
  bool ids_int64 = true;
  int64_t ids_stride_b = 0, ids_stride_t = 0;
  PositionParams pos;
  const void* types = nullptr;  // [batch, seq] int32/int64, or null for type 0
  bool types_int64 = true;
  int64_t types_stride_b = 0, types_stride_t = 0;
  // Tables (rows of unit column stride) and the LayerNorm affine parameters.
  const void* word = nullptr;
  const void* position = nullptr;
  const void* type = nullptr;
  int64_t word_stride = 0, position_stride = 0, type_stride = 0;
  int64_t word_rows = 0, position_rows = 0, type_rows = 0;
  const void* gamma = nullptr;  // [dim]
  const void* beta = nullptr;   // [dim]
  double eps = 1e-12;
  float eps_f32 = 1e-12f;  // eps rounded on the host, so fp32 kernels need no fp64 instruction
  // The kept elements' factor 1/(1 - p) comes from 1 - p worked out in
  // double on the host (1/(1 - fp32 p) is 9998.3 at p = 0.9999): fp64
  // kernels take the quotient, fp32 ones divide by 1 - p rounded once
  // (within 2 ulp of 1/(1 - p); the division keeps the scale in a register,
  // where a constant operand made the warp forward spill).
  double dropout_scale = 1.0;
  float dropout_keep_f32 = 1.0f;  // 1 - p
  // Training with p > 0: a uniform branch, where a template would double each pass.
  bool dropout = false;
  float dropout_p = 0.0f;
  uint64_t seed = 0;
  // dropout_seed on the GPU: read by the kernels, so a captured CUDA graph
  // whose seed is drawn on the device draws a new mask at every replay.
  const int64_t* seed_on_device = nullptr;
  // Forward outputs.
  void* out = nullptr;   // [rows, dim], the tables' dtype
  void* mean = nullptr;  // [rows], accumulation type
  void* rstd = nullptr;  // [rows], accumulation type
  // Backward.
  const void* grad_out = nullptr;  // [rows, dim], the tables' dtype
  void* grad_x = nullptr;          // [rows, dim] accumulation type: d loss / d (sum of rows)
  void* norm_partials = nullptr;   // [2, row_chunks, dim] accumulation type
  int64_t row_chunks = 1;          // fixed split of the rows for the gamma/beta sums
  void* grad_gamma = nullptr;      // [dim], the tables' dtype
  void* grad_beta = nullptr;       // [dim]
};

/// Where one token's three rows are; word < 0 marks a token with an index
/// outside its table (possible only in a captured CUDA graph, where the host
/// check is skipped): its embedding is NaN and no table is read.
struct BertRow {
  int64_t word, position, type;
};

/// The number of row chunks of the gamma/beta sums: a function of the shape
/// only, so the sums are added in the same order whatever runs them. At
/// least 16 rows a chunk and at most 256 chunks (the final pass adds them
/// one after another): on the GPU's warp path each chunk is a block, so
/// 4096 rows make 256 blocks rather than 64.
inline int64_t bert_row_chunks(int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>(256, rows / 16));
}

/// The block path's row passes: a block per token row, its threads across the channels.
inline RowLaunch plan_bert_rows(const BertParams& p, int64_t num_sms) {
  return plan_rows(p.batch * p.seq, p.dim, num_sms);
}

/// Channels of a row one lane holds in registers on the warp path: the
/// backward keeps four such arrays (xhat, dxhat and the gamma/beta sums), so
/// fp64 holds half as many to stay clear of spills.
template <typename A>
POSEMB_HD constexpr int bert_lane_elems() {
  return sizeof(A) == 8 ? 16 : 32;
}

/// Channels of a lane's piece on the warp path: a 16-byte vector of T, or one.
template <typename T, bool kVector>
POSEMB_HD constexpr int bert_piece() {
  return kVector ? static_cast<int>(16 / sizeof(T)) : 1;
}

constexpr int kBertForwardWarps = 4;  // warp path, forward: warps (rows at a time) per block
// Warp path, backward: warps sharing a block's row chunk. Four, so that two
// blocks of ~200-register threads fit on a multiprocessor and 256 chunks
// run in one wave on 132 of them.
constexpr int kBertGradWarps = 4;

/// How a bert launch covers the rows.
struct BertLaunch {
  bool warp = false;    // a warp per row, the row in registers; else a block per row
  bool vector = false;  // warp path: 16-byte pieces (the shells' kVector), else channel by channel
  int64_t grid = 1, block = 32;
};

namespace detail {

/// True when rows of dim elements of `elem` bytes can be read in 16-byte
/// pieces from every table and from gamma (and beta, out in the forward;
/// grad_out, grad_x and the partials, of the accumulation type, in the
/// backward).
inline bool bert_vector_ok(const BertParams& p, int64_t elem, bool backward) {
  const int64_t v = 16 / elem;
  auto aligned = [](const void* ptr) { return is_aligned(ptr, 16); };
  bool ok = v > 1 && p.dim % v == 0 && p.word_stride % v == 0 && p.position_stride % v == 0 &&
            p.type_stride % v == 0 && aligned(p.word) && aligned(p.position) && aligned(p.type) &&
            aligned(p.gamma);
  if (backward) {
    ok = ok && aligned(p.grad_out) && aligned(p.grad_x) && aligned(p.norm_partials);
  } else {
    ok = ok && aligned(p.beta) && aligned(p.out);
  }
  return ok;
}

}  // namespace detail

/// Which path a row takes: the warp path when it fits in a warp's registers
/// (32 lanes of bert_lane_elems channels), else the block path, whose launch
/// this fills in.
inline BertLaunch plan_bert_path(const BertParams& p, int64_t acc, int64_t num_sms) {
  BertLaunch plan;
  plan.warp = p.dim <= 32 * (acc == 8 ? bert_lane_elems<double>() : bert_lane_elems<float>());
  if (!plan.warp) {
    const RowLaunch rl = plan_bert_rows(p, num_sms);
    plan.grid = rl.grid;
    plan.block = rl.block;
  }
  return plan;
}

/// The forward's launch for tables of `elem`-byte elements accumulated in
/// `acc`-byte types: the warp path (kBertForwardWarps rows per block at a
/// time, grid-stride over the rows) when a row fits in a warp's registers,
/// else the block path. Host code, shared by the launcher and the CPU walk.
inline BertLaunch plan_bert_forward(const BertParams& p, int64_t elem, int64_t acc, int64_t num_sms) {
  BertLaunch plan = plan_bert_path(p, acc, num_sms);
  if (!plan.warp) return plan;
  const int64_t rows = p.batch * p.seq;
  plan.vector = detail::bert_vector_ok(p, elem, /*backward=*/false);
  plan.block = 32 * kBertForwardWarps;
  plan.grid = std::max<int64_t>(1, std::min<int64_t>((rows + kBertForwardWarps - 1) / kBertForwardWarps,
                                                     std::max<int64_t>(1, num_sms) * 8));
  return plan;
}

/// The backward's grad_x launch (p.row_chunks set): on the warp path a block
/// of kBertGradWarps warps per row chunk, which also sums the chunk's
/// gamma/beta partials; else the block path (its own chunk pass follows).
inline BertLaunch plan_bert_backward(const BertParams& p, int64_t elem, int64_t acc, int64_t num_sms) {
  BertLaunch plan = plan_bert_path(p, acc, num_sms);
  if (!plan.warp) return plan;
  plan.vector = detail::bert_vector_ok(p, elem, /*backward=*/true);
  plan.block = 32 * kBertGradWarps;
  plan.grid = p.row_chunks;
  return plan;
}

namespace detail {

POSEMB_HD BertRow bert_row(const BertParams& p, int64_t row) {
  const int64_t b = row / p.seq, t = row % p.seq;
  BertRow r;
  r.word = load_index(p.ids, p.ids_int64, b * p.ids_stride_b + t * p.ids_stride_t);
  r.position = token_position(p.pos, b, t);
  r.type = p.types ? load_index(p.types, p.types_int64, b * p.types_stride_b + t * p.types_stride_t)
                   : 0;
  const bool in_range = r.word >= 0 && r.word < p.word_rows && r.position >= 0 &&
                        r.position < p.position_rows && r.type >= 0 && r.type < p.type_rows;
  if (!in_range) r.word = -1;
  return r;
}

/// word + position + type embedding at channel d.
template <typename T>
POSEMB_HD acc_t<T> bert_input(const BertParams& p, const BertRow& r, int64_t d) {
  using Ops = ScalarOps<T>;
  if (r.word < 0) return static_cast<acc_t<T>>(NAN);
  return Ops::to_acc(static_cast<const T*>(p.word)[r.word * p.word_stride + d]) +
         Ops::to_acc(static_cast<const T*>(p.position)[r.position * p.position_stride + d]) +
         Ops::to_acc(static_cast<const T*>(p.type)[r.type * p.type_stride + d]);
}

/// eps in the accumulation type.
template <typename A>
POSEMB_HD A bert_eps(const BertParams& p) {
  if constexpr (std::is_same_v<A, double>) {
    return p.eps;
  } else {
    return p.eps_f32;
  }
}

/// The dropout seed, read once per row and thread.
POSEMB_HD uint64_t dropout_seed(const BertParams& p) {
  if (!p.dropout) return 0;
  return p.seed_on_device ? static_cast<uint64_t>(*p.seed_on_device) : p.seed;
}

/// 1/(1 - p) in the accumulation type A.
template <typename A>
POSEMB_HD A dropout_keep(const BertParams& p) {
  if constexpr (sizeof(A) == 8) {
    return p.dropout_scale;
  } else {
    return 1.0f / p.dropout_keep_f32;
  }
}

/// The dropout factor of element (row, d): 0 or 1/(1-p) in training, else 1.
template <typename A>
POSEMB_HD A dropout_factor(const BertParams& p, uint64_t seed, int64_t row, int64_t d) {
  if (!p.dropout) return A(1);
  const float u = uniform(seed, static_cast<uint64_t>(row * p.dim + d));
  return u >= p.dropout_p ? dropout_keep<A>(p) : A(0);
}

/// Rows [begin, end) of row chunk `chunk` of the gamma/beta sums.
POSEMB_HD void bert_chunk_rows(const BertParams& p, int64_t chunk, int64_t* begin, int64_t* end) {
  const int64_t rows = p.batch * p.seq;
  const int64_t per_chunk = (rows + p.row_chunks - 1) / p.row_chunks;
  *begin = chunk * per_chunk;
  *end = rows < *begin + per_chunk ? rows : *begin + per_chunk;
}

}  // namespace detail

// ---------------------------------------------------------- block path: forward

/// This thread's part of the row sum.
template <typename T>
POSEMB_HD detail::acc_t<T> bert_row_sum(const BertParams& p, int64_t row, int64_t first, int64_t stride) {
  const BertRow r = detail::bert_row(p, row);
  detail::acc_t<T> s = 0;
  for (int64_t d = first; d < p.dim; d += stride) s += detail::bert_input<T>(p, r, d);
  return s;
}

/// This thread's part of the sum of squared deviations from the mean.
template <typename T>
POSEMB_HD detail::acc_t<T> bert_row_sq(const BertParams& p, int64_t row, int64_t first, int64_t stride,
                                       detail::acc_t<T> mean) {
  const BertRow r = detail::bert_row(p, row);
  detail::acc_t<T> s = 0;
  for (int64_t d = first; d < p.dim; d += stride) {
    const auto c = detail::bert_input<T>(p, r, d) - mean;
    s += c * c;
  }
  return s;
}

/// out = dropout((x - mean) * rstd * gamma + beta) for this thread's channels.
template <typename T>
POSEMB_HD void bert_row_write(const BertParams& p, int64_t row, int64_t first, int64_t stride,
                              detail::acc_t<T> mean, detail::acc_t<T> rstd) {
  using Ops = detail::ScalarOps<T>;
  using A = detail::acc_t<T>;
  const BertRow r = detail::bert_row(p, row);
  const uint64_t seed = detail::dropout_seed(p);
  const T* gamma = static_cast<const T*>(p.gamma);
  const T* beta = static_cast<const T*>(p.beta);
  T* out = static_cast<T*>(p.out) + row * p.dim;
  for (int64_t d = first; d < p.dim; d += stride) {
    const A y = (detail::bert_input<T>(p, r, d) - mean) * rstd * Ops::to_acc(gamma[d]) + Ops::to_acc(beta[d]);
    out[d] = Ops::from_acc(y * detail::dropout_factor<A>(p, seed, row, d));
  }
}

// --------------------------------------------------------- block path: backward

/// This thread's parts of sum(dxhat) and sum(dxhat * xhat), dxhat = g * gamma,
/// g the incoming gradient through dropout.
template <typename T>
POSEMB_HD void bert_row_grad_sums(const BertParams& p, int64_t row, int64_t first, int64_t stride,
                                  detail::acc_t<T>* sum_dxhat, detail::acc_t<T>* sum_dxhat_xhat) {
  using Ops = detail::ScalarOps<T>;
  using A = detail::acc_t<T>;
  const BertRow r = detail::bert_row(p, row);
  const uint64_t seed = detail::dropout_seed(p);
  const A mean = static_cast<const A*>(p.mean)[row], rstd = static_cast<const A*>(p.rstd)[row];
  const T* g = static_cast<const T*>(p.grad_out) + row * p.dim;
  const T* gamma = static_cast<const T*>(p.gamma);
  A s1 = 0, s2 = 0;
  for (int64_t d = first; d < p.dim; d += stride) {
    const A xhat = (detail::bert_input<T>(p, r, d) - mean) * rstd;
    const A dxhat = Ops::to_acc(g[d]) * detail::dropout_factor<A>(p, seed, row, d) * Ops::to_acc(gamma[d]);
    s1 += dxhat;
    s2 += dxhat * xhat;
  }
  *sum_dxhat = s1;
  *sum_dxhat_xhat = s2;
}

/// grad_x = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
template <typename T>
POSEMB_HD void bert_row_grad_write(const BertParams& p, int64_t row, int64_t first, int64_t stride,
                                   detail::acc_t<T> sum_dxhat, detail::acc_t<T> sum_dxhat_xhat) {
  using Ops = detail::ScalarOps<T>;
  using A = detail::acc_t<T>;
  const BertRow r = detail::bert_row(p, row);
  const uint64_t seed = detail::dropout_seed(p);
  const A mean = static_cast<const A*>(p.mean)[row], rstd = static_cast<const A*>(p.rstd)[row];
  const A m1 = sum_dxhat / A(p.dim), m2 = sum_dxhat_xhat / A(p.dim);
  const T* g = static_cast<const T*>(p.grad_out) + row * p.dim;
  const T* gamma = static_cast<const T*>(p.gamma);
  A* gx = static_cast<A*>(p.grad_x) + row * p.dim;
  for (int64_t d = first; d < p.dim; d += stride) {
    const A xhat = (detail::bert_input<T>(p, r, d) - mean) * rstd;
    const A dxhat = Ops::to_acc(g[d]) * detail::dropout_factor<A>(p, seed, row, d) * Ops::to_acc(gamma[d]);
    gx[d] = rstd * (dxhat - m1 - xhat * m2);
  }
}

/// Channel d of the gamma and beta gradients summed over row chunk `chunk`.
template <typename T>
POSEMB_HD void bert_norm_grad_chunk(const BertParams& p, int64_t chunk, int64_t d) {
  using Ops = detail::ScalarOps<T>;
  using A = detail::acc_t<T>;
  int64_t begin, end;
  detail::bert_chunk_rows(p, chunk, &begin, &end);
  const uint64_t seed = detail::dropout_seed(p);
  A sg = 0, sb = 0;
  for (int64_t row = begin; row < end; ++row) {
    const BertRow r = detail::bert_row(p, row);
    const A mean = static_cast<const A*>(p.mean)[row], rstd = static_cast<const A*>(p.rstd)[row];
    const A g = Ops::to_acc(static_cast<const T*>(p.grad_out)[row * p.dim + d]) *
                detail::dropout_factor<A>(p, seed, row, d);
    sg += g * (detail::bert_input<T>(p, r, d) - mean) * rstd;
    sb += g;
  }
  A* partials = static_cast<A*>(p.norm_partials);
  partials[chunk * p.dim + d] = sg;
  partials[(p.row_chunks + chunk) * p.dim + d] = sb;
}

/// Channel d of the gamma and beta gradients: the chunks added in order.
template <typename T>
POSEMB_HD void bert_norm_grad_final(const BertParams& p, int64_t d) {
  using Ops = detail::ScalarOps<T>;
  using A = detail::acc_t<T>;
  const A* partials = static_cast<const A*>(p.norm_partials);
  A sg = 0, sb = 0;
  for (int64_t c = 0; c < p.row_chunks; ++c) {
    sg += partials[c * p.dim + d];
    sb += partials[(p.row_chunks + c) * p.dim + d];
  }
  static_cast<T*>(p.grad_gamma)[d] = Ops::from_acc(sg);
  static_cast<T*>(p.grad_beta)[d] = Ops::from_acc(sb);
}


// ------------------------------------------------------------------ warp path
//
// Lane `lane` of the warp on row `row` owns pieces j = c * 32 + lane,
// c < K, of V channels each (channels j * V .. j * V + V - 1), j < dim / V.
// V = 16 / sizeof(T) on the vector path, 1 on the channel-by-channel one;
// K * V = bert_lane_elems. Every array below is indexed by unrolled
// constants only, so it lives in registers.

namespace detail {

/// V channels of T from `ptr` in the accumulation type: one 16-byte load when V > 1.
template <typename T, int V>
POSEMB_HD void load_acc(const T* ptr, acc_t<T> (&out)[V]) {
  if constexpr (V > 1) {
    const Vec<T, V> x = load_vec<T, V>(ptr);
    POSEMB_UNROLL
    for (int v = 0; v < V; ++v) out[v] = ScalarOps<T>::to_acc(x.v[v]);
  } else {
    out[0] = ScalarOps<T>::to_acc(*ptr);
  }
}

/// V channels rounded to T at `ptr`: one 16-byte store when V > 1.
template <typename T, int V>
POSEMB_HD void store_from_acc(T* ptr, const acc_t<T> (&in)[V]) {
  if constexpr (V > 1) {
    Vec<T, V> x;
    POSEMB_UNROLL
    for (int v = 0; v < V; ++v) x.v[v] = ScalarOps<T>::from_acc(in[v]);
    store_vec<T, V>(ptr, x);
  } else {
    *ptr = ScalarOps<T>::from_acc(in[0]);
  }
}

/// V values of the accumulation type A at `ptr` (16-byte aligned when V > 1):
/// 16-byte stores, V * sizeof(A) / 16 of them.
template <typename A, int V>
POSEMB_HD void store_acc(A* ptr, const A (&in)[V]) {
  if constexpr (V > 1) {
    constexpr int W = 16 / static_cast<int>(sizeof(A));
    static_assert(V % W == 0, "16-byte pieces");
    POSEMB_UNROLL
    for (int i = 0; i < V / W; ++i) {
      Vec<A, W> x;
      POSEMB_UNROLL
      for (int w = 0; w < W; ++w) x.v[w] = in[i * W + w];
      store_vec<A, W>(ptr + i * W, x);
    }
  } else {
    *ptr = in[0];
  }
}

/// The dropout factors of elements index .. index + V - 1 (index = row * dim
/// + first channel), bitwise dropout_factor's: with V a multiple of 4 the
/// index is too (dim and the piece's first channel are), so each Philox
/// call serves four channels and its words are read with constant indices.
template <typename A, int V>
POSEMB_HD void dropout_factors(const BertParams& p, uint64_t seed, uint64_t index, A (&f)[V]) {
  const A keep = dropout_keep<A>(p);
  if constexpr (V % 4 == 0) {
    POSEMB_UNROLL
    for (int q = 0; q < V / 4; ++q) {
      uint32_t words[4];
      philox((index >> 2) + q, seed, words);
      POSEMB_UNROLL
      for (int i = 0; i < 4; ++i) f[4 * q + i] = uniform_from_word(words[i]) >= p.dropout_p ? keep : A(0);
    }
  } else {
    POSEMB_UNROLL
    for (int v = 0; v < V; ++v) f[v] = uniform(seed, index + v) >= p.dropout_p ? keep : A(0);
  }
}

/// Pieces of V channels in a row.
template <int V>
POSEMB_HD int64_t bert_pieces(const BertParams& p) {
  return p.dim / V;
}

}  // namespace detail

/// One lane's share of a row in the forward: x = word + position + type.
template <typename A, int V, int K>
struct BertLane {
  A x[K][V];
};

/// Forward, step 1: gathers the lane's pieces of row `row` into `s`; returns
/// their sum (pieces in order, channels in order), the lane's part of the
/// row sum. A token outside its tables (only in a captured CUDA graph) is
/// NaN, and no table is read.
template <typename T, int V, int K>
POSEMB_HD detail::acc_t<T> bert_warp_gather(const BertParams& p, int64_t row, int lane,
                                            BertLane<detail::acc_t<T>, V, K>& s) {
  using A = detail::acc_t<T>;
  const BertRow r = detail::bert_row(p, row);
  const int64_t pieces = detail::bert_pieces<V>(p);
  const bool valid = r.word >= 0;  // else no row is formed, let alone read
  const T* word = static_cast<const T*>(p.word) + (valid ? r.word * p.word_stride : 0);
  const T* position = static_cast<const T*>(p.position) + (valid ? r.position * p.position_stride : 0);
  const T* type = static_cast<const T*>(p.type) + (valid ? r.type * p.type_stride : 0);
  A sum = 0;
  POSEMB_UNROLL
  for (int c = 0; c < K; ++c) {
    const int64_t j = int64_t(c) * 32 + lane;
    POSEMB_UNROLL
    for (int v = 0; v < V; ++v) s.x[c][v] = A(0);
    if (j < pieces) {
      if (!valid) {
        POSEMB_UNROLL
        for (int v = 0; v < V; ++v) s.x[c][v] = static_cast<A>(NAN);
      } else {
        A a[V], b[V], t[V];
        detail::load_acc<T, V>(word + j * V, a);
        detail::load_acc<T, V>(position + j * V, b);
        detail::load_acc<T, V>(type + j * V, t);
        POSEMB_UNROLL
        for (int v = 0; v < V; ++v) s.x[c][v] = a[v] + b[v] + t[v];
      }
      POSEMB_UNROLL
      for (int v = 0; v < V; ++v) sum += s.x[c][v];
    }
  }
  return sum;
}

/// Forward, step 2 (mean = the warp's sum / dim): the lane's part of the sum
/// of squared deviations.
template <typename T, int V, int K>
POSEMB_HD detail::acc_t<T> bert_warp_sq(const BertParams& p, int lane, const BertLane<detail::acc_t<T>, V, K>& s,
                                        detail::acc_t<T> mean) {
  using A = detail::acc_t<T>;
  const int64_t pieces = detail::bert_pieces<V>(p);
  A sum = 0;
  POSEMB_UNROLL
  for (int c = 0; c < K; ++c) {
    if (int64_t(c) * 32 + lane < pieces) {
      POSEMB_UNROLL
      for (int v = 0; v < V; ++v) {
        const A d = s.x[c][v] - mean;
        sum += d * d;
      }
    }
  }
  return sum;
}

/// rstd from the warp's (or block's) sum of squared deviations.
template <typename A>
POSEMB_HD A bert_rstd(const BertParams& p, A sum_sq) {
#if defined(__CUDA_ARCH__)
  return A(1) / sqrt(sum_sq / A(p.dim) + detail::bert_eps<A>(p));
#else
  return A(1) / std::sqrt(sum_sq / A(p.dim) + detail::bert_eps<A>(p));
#endif
}

/// Forward, step 3: out = dropout((x - mean) * rstd * gamma + beta) for the
/// lane's pieces, one store per piece; lane 0 writes mean and rstd. `seed`
/// is dropout_seed(p).
template <typename T, int V, int K>
POSEMB_HD void bert_warp_write(const BertParams& p, int64_t row, int lane, const BertLane<detail::acc_t<T>, V, K>& s,
                               detail::acc_t<T> mean, detail::acc_t<T> rstd, uint64_t seed) {
  using A = detail::acc_t<T>;
  const int64_t pieces = detail::bert_pieces<V>(p);
  const T* gamma = static_cast<const T*>(p.gamma);
  const T* beta = static_cast<const T*>(p.beta);
  T* out = static_cast<T*>(p.out) + row * p.dim;
  POSEMB_UNROLL
  for (int c = 0; c < K; ++c) {
    const int64_t j = int64_t(c) * 32 + lane;
    if (j < pieces) {
      A g[V], b[V], y[V];
      detail::load_acc<T, V>(gamma + j * V, g);
      detail::load_acc<T, V>(beta + j * V, b);
      POSEMB_UNROLL
      for (int v = 0; v < V; ++v) y[v] = (s.x[c][v] - mean) * rstd * g[v] + b[v];
      if (p.dropout) {
        A f[V];
        detail::dropout_factors<A, V>(p, seed, static_cast<uint64_t>(row * p.dim + j * V), f);
        POSEMB_UNROLL
        for (int v = 0; v < V; ++v) y[v] *= f[v];
      }
      detail::store_from_acc<T, V>(out + j * V, y);
    }
  }
  if (lane == 0) {
    static_cast<A*>(p.mean)[row] = mean;
    static_cast<A*>(p.rstd)[row] = rstd;
  }
}

/// One lane's share of a row in the backward.
template <typename A, int V, int K>
struct BertGradLane {
  A xhat[K][V];
  A dxhat[K][V];  // g * gamma, g the incoming gradient through dropout
  A rstd;
};

/// One lane's share of its warp's gamma and beta sums over the rows it ran.
template <typename A, int V, int K>
struct BertNormLane {
  A g_xhat[K][V];  // sum of g * xhat: gamma's gradient
  A g[K][V];       // sum of g: beta's
  POSEMB_HD void zero() {
    POSEMB_UNROLL
    for (int c = 0; c < K; ++c) {
      POSEMB_UNROLL
      for (int v = 0; v < V; ++v) g_xhat[c][v] = g[c][v] = A(0);
    }
  }
};

/// Backward, step 1: the lane's pieces of row `row` (xhat, dxhat into `s`),
/// added to the lane's gamma/beta sums `acc`; *sum_dxhat and
/// *sum_dxhat_xhat get the lane's parts of the row's two sums.
template <typename T, int V, int K>
POSEMB_HD void bert_warp_grad_load(const BertParams& p, int64_t row, int lane, uint64_t seed,
                                   BertGradLane<detail::acc_t<T>, V, K>& s, BertNormLane<detail::acc_t<T>, V, K>& acc,
                                   detail::acc_t<T>* sum_dxhat, detail::acc_t<T>* sum_dxhat_xhat) {
  using A = detail::acc_t<T>;
  BertLane<A, V, K> x;
  bert_warp_gather<T, V, K>(p, row, lane, x);
  const A mean = static_cast<const A*>(p.mean)[row], rstd = static_cast<const A*>(p.rstd)[row];
  s.rstd = rstd;
  const int64_t pieces = detail::bert_pieces<V>(p);
  const T* grad = static_cast<const T*>(p.grad_out) + row * p.dim;
  const T* gamma = static_cast<const T*>(p.gamma);
  A s1 = 0, s2 = 0;
  POSEMB_UNROLL
  for (int c = 0; c < K; ++c) {
    const int64_t j = int64_t(c) * 32 + lane;
    POSEMB_UNROLL
    for (int v = 0; v < V; ++v) s.xhat[c][v] = s.dxhat[c][v] = A(0);
    if (j < pieces) {
      A g[V], ga[V];
      detail::load_acc<T, V>(grad + j * V, g);
      detail::load_acc<T, V>(gamma + j * V, ga);
      if (p.dropout) {
        A f[V];
        detail::dropout_factors<A, V>(p, seed, static_cast<uint64_t>(row * p.dim + j * V), f);
        POSEMB_UNROLL
        for (int v = 0; v < V; ++v) g[v] *= f[v];
      }
      POSEMB_UNROLL
      for (int v = 0; v < V; ++v) {
        const A xhat = (x.x[c][v] - mean) * rstd;
        const A dxhat = g[v] * ga[v];
        s.xhat[c][v] = xhat;
        s.dxhat[c][v] = dxhat;
        acc.g_xhat[c][v] += g[v] * xhat;
        acc.g[c][v] += g[v];
        s1 += dxhat;
        s2 += dxhat * xhat;
      }
    }
  }
  *sum_dxhat = s1;
  *sum_dxhat_xhat = s2;
}

/// Backward, step 2 (the row's two sums added across the warp):
/// grad_x = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
template <typename T, int V, int K>
POSEMB_HD void bert_warp_grad_write(const BertParams& p, int64_t row, int lane,
                                    const BertGradLane<detail::acc_t<T>, V, K>& s, detail::acc_t<T> sum_dxhat,
                                    detail::acc_t<T> sum_dxhat_xhat) {
  using A = detail::acc_t<T>;
  const int64_t pieces = detail::bert_pieces<V>(p);
  const A m1 = sum_dxhat / A(p.dim), m2 = sum_dxhat_xhat / A(p.dim);
  A* gx = static_cast<A*>(p.grad_x) + row * p.dim;
  POSEMB_UNROLL
  for (int c = 0; c < K; ++c) {
    const int64_t j = int64_t(c) * 32 + lane;
    if (j < pieces) {
      A out[V];
      POSEMB_UNROLL
      for (int v = 0; v < V; ++v) out[v] = s.rstd * (s.dxhat[c][v] - m1 - s.xhat[c][v] * m2);
      detail::store_acc<A, V>(gx + j * V, out);
    }
  }
}

/// Backward, step 3, once per warp w = 0 .. warps - 1 of the block of row
/// chunk `chunk`, in that order with a barrier between: warp w adds its sums
/// to the block's in `fold` ([2][dim] of A, shared), warp 0 starting them;
/// the last warp writes the chunk's partials (norm_partials[0][chunk] and
/// [1][chunk]) instead. So a chunk's sums are ((warp 0 + warp 1) + ...) of
/// the warps' sums over rows begin + w, begin + w + warps, ... in order.
template <typename T, int V, int K>
POSEMB_HD void bert_warp_fold(const BertParams& p, int64_t chunk, int warp, int warps, int lane,
                              const BertNormLane<detail::acc_t<T>, V, K>& acc, detail::acc_t<T>* fold) {
  using A = detail::acc_t<T>;
  const int64_t pieces = detail::bert_pieces<V>(p);
  A* partials = static_cast<A*>(p.norm_partials);
  POSEMB_UNROLL
  for (int c = 0; c < K; ++c) {
    const int64_t j = int64_t(c) * 32 + lane;
    if (j < pieces) {
      A sg[V], sb[V];
      POSEMB_UNROLL
      for (int v = 0; v < V; ++v) {
        sg[v] = acc.g_xhat[c][v];
        sb[v] = acc.g[c][v];
        if (warp > 0) {
          sg[v] = fold[j * V + v] + sg[v];
          sb[v] = fold[p.dim + j * V + v] + sb[v];
        }
      }
      if (warp + 1 < warps) {
        POSEMB_UNROLL
        for (int v = 0; v < V; ++v) {
          fold[j * V + v] = sg[v];
          fold[p.dim + j * V + v] = sb[v];
        }
      } else {
        detail::store_acc<A, V>(partials + chunk * p.dim + j * V, sg);
        detail::store_acc<A, V>(partials + (p.row_chunks + chunk) * p.dim + j * V, sb);
      }
    }
  }
}

#ifdef POSEMB_LAUNCHERS
/// Launches bert_embeddings' forward (out, mean, rstd) on `stream`.
cudaError_t launch_bert_forward(const BertParams& params, DType dtype, int num_sms,
                                cudaStream_t stream);

/// Launches bert_embeddings' backward up to the tables: grad_x and the
/// LayerNorm gradients. The tables' gradients follow via launch_table_grad.
cudaError_t launch_bert_backward(const BertParams& params, DType dtype, int num_sms,
                                 cudaStream_t stream);
#endif

}  // namespace posemb
