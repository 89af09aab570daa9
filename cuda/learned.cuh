// learned_add: y = x + W[position], and the gradient of W, deterministic.
//
// Torch-free. Both bodies are __host__ __device__: the CPU kernels call them
// with one "thread" per row, the CUDA kernels with a block per row and its
// threads across the channels, so CPU and GPU run the same code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "math.cuh"
#include "positions.cuh"
#include "vector.cuh"

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

/// Arguments of the weight gradient: tokens sorted by position (stably, so
/// each row of the gradient sums its tokens in one fixed order).
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
};

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

/// How a launch covers the work: grid-stride over rows, threads across the
/// channels (in 128-bit vectors when `vector`).
struct RowLaunch {
  bool vector = false;
  int64_t grid = 1, block = 32;
};

inline RowLaunch plan_rows(int64_t rows, int64_t steps_per_row, int64_t num_sms) {
  RowLaunch plan;
  plan.block = std::min<int64_t>(256, std::max<int64_t>(32, (steps_per_row + 31) / 32 * 32));
  plan.grid = std::max<int64_t>(1, std::min<int64_t>(rows, std::max<int64_t>(1, num_sms) * 16));
  return plan;
}

inline RowLaunch plan_learned_add(const LearnedParams& p, int64_t elem_size, int64_t num_sms) {
  const bool vector = learned_vectorizable(p, elem_size);
  RowLaunch plan = plan_rows(p.batch * p.seq, vector ? p.dim / (16 / elem_size) : p.dim, num_sms);
  plan.vector = vector;
  return plan;
}

inline RowLaunch plan_learned_grad(const LearnedGradParams& p, int64_t num_sms) {
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

/// Row n of the weight gradient, channels first, first + stride, ...: the sum
/// of the gradient rows of the tokens at position n, in token order. The
/// gradient is read as G (the weight's type, or its accumulation type when
/// another kernel produced it in full precision) and written as T.
template <typename G, typename T>
POSEMB_HD void learned_grad_row(const LearnedGradParams& p, int64_t n, int64_t first, int64_t stride) {
  using Ops = detail::ScalarOps<T>;
  using A = detail::acc_t<T>;
  const bool zero = p.has_padding_idx && n == p.padding_idx;
  const int64_t lo = zero ? 0 : detail::lower_bound(p.sorted_positions, p.num_tokens, n);
  const int64_t hi = zero ? 0 : detail::lower_bound(p.sorted_positions, p.num_tokens, n + 1);
  const G* g = static_cast<const G*>(p.grad);
  T* gw = static_cast<T*>(p.grad_weight) + n * p.dim;
  for (int64_t d = first; d < p.dim; d += stride) {
    A acc = A(0);
    for (int64_t k = lo; k < hi; ++k) {
      const int64_t token = p.order[k];
      const int64_t b = token / p.seq, t = token % p.seq;
      acc += static_cast<A>(detail::ScalarOps<G>::to_acc(g[b * p.g_stride_b + t * p.g_stride_t + d * p.g_stride_d]));
    }
    gw[d] = Ops::from_acc(acc);
  }
}

}  // namespace posemb
