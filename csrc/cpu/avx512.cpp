// Compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c
// (CMakeLists.txt); only called after available() says the CPU has them.
//
// Against the AVX2 loops: the angle's 64-bit product is one instruction
// (AVX512DQ) where AVX2 builds it from four 32-bit ones, the quadrant swap
// is a mask, a lane permute puts the angles in any order for free, and
// tails are masked loads and stores rather than scalar loops. A 32-channel
// step of bf16 is one 64-byte load and store.
#include "cpu/avx512.h"

#include <ATen/Version.h>
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "kernels/turns.cuh"

namespace posemb::detail::avx512 {

bool available() {
  // ATen's choice ("DEFAULT", "AVX2", "AVX512", ...) honours ATEN_CPU_CAPABILITY.
  static const bool ok = at::get_cpu_capability() == "AVX512" && __builtin_cpu_supports("avx512f") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma") &&
                         __builtin_cpu_supports("f16c");
  return ok;
}

namespace {

// The first n of 16 lanes (all of them for n >= 16).
inline __mmask16 first_lanes(int64_t n) { return static_cast<__mmask16>(n >= 16 ? 0xFFFFu : (1u << n) - 1u); }

// Angle j of a 16-angle step lives in the low 32 bits of its 64-bit lane,
// and in its high 32 bits for the quarter: the dword index of angle j in
// the pair (u0, u1) is 2j (j < 8) or 16 + 2(j - 8).
constexpr int dword_of(int j) { return j < 8 ? 2 * j : 16 + 2 * (j - 8); }

// The lane order of the angles. Place order for the halves layout; for the
// interleaved one, the order after which unpacklo/unpackhi (which pair lanes
// within 128-bit quarters) give (sin, cos) of angles 0..7 and 8..15 in place.
template <bool kInterleaved>
inline __m512i angle_order() {
  if constexpr (kInterleaved) {
    return _mm512_setr_epi32(dword_of(0), dword_of(1), dword_of(8), dword_of(9), dword_of(2), dword_of(3),
                             dword_of(10), dword_of(11), dword_of(4), dword_of(5), dword_of(12), dword_of(13),
                             dword_of(6), dword_of(7), dword_of(14), dword_of(15));
  } else {
    return _mm512_setr_epi32(dword_of(0), dword_of(1), dword_of(2), dword_of(3), dword_of(4), dword_of(5),
                             dword_of(6), dword_of(7), dword_of(8), dword_of(9), dword_of(10), dword_of(11),
                             dword_of(12), dword_of(13), dword_of(14), dword_of(15));
  }
}

// turns::split of the 16 angles p · F[0..16) (mod 2^64), the lanes of F
// past `mask` read as 0: with v = u >> 30, the residual is v's low 32 bits
// and the nearest quarter v's high half plus one when the residual is
// negative (as avx2::split8).
template <bool kInterleaved>
inline void split16(__m512i p, const uint64_t* F, __mmask16 mask, __m512i* quadrant, __m512i* residual) {
  const __mmask8 m1 = static_cast<__mmask8>(mask >> 8);  // F + 8 is formed only when it is in the row
  const __m512i f0 = _mm512_maskz_loadu_epi64(static_cast<__mmask8>(mask), F);
  const __m512i f1 = m1 ? _mm512_maskz_loadu_epi64(m1, F + 8) : _mm512_setzero_si512();
  const __m512i v0 = _mm512_srli_epi64(_mm512_mullo_epi64(p, f0), 30);
  const __m512i v1 = _mm512_srli_epi64(_mm512_mullo_epi64(p, f1), 30);
  const __m512i order = angle_order<kInterleaved>();
  const __m512i lo = _mm512_permutex2var_epi32(v0, order, v1);
  const __m512i hi = _mm512_permutex2var_epi32(v0, _mm512_add_epi32(order, _mm512_set1_epi32(1)), v1);
  *residual = lo;
  *quadrant = _mm512_sub_epi32(hi, _mm512_srai_epi32(lo, 31));  // only its low two bits are used
}

// turns::sincos lane by lane: the operations of avx2's sincos8, 16 wide.
inline void sincos16(__m512i q, __m512i residual, __m512* s, __m512* c) {
  const __m512 r = _mm512_mul_ps(_mm512_cvtepi32_ps(residual), _mm512_set1_ps(turns::kResidualToRadians));
  const __m512 z = _mm512_mul_ps(r, r);
  __m512 ps = _mm512_fmadd_ps(z, _mm512_set1_ps(turns::kSin7), _mm512_set1_ps(turns::kSin5));
  ps = _mm512_fmadd_ps(z, ps, _mm512_set1_ps(turns::kSin3));
  const __m512 sr = _mm512_fmadd_ps(_mm512_mul_ps(r, z), ps, r);
  __m512 pc = _mm512_fmadd_ps(z, _mm512_set1_ps(turns::kCos8), _mm512_set1_ps(turns::kCos6));
  pc = _mm512_fmadd_ps(z, pc, _mm512_set1_ps(turns::kCos4));
  pc = _mm512_fmadd_ps(z, pc, _mm512_set1_ps(-0.5f));
  const __m512 cr = _mm512_fmadd_ps(z, pc, _mm512_set1_ps(1.0f));
  // Odd q swaps sin and cos; q's bit 1 negates sin, bit 1 of q + 1 negates cos.
  const __mmask16 swap = _mm512_test_epi32_mask(q, _mm512_set1_epi32(1));
  const __m512i sign_s = _mm512_and_si512(_mm512_slli_epi32(q, 30), _mm512_set1_epi32(INT32_MIN));
  const __m512i sign_c = _mm512_xor_si512(sign_s, _mm512_slli_epi32(q, 31));
  *s = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(_mm512_mask_blend_ps(swap, sr, cr)), sign_s));
  *c = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(_mm512_mask_blend_ps(swap, cr, sr)), sign_c));
}

// sin and cos of the n <= 16 angles p · F[0..n), stored in the layout:
// interleaved, 2n values at s; else n sines at s and n cosines at c.
template <bool kInterleaved>
inline void store_sincos16(__m512i p, const uint64_t* F, int64_t n, float* s, float* c) {
  const __mmask16 mask = first_lanes(n);
  __m512i q, residual;
  split16<kInterleaved>(p, F, mask, &q, &residual);
  __m512 vs, vc;
  sincos16(q, residual, &vs, &vc);
  if constexpr (kInterleaved) {
    const __m512 lo = _mm512_unpacklo_ps(vs, vc), hi = _mm512_unpackhi_ps(vs, vc);
    if (n >= 16) {
      _mm512_storeu_ps(s, lo);
      _mm512_storeu_ps(s + 16, hi);
    } else {
      _mm512_mask_storeu_ps(s, first_lanes(2 * n), lo);
      if (n > 8) _mm512_mask_storeu_ps(s + 16, first_lanes(2 * (n - 8)), hi);
    }
  } else {
    _mm512_mask_storeu_ps(s, mask, vs);
    _mm512_mask_storeu_ps(c, mask, vc);
  }
}

template <bool kInterleaved>
void position_sincos_row_impl(int64_t position, const uint64_t* F, int64_t n, float* s, float* c) {
  const __m512i p = _mm512_set1_epi64(position);
  for (int64_t i = 0; i < n; i += 16) {
    if constexpr (kInterleaved) {
      store_sincos16<true>(p, F + i, n - i, s + 2 * i, nullptr);
    } else {
      store_sincos16<false>(p, F + i, n - i, s + i, c + i);
    }
  }
}

// A row's encoding computed 16 frequencies at a time, a step at a time
// (step() does nothing once 16 are not left, or without a row), and finished
// by the row functions.
class EncodingSteps {
 public:
  explicit EncodingSteps(const Encoding* e) : e_(e), p_(_mm512_set1_epi64(e ? e->position : 0)) {}

  void step() {
    if (e_ == nullptr || done_ + 16 > e_->half) return;
    if (e_->interleaved) {
      store_sincos16<true>(p_, e_->F + done_, 16, e_->enc + 2 * done_, nullptr);
    } else {
      store_sincos16<false>(p_, e_->F + done_, 16, e_->enc + done_, e_->enc + e_->half + done_);
    }
    done_ += 16;
  }

  void finish() {
    if (e_ == nullptr || done_ == e_->half) return;
    const uint64_t* F = e_->F + done_;
    if (e_->interleaved) {
      position_sincos_row_impl<true>(e_->position, F, e_->half - done_, e_->enc + 2 * done_, nullptr);
    } else {
      position_sincos_row_impl<false>(e_->position, F, e_->half - done_, e_->enc + done_,
                                      e_->enc + e_->half + done_);
    }
  }

 private:
  const Encoding* e_;
  __m512i p_;
  int64_t done_ = 0;
};

// bf16 rounded to nearest even, NaN kept a (quiet) NaN, as c10::BFloat16
// does; the bits in the low half of each 32-bit lane.
inline __m512i bfloat16_bits_not_nan(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  return _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
}
inline __m512i bfloat16_bits(__m512 v) {
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_mask_blend_epi32(nan, bfloat16_bits_not_nan(v), _mm512_set1_epi32(0x7FC0));
}

// Up to 16 values in place order, as fp32, and back (masked past n).
inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const c10::Half* p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
inline __m512 load16(const c10::BFloat16* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}
inline void store16(float* p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
inline void store16(c10::Half* p, __mmask16 m, __m512 v) {
  _mm256_mask_storeu_epi16(p, m, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
inline void store16(c10::BFloat16* p, __mmask16 m, __m512 v) {
  _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(bfloat16_bits(v)));
}

// 32 bf16 in "lane order": unpacking each 128-bit quarter of 32 bf16 against
// zeros gives 16 fp32 values in one instruction (elements 0-3, 8-11, 16-19,
// 24-27 in lo; 4-7, 12-15, 20-23, 28-31 in hi), and packus puts them back.
inline void load32_lane_order(const c10::BFloat16* p, __m512* lo, __m512* hi) {
  const __m512i zero = _mm512_setzero_si512();
  const __m512i v = _mm512_loadu_si512(p);
  *lo = _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, v));
  *hi = _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, v));
}
// One unordered compare finds a NaN in either half; without one the
// rounding needs no NaN select.
inline void store32_lane_order(c10::BFloat16* p, __m512 lo, __m512 hi) {
  const __m512i bits = _mm512_cmp_ps_mask(lo, hi, _CMP_UNORD_Q) == 0
                           ? _mm512_packus_epi32(bfloat16_bits_not_nan(lo), bfloat16_bits_not_nan(hi))
                           : _mm512_packus_epi32(bfloat16_bits(lo), bfloat16_bits(hi));
  _mm512_storeu_si512(p, bits);
}

template <typename T>
void fused_rows_impl(const T* const* x, T* const* y, int64_t rows, const float* enc, float scale, int64_t n,
                     const Encoding* next) {
  const __m512 s = _mm512_set1_ps(scale);
  EncodingSteps steps(next);
  int64_t d = 0;
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    // The encoding put in lane order once per 32 channels for all the rows.
    const __m512i lo_order = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
    const __m512i hi_order = _mm512_add_epi32(lo_order, _mm512_set1_epi32(4));
    for (; d + 32 <= n; d += 32) {
      const __m512 e0 = _mm512_loadu_ps(enc + d), e1 = _mm512_loadu_ps(enc + d + 16);
      const __m512 e_lo = _mm512_permutex2var_ps(e0, lo_order, e1);
      const __m512 e_hi = _mm512_permutex2var_ps(e0, hi_order, e1);
      steps.step();
      for (int64_t r = 0; r < rows; ++r) {
        __m512 lo, hi;
        load32_lane_order(x[r] + d, &lo, &hi);
        store32_lane_order(y[r] + d, _mm512_fmadd_ps(lo, s, e_lo), _mm512_fmadd_ps(hi, s, e_hi));
      }
    }
  } else {
    const __mmask16 all = 0xFFFF;
    for (; d + 32 <= n; d += 32) {
      const __m512 e0 = _mm512_loadu_ps(enc + d), e1 = _mm512_loadu_ps(enc + d + 16);
      steps.step();
      for (int64_t r = 0; r < rows; ++r) {
        const __m512 a = load16(x[r] + d, all), b = load16(x[r] + d + 16, all);
        store16(y[r] + d, all, _mm512_fmadd_ps(a, s, e0));
        store16(y[r] + d + 16, all, _mm512_fmadd_ps(b, s, e1));
      }
    }
  }
  // The last < 32 channels 16 at a time, masked: the same one rounding.
  for (; d < n; d += 16) {
    const __mmask16 m = first_lanes(n - d);
    const __m512 e = _mm512_maskz_loadu_ps(m, enc + d);
    for (int64_t r = 0; r < rows; ++r) store16(y[r] + d, m, _mm512_fmadd_ps(load16(x[r] + d, m), s, e));
  }
  steps.finish();
}

}  // namespace

void position_sincos_row(int64_t position, const uint64_t* F, int64_t n, float* s, float* c) {
  position_sincos_row_impl<false>(position, F, n, s, c);
}

void position_sincos_row_interleaved(int64_t position, const uint64_t* F, int64_t n, float* out) {
  position_sincos_row_impl<true>(position, F, n, out, nullptr);
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

}  // namespace posemb::detail::avx512
