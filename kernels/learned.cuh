// learned_add: y = x + W[position], and the gradient of W, deterministic.
//
// Torch-free. Both bodies are __host__ __device__: the CPU kernels call them
// with one "thread" per row, the CUDA kernels with a block per row and its
// threads across the channels, so CPU and GPU run the same code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/launch_plan.cuh"
#include "kernels/math.cuh"
#include "kernels/positions.cuh"
#include "kernels/vector.cuh"

namespace posemb {

/// Arguments of one learned_add launch: logical shape (batch, seq, dim), any
/// strides; weight is (num_embeddings, dim).
struct LearnedParams {
  const void* x = nullptr;       // [batch, seq, dim]
  void* y = nullptr;             // [batch, seq, dim]
  const void* weight = nullptr;  // [num_embeddings, dim]
  int64_t batch = 0, seq = 0, dim = 0, num_embeddings = 0;
  int64_t x_stride_b = 0, x_stride_t = 0, x_stride_d = 1;
  int64_t y_stride_b = 0, y_stride_t = 0, y_stride_d = 1;
  int64_t w_stride_n = 0, w_stride_d = 1;
  PositionParams pos;
};

/// Arguments of the weight gradient: tokens sorted by position (stably).
/// On the GPU the sorted tokens are cut into fixed chunks of chunk_tokens,
/// so a row that thousands of tokens hit (BERT's type row) is summed by many
/// blocks, chunk partials then added in chunk order: deterministic, since
/// the cut depends on the sizes only.
struct LearnedGradParams {
  const void* grad = nullptr;  // [batch, seq, dim], any strides
  int64_t batch = 0, seq = 0, dim = 0;
  int64_t g_stride_b = 0, g_stride_t = 0, g_stride_d = 1;
  const int64_t* sorted_positions = nullptr;  // [num_tokens], ascending
  const int64_t* order = nullptr;             // [num_tokens] token index b * seq + t
  int64_t num_tokens = 0;
  void* grad_weight = nullptr;  // [num_embeddings, dim], contiguous
  int64_t num_embeddings = 0;
  bool has_padding_idx = false;  // that row's gradient is zero
  int64_t padding_idx = 0;
  int64_t chunk_tokens = 256;
  void* partials = nullptr;  // [num_chunks, 2, dim], accumulation type (GPU only)
};

/// Number of token chunks of the GPU weight gradient.
POSEMB_HD int64_t learned_grad_chunks(const LearnedGradParams& p) {
  return (p.num_tokens + p.chunk_tokens - 1) / p.chunk_tokens;
}

/// Elements each thread moves per step: one 128-bit vector, or one element.
template <typename T, bool kVector>
POSEMB_HD constexpr int learned_elems_per_step() {
  return kVector ? int(16 / sizeof(T)) : 1;
}

/// True when every row of x, y and weight can be read in 128-bit vectors.
inline bool learned_vectorizable(const LearnedParams& p, int64_t elem_size) {
  const int64_t v = 16 / elem_size;
  return p.dim % v == 0 && p.x_stride_d == 1 && p.y_stride_d == 1 && p.w_stride_d == 1 &&
         p.x_stride_b % v == 0 && p.x_stride_t % v == 0 && p.y_stride_b % v == 0 &&
         p.y_stride_t % v == 0 && p.w_stride_n % v == 0 && detail::is_aligned(p.x, 16) &&
         detail::is_aligned(p.y, 16) && detail::is_aligned(p.weight, 16);
}

/// Row `row` (= b * seq + t) of y, channel steps first, first + stride, ...
/// An out-of-range position (the host checks first) yields NaN, never a read
/// outside the weight.
template <typename T, bool kVector>
POSEMB_HD void learned_add_row(const LearnedParams& p, int64_t row, int64_t first, int64_t stride) {
  using Ops = detail::ScalarOps<T>;
  using A = detail::acc_t<T>;
  constexpr int K = learned_elems_per_step<T, kVector>();
  const int64_t b = row / p.seq, t = row % p.seq;
  const int64_t pos = token_position(p.pos, b, t);
  const bool in_range = pos >= 0 && pos < p.num_embeddings;
  const T* x = static_cast<const T*>(p.x) + b * p.x_stride_b + t * p.x_stride_t;
  T* y = static_cast<T*>(p.y) + b * p.y_stride_b + t * p.y_stride_t;
  const T* w = static_cast<const T*>(p.weight) + (in_range ? pos : 0) * p.w_stride_n;
  const A nan = static_cast<A>(NAN);
  for (int64_t d = first * K; d < p.dim; d += stride * K) {
    if constexpr (kVector) {
      auto xv = detail::load_vec<T, K>(x + d);
      const auto wv = detail::load_vec<T, K>(w + d);
      POSEMB_UNROLL
      for (int k = 0; k < K; ++k) {
        xv.v[k] = Ops::from_acc(in_range ? Ops::to_acc(xv.v[k]) + Ops::to_acc(wv.v[k]) : nan);
      }
      detail::store_vec<T, K>(y + d, xv);
    } else {
      const A sum = in_range ? Ops::to_acc(x[d * p.x_stride_d]) + Ops::to_acc(w[d * p.w_stride_d]) : nan;
      y[d * p.y_stride_d] = Ops::from_acc(sum);
    }
  }
}

/// A block per row, its threads across the channels (in 128-bit vectors when
/// every row allows).
inline RowLaunch plan_learned_add(const LearnedParams& p, int64_t elem_size, int64_t num_sms) {
  const bool vector = learned_vectorizable(p, elem_size);
  RowLaunch plan = plan_rows(p.batch * p.seq, vector ? p.dim / (16 / elem_size) : p.dim, num_sms);
  plan.vector = vector;
  return plan;
}

/// The two passes of the GPU weight gradient: one block per token chunk,
/// then one block per table row; threads across the channels.
inline RowLaunch plan_learned_grad_chunks(const LearnedGradParams& p, int64_t num_sms) {
  return plan_rows(learned_grad_chunks(p), p.dim, num_sms);
}

inline RowLaunch plan_learned_grad_rows(const LearnedGradParams& p, int64_t num_sms) {
  return plan_rows(p.num_embeddings, p.dim, num_sms);
}

namespace detail {

/// First index in sorted[0, n) whose value is >= key.
POSEMB_HD int64_t lower_bound(const int64_t* sorted, int64_t n, int64_t key) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (sorted[mid] < key) lo = mid + 1; else hi = mid;
  }
  return lo;
}

}  // namespace detail

namespace detail {

template <typename G, typename A>
POSEMB_HD A grad_at(const LearnedGradParams& p, int64_t k, int64_t d) {
  const int64_t token = p.order[k];
  const int64_t b = token / p.seq, t = token % p.seq;
  return static_cast<A>(ScalarOps<G>::to_acc(
      static_cast<const G*>(p.grad)[b * p.g_stride_b + t * p.g_stride_t + d * p.g_stride_d]));
}

POSEMB_HD bool zero_row(const LearnedGradParams& p, int64_t n) {
  return p.has_padding_idx && n == p.padding_idx;
}

}  // namespace detail

/// Pass 1, token chunk j: each run of equal rows in the chunk is summed in
/// token order. A row whose tokens all lie in the chunk is written to the
/// gradient; a run that crosses the chunk's start or end goes to the chunk's
/// partial slot 0 (the run that starts the chunk) or 1 (the one ending it).
/// G is the incoming gradient's type (the table's, or its accumulation type
/// when another kernel produced it), T the table's.
template <typename G, typename T>
POSEMB_HD void learned_grad_chunk(const LearnedGradParams& p, int64_t j, int64_t first,
                                  int64_t stride) {
  using A = detail::acc_t<T>;
  const int64_t k0 = j * p.chunk_tokens;
  const int64_t k1 = k0 + p.chunk_tokens < p.num_tokens ? k0 + p.chunk_tokens : p.num_tokens;
  for (int64_t k = k0; k < k1;) {
    const int64_t n = p.sorted_positions[k];
    const int64_t seg_lo = detail::lower_bound(p.sorted_positions, p.num_tokens, n);
    const int64_t seg_hi = detail::lower_bound(p.sorted_positions, p.num_tokens, n + 1);
    const int64_t run_end = seg_hi < k1 ? seg_hi : k1;
    if (!detail::zero_row(p, n)) {
      const bool contained = seg_lo >= k0 && seg_hi <= k1;
      for (int64_t d = first; d < p.dim; d += stride) {
        A acc = A(0);
        for (int64_t i = k; i < run_end; ++i) acc += detail::grad_at<G, A>(p, i, d);
        if (contained) {
          static_cast<T*>(p.grad_weight)[n * p.dim + d] = detail::ScalarOps<T>::from_acc(acc);
        } else {
          static_cast<A*>(p.partials)[(j * 2 + (k == k0 ? 0 : 1)) * p.dim + d] = acc;
        }
      }
    }
    k = run_end;
  }
}

/// Pass 2, table row n: rows no token hits, and the padding row, are zero;
/// a row cut by chunk boundaries adds its chunks' partials in chunk order.
/// (Rows inside one chunk were written by pass 1.)
template <typename T>
POSEMB_HD void learned_grad_combine(const LearnedGradParams& p, int64_t n, int64_t first,
                                    int64_t stride) {
  using A = detail::acc_t<T>;
  T* gw = static_cast<T*>(p.grad_weight) + n * p.dim;
  const int64_t seg_lo = detail::lower_bound(p.sorted_positions, p.num_tokens, n);
  const int64_t seg_hi = detail::lower_bound(p.sorted_positions, p.num_tokens, n + 1);
  if (seg_lo == seg_hi || detail::zero_row(p, n)) {
    for (int64_t d = first; d < p.dim; d += stride) gw[d] = detail::ScalarOps<T>::from_acc(A(0));
    return;
  }
  const int64_t j0 = seg_lo / p.chunk_tokens, j1 = (seg_hi - 1) / p.chunk_tokens;
  if (j0 == j1) return;
  const A* partials = static_cast<const A*>(p.partials);
  for (int64_t d = first; d < p.dim; d += stride) {
    A acc = A(0);
    for (int64_t j = j0; j <= j1; ++j) {
      const int slot = (j == j0 && seg_lo != j * p.chunk_tokens) ? 1 : 0;
      acc += partials[(j * 2 + slot) * p.dim + d];
    }
    gw[d] = detail::ScalarOps<T>::from_acc(acc);
  }
}

#ifdef POSEMB_LAUNCHERS
/// Launches learned_add on `stream`. Returns the launch status.
cudaError_t launch_learned_add(const LearnedParams& params, DType dtype, int num_sms,
                               cudaStream_t stream);

/// Launches the gradient of a table of `dtype` on `stream`; the incoming
/// gradient has the table's dtype, or its accumulation type (fp32, fp64 for
/// fp64) when grad_in_acc_type.
cudaError_t launch_learned_grad(const LearnedGradParams& params, DType dtype,
                                bool grad_in_acc_type, int num_sms, cudaStream_t stream);
#endif

}  // namespace posemb
