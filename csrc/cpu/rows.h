// Whole-row helpers for the CPU kernels: rows of any storage type to and
// from the accumulation type, 8 wide on CPUs with AVX2; rows of sin/cos.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/scalar_ops.h"
#include "kernels/float_turns.cuh"
#if defined(POSEMB_CPU_AVX2)
#include "cpu/avx2.h"
#endif
#if defined(POSEMB_CPU_AVX512)
#include "cpu/avx512.h"
#endif

namespace posemb::detail {

/// True when the AVX2 loops may run (see avx2::available()).
inline bool cpu_avx2() {
#if defined(POSEMB_CPU_AVX2)
  return avx2::available();
#else
  return false;
#endif
}

/// True when the AVX-512 loops may run (see avx512::available()).
inline bool cpu_avx512() {
#if defined(POSEMB_CPU_AVX512)
  return avx512::available();
#else
  return false;
#endif
}

template <typename T>
void load_row(const T* src, acc_t<T>* dst, int64_t n) {
  if (n <= 0) return;  // an empty row may come with null pointers, which memcpy must not see
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    std::memcpy(dst, src, n * sizeof(T));
  } else {
#if defined(POSEMB_CPU_AVX2)
    if (cpu_avx2()) return avx2::to_float(src, dst, n);
#endif
    for (int64_t d = 0; d < n; ++d) dst[d] = ScalarOps<T>::to_acc(src[d]);
  }
}

template <typename T>
void store_row(const acc_t<T>* src, T* dst, int64_t n) {
  if (n <= 0) return;
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    std::memcpy(dst, src, n * sizeof(T));
  } else {
#if defined(POSEMB_CPU_AVX2)
    if (cpu_avx2()) return avx2::from_float(src, dst, n);
#endif
    for (int64_t d = 0; d < n; ++d) dst[d] = ScalarOps<T>::from_acc(src[d]);
  }
}

/// s[i], c[i] = sin, cos of position times frequency i, given as its turns
/// F[i], i < n, bitwise turns::position_sincos: 16 wide with AVX-512, 8 with
/// AVX2. Returns false, computing nothing, where neither may run.
inline bool vector_position_sincos_row(int64_t position, const uint64_t* F, int64_t n, float* s, float* c) {
#if defined(POSEMB_CPU_AVX512)
  if (cpu_avx512()) return avx512::position_sincos_row(position, F, n, s, c), true;
#endif
#if defined(POSEMB_CPU_AVX2)
  if (cpu_avx2()) return avx2::position_sincos_row(position, F, n, s, c), true;
#endif
  (void)position, (void)F, (void)n, (void)s, (void)c;
  return false;
}

/// s[i], c[i] = sin, cos of the float position t times frequency i, i < n,
/// 8 or 16 wide, bitwise turns::float_position_sincos. An integral t (a diffusion
/// step, a grid cell) takes the integer path's vector loop, since its
/// float_angle is t * F exactly; another gets each angle from float_angle.
/// F[i] = freqs[i].F, contiguous; u: n angles of scratch. Returns false,
/// computing nothing, where the vector loop cannot run (no AVX2, t not
/// finite): the caller then runs the per-element body.
template <typename P>
bool float_position_sincos_row(P t, const FloatFreq* freqs, const uint64_t* F, int64_t n, float* s, float* c,
                               uint64_t* u) {
#if defined(POSEMB_CPU_AVX2)
  if (!cpu_avx2() || !std::isfinite(t)) return false;
  if (t == std::trunc(t) && std::fabs(t) < P(4611686018427387904.0)) {
    vector_position_sincos_row(static_cast<int64_t>(t), F, n, s, c);
  } else {
    avx2::float_angles(t, freqs, n, u);
    avx2::sincos_turns_row(u, n, s, c);
  }
  return true;
#else
  (void)t, (void)freqs, (void)F, (void)n, (void)s, (void)c, (void)u;
  return false;
#endif
}

/// sum(f(d)) for d < n in kParts interleaved partial sums: the compiler can
/// run them as vectors (a single running sum is a chain of dependent adds,
/// ~4 cycles each), and the order stays fixed, so results are repeatable.
/// Part k sums f(d) for d = k mod kParts; the tail past the last whole step
/// goes into part 0; the parts are added in order. (32 parts keep four
/// 8-lane vector chains in flight: avx2::bert_norm_row sums in that order.)
template <typename A, int kParts = 8, typename F>
A row_sum(int64_t n, F f) {
  A part[kParts] = {};
  int64_t d = 0;
  for (; d + kParts <= n; d += kParts) {
    for (int k = 0; k < kParts; ++k) part[k] += f(d + k);
  }
  for (; d < n; ++d) part[0] += f(d);
  A total = 0;
  for (int k = 0; k < kParts; ++k) total += part[k];
  return total;
}

/// The number of partial sums of the BERT block's forward statistics.
inline constexpr int kBertParts = 32;

}  // namespace posemb::detail
