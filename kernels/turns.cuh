// The angle core of every posemb kernel that needs sin and cos of a
// position times a frequency, CPU and GPU alike: exact angles in fixed-point
// turns, with no fp64 arithmetic on the fp32/bf16/fp16 paths.
//
// A frequency w (radians per position) is held as the fraction of a turn it
// advances per position, F = round(frac(w / 2π) · 2^64), a uint64. For an
// integer position p, the wrapping product u = uint64(p) · F is p·w/2π mod 1
// in units of 2^-64 turn, wrong by at most |p| · 2^-65 turn: 2.9e-10 rad at
// p = 2^31. The quadrant is the nearest quarter turn of u; what is left, at
// most 1/8 turn, is converted to radians and goes into a short polynomial.
// Angles formed as float(p) * w instead are off by half an ulp of the angle:
// 3e-2 rad near p = 2^20 (README: "Numerical contract").
//
// Torch-free, `__host__ __device__`; the CPU kernels (scalar, AVX2, AVX-512) and
// the CUDA kernels compute bit-identical fp32 sin/cos from the same F.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/math.cuh"

namespace posemb {
namespace turns {

/// The high 64 bits of a 64 x 64-bit product.
POSEMB_HD uint64_t mul_hi(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
}

/// F of an fp32 frequency w, exactly: round(frac(w / 2π) · 2^64), computed in
/// integers from w's bits and 256 bits of 1/2π (as the Payne–Hanek argument
/// reduction does), so a device can turn a frequency tensor into turns itself.
/// w must be finite; its sign is kept (F of -w is -F).
POSEMB_HD uint64_t from_float(float w) {
  uint32_t bits;
  memcpy(&bits, &w, sizeof(bits));
  const uint32_t biased = (bits >> 23) & 0xffu;
  const uint64_t m = biased ? ((bits & 0x7fffffu) | 0x800000u) : (bits & 0x7fffffu);
  const int e = biased ? static_cast<int>(biased) - 150 : -149;  // w = m · 2^e
  // floor(2^256 / 2π), most significant word first.
  const uint64_t kInvTwoPi[4] = {0x28be60db9391054aull, 0x7f09d5f47d4d3770ull, 0x36d8a5664f10e410ull,
                                 0x7f9458eaf7aef158ull};
  // P = m · floor(2^256/2π), five words, p0 the most significant (scalars,
  // not an array: a run-time index would put it in local memory on a GPU).
  uint64_t p[5];
  uint64_t carry = 0;
POSEMB_UNROLL
  for (int i = 3; i >= 0; --i) {
    const uint64_t lo = kInvTwoPi[i] * m;
    const uint64_t hi = mul_hi(kInvTwoPi[i], m);
    p[i + 1] = lo + carry;
    carry = hi + (p[i + 1] < lo);
  }
  p[0] = carry;
  const uint64_t p0 = p[0], p1 = p[1], p2 = p[2], p3 = p[3], p4 = p[4];
  auto word = [=](int i) -> uint64_t {  // word i of P, 0 outside it
    return i == 0 ? p0 : i == 1 ? p1 : i == 2 ? p2 : i == 3 ? p3 : i == 4 ? p4 : 0;
  };
  // w/2π · 2^64 = P · 2^(e + 64 - 256): F is P's 64 bits from bit (192 - e) up.
  auto bits_from = [&](int from) -> uint64_t {  // (P >> from) mod 2^64, from >= 0
    const int i = 4 - from / 64, off = from % 64;
    return off ? (word(i) >> off) | (word(i - 1) << (64 - off)) : word(i);
  };
  const int shift = 192 - e;  // in [88, 341]
  uint64_t F = bits_from(shift);
  F += bits_from(shift - 1) & 1u;  // round to nearest
  return (bits >> 31) ? ~F + 1 : F;
}

/// F of a frequency known to more than double precision (the host computes
/// sinusoidal frequencies from their formula in long double): round(frac(w /
/// 2π) · 2^64). w / 2π carries long double's relative error, 2^-64, so F is
/// within one unit (2^-64 turn) for |w| <= 2π, and loses a bit per doubling
/// of w beyond that.
inline uint64_t from_long_double(long double w) {
  static_assert(sizeof(long double) > sizeof(double), "posemb needs an extended-precision long double");
  const long double inv_two_pi = 0.159154943091895335768883763372514362L;
  long double t = w * inv_two_pi;  // turns
  t -= static_cast<long double>(static_cast<int64_t>(t));  // the fraction, exactly
  if (t < 0) t += 1.0L;
  const long double scaled = t * 18446744073709551616.0L;  // · 2^64, exact
  if (scaled >= 18446744073709551615.0L) return 0;          // rounds up to a whole turn
  return static_cast<uint64_t>(scaled + 0.5L);
}

/// The angle in turns of `position` at frequency F (units of 2^-64 turn).
POSEMB_HD uint64_t angle(int64_t position, uint64_t F) { return static_cast<uint64_t>(position) * F; }

/// The nearest quarter turn of u (its quadrant, 0..3) and what is left, at
/// most 1/8 turn either way, in units of 2^-64 turn.
POSEMB_HD int64_t nearest_quarter(uint64_t u, int* quadrant) {
  const uint64_t q = (u + (uint64_t(1) << 61)) >> 62;
  *quadrant = static_cast<int>(q & 3);
  return static_cast<int64_t>(u - (q << 62));
}

/// u as a quadrant and a residual as a signed 32-bit count of 2^-34 turn
/// (the fp32 path's precision).
POSEMB_HD void split(uint64_t u, int* quadrant, int32_t* residual) {
  *residual = static_cast<int32_t>(nearest_quarter(u, quadrant) >> 30);
}

constexpr double kTwoPi = 6.283185307179586476925;
// Radians per unit of the fp32 residual (2π / 2^34), and per 2^-64 turn for
// the fp64 path, which keeps all 64 bits. (Folded at compile time.)
constexpr float kResidualToRadians = static_cast<float>(kTwoPi / 17179869184.0);
constexpr double kTurnToRadians = kTwoPi / 18446744073709551616.0;

// The fp32 minimax coefficients on |r| <= π/4, shared with the AVX2 and
// AVX-512 loops (csrc/cpu/avx2.cpp, avx512.cpp), which must compute the same bits.
// (Scalars: a constexpr array would not exist in device code.)
constexpr float kSin3 = -1.6666654611e-1f, kSin5 = 8.3321608736e-3f, kSin7 = -1.9515295891e-4f;
constexpr float kCos4 = 4.166664568298827e-2f, kCos6 = -1.388731625493765e-3f, kCos8 = 2.443315711809948e-5f;

/// sin and cos of r, |r| <= π/4, fp32: minimax polynomials, exactly rounded
/// FMAs, so the host and the device agree to the bit. Max error 1 ulp.
POSEMB_HD void sincos_small(float r, float* s, float* c) {
#if defined(__CUDA_ARCH__)
#define POSEMB_FMAF __fmaf_rn
#else
#define POSEMB_FMAF std::fma
#endif
  const float z = r * r;
  float ps = POSEMB_FMAF(z, kSin7, kSin5);
  ps = POSEMB_FMAF(z, ps, kSin3);
  *s = POSEMB_FMAF(r * z, ps, r);
  float pc = POSEMB_FMAF(z, kCos8, kCos6);
  pc = POSEMB_FMAF(z, pc, kCos4);
  pc = POSEMB_FMAF(z, pc, -0.5f);
  *c = POSEMB_FMAF(z, pc, 1.0f);
#undef POSEMB_FMAF
}

/// The same for fp64 (fdlibm's kernel polynomials), for fp64 tensors.
POSEMB_HD void sincos_small(double r, double* s, double* c) {
  const double z = r * r;
  double ps = fma(z, 1.58969099521155010221e-10, -2.50507602534068634195e-08);
  ps = fma(z, ps, 2.75573137070700676789e-06);
  ps = fma(z, ps, -1.98412698298579493134e-04);
  ps = fma(z, ps, 8.33333333332248946124e-03);
  ps = fma(z, ps, -1.66666666666666324348e-01);
  *s = fma(r * z, ps, r);
  double pc = fma(z, -1.13596475577881948265e-11, 2.08757232129817482790e-09);
  pc = fma(z, pc, -2.75573143513906633035e-07);
  pc = fma(z, pc, 2.48015872894767294178e-05);
  pc = fma(z, pc, -1.38888888888741095749e-03);
  pc = fma(z, pc, 4.16666666666666019037e-02);
  pc = fma(z, pc, -0.5);
  *c = fma(z, pc, 1.0);
}

/// sin and cos of (r + quadrant · π/2) from those of r.
template <typename A>
POSEMB_HD void rotate_quadrant(int quadrant, A sr, A cr, A* s, A* c) {
  switch (quadrant) {
    case 0: *s = sr; *c = cr; break;
    case 1: *s = cr; *c = -sr; break;
    case 2: *s = -sr; *c = -cr; break;
    default: *s = -cr; *c = sr; break;
  }
}

/// sin and cos of the angle u (turns · 2^64), in the accumulation type A:
/// fp32 for fp32/bf16/fp16 tensors, fp64 for fp64 ones.
POSEMB_HD void sincos(uint64_t u, float* s, float* c) {
  int quadrant;
  int32_t residual;
  split(u, &quadrant, &residual);
  float sr, cr;
  sincos_small(static_cast<float>(residual) * kResidualToRadians, &sr, &cr);
  rotate_quadrant(quadrant, sr, cr, s, c);
}

POSEMB_HD void sincos(uint64_t u, double* s, double* c) {
  int quadrant;
  const double r = static_cast<double>(nearest_quarter(u, &quadrant)) * kTurnToRadians;
  double sr, cr;
  sincos_small(r, &sr, &cr);
  rotate_quadrant(quadrant, sr, cr, s, c);
}

/// sin and cos of position · w, w given as its turns F.
template <typename A>
POSEMB_HD void position_sincos(int64_t position, uint64_t F, A* s, A* c) {
  sincos(angle(position, F), s, c);
}

/// sin and cos of position · w for an fp32 frequency taken as exact (rotary's
/// inv_freq); NaN for a non-finite w, as the floating-point product would give.
template <typename A>
POSEMB_HD void position_sincos(int64_t position, float w, A* s, A* c) {
  if (!std::isfinite(w)) {
    *s = *c = A(NAN);
    return;
  }
  position_sincos(position, from_float(w), s, c);
}

}  // namespace turns
}  // namespace posemb
