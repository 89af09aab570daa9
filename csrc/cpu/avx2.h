// AVX2 + FMA + F16C versions of the CPU kernels' hot loops (sincos, fused
// multiply-add, row adds, half-precision conversions), compiled in their own
// translation unit with those instructions enabled and chosen at run time
// (see available()).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "cpu/encoding.h"

namespace posemb {
struct FloatFreq;  // kernels/float_turns.cuh
}

namespace posemb::detail::avx2 {

/// True when this build has the AVX2 kernels, the CPU runs them, and ATen's
/// CPU capability (ATEN_CPU_CAPABILITY=default turns it off) allows them.
bool available();

/// s[i], c[i] = sin, cos of position times frequency i, given as its turns
/// (kernels/turns.cuh), for i < n: 8 wide, bitwise equal to turns::position_sincos.
void position_sincos_row(int64_t position, const uint64_t* F, int64_t n, float* s, float* c);
/// The same, interleaved: out[2i], out[2i + 1] = sin, cos, for i < n.
void position_sincos_row_interleaved(int64_t position, const uint64_t* F, int64_t n, float* out);

/// s[i], c[i] = sin, cos of the angles u[i] (turns · 2^64, as float
/// positions' angles come from kernels/float_turns.cuh) for i < n: 8 wide,
/// bitwise equal to turns::sincos.
void sincos_turns_row(const uint64_t* u, int64_t n, float* s, float* c);
/// u[i] = turns::float_angle(t, freqs[i]) for i < n (t finite).
void float_angles(float t, const FloatFreq* freqs, int64_t n, uint64_t* u);
void float_angles(double t, const FloatFreq* freqs, int64_t n, uint64_t* u);

/// y[r][d] = x[r][d] * scale + enc[d] for r < rows, d < n, rounded once to
/// the storage type: the rows that share one encoding, swept together.
/// With `next`, the next row's encoding is computed in the same sweep, 8
/// frequencies per 16 channels, so its sin/cos work runs while the rows'
/// loads and stores are in flight instead of between them (bitwise what
/// position_sincos_row(_interleaved) computes). next->enc must not be enc.
void fused_rows(const float* const* x, float* const* y, int64_t rows, const float* enc, float scale, int64_t n,
                const Encoding* next = nullptr);
void fused_rows(const c10::BFloat16* const* x, c10::BFloat16* const* y, int64_t rows, const float* enc, float scale,
                int64_t n, const Encoding* next = nullptr);
void fused_rows(const c10::Half* const* x, c10::Half* const* y, int64_t rows, const float* enc, float scale,
                int64_t n, const Encoding* next = nullptr);

/// The rotary turn of one head row: with a = in[0, half), z = in[half, 2 half),
/// out = (a c - z s, z c + a s), each product rounded to fp32 before the sum
/// (the portable loop's operations, no FMA, so the same bits). in may be out.
void rotate_halves(const float* in, float* out, const float* c, const float* s, int64_t half);
void rotate_halves(const c10::BFloat16* in, c10::BFloat16* out, const float* c, const float* s, int64_t half);
void rotate_halves(const c10::Half* in, c10::Half* out, const float* c, const float* s, int64_t half);

/// y[d] = x[d] + w[d] for d < n, added in fp32, rounded once.
void add_rows(const float* x, const float* w, float* y, int64_t n);
void add_rows(const c10::BFloat16* x, const c10::BFloat16* w, c10::BFloat16* y, int64_t n);
void add_rows(const c10::Half* x, const c10::Half* w, c10::Half* y, int64_t n);

/// acc[d] = (((a + g[0][d]) + g[1][d]) + ...) + g[count - 1][d] for d < n,
/// with a = 0 when from_zero, else acc[d]: one fp32 add per element and row,
/// in row order, as the portable loop adds them, the partial sums kept in
/// registers.
void sum_rows(const float* const* g, int64_t count, int64_t n, float* acc, bool from_zero);
void sum_rows(const c10::BFloat16* const* g, int64_t count, int64_t n, float* acc, bool from_zero);
void sum_rows(const c10::Half* const* g, int64_t count, int64_t n, float* acc, bool from_zero);

/// One token row of the BERT block's forward without dropout: x = (w + p) + t
/// in fp32 (kept in x[0..n)), mean and rstd summed in the order of
/// cpu/rows.h's row_sum<float, kBertParts> (32 parts, the tail into part 0),
/// out = (x - mean) * rstd * gamma + beta rounded once. The same operations
/// in the same order as bert_cpu.cpp's portable loop, and no fused
/// multiply-add, so the results are bitwise that loop's. f: the dropout
/// factors of the row (each output times f[d] before the rounding), or
/// null. finite_affine:
/// gamma and beta hold no NaN or infinity (then a row with a finite mean and
/// rstd rounds to bf16 without the NaN check).
void bert_norm_row(const float* w, const float* p, const float* t, const float* gamma, const float* beta,
                   const float* f, bool finite_affine, float eps, int64_t n, float* x, float* out, float* mean, float* rstd);
void bert_norm_row(const c10::BFloat16* w, const c10::BFloat16* p, const c10::BFloat16* t, const float* gamma,
                   const float* beta, const float* f, bool finite_affine, float eps, int64_t n, float* x, c10::BFloat16* out,
                   float* mean, float* rstd);
void bert_norm_row(const c10::Half* w, const c10::Half* p, const c10::Half* t, const float* gamma,
                   const float* beta, const float* f, bool finite_affine, float eps, int64_t n, float* x, c10::Half* out,
                   float* mean, float* rstd);

/// f[d] = keep when the uniform number of element first + d under seed
/// (kernels/random.cuh: Philox-4x32-10) is >= p, else 0, for d < n: four
/// Philox counters at a time in 64-bit lanes, bitwise the scalar draw.
void dropout_factors(uint64_t seed, uint64_t first, int64_t n, float p, float keep, float* f);

/// dst[d] = float(src[d]), and back with round-to-nearest-even.
void to_float(const c10::BFloat16* src, float* dst, int64_t n);
void to_float(const c10::Half* src, float* dst, int64_t n);
void from_float(const float* src, c10::BFloat16* dst, int64_t n);
void from_float(const float* src, c10::Half* dst, int64_t n);

}  // namespace posemb::detail::avx2
