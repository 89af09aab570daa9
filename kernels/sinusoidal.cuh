// sinusoidal_add: y = x * scale + PE(position), PE computed on the fly.
//
// Torch-free. The kernel body is __host__ __device__ and takes its grid
// coordinates explicitly, so tests/cpp/test_sinusoidal_grid.cpp can walk the
// whole launch grid on the CPU and check indexing, masking and vector paths
// without a GPU. kernels/sinusoidal.cu wraps it in a __global__ shell.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/launch_plan.cuh"
#include "kernels/math.cuh"
#include "kernels/positions.cuh"
#include "kernels/vector.cuh"
#include "posemb/types.h"
#include "kernels/turns.cuh"

namespace posemb {

/// Arguments of one sinusoidal_add launch. Logical shape (batch, seq, dim),
/// any strides; y may alias x exactly (the in-place op).
struct SinusoidalParams {
  const void* x = nullptr;  // [batch, seq, dim]
  void* y = nullptr;        // [batch, seq, dim]
  int64_t batch = 0, seq = 0, dim = 0;
  StridedRows x_rows, y_rows;

  PositionParams pos;

  bool has_padding_idx = false;  // the encoding is zero at position padding_idx
  int64_t padding_idx = 0;

  SinusoidalLayout layout = SinusoidalLayout::Interleaved;  // the body's template parameter L
  const uint64_t* turns = nullptr;  // [dim / 2] frequency i as turns (turns.cuh)
  double scale = 1.0;
  float scale_f32 = 1.0f;  // what fp32/bf16/fp16 kernels read: no FP64 on their path
};

/// How a launch covers the work: grid x walks position rows, grid y splits the
/// batch when rows are few (decoding), threads walk groups of frequencies.
/// Its own type, not RowLaunch: a row here serves a chunk of the batch, so
/// the grid has a second dimension and the body needs the chunking.
struct SinusoidalLaunch {
  bool vector = false;     // 128-bit loads and stores (K pairs per group): the body's kVector
  bool shared = true;      // one position per token for the whole batch (index math only)
  int64_t rows = 0;        // seq if shared, else batch * seq
  int64_t groups = 0;      // frequency groups, plus one for an odd last channel
  int64_t batch_chunk = 1; // batch entries per grid-y block when shared
  int64_t grid_x = 1, grid_y = 1;
  int64_t block_dim = 32;
};

/// Frequencies per thread group: one 128-bit vector of x per group.
template <typename T, SinusoidalLayout L, bool kVector>
POSEMB_HD constexpr int sinusoidal_pairs_per_group() {
  if (!kVector) return 1;
  return L == SinusoidalLayout::Interleaved ? int(8 / sizeof(T)) : int(16 / sizeof(T));
}

/// Chooses the launch for params whose elements are `elem_size` bytes, on a
/// device with `num_sms` multiprocessors. Host code, shared by the CUDA
/// launcher and by the CPU walk of the grid, so both run the same plan.
inline SinusoidalLaunch plan_sinusoidal_launch(const SinusoidalParams& p, int64_t elem_size,
                                               int64_t num_sms) {
  SinusoidalLaunch plan;
  const int64_t half = p.dim / 2;
  const int64_t vec_elems = 16 / elem_size;
  const int64_t pairs = p.layout == SinusoidalLayout::Interleaved ? vec_elems / 2 : vec_elems;
  const bool strides_ok =
      p.x_rows.stride_b % vec_elems == 0 && p.x_rows.stride_t % vec_elems == 0 &&
      p.y_rows.stride_b % vec_elems == 0 && p.y_rows.stride_t % vec_elems == 0;
  plan.vector = pairs >= 1 && half % pairs == 0 && half > 0 && p.x_rows.stride_inner == 1 &&
                p.y_rows.stride_inner == 1 && strides_ok && detail::is_aligned(p.x, 16) &&
                detail::is_aligned(p.y, 16);
  const int64_t per_group = plan.vector ? pairs : 1;
  plan.groups = half / per_group + (p.dim % 2);

  plan.shared = positions_shared(p.pos, p.batch);
  plan.rows = plan.shared ? p.seq : p.batch * p.seq;

  plan.block_dim = std::min<int64_t>(256, std::max<int64_t>(32, (plan.groups + 31) / 32 * 32));
  const int64_t target_blocks = std::max<int64_t>(1, num_sms) * 8;
  plan.grid_x = std::max<int64_t>(1, std::min(plan.rows, target_blocks));
  if (plan.shared && plan.rows < target_blocks && p.batch > 1) {
    const int64_t want_y = std::min<int64_t>(p.batch, (target_blocks + plan.rows - 1) / plan.rows);
    plan.batch_chunk = (p.batch + want_y - 1) / want_y;
  } else {
    plan.batch_chunk = std::max<int64_t>(1, p.batch);
  }
  plan.grid_y = plan.shared ? (std::max<int64_t>(1, p.batch) + plan.batch_chunk - 1) / plan.batch_chunk : 1;
  plan.grid_y = std::min<int64_t>(plan.grid_y, 65535);
  if (plan.shared) {
    plan.batch_chunk = (std::max<int64_t>(1, p.batch) + plan.grid_y - 1) / plan.grid_y;
  }
  return plan;
}

/// One thread's coordinates in the launch grid.
struct GridCoord {
  int64_t block_x, block_y, thread_x;
};

namespace detail {

/// y[b, t, channels of pairs i0..i0+K) = x * scale + (sin, cos).
template <typename T, SinusoidalLayout L, bool kVector, int K, typename A>
POSEMB_HD void sinusoidal_apply(const SinusoidalParams& p, int64_t b, int64_t t, int64_t i0,
                                const A* s, const A* c, A scale) {
  using Ops = ScalarOps<T>;
  const T* x = static_cast<const T*>(p.x) + p.x_rows.row(b, t);
  T* y = static_cast<T*>(p.y) + p.y_rows.row(b, t);
  const int64_t half = p.dim / 2;
  if constexpr (kVector && L == SinusoidalLayout::Interleaved) {
    auto v = load_vec<T, 2 * K>(x + 2 * i0);
POSEMB_UNROLL
    for (int k = 0; k < K; ++k) {
      v.v[2 * k] = Ops::from_acc(mul_add(Ops::to_acc(v.v[2 * k]), scale, s[k]));
      v.v[2 * k + 1] = Ops::from_acc(mul_add(Ops::to_acc(v.v[2 * k + 1]), scale, c[k]));
    }
    store_vec<T, 2 * K>(y + 2 * i0, v);
  } else if constexpr (kVector) {
    auto vs = load_vec<T, K>(x + i0);
    auto vc = load_vec<T, K>(x + half + i0);
POSEMB_UNROLL
    for (int k = 0; k < K; ++k) {
      vs.v[k] = Ops::from_acc(mul_add(Ops::to_acc(vs.v[k]), scale, s[k]));
      vc.v[k] = Ops::from_acc(mul_add(Ops::to_acc(vc.v[k]), scale, c[k]));
    }
    store_vec<T, K>(y + i0, vs);
    store_vec<T, K>(y + half + i0, vc);
  } else {
POSEMB_UNROLL
    for (int k = 0; k < K; ++k) {
      const int64_t i = i0 + k;
      const int64_t cs = L == SinusoidalLayout::Interleaved ? 2 * i : i;
      const int64_t cc = L == SinusoidalLayout::Interleaved ? 2 * i + 1 : half + i;
      const T xs = x[cs * p.x_rows.stride_inner];
      const T xc = x[cc * p.x_rows.stride_inner];
      y[cs * p.y_rows.stride_inner] = Ops::from_acc(mul_add(Ops::to_acc(xs), scale, s[k]));
      y[cc * p.y_rows.stride_inner] = Ops::from_acc(mul_add(Ops::to_acc(xc), scale, c[k]));
    }
  }
}

}  // namespace detail

/// The work of one thread of the launch `plan`, at grid coordinate `at`.
/// Each thread owns frequency groups g (computing their frequencies once) and
/// walks the rows of its block; the sin/cos of a (position, frequency) is
/// computed once and reused across the batch entries that share it.
template <typename T, SinusoidalLayout L, bool kVector>
POSEMB_HD void sinusoidal_add_body(const SinusoidalParams& p, const SinusoidalLaunch& plan,
                                   GridCoord at) {
  using A = detail::acc_t<T>;
  using Ops = detail::ScalarOps<T>;
  constexpr int K = sinusoidal_pairs_per_group<T, L, kVector>();
  const int64_t pair_groups = (p.dim / 2) / K;
  const A scale = detail::in_acc<A>(p.scale, p.scale_f32);

  for (int64_t g = at.thread_x; g < plan.groups; g += plan.block_dim) {
    const bool odd_tail = g == pair_groups;  // the last channel of an odd dim
    uint64_t F[K];  // the odd tail's group reads none
POSEMB_UNROLL
    for (int k = 0; k < K; ++k) F[k] = odd_tail ? 0 : p.turns[g * K + k];

    for (int64_t row = at.block_x; row < plan.rows; row += plan.grid_x) {
      const int64_t t = plan.shared ? row : row % p.seq;
      const int64_t b_begin = plan.shared ? at.block_y * plan.batch_chunk : row / p.seq;
      int64_t b_end = plan.shared ? b_begin + plan.batch_chunk : b_begin + 1;
      if (b_end > p.batch) b_end = p.batch;
      if (b_begin >= b_end) continue;

      if (odd_tail) {
        for (int64_t b = b_begin; b < b_end; ++b) {
          const T* x = static_cast<const T*>(p.x) + p.x_rows.row(b, t);
          T* y = static_cast<T*>(p.y) + p.y_rows.row(b, t);
          const int64_t d = p.dim - 1;
          y[d * p.y_rows.stride_inner] = Ops::from_acc(Ops::to_acc(x[d * p.x_rows.stride_inner]) * scale);
        }
        continue;
      }

      const int64_t pos = token_position(p.pos, b_begin, t);
      const bool is_pad = p.has_padding_idx && pos == p.padding_idx;
      A s[K], c[K];
POSEMB_UNROLL
      for (int k = 0; k < K; ++k) {
        if (is_pad) {
          s[k] = A(0);
          c[k] = A(0);
        } else {
          turns::position_sincos(pos, F[k], &s[k], &c[k]);
        }
      }
      for (int64_t b = b_begin; b < b_end; ++b) {
        detail::sinusoidal_apply<T, L, kVector, K>(p, b, t, g * K, s, c, scale);
      }
    }
  }
}

#ifdef POSEMB_LAUNCHERS
/// Launches sinusoidal_add on `stream`. Returns the launch status.
cudaError_t launch_sinusoidal_add(const SinusoidalParams& params, DType dtype, int num_sms,
                                  cudaStream_t stream);
#endif

}  // namespace posemb
