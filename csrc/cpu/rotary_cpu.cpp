// CPU kernel of rotary, rotary_ and rotary_backward, tokens split across
// threads. Each token's sin/cos row is computed once (8 wide on AVX2 CPUs)
// and every head's halves are turned with whole-row loops the compiler
// vectorises; the interleaved pairing runs the shared body of
// kernels/rotary.cuh, as does the CUDA kernel.
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

template <typename T>
void rotate_rows(const RotaryParams& p, const RotaryTensor& x, int64_t b, int64_t t,
                 const acc_t<T>* c, const acc_t<T>* s, acc_t<T>* buf) {
  using A = acc_t<T>;
  const int64_t half = p.half, tail = p.head_dim - 2 * half;
  A *a = buf, *z = buf + half, *ya = buf + 2 * half, *yz = buf + 3 * half;
  for (int64_t h = 0; h < x.heads; ++h) {
    const T* in = static_cast<const T*>(x.in) + x.in_rows.row(b, t) + h * x.in_rows.stride_inner;
    T* out = static_cast<T*>(x.out) + x.out_rows.row(b, t) + h * x.out_rows.stride_inner;
    if (p.copy_tail && tail > 0) std::memcpy(out + 2 * half, in + 2 * half, tail * sizeof(T));
#if defined(POSEMB_CPU_AVX2)
    if constexpr (std::is_same_v<A, float>) {
      if (cpu_avx2()) {
        avx2::rotate_halves(in, out, c, s, half);
        continue;
      }
    }
#endif
    load_row(in, a, half);
    load_row(in + half, z, half);
    for (int64_t i = 0; i < half; ++i) {
      ya[i] = a[i] * c[i] - z[i] * s[i];
      yz[i] = z[i] * c[i] + a[i] * s[i];
    }
    store_row(ya, out, half);
    store_row(yz, out + half, half);
  }
}

// sin and cos of position times each of n frequencies (8 wide on AVX2 CPUs).
template <typename A>
void sincos_run(int64_t position, const uint64_t* F, int64_t n, A* s, A* c) {
#if defined(POSEMB_CPU_AVX2)
  if constexpr (std::is_same_v<A, float>) {
    if (cpu_avx2()) {
      avx2::position_sincos_row(position, F, n, s, c);
      return;
    }
  }
#endif
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
  const int64_t per_token = std::max<int64_t>(1, (p.q.heads + p.k.heads) * p.head_dim);
  at::parallel_for(0, p.batch * p.seq, std::max<int64_t>(1, 16384 / per_token), [&](int64_t begin, int64_t end) {
    std::vector<A> c(half), s(half), buf(4 * half);
    for (int64_t row = begin; row < end; ++row) {
      if (p.interleaved) {
        rotary_token<T, true>(p, row, 0, 1);
        continue;
      }
      if (p.num_axes > 1 && p.sections_interleaved) {
        for (int64_t i = 0; i < half; ++i) {
          turns::position_sincos(rotary_position(p, row, rotary_axis(p, i)), F[i], &s[i], &c[i]);
        }
      } else {
        // One run of frequencies per axis (the whole row without axes).
        for (int64_t a = 0, begin = 0; a < p.num_axes && begin < half; ++a) {
          int64_t end = begin;
          while (end < half && rotary_axis(p, end) == a) ++end;
          sincos_run<A>(rotary_position(p, row, a), F.data() + begin, end - begin, s.data() + begin,
                        c.data() + begin);
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
      const int64_t b = row / p.seq, t = row % p.seq;
      rotate_rows<T>(p, p.q, b, t, c.data(), s.data(), buf.data());
      rotate_rows<T>(p, p.k, b, t, c.data(), s.data(), buf.data());
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
