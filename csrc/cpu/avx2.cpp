// Compiled with -mavx2 -mfma -mf16c (CMakeLists.txt); only called after
// available() says the CPU has them.
#include "cpu/avx2.h"

#include <ATen/Version.h>
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/float_turns.cuh"
#include "kernels/random.cuh"
#include "kernels/turns.cuh"

namespace posemb::detail::avx2 {

bool available() {
  // ATen's choice ("DEFAULT", "AVX2", "AVX512", ...) honours ATEN_CPU_CAPABILITY.
  static const bool ok = at::get_cpu_capability() != "DEFAULT" && __builtin_cpu_supports("avx2") &&
                         __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return ok;
}

namespace {

// u = p · F mod 2^64 for 4 uint64 lanes (AVX2 has no 64-bit multiply):
// p_lo·F_lo + ((p_lo·F_hi + p_hi·F_lo) << 32), with p split into 32-bit
// halves. kWide = false drops the p_hi term, for positions below 2^32.
template <bool kWide>
inline __m256i angle4(__m256i p_lo, __m256i p_hi, const uint64_t* F) {
  const __m256i f = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(F));
  __m256i cross = _mm256_mul_epu32(_mm256_srli_epi64(f, 32), p_lo);
  if constexpr (kWide) cross = _mm256_add_epi64(cross, _mm256_mul_epu32(f, p_hi));
  return _mm256_add_epi64(_mm256_mul_epu32(f, p_lo), _mm256_slli_epi64(cross, 32));
}

// turns::split of 8 angles, as 8 int32 quadrants and residuals in "pair
// order", lanes 0 1 4 5 2 3 6 7: what one shuffle per output gives (no
// cross-lane permute), and the order the interleaved (sin, cos) store wants.
// With v = u >> 30, the residual is v's low 32 bits (the quarter turns taken
// off u lie above them), and the nearest quarter is u's top two bits, v's
// high half, plus one when the residual is negative (u's bit 61 set).
inline void split8(__m256i u0, __m256i u1, __m256i* quadrant, __m256i* residual) {
  const __m256 v0 = _mm256_castsi256_ps(_mm256_srli_epi64(u0, 30));
  const __m256 v1 = _mm256_castsi256_ps(_mm256_srli_epi64(u1, 30));
  const __m256i lo = _mm256_castps_si256(_mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0)));
  const __m256i hi = _mm256_castps_si256(_mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1)));
  *residual = lo;
  *quadrant = _mm256_sub_epi32(hi, _mm256_srai_epi32(lo, 31));  // only its low two bits are used
}
// The same for the angles of position p (as 32-bit halves) at F[0..8).
template <bool kWide>
inline void split8(__m256i p_lo, __m256i p_hi, const uint64_t* F, __m256i* quadrant, __m256i* residual) {
  split8(angle4<kWide>(p_lo, p_hi, F), angle4<kWide>(p_lo, p_hi, F + 4), quadrant, residual);
}

// Pair order back to lane order (its 64-bit quarters 0 2 1 3).
inline __m256 from_pair_order(__m256 v) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
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
// The bfloat16 bits end up in the low half of each 32-bit lane.
inline __m256i bfloat16_bits(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  const __m256 is_nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  return _mm256_castps_si256(
      _mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC0)), is_nan));
}
// The same rounding for values known not to be NaN.
inline __m256i bfloat16_bits_not_nan(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  return _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
}
inline void store_from_float(c10::BFloat16* p, __m256 v) {
  const __m256i r = bfloat16_bits(v);
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0b1000);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}

// 16 elements as two fp32 vectors, and back: a whole 64-byte line of fp32,
// or half of one in 16-bit types, written by one store.
inline void load16_as_float(const float* p, __m256* a, __m256* b) {
  *a = _mm256_loadu_ps(p);
  *b = _mm256_loadu_ps(p + 8);
}
inline void load16_as_float(const c10::Half* p, __m256* a, __m256* b) {
  *a = load_as_float(p);
  *b = load_as_float(p + 8);
}
inline void load16_as_float(const c10::BFloat16* p, __m256* a, __m256* b) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  *a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)), 16));
  *b = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1)), 16));
}
inline void store16_from_float(float* p, __m256 a, __m256 b) {
  _mm256_storeu_ps(p, a);
  _mm256_storeu_ps(p + 8, b);
}
inline void store16_from_float(c10::Half* p, __m256 a, __m256 b) {
  const __m256i v = _mm256_set_m128i(_mm256_cvtps_ph(b, _MM_FROUND_TO_NEAREST_INT),
                                     _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
}
inline void store16_from_float(c10::BFloat16* p, __m256 a, __m256 b) {
  // packus interleaves a's and b's 64-bit quarters; the permute restores order.
  const __m256i packed = _mm256_packus_epi32(bfloat16_bits(a), bfloat16_bits(b));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_permute4x64_epi64(packed, _MM_SHUFFLE(3, 1, 2, 0)));
}
// 16 values known not to be NaN: the bf16 rounding without the NaN select.
inline void store16_not_nan(float* p, __m256 a, __m256 b) { store16_from_float(p, a, b); }
inline void store16_not_nan(c10::Half* p, __m256 a, __m256 b) { store16_from_float(p, a, b); }
inline void store16_not_nan(c10::BFloat16* p, __m256 a, __m256 b) {
  const __m256i packed = _mm256_packus_epi32(bfloat16_bits_not_nan(a), bfloat16_bits_not_nan(b));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_permute4x64_epi64(packed, _MM_SHUFFLE(3, 1, 2, 0)));
}

// bf16 in "lane order": an elementwise op may take its 16 lanes in any
// order, and unpacking each 128-bit half of 16 bf16 against zeros makes 8
// fp32 values in one instruction (lanes 0-3, 8-11 in lo; 4-7, 12-15 in hi),
// with no cross-lane permute.
inline void load16_lane_order(const c10::BFloat16* p, __m256* lo, __m256* hi) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  *lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v));
  *hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v));
}
// 16 values in lane order rounded to bf16 and stored in place order (packus
// restores it). One unordered compare finds a NaN in either half; without
// one the rounding needs no NaN select.
inline void store16_lane_order(c10::BFloat16* p, __m256 lo, __m256 hi) {
  const __m256 nan = _mm256_cmp_ps(lo, hi, _CMP_UNORD_Q);
  const __m256i bits = _mm256_testz_ps(nan, nan)
                           ? _mm256_packus_epi32(bfloat16_bits_not_nan(lo), bfloat16_bits_not_nan(hi))
                           : _mm256_packus_epi32(bfloat16_bits(lo), bfloat16_bits(hi));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), bits);
}
// Two 8-lane vectors between place order and lane order (the swap is its own inverse).
inline void swap_lane_order(__m256 a, __m256 b, __m256* lo, __m256* hi) {
  *lo = _mm256_permute2f128_ps(a, b, 0x20);
  *hi = _mm256_permute2f128_ps(a, b, 0x31);
}

// 16 at a time: in 16-bit types one 32-byte load and store per operand
// (the 8-wide bf16 store needs a pack and a permute per 8 lanes).
template <typename T>
void add_rows_impl(const T* x, const T* w, T* y, int64_t n) {
  int64_t d = 0;
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    for (; d + 16 <= n; d += 16) {  // in lane order
      __m256 x_lo, x_hi, w_lo, w_hi;
      load16_lane_order(x + d, &x_lo, &x_hi);
      load16_lane_order(w + d, &w_lo, &w_hi);
      store16_lane_order(y + d, _mm256_add_ps(x_lo, w_lo), _mm256_add_ps(x_hi, w_hi));
    }
  }
  for (; d + 16 <= n; d += 16) {
    __m256 x0, x1, w0, w1;
    load16_as_float(x + d, &x0, &x1);
    load16_as_float(w + d, &w0, &w1);
    store16_from_float(y + d, _mm256_add_ps(x0, w0), _mm256_add_ps(x1, w1));
  }
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

template <typename G>
void sum_rows_impl(const G* const* g, int64_t count, int64_t n, float* acc, bool from_zero) {
  int64_t d = 0;
  for (; d + 16 <= n; d += 16) {
    __m256 a0 = from_zero ? _mm256_setzero_ps() : _mm256_loadu_ps(acc + d);
    __m256 a1 = from_zero ? _mm256_setzero_ps() : _mm256_loadu_ps(acc + d + 8);
    for (int64_t j = 0; j < count; ++j) {
      __m256 v0, v1;
      load16_as_float(g[j] + d, &v0, &v1);
      a0 = _mm256_add_ps(a0, v0);
      a1 = _mm256_add_ps(a1, v1);
    }
    _mm256_storeu_ps(acc + d, a0);
    _mm256_storeu_ps(acc + d + 8, a1);
  }
  for (; d + 8 <= n; d += 8) {
    __m256 a0 = from_zero ? _mm256_setzero_ps() : _mm256_loadu_ps(acc + d);
    for (int64_t j = 0; j < count; ++j) a0 = _mm256_add_ps(a0, load_as_float(g[j] + d));
    _mm256_storeu_ps(acc + d, a0);
  }
  for (; d < n; ++d) {
    float a0 = from_zero ? 0.0f : acc[d];
    for (int64_t j = 0; j < count; ++j) a0 += static_cast<float>(g[j][d]);
    acc[d] = a0;
  }
}

// A value the compiler must round as it is: GCC contracts an
// _mm256_mul_ps followed by an _mm256_add_ps into one vfmadd under -mfma,
// where the portable loops (built without FMA) round the product first.
inline __m256 rounded(__m256 v) {
  asm("" : "+x"(v));
  return v;
}
inline float rounded(float v) {
  asm("" : "+x"(v));
  return v;
}

// The 32 partial sums of row_sum<float, kBertParts> (cpu/rows.h) as four
// 8-lane vectors, parts 8j..8j+7 in s[j]: four chains of dependent adds in
// flight instead of one.
constexpr int kParts = 32;

inline float parts_total(const __m256 s[4], float* part, int64_t tail_from, int64_t n, const float* tail_values) {
  for (int j = 0; j < 4; ++j) _mm256_storeu_ps(part + 8 * j, s[j]);
  for (int64_t d = tail_from; d < n; ++d) part[0] += tail_values[d];
  float total = 0;
  for (int k = 0; k < kParts; ++k) total += part[k];
  return total;
}

// (w + p) + t of 16 elements, in fp32, as two vectors in order.
template <typename T>
inline void sum3_16(const T* w, const T* p, const T* t, __m256* a, __m256* b) {
  __m256 w0, w1, p0, p1, t0, t1;
  load16_as_float(w, &w0, &w1);
  load16_as_float(p, &p0, &p1);
  load16_as_float(t, &t0, &t1);
  *a = _mm256_add_ps(_mm256_add_ps(w0, p0), t0);
  *b = _mm256_add_ps(_mm256_add_ps(w1, p1), t1);
}
// bf16: each operand in lane order (load16_lane_order), the adds done in
// that order, and only the two sums put back in order: two permutes per 16
// elements instead of three conversion chains.
inline void sum3_16(const c10::BFloat16* w, const c10::BFloat16* p, const c10::BFloat16* t, __m256* a, __m256* b) {
  __m256 w_lo, w_hi, p_lo, p_hi, t_lo, t_hi;
  load16_lane_order(w, &w_lo, &w_hi);
  load16_lane_order(p, &p_lo, &p_hi);
  load16_lane_order(t, &t_lo, &t_hi);
  swap_lane_order(_mm256_add_ps(_mm256_add_ps(w_lo, p_lo), t_lo), _mm256_add_ps(_mm256_add_ps(w_hi, p_hi), t_hi), a, b);
}

template <typename T>
void bert_norm_row_impl(const T* w, const T* p, const T* t, const float* gamma, const float* beta,
                        const float* f, bool finite_affine, float eps, int64_t n, float* x, T* out, float* mean_out,
                        float* rstd_out) {
  // x = (w + p) + t and its sum, in row_sum<float, 32>'s order: part k sums
  // the elements d = k mod 32 of the whole 32-steps, the tail goes into part
  // 0 one element at a time, and the parts are added in order.
  __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t d = 0;
  for (; d + kParts <= n; d += kParts) {
    for (int j = 0; j < 4; j += 2) {
      __m256 a, b;
      sum3_16(w + d + 8 * j, p + d + 8 * j, t + d + 8 * j, &a, &b);
      _mm256_storeu_ps(x + d + 8 * j, a);
      _mm256_storeu_ps(x + d + 8 * j + 8, b);
      s[j] = _mm256_add_ps(s[j], a);
      s[j + 1] = _mm256_add_ps(s[j + 1], b);
    }
  }
  const int64_t whole = d;
  for (; d < n; ++d) x[d] = (static_cast<float>(w[d]) + static_cast<float>(p[d])) + static_cast<float>(t[d]);
  alignas(32) float part[kParts];
  const float mean = parts_total(s, part, whole, n, x) / static_cast<float>(n);

  // The squared deviations, in the same order; c * c rounded before the add.
  const __m256 m = _mm256_set1_ps(mean);
  __m256 q[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (d = 0; d + kParts <= n; d += kParts) {
    for (int j = 0; j < 4; ++j) {
      const __m256 c = _mm256_sub_ps(_mm256_loadu_ps(x + d + 8 * j), m);
      q[j] = _mm256_add_ps(q[j], rounded(_mm256_mul_ps(c, c)));
    }
  }
  for (int j = 0; j < 4; ++j) _mm256_storeu_ps(part + 8 * j, q[j]);
  for (; d < n; ++d) part[0] += rounded((x[d] - mean) * (x[d] - mean));
  float sq = 0;
  for (int k = 0; k < kParts; ++k) sq += part[k];
  const float rstd = 1.0f / std::sqrt(sq / static_cast<float>(n) + eps);

  const __m256 r = _mm256_set1_ps(rstd);
  auto norm8 = [&](int64_t e) {
    const __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + e), m), r), _mm256_loadu_ps(gamma + e));
    const __m256 y = _mm256_add_ps(rounded(v), _mm256_loadu_ps(beta + e));
    return f == nullptr ? y : _mm256_mul_ps(y, _mm256_loadu_ps(f + e));
  };
  // A finite mean means every x is finite, a finite sq that every
  // (x - mean)^2 is, so |x - mean| * rstd stays below sqrt(n); with gamma
  // and beta finite, no output is NaN (an overflow is an infinity, which
  // the rounding without the check handles as the one with it).
  // (A dropped infinity is inf * 0: NaN.)
  if (f == nullptr && finite_affine && std::isfinite(mean) && std::isfinite(sq)) {
    for (d = 0; d + 16 <= n; d += 16) store16_not_nan(out + d, norm8(d), norm8(d + 8));
  } else {
    for (d = 0; d + 16 <= n; d += 16) store16_from_float(out + d, norm8(d), norm8(d + 8));
  }
  for (; d + 8 <= n; d += 8) store_from_float(out + d, norm8(d));
  for (; d < n; ++d) {
    const float y = rounded((x[d] - mean) * rstd * gamma[d]) + beta[d];
    out[d] = static_cast<T>(f == nullptr ? y : y * f[d]);
  }
  *mean_out = mean;
  *rstd_out = rstd;
}

// Philox-4x32-10 (kernels/random.cuh) of the counters in the four 64-bit
// lanes of ctr: the words w0..w3 of each counter in the low 32 bits of c[0..3].
inline void philox4(__m256i ctr, uint64_t key, __m256i c[4]) {
  const __m256i low = _mm256_set1_epi64x(0xffffffffLL);
  const __m256i m0 = _mm256_set1_epi64x(0xD2511F53LL), m1 = _mm256_set1_epi64x(0xCD9E8D57LL);
  __m256i c0 = _mm256_and_si256(ctr, low), c1 = _mm256_srli_epi64(ctr, 32);
  __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    // mul_epu32 reads the low 32 bits of each lane: what the high halves hold does not matter.
    const __m256i p0 = _mm256_mul_epu32(c0, m0), p1 = _mm256_mul_epu32(c2, m1);
    const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), c1), _mm256_set1_epi64x(k0));
    const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), c3), _mm256_set1_epi64x(k1));
    c1 = p1;
    c3 = p0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  c[0] = c0;
  c[1] = c1;
  c[2] = c2;
  c[3] = c3;
}

}  // namespace

void dropout_factors(uint64_t seed, uint64_t first, int64_t n, float p, float keep, float* f) {
  auto scalar = [&](int64_t d) { f[d] = uniform(seed, first + d) >= p ? keep : 0.0f; };
  int64_t d = 0;
  for (; d < n && ((first + d) & 3) != 0; ++d) scalar(d);  // up to the next whole counter
  const __m256i low = _mm256_set1_epi64x(0xffffffffLL);
  const __m256 pv = _mm256_set1_ps(p), kv = _mm256_set1_ps(keep), scale = _mm256_set1_ps(1.0f / 16777216.0f);
  auto factors = [&](__m256i words) {  // uniform_from_word, compared with p
    const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(words, 8)), scale);
    return _mm256_and_ps(_mm256_cmp_ps(u, pv, _CMP_GE_OQ), kv);
  };
  for (; d + 16 <= n; d += 16) {
    const int64_t counter = static_cast<int64_t>((first + d) >> 2);
    __m256i c[4];
    philox4(_mm256_setr_epi64x(counter, counter + 1, counter + 2, counter + 3), seed, c);
    // Per counter: (w0, w1) and (w2, w3) as 64-bit lanes, then in element order.
    const __m256i a = _mm256_or_si256(_mm256_and_si256(c[0], low), _mm256_slli_epi64(c[1], 32));
    const __m256i b = _mm256_or_si256(_mm256_and_si256(c[2], low), _mm256_slli_epi64(c[3], 32));
    const __m256i lo = _mm256_unpacklo_epi64(a, b), hi = _mm256_unpackhi_epi64(a, b);
    _mm256_storeu_ps(f + d, factors(_mm256_permute2x128_si256(lo, hi, 0x20)));
    _mm256_storeu_ps(f + d + 8, factors(_mm256_permute2x128_si256(lo, hi, 0x31)));
  }
  for (; d < n; ++d) scalar(d);
}

void sum_rows(const float* const* g, int64_t count, int64_t n, float* acc, bool from_zero) {
  sum_rows_impl(g, count, n, acc, from_zero);
}
void sum_rows(const c10::BFloat16* const* g, int64_t count, int64_t n, float* acc, bool from_zero) {
  sum_rows_impl(g, count, n, acc, from_zero);
}
void sum_rows(const c10::Half* const* g, int64_t count, int64_t n, float* acc, bool from_zero) {
  sum_rows_impl(g, count, n, acc, from_zero);
}

void bert_norm_row(const float* w, const float* p, const float* t, const float* gamma, const float* beta,
                   const float* f, bool finite_affine, float eps, int64_t n, float* x, float* out, float* mean, float* rstd) {
  bert_norm_row_impl(w, p, t, gamma, beta, f, finite_affine, eps, n, x, out, mean, rstd);
}
void bert_norm_row(const c10::BFloat16* w, const c10::BFloat16* p, const c10::BFloat16* t, const float* gamma,
                   const float* beta, const float* f, bool finite_affine, float eps, int64_t n, float* x, c10::BFloat16* out, float* mean,
                   float* rstd) {
  bert_norm_row_impl(w, p, t, gamma, beta, f, finite_affine, eps, n, x, out, mean, rstd);
}
void bert_norm_row(const c10::Half* w, const c10::Half* p, const c10::Half* t, const float* gamma,
                   const float* beta, const float* f, bool finite_affine, float eps, int64_t n, float* x, c10::Half* out, float* mean, float* rstd) {
  bert_norm_row_impl(w, p, t, gamma, beta, f, finite_affine, eps, n, x, out, mean, rstd);
}

// From channel `from` of each half on.
template <typename T>
void rotate_halves_impl(const T* in, T* out, const float* c, const float* s, int64_t half, int64_t from = 0) {
  int64_t i = from;
  for (; i + 8 <= half; i += 8) {  // both halves' chunk i is read before either is written
    const __m256 a = load_as_float(in + i), z = load_as_float(in + half + i);
    const __m256 cv = _mm256_loadu_ps(c + i), sv = _mm256_loadu_ps(s + i);
    // rounded(): GCC would fuse the intrinsics' multiply and add into an FMA.
    store_from_float(out + i, _mm256_sub_ps(rounded(_mm256_mul_ps(a, cv)), rounded(_mm256_mul_ps(z, sv))));
    store_from_float(out + half + i, _mm256_add_ps(rounded(_mm256_mul_ps(z, cv)), rounded(_mm256_mul_ps(a, sv))));
  }
  for (; i < half; ++i) {
    const float a = static_cast<float>(in[i]), z = static_cast<float>(in[half + i]);
    out[i] = static_cast<T>(rounded(a * c[i]) - rounded(z * s[i]));
    out[half + i] = static_cast<T>(rounded(z * c[i]) + rounded(a * s[i]));
  }
}

void rotate_halves(const float* in, float* out, const float* c, const float* s, int64_t half) {
  rotate_halves_impl(in, out, c, s, half);
}
// bf16 16 channels at a time in lane order (load16_lane_order): the turn is
// elementwise, so c and s are put in that order instead, and the rounding
// skips its NaN select where the 16 results hold none (the 8-wide loop
// unpacked, rounded with the select and permuted 8 at a time).
void rotate_halves(const c10::BFloat16* in, c10::BFloat16* out, const float* c, const float* s, int64_t half) {
  int64_t i = 0;
  for (; i + 16 <= half; i += 16) {  // both halves' chunk i is read before either is written
    __m256 c_lo, c_hi, s_lo, s_hi, a_lo, a_hi, z_lo, z_hi;
    swap_lane_order(_mm256_loadu_ps(c + i), _mm256_loadu_ps(c + i + 8), &c_lo, &c_hi);
    swap_lane_order(_mm256_loadu_ps(s + i), _mm256_loadu_ps(s + i + 8), &s_lo, &s_hi);
    load16_lane_order(in + i, &a_lo, &a_hi);
    load16_lane_order(in + half + i, &z_lo, &z_hi);
    store16_lane_order(out + i, _mm256_sub_ps(rounded(_mm256_mul_ps(a_lo, c_lo)), rounded(_mm256_mul_ps(z_lo, s_lo))),
                       _mm256_sub_ps(rounded(_mm256_mul_ps(a_hi, c_hi)), rounded(_mm256_mul_ps(z_hi, s_hi))));
    store16_lane_order(out + half + i,
                       _mm256_add_ps(rounded(_mm256_mul_ps(z_lo, c_lo)), rounded(_mm256_mul_ps(a_lo, s_lo))),
                       _mm256_add_ps(rounded(_mm256_mul_ps(z_hi, c_hi)), rounded(_mm256_mul_ps(a_hi, s_hi))));
  }
  rotate_halves_impl(in, out, c, s, half, i);
}
void rotate_halves(const c10::Half* in, c10::Half* out, const float* c, const float* s, int64_t half) {
  rotate_halves_impl(in, out, c, s, half);
}

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

namespace {

// sin and cos of 8 angles given as quadrants q and fp32-path residuals
// (turns::split), lane by lane: the same operations in the same order as
// turns::sincos, 8 wide, so the results are bitwise those of the scalar path
// and the CUDA kernels.
inline void sincos8(__m256i q, __m256i residual, __m256* s, __m256* c) {
  const __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(residual), _mm256_set1_ps(turns::kResidualToRadians));
  const __m256 z = _mm256_mul_ps(r, r);
  __m256 ps = _mm256_fmadd_ps(z, _mm256_set1_ps(turns::kSin7), _mm256_set1_ps(turns::kSin5));
  ps = _mm256_fmadd_ps(z, ps, _mm256_set1_ps(turns::kSin3));
  const __m256 sr = _mm256_fmadd_ps(_mm256_mul_ps(r, z), ps, r);
  __m256 pc = _mm256_fmadd_ps(z, _mm256_set1_ps(turns::kCos8), _mm256_set1_ps(turns::kCos6));
  pc = _mm256_fmadd_ps(z, pc, _mm256_set1_ps(turns::kCos4));
  pc = _mm256_fmadd_ps(z, pc, _mm256_set1_ps(-0.5f));
  const __m256 cr = _mm256_fmadd_ps(z, pc, _mm256_set1_ps(1.0f));
  // sin/cos of r + q·π/2: odd q swaps them (blendv reads only the sign bit,
  // where the shift puts q's bit 0); q's bit 1 negates sin, and cos is
  // negated by bit 1 of q + 1, which is bit 1 xor bit 0 of q.
  const __m256i odd = _mm256_slli_epi32(q, 31);
  const __m256i sign_s = _mm256_and_si256(_mm256_slli_epi32(q, 30), _mm256_set1_epi32(INT32_MIN));
  const __m256i sign_c = _mm256_xor_si256(sign_s, odd);
  const __m256 swap = _mm256_castsi256_ps(odd);
  *s = _mm256_xor_ps(_mm256_blendv_ps(sr, cr, swap), _mm256_castsi256_ps(sign_s));
  *c = _mm256_xor_ps(_mm256_blendv_ps(cr, sr, swap), _mm256_castsi256_ps(sign_c));
}

// sin and cos of 8 angles in pair order, stored in place order:
// interleaved, s0 c0 s1 c1 .. s7 c7 at s (the unpacks pair lanes 0 1 and
// 2 3 of each half, which pair order makes 0 1 2 3 and 4 5 6 7); else the
// sines at s and the cosines at c.
inline void store_pair_order(__m256i q, __m256i residual, bool interleaved, float* s, float* c) {
  __m256 vs, vc;
  sincos8(q, residual, &vs, &vc);
  if (interleaved) {
    _mm256_storeu_ps(s, _mm256_unpacklo_ps(vs, vc));
    _mm256_storeu_ps(s + 8, _mm256_unpackhi_ps(vs, vc));
  } else {
    _mm256_storeu_ps(s, from_pair_order(vs));
    _mm256_storeu_ps(c, from_pair_order(vc));
  }
}

// kInterleaved: s0 c0 s1 c1 .. into s (c unused); else the sines in s, the cosines in c.
template <bool kWide, bool kInterleaved>
void position_sincos_row_impl(int64_t position, const uint64_t* F, int64_t n, float* s, float* c) {
  const uint64_t p = static_cast<uint64_t>(position);
  const __m256i p_lo = _mm256_set1_epi64x(static_cast<int64_t>(p & 0xffffffffu));
  const __m256i p_hi = _mm256_set1_epi64x(static_cast<int64_t>(p >> 32));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i q, residual;
    split8<kWide>(p_lo, p_hi, F + i, &q, &residual);
    if constexpr (kInterleaved) {
      store_pair_order(q, residual, true, s + 2 * i, nullptr);
    } else {
      store_pair_order(q, residual, false, s + i, c + i);
    }
  }
  for (; i < n; ++i) {
    if constexpr (kInterleaved) {
      turns::position_sincos(position, F[i], &s[2 * i], &s[2 * i + 1]);
    } else {
      turns::position_sincos(position, F[i], &s[i], &c[i]);
    }
  }
}

// A row's encoding computed 8 frequencies at a time, a step at a time
// (step() does nothing once 8 are not left, or without a row), and finished
// by the row functions.
class EncodingSteps {
 public:
  explicit EncodingSteps(const Encoding* e)
      : e_(e),
        wide_(e != nullptr && (static_cast<uint64_t>(e->position) >> 32) != 0),
        p_lo_(_mm256_set1_epi64x(e ? static_cast<int64_t>(static_cast<uint64_t>(e->position) & 0xffffffffu) : 0)),
        p_hi_(_mm256_set1_epi64x(e ? static_cast<int64_t>(static_cast<uint64_t>(e->position) >> 32) : 0)) {}

  void step() {
    if (e_ == nullptr || done_ + 8 > e_->half) return;
    __m256i q, residual;
    if (wide_) {
      split8<true>(p_lo_, p_hi_, e_->F + done_, &q, &residual);
    } else {
      split8<false>(p_lo_, p_hi_, e_->F + done_, &q, &residual);
    }
    if (e_->interleaved) {
      store_pair_order(q, residual, true, e_->enc + 2 * done_, nullptr);
    } else {
      store_pair_order(q, residual, false, e_->enc + done_, e_->enc + e_->half + done_);
    }
    done_ += 8;
  }

  void finish() {
    if (e_ == nullptr || done_ == e_->half) return;
    const uint64_t* F = e_->F + done_;
    if (e_->interleaved) {
      position_sincos_row_interleaved(e_->position, F, e_->half - done_, e_->enc + 2 * done_);
    } else {
      position_sincos_row(e_->position, F, e_->half - done_, e_->enc + done_, e_->enc + e_->half + done_);
    }
  }

 private:
  const Encoding* e_;
  bool wide_;
  __m256i p_lo_, p_hi_;
  int64_t done_ = 0;
};

// Each enc vector is loaded once and serves every row: the rows' streams
// advance together, which the hardware prefetchers follow as well as one
// stream, where sweeping the rows one after another restarts them.
// With next, each 16-channel step also computes 8 of its frequencies
// (EncodingSteps): ALU work that overlaps the step's memory traffic.
template <typename T>
void fused_rows_impl(const T* const* x, T* const* y, int64_t rows, const float* enc, float scale, int64_t n,
                     const Encoding* next) {
  const __m256 s = _mm256_set1_ps(scale);
  EncodingSteps steps(next);
  int64_t d = 0;
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    // In lane order, the encoding put in that order once per 16 channels for all the rows.
    for (; d + 16 <= n; d += 16) {
      __m256 e_lo, e_hi;
      swap_lane_order(_mm256_loadu_ps(enc + d), _mm256_loadu_ps(enc + d + 8), &e_lo, &e_hi);
      steps.step();
      for (int64_t r = 0; r < rows; ++r) {
        __m256 lo, hi;
        load16_lane_order(x[r] + d, &lo, &hi);
        store16_lane_order(y[r] + d, _mm256_fmadd_ps(lo, s, e_lo), _mm256_fmadd_ps(hi, s, e_hi));
      }
    }
  }
  for (; d + 16 <= n; d += 16) {
    const __m256 e0 = _mm256_loadu_ps(enc + d), e1 = _mm256_loadu_ps(enc + d + 8);
    steps.step();
    for (int64_t r = 0; r < rows; ++r) {
      __m256 a, b;
      load16_as_float(x[r] + d, &a, &b);
      store16_from_float(y[r] + d, _mm256_fmadd_ps(a, s, e0), _mm256_fmadd_ps(b, s, e1));
    }
  }
  for (; d + 8 <= n; d += 8) {
    const __m256 e = _mm256_loadu_ps(enc + d);
    for (int64_t r = 0; r < rows; ++r) store_from_float(y[r] + d, _mm256_fmadd_ps(load_as_float(x[r] + d), s, e));
  }
  for (; d < n; ++d) {
    for (int64_t r = 0; r < rows; ++r) y[r][d] = static_cast<T>(mul_add(static_cast<float>(x[r][d]), scale, enc[d]));
  }
  steps.finish();
}

}  // namespace

void sincos_turns_row(const uint64_t* u, int64_t n, float* s, float* c) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i q, residual;
    split8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u + i)),
           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(u + i + 4)), &q, &residual);
    store_pair_order(q, residual, false, s + i, c + i);
  }
  for (; i < n; ++i) turns::sincos(u[i], &s[i], &c[i]);
}

// Built here with FMA enabled, the fmaf in float_angle is one instruction
// (in the generic build it is a libm call); -ffp-contract=off keeps the rest.
void float_angles(float t, const FloatFreq* freqs, int64_t n, uint64_t* u) {
  for (int64_t i = 0; i < n; ++i) u[i] = turns::float_angle(t, freqs[i]);
}
void float_angles(double t, const FloatFreq* freqs, int64_t n, uint64_t* u) {
  for (int64_t i = 0; i < n; ++i) u[i] = turns::float_angle(t, freqs[i]);
}

void position_sincos_row(int64_t position, const uint64_t* F, int64_t n, float* s, float* c) {
  if (static_cast<uint64_t>(position) >> 32) return position_sincos_row_impl<true, false>(position, F, n, s, c);
  position_sincos_row_impl<false, false>(position, F, n, s, c);
}

void position_sincos_row_interleaved(int64_t position, const uint64_t* F, int64_t n, float* out) {
  if (static_cast<uint64_t>(position) >> 32) {
    return position_sincos_row_impl<true, true>(position, F, n, out, nullptr);
  }
  position_sincos_row_impl<false, true>(position, F, n, out, nullptr);
}

void fused_rows(const float* const* x, float* const* y, int64_t rows, const float* enc, float scale, int64_t n,
                const Encoding* next) {
  fused_rows_impl(x, y, rows, enc, scale, n, next);
}
void fused_rows(const c10::BFloat16* const* x, c10::BFloat16* const* y, int64_t rows, const float* enc, float scale,
                int64_t n, const Encoding* next) {
  fused_rows_impl(x, y, rows, enc, scale, n, next);
}
void fused_rows(const c10::Half* const* x, c10::Half* const* y, int64_t rows, const float* enc, float scale,
                int64_t n, const Encoding* next) {
  fused_rows_impl(x, y, rows, enc, scale, n, next);
}

}  // namespace posemb::detail::avx2
