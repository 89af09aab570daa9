// AVX-512 versions of the rows of sin/cos (sinusoidal_add, rotary, integral
// timesteps) and of sinusoidal_add's fused multiply-add, 16 lanes wide, compiled in their own translation unit
// with AVX512F/BW/DQ/VL enabled and chosen at run time (see available()).
// Every function computes the bits of its cpu/avx2.h namesake and of the
// portable loops: the same operations, in the same order, on more lanes.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "cpu/encoding.h"

namespace posemb::detail::avx512 {

/// True when this build has the AVX-512 loops, the CPU runs them, and ATen's
/// CPU capability is AVX512 (ATEN_CPU_CAPABILITY=avx2 or default turns them off).
bool available();

/// s[i], c[i] = sin, cos of position times frequency i, given as its turns
/// (kernels/turns.cuh), for i < n.
void position_sincos_row(int64_t position, const uint64_t* F, int64_t n, float* s, float* c);
/// The same, interleaved: out[2i], out[2i + 1] = sin, cos, for i < n.
void position_sincos_row_interleaved(int64_t position, const uint64_t* F, int64_t n, float* out);

/// y[r][d] = x[r][d] * scale + enc[d] for r < rows, d < n, rounded once to
/// the storage type, 32 channels a step. With `next`, each step also computes
/// 16 frequencies of the next row's encoding (as avx2::fused_rows does 8 per
/// 16 channels). next->enc must not be enc.
void fused_rows(const float* const* x, float* const* y, int64_t rows, const float* enc, float scale, int64_t n,
                const Encoding* next = nullptr);
void fused_rows(const c10::BFloat16* const* x, c10::BFloat16* const* y, int64_t rows, const float* enc, float scale,
                int64_t n, const Encoding* next = nullptr);
void fused_rows(const c10::Half* const* x, c10::Half* const* y, int64_t rows, const float* enc, float scale,
                int64_t n, const Encoding* next = nullptr);

}  // namespace posemb::detail::avx512
