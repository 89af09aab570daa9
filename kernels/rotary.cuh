// rotary: turn each pair of channels of q and k by position * inv_freq[i].
//
// Torch-free. The body handles one token: for each of its frequencies the
// sin/cos is computed once and applied to every head of q and of k. The CUDA
// kernel calls it with one block per token and its threads across the
// frequencies; the CPU kernel only for the interleaved pairing, per token with
// (first, stride) = (0, 1) (it turns the half pairing's rows whole,
// csrc/cpu/rotary_cpu.cpp).
#pragma once

#include <cstdint>

#include "kernels/launch_plan.cuh"
#include "kernels/math.cuh"
#include "kernels/positions.cuh"

namespace posemb {

/// One of q or k as the kernel sees it: logical (batch, seq, heads, head_dim).
struct RotaryTensor {
  const void* in = nullptr;
  void* out = nullptr;  // may equal in (the in-place op)
  int64_t heads = 0;
  StridedRows in_rows, out_rows;  // inner: heads (head_dim has stride 1)
};

/// Arguments of one rotary launch. Tokens are row = b * seq + t; packed
/// (thd) input is batch 1 with cu_seqlens marking where each sequence starts.
struct RotaryParams {
  RotaryTensor q, k;
  int64_t batch = 0, seq = 0, head_dim = 0;
  const float* inv_freq = nullptr;  // [rotary_dim / 2], taken as exact
  int64_t half = 0;                 // rotary_dim / 2
  PositionParams pos;
  // Packed sequences: token t belongs to the sequence s with
  // cu_seqlens[s] <= t < cu_seqlens[s + 1]; its position counts from there
  // (plus offsets[s] or offset) unless positions are given.
  const void* cu_seqlens = nullptr;
  bool cu_seqlens_int64 = true;
  int64_t num_seqs = 0;
  // Pairs (2i, 2i+1) (GPT-J), else (i, i + half) (NeoX, Llama): the launcher
  // makes it the body's template parameter kInterleaved.
  bool interleaved = false;
  bool inverse = false;  // turn by -theta: the backward (a sign, not a code path)
  double attention_scaling = 1.0;
  // Out of place: channels past rotary_dim are copied. A runtime flag: one
  // uniform branch per token, after the rotation.
  bool copy_tail = true;
};

namespace detail {

POSEMB_HD int64_t rotary_position(const RotaryParams& p, int64_t row) {
  const int64_t b = row / p.seq, t = row % p.seq;
  if (p.cu_seqlens == nullptr || p.pos.positions != nullptr) return token_position(p.pos, b, t);
  // The sequence holding token t: the last s with cu_seqlens[s] <= t.
  int64_t lo = 0, hi = p.num_seqs;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (load_index(p.cu_seqlens, p.cu_seqlens_int64, mid) <= t) lo = mid; else hi = mid;
  }
  const int64_t start = load_index(p.cu_seqlens, p.cu_seqlens_int64, lo);
  return token_position(p.pos, lo, t - start);  // offsets are per sequence
}

template <typename T, bool kInterleaved, typename A>
POSEMB_HD void rotate_heads(const RotaryParams& p, const RotaryTensor& x, int64_t b, int64_t t,
                            int64_t i, A c, A s) {
  using Ops = ScalarOps<T>;
  const int64_t i0 = kInterleaved ? 2 * i : i;
  const int64_t i1 = kInterleaved ? 2 * i + 1 : i + p.half;
  const T* in = static_cast<const T*>(x.in) + x.in_rows.row(b, t);
  T* out = static_cast<T*>(x.out) + x.out_rows.row(b, t);
  for (int64_t h = 0; h < x.heads; ++h) {
    const A a = Ops::to_acc(in[h * x.in_rows.stride_inner + i0]);
    const A z = Ops::to_acc(in[h * x.in_rows.stride_inner + i1]);
    out[h * x.out_rows.stride_inner + i0] = Ops::from_acc(a * c - z * s);
    out[h * x.out_rows.stride_inner + i1] = Ops::from_acc(z * c + a * s);
  }
}

template <typename T>
POSEMB_HD void copy_tail(const RotaryParams& p, const RotaryTensor& x, int64_t b, int64_t t,
                         int64_t first, int64_t stride) {
  const T* in = static_cast<const T*>(x.in) + x.in_rows.row(b, t);
  T* out = static_cast<T*>(x.out) + x.out_rows.row(b, t);
  const int64_t tail = p.head_dim - 2 * p.half;
  for (int64_t j = first; j < x.heads * tail; j += stride) {
    const int64_t h = j / tail, d = 2 * p.half + j % tail;
    out[h * x.out_rows.stride_inner + d] = in[h * x.in_rows.stride_inner + d];
  }
}

}  // namespace detail

/// Token `row`: frequencies first, first + stride, ... of every head of q and
/// k, and (out of place) their channels past rotary_dim. kInterleaved is
/// p.interleaved.
template <typename T, bool kInterleaved>
POSEMB_HD void rotary_token(const RotaryParams& p, int64_t row, int64_t first, int64_t stride) {
  using A = detail::acc_t<T>;
  const int64_t b = row / p.seq, t = row % p.seq;
  const double position = static_cast<double>(detail::rotary_position(p, row));
  const A scale = static_cast<A>(p.attention_scaling);
  for (int64_t i = first; i < p.half; i += stride) {
    A s, c;
    detail::position_sincos(position, static_cast<double>(p.inv_freq[i]), &s, &c);
    c *= scale;
    s *= p.inverse ? -scale : scale;
    detail::rotate_heads<T, kInterleaved>(p, p.q, b, t, i, c, s);
    detail::rotate_heads<T, kInterleaved>(p, p.k, b, t, i, c, s);
  }
  if (p.copy_tail && 2 * p.half < p.head_dim) {
    detail::copy_tail<T>(p, p.q, b, t, first, stride);
    detail::copy_tail<T>(p, p.k, b, t, first, stride);
  }
}

/// Grid-stride over tokens, threads across the frequencies: 32, 64 or 128 of
/// them (more frequencies loop).
inline RowLaunch plan_rotary(const RotaryParams& p, int64_t num_sms) {
  RowLaunch plan = plan_rows(p.batch * p.seq, p.half, num_sms);
  plan.block = p.half <= 32 ? 32 : (p.half <= 64 ? 64 : 128);
  return plan;
}

#ifdef POSEMB_LAUNCHERS
/// Launches rotary (or its inverse, the backward) on `stream`.
cudaError_t launch_rotary(const RotaryParams& params, DType dtype, int num_sms,
                          cudaStream_t stream);
#endif

}  // namespace posemb
