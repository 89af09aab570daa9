// Compiled with -mavx2 -mfma -mf16c (CMakeLists.txt); only called after
// available() says the CPU has them.
#include "cpu/avx2.h"

#include <ATen/Version.h>
#include <immintrin.h>

#include "kernels/turns.cuh"

namespace posemb::detail::avx2 {

bool available() {
  // ATen's choice ("DEFAULT", "AVX2", "AVX512", ...) honours ATEN_CPU_CAPABILITY.
  static const bool ok = at::get_cpu_capability() != "DEFAULT" && __builtin_cpu_supports("avx2") &&
                         __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return ok;
}

namespace {

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

void position_sincos_row(int64_t position, const uint64_t* F, int64_t n, float* s, float* c) {
  const __m256i one = _mm256_set1_epi32(1), two = _mm256_set1_epi32(2);
  const __m256 to_radians = _mm256_set1_ps(turns::kResidualToRadians);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    // The 64-bit angles and their split, 8 scalar multiplies; then 8 wide,
    // the same operations in the same order as turns::sincos, so the
    // results are bitwise those of the scalar path and the CUDA kernels.
    alignas(32) int32_t quadrant[8], residual[8];
    for (int j = 0; j < 8; ++j) {
      int q;
      turns::split(turns::angle(position, F[i + j]), &q, &residual[j]);
      quadrant[j] = q;
    }
    const __m256i q = _mm256_load_si256(reinterpret_cast<const __m256i*>(quadrant));
    const __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(residual))),
                                   to_radians);
    const __m256 z = _mm256_mul_ps(r, r);
    __m256 ps = _mm256_fmadd_ps(z, _mm256_set1_ps(-1.9515295891e-4f), _mm256_set1_ps(8.3321608736e-3f));
    ps = _mm256_fmadd_ps(z, ps, _mm256_set1_ps(-1.6666654611e-1f));
    const __m256 sr = _mm256_fmadd_ps(_mm256_mul_ps(r, z), ps, r);
    __m256 pc = _mm256_fmadd_ps(z, _mm256_set1_ps(2.443315711809948e-5f), _mm256_set1_ps(-1.388731625493765e-3f));
    pc = _mm256_fmadd_ps(z, pc, _mm256_set1_ps(4.166664568298827e-2f));
    pc = _mm256_fmadd_ps(z, pc, _mm256_set1_ps(-0.5f));
    const __m256 cr = _mm256_fmadd_ps(z, pc, _mm256_set1_ps(1.0f));
    // sin/cos of r + q·π/2: odd q swaps them; q&2 negates sin, (q+1)&2 negates cos.
    const __m256 swap = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(q, one), one));
    const __m256 sign_s = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(q, two), 30));
    const __m256 sign_c =
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(_mm256_add_epi32(q, one), two), 30));
    _mm256_storeu_ps(s + i, _mm256_xor_ps(_mm256_blendv_ps(sr, cr, swap), sign_s));
    _mm256_storeu_ps(c + i, _mm256_xor_ps(_mm256_blendv_ps(cr, sr, swap), sign_c));
  }
  for (; i < n; ++i) turns::position_sincos(position, F[i], &s[i], &c[i]);
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
