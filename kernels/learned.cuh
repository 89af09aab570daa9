// learned_add: y = x + W[position]. (W's gradient is the table gradient,
// kernels/table_grad.cuh, which the BERT block shares.)
//
// Torch-free. The body is __host__ __device__: the CUDA kernel calls it with
// a block per row and its threads across the channels; the CPU kernel with
// one "thread" per row, where its own 8-wide AVX2 add does not apply.
#pragma once

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
  StridedRows x_rows, y_rows;
  int64_t w_stride_n = 0, w_stride_d = 1;
  PositionParams pos;
};

/// Elements each thread moves per step: one 128-bit vector, or one element.
template <typename T, bool kVector>
POSEMB_HD constexpr int learned_elems_per_step() {
  return kVector ? int(16 / sizeof(T)) : 1;
}

/// True when every row of x, y and weight can be read in 128-bit vectors.
inline bool learned_vectorizable(const LearnedParams& p, int64_t elem_size) {
  const int64_t v = 16 / elem_size;
  return p.dim % v == 0 && p.x_rows.stride_inner == 1 && p.y_rows.stride_inner == 1 &&
         p.w_stride_d == 1 && p.x_rows.stride_b % v == 0 && p.x_rows.stride_t % v == 0 &&
         p.y_rows.stride_b % v == 0 && p.y_rows.stride_t % v == 0 && p.w_stride_n % v == 0 &&
         detail::is_aligned(p.x, 16) && detail::is_aligned(p.y, 16) &&
         detail::is_aligned(p.weight, 16);
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
  const T* x = static_cast<const T*>(p.x) + p.x_rows.row(b, t);
  T* y = static_cast<T*>(p.y) + p.y_rows.row(b, t);
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
      const A sum = in_range ? Ops::to_acc(x[d * p.x_rows.stride_inner]) + Ops::to_acc(w[d * p.w_stride_d]) : nan;
      y[d * p.y_rows.stride_inner] = Ops::from_acc(sum);
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

#ifdef POSEMB_LAUNCHERS
/// Launches learned_add on `stream`. Returns the launch status.
cudaError_t launch_learned_add(const LearnedParams& params, DType dtype, int num_sms,
                               cudaStream_t stream);
#endif

}  // namespace posemb
