// Compiled with -mavx2 -mfma -mf16c (CMakeLists.txt); only called after
// available() says the CPU has them.
#include "cpu/avx2.h"

#include <ATen/Version.h>
#include <immintrin.h>
#include <sleef.h>

#include "kernels/math.cuh"

namespace posemb::detail::avx2 {

bool available() {
  // ATen's choice ("DEFAULT", "AVX2", "AVX512", ...) honours ATEN_CPU_CAPABILITY.
  static const bool ok = at::get_cpu_capability() != "DEFAULT" && __builtin_cpu_supports("avx2") &&
                         __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return ok;
}

namespace {

// theta = position * freq[0..4), reduced to r in [-π/4, π/4] and quadrant k.
inline __m256d reduce(__m256d position, const double* freq, __m256d* k) {
  const __m256d theta = _mm256_mul_pd(position, _mm256_loadu_pd(freq));
  *k = _mm256_round_pd(_mm256_mul_pd(theta, _mm256_set1_pd(kTwoOverPi)),
                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256d r = _mm256_fnmadd_pd(*k, _mm256_set1_pd(kHalfPiHi), theta);
  return _mm256_fnmadd_pd(*k, _mm256_set1_pd(kHalfPiLo), r);
}

inline __m256 load_as_float(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load_as_float(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 load_as_float(const c10::BFloat16* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

inline void store_from_float(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
inline void store_from_float(c10::Half* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
// Round to nearest even, NaN kept a (quiet) NaN: what c10::BFloat16 does.
inline void store_from_float(c10::BFloat16* p, __m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  const __m256 is_nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  r = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(r),
                                           _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC0)), is_nan));
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0b1000);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}

template <typename T>
void fused_row_impl(const T* x, T* y, const float* enc, float scale, int64_t n) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    store_from_float(y + d, _mm256_fmadd_ps(load_as_float(x + d), s, _mm256_loadu_ps(enc + d)));
  }
  for (; d < n; ++d) y[d] = static_cast<T>(static_cast<float>(x[d]) * scale + enc[d]);
}

template <typename T>
void add_rows_impl(const T* x, const T* w, T* y, int64_t n) {
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) store_from_float(y + d, _mm256_add_ps(load_as_float(x + d), load_as_float(w + d)));
  for (; d < n; ++d) y[d] = static_cast<T>(static_cast<float>(x[d]) + static_cast<float>(w[d]));
}

template <typename T>
void to_float_impl(const T* src, float* dst, int64_t n) {
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) _mm256_storeu_ps(dst + d, load_as_float(src + d));
  for (; d < n; ++d) dst[d] = static_cast<float>(src[d]);
}

template <typename T>
void from_float_impl(const float* src, T* dst, int64_t n) {
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) store_from_float(dst + d, _mm256_loadu_ps(src + d));
  for (; d < n; ++d) dst[d] = static_cast<T>(src[d]);
}

}  // namespace

void add_rows(const float* x, const float* w, float* y, int64_t n) { add_rows_impl(x, w, y, n); }
void add_rows(const c10::BFloat16* x, const c10::BFloat16* w, c10::BFloat16* y, int64_t n) {
  add_rows_impl(x, w, y, n);
}
void add_rows(const c10::Half* x, const c10::Half* w, c10::Half* y, int64_t n) {
  add_rows_impl(x, w, y, n);
}
void to_float(const c10::BFloat16* src, float* dst, int64_t n) { to_float_impl(src, dst, n); }
void to_float(const c10::Half* src, float* dst, int64_t n) { to_float_impl(src, dst, n); }
void from_float(const float* src, c10::BFloat16* dst, int64_t n) { from_float_impl(src, dst, n); }
void from_float(const float* src, c10::Half* dst, int64_t n) { from_float_impl(src, dst, n); }

void position_sincos_row(double position, const double* freq, int64_t n, float* s, float* c) {
  const __m256d p = _mm256_set1_pd(position);
  const __m256i one = _mm256_set1_epi32(1), two = _mm256_set1_epi32(2);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256d k_lo, k_hi;
    const __m256d r_lo = reduce(p, freq + i, &k_lo);
    const __m256d r_hi = reduce(p, freq + i + 4, &k_hi);
    const __m256 r = _mm256_set_m128(_mm256_cvtpd_ps(r_hi), _mm256_cvtpd_ps(r_lo));
    const __m256i q = _mm256_set_m128i(_mm256_cvtpd_epi32(k_hi), _mm256_cvtpd_epi32(k_lo));
    const Sleef___m256_2 sc = Sleef_sincosf8_u10avx2(r);
    // sin/cos of r + q·π/2: odd q swaps them; q&2 negates sin, (q+1)&2 negates cos.
    const __m256 swap = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(q, one), one));
    const __m256 sign_s = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(q, two), 30));
    const __m256 sign_c =
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(_mm256_add_epi32(q, one), two), 30));
    _mm256_storeu_ps(s + i, _mm256_xor_ps(_mm256_blendv_ps(sc.x, sc.y, swap), sign_s));
    _mm256_storeu_ps(c + i, _mm256_xor_ps(_mm256_blendv_ps(sc.y, sc.x, swap), sign_c));
  }
  for (; i < n; ++i) position_sincos(position, freq[i], &s[i], &c[i]);
}

void fused_row(const float* x, float* y, const float* enc, float scale, int64_t n) {
  fused_row_impl(x, y, enc, scale, n);
}
void fused_row(const c10::BFloat16* x, c10::BFloat16* y, const float* enc, float scale, int64_t n) {
  fused_row_impl(x, y, enc, scale, n);
}
void fused_row(const c10::Half* x, c10::Half* y, const float* enc, float scale, int64_t n) {
  fused_row_impl(x, y, enc, scale, n);
}

}  // namespace posemb::detail::avx2
