// CPU kernel of rotary, rotary_ and rotary_backward, tiles of tokens split
// across threads. Each token's sin/cos row is computed once (8 or 16 wide
// with AVX2 or AVX-512) and every head's halves are turned with whole-row
// loops (AVX2, or loops the compiler vectorises); the interleaved pairing
// runs the shared body of kernels/rotary.cuh, as does the CUDA kernel.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/rows.h"
#include "kernels/turns.cuh"
#include "rotary_op.h"

namespace posemb::detail {
namespace {

// Head h of token (b, t): its two halves turned by c and s, and (out of
// place) its channels past rotary_dim copied.
template <typename T>
void rotate_head_row(const RotaryParams& p, const RotaryTensor& x, int64_t b, int64_t t, int64_t h,
                     const acc_t<T>* c, const acc_t<T>* s, acc_t<T>* buf) {
  using A = acc_t<T>;
  const int64_t half = p.half, tail = p.head_dim - 2 * half;
  const T* in = static_cast<const T*>(x.in) + x.in_rows.row(b, t) + h * x.in_rows.stride_inner;
  T* out = static_cast<T*>(x.out) + x.out_rows.row(b, t) + h * x.out_rows.stride_inner;
  if (p.copy_tail && tail > 0) std::memcpy(out + 2 * half, in + 2 * half, tail * sizeof(T));
#if defined(POSEMB_CPU_AVX2)
  if constexpr (std::is_same_v<A, float>) {
    if (cpu_avx2()) return avx2::rotate_halves(in, out, c, s, half);
  }
#endif
  A *a = buf, *z = buf + half, *ya = buf + 2 * half, *yz = buf + 3 * half;
  load_row(in, a, half);
  load_row(in + half, z, half);
  for (int64_t i = 0; i < half; ++i) {
    ya[i] = a[i] * c[i] - z[i] * s[i];
    yz[i] = z[i] * c[i] + a[i] * s[i];
  }
  store_row(ya, out, half);
  store_row(yz, out + half, half);
}

// Every head of tokens t0 .. t0 + n - 1 of sequence b, token j turned by
// c[j * half ..] and s[j * half ..]. Stored (batch, heads, seq, head_dim), as
// Llama's attention rotates, a head's rows of the tile are one contiguous
// run, so heads go outer; token by token, each token would touch a row of
// every head (80 interleaved streams at 32/8 heads, in and out), which
// measured 4x slower at (1, 2048, 32/8, 128) bf16 than (batch, seq, heads).
template <typename T>
void rotate_tile(const RotaryParams& p, const RotaryTensor& x, int64_t b, int64_t t0, int64_t n,
                 const acc_t<T>* c, const acc_t<T>* s, acc_t<T>* buf) {
  const int64_t half = p.half;
  if (x.in_rows.stride_inner > x.in_rows.stride_t) {
    for (int64_t h = 0; h < x.heads; ++h) {
      for (int64_t j = 0; j < n; ++j) rotate_head_row<T>(p, x, b, t0 + j, h, c + j * half, s + j * half, buf);
    }
  } else {
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t h = 0; h < x.heads; ++h) rotate_head_row<T>(p, x, b, t0 + j, h, c + j * half, s + j * half, buf);
    }
  }
}

// sin and cos of position times each of n frequencies (8 or 16 wide where
// the CPU has AVX2 or AVX-512).
template <typename A>
void sincos_run(int64_t position, const uint64_t* F, int64_t n, A* s, A* c) {
  if constexpr (std::is_same_v<A, float>) {
    if (vector_position_sincos_row(position, F, n, s, c)) return;
  }
  for (int64_t i = 0; i < n; ++i) turns::position_sincos(position, F[i], &s[i], &c[i]);
}

template <typename T>
void rotary_cpu_typed(const RotaryParams& p) {
  using A = acc_t<T>;
  const int64_t half = p.half;
  // Each frequency as turns, once per call; a non-finite one gives NaN.
  std::vector<uint64_t> F(half);
  bool all_finite = true;
  for (int64_t i = 0; i < half; ++i) {
    all_finite = all_finite && std::isfinite(p.inv_freq[i]);
    F[i] = std::isfinite(p.inv_freq[i]) ? turns::from_float(p.inv_freq[i]) : 0;
  }
  const A cos_scale = static_cast<A>(p.attention_scaling);
  const A sin_scale = p.inverse ? -cos_scale : cos_scale;
  // c[i], s[i]: the scaled cos and sin of token `row`'s angle at frequency i.
  auto token_sincos = [&](int64_t row, A* c, A* s) {
    if (p.num_axes > 1 && p.sections_interleaved) {
      for (int64_t i = 0; i < half; ++i) {
        turns::position_sincos(rotary_position(p, row, rotary_axis(p, i)), F[i], &s[i], &c[i]);
      }
    } else {
      // One run of frequencies per axis (the whole row without axes).
      for (int64_t a = 0, begin = 0; a < p.num_axes && begin < half; ++a) {
        int64_t end = begin;
        while (end < half && rotary_axis(p, end) == a) ++end;
        sincos_run<A>(rotary_position(p, row, a), F.data() + begin, end - begin, s + begin, c + begin);
        begin = end;
      }
    }
    if (!all_finite) {
      for (int64_t i = 0; i < half; ++i) {
        if (!std::isfinite(p.inv_freq[i])) s[i] = c[i] = A(NAN);
      }
    }
    for (int64_t i = 0; i < half; ++i) {
      c[i] *= cos_scale;
      s[i] *= sin_scale;
    }
  };
  // Threads take tiles of up to kTile tokens of one sequence: the tile's
  // sin/cos rows (16 KB at half 64) first, then every head of q and k.
  constexpr int64_t kTile = 32;
  const int64_t tiles = (p.seq + kTile - 1) / kTile;  // per sequence
  const int64_t per_tile = std::max<int64_t>(1, (p.q.heads + p.k.heads) * p.head_dim * std::min(kTile, p.seq));
  at::parallel_for(0, p.batch * tiles, std::max<int64_t>(1, 16384 / per_tile), [&](int64_t begin, int64_t end) {
    std::vector<A> c(kTile * half), s(kTile * half), buf(4 * half);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / tiles, t0 = item % tiles * kTile, n = std::min(kTile, p.seq - t0);
      if (p.interleaved) {
        for (int64_t t = t0; t < t0 + n; ++t) rotary_token<T, true>(p, b * p.seq + t, 0, 1);
        continue;
      }
      for (int64_t j = 0; j < n; ++j) token_sincos(b * p.seq + t0 + j, c.data() + j * half, s.data() + j * half);
      rotate_tile<T>(p, p.q, b, t0, n, c.data(), s.data(), buf.data());
      rotate_tile<T>(p, p.k, b, t0, n, c.data(), s.data(), buf.data());
    }
  });
}

void run_rotary_cpu(const RotaryParams& p, const at::Tensor& q) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "rotary_cpu",
                                  [&] { rotary_cpu_typed<scalar_t>(p); });
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CPU, m) {
  m.impl("rotary", &rotary_backend<run_rotary_cpu, false>);
  m.impl("rotary_backward", &rotary_backend<run_rotary_cpu, true>);
  m.impl("rotary_", &rotary_inplace_backend<run_rotary_cpu>);
}

}  // namespace posemb::detail
