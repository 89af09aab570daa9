// bert_embeddings: LayerNorm(E_word[id] + E_pos[position] + E_type[type]),
// then dropout; and its backward.
//
// Torch-free. Every pass over a token row is a __host__ __device__ function
// over the channels first, first + stride, ...: the CUDA kernels call them
// with (thread, block size) and add up across the block (kernels/bert.cu),
// and tests/cpp/test_bert_grid.cpp walks them on the CPU. The CPU kernels
// (csrc/cpu/bert_cpu.cpp) run each row whole with the same formulas and share
// only bert_norm_grad_final. Rows are recomputed from the tables in each pass
// rather than stored: they are a few KB and stay in cache.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/launch_plan.cuh"
#include "kernels/math.cuh"
#include "kernels/positions.cuh"
#include "kernels/random.cuh"

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

/// The row chunk size for the gamma/beta sums: a function of the shape only,
/// so the sums are added in the same order whatever runs them.
inline int64_t bert_row_chunks(int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>(256, rows / 64));
}

/// The row passes: a block per token row, its threads across the channels.
inline RowLaunch plan_bert_rows(const BertParams& p, int64_t num_sms) {
  return plan_rows(p.batch * p.seq, p.dim, num_sms);
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

/// The dropout factor of element (row, d): 0 or 1/(1-p) in training, else 1.
template <typename A>
POSEMB_HD A dropout_factor(const BertParams& p, uint64_t seed, int64_t row, int64_t d) {
  if (!p.dropout) return A(1);
  const float u = uniform(seed, static_cast<uint64_t>(row * p.dim + d));
  return u >= p.dropout_p ? A(1) / (A(1) - A(p.dropout_p)) : A(0);
}

}  // namespace detail

// ------------------------------------------------------------------ forward

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

// ----------------------------------------------------------------- backward

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
  const int64_t rows = p.batch * p.seq;
  const int64_t per_chunk = (rows + p.row_chunks - 1) / p.row_chunks;
  const int64_t end = rows < (chunk + 1) * per_chunk ? rows : (chunk + 1) * per_chunk;
  const uint64_t seed = detail::dropout_seed(p);
  A sg = 0, sb = 0;
  for (int64_t row = chunk * per_chunk; row < end; ++row) {
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
