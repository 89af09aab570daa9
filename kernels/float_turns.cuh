// Angles of *float* positions (diffusion timesteps, image-patch
// coordinates), in turns.cuh's fixed-point turns, with no fp64 arithmetic on
// the fp32 path.
//
// Exact turns need an integer position; a float one is split, exactly, into
// p = n + f (n = trunc(p), |f| < 1). The angle in turns is p·W, W = w / 2π:
//   n·W mod 1 = n·F, the wrapping fixed-point product of turns.cuh;
//   f·W       = f·W_hi + f·W_lo, W split into two floats of the position's
//               type on the host; f·W_hi is an exact two-product (fma), each
//               piece is reduced mod 1 (x - rint(x) is exact) and converted
//               to fixed point.
// So the angle of the float as given is exact mod 1 up to ~2^-47·|W| turns
// plus 2^-62 per piece (1e-14 rad at W = 1): the only fp32 error left is
// sincos's (README: "Timestep embeddings and 2-D sin-cos grids").
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/math.cuh"
#include "kernels/turns.cuh"

namespace posemb {

/// One frequency w = scale · exp(-i · step) for float positions: its turns
/// F = round(frac(W) · 2^64) and W = w / 2π as hi + lo in fp32 and in fp64.
/// 32 bytes; the host builds a table of these (csrc/float_turns.cpp).
struct FloatFreq {
  uint64_t F;
  float hi, lo;
  double dhi, dlo;
};
static_assert(sizeof(FloatFreq) == 32, "FloatFreq is read from an int64 [n, 4] tensor");

namespace turns {
namespace detail {

template <typename P>
POSEMB_HD P round_even(P x) {
  if constexpr (sizeof(P) == 4) return rintf(x); else return rint(x);
}

/// r mod 1 (|result| <= 1/2) in units of 2^-64 turn; r finite.
template <typename P>
POSEMB_HD uint64_t fraction_turns(P r) {
  r -= round_even(r);  // exact
  // r · 2^62 is exact and below 2^61 in magnitude; the conversion truncates
  // at most 2^-62 turn.
  const P scaled = r * P(4611686018427387904.0);
  return static_cast<uint64_t>(static_cast<int64_t>(scaled)) << 2;
}

/// n · F mod 2^64 for an integral float n of any size.
template <typename P>
POSEMB_HD uint64_t integer_turns(P n, uint64_t F) {
  constexpr P kTwo62 = P(4611686018427387904.0);
  if ((n < 0 ? -n : n) < kTwo62) return static_cast<uint64_t>(static_cast<int64_t>(n)) * F;
  // n = m · 2^shift, m an integer of the type's mantissa width, shift >= 10.
  constexpr int kBits = sizeof(P) == 4 ? 24 : 53;
  int e;
  int64_t mi;
  if constexpr (sizeof(P) == 4) {  // float calls only: no fp64 on the fp32 path
    mi = static_cast<int64_t>(ldexpf(frexpf(n, &e), kBits));
  } else {
    mi = static_cast<int64_t>(ldexp(frexp(n, &e), kBits));
  }
  const int shift = e - kBits;
  return shift >= 64 ? 0 : (static_cast<uint64_t>(mi) * F) << shift;
}

}  // namespace detail

/// The angle of a finite float position p at frequency w, as turns · 2^64.
template <typename P>
POSEMB_HD uint64_t float_angle(P p, const FloatFreq& w) {
  P hi, lo;
  if constexpr (sizeof(P) == 4) {
    hi = w.hi;
    lo = w.lo;
  } else {
    hi = w.dhi;
    lo = w.dlo;
  }
  P n, prod_err;
  if constexpr (sizeof(P) == 4) n = truncf(p); else n = trunc(p);
  const P f = p - n;  // exact
  const P prod = f * hi;
  if constexpr (sizeof(P) == 4) prod_err = fmaf(f, hi, -prod); else prod_err = fma(f, hi, -prod);
  // f·hi = prod + prod_err exactly
  return detail::integer_turns(n, w.F) + detail::fraction_turns(prod) + detail::fraction_turns(prod_err) +
         detail::fraction_turns(f * lo);
}

/// sin and cos of p · w in the accumulation type A; NaN for a non-finite p.
template <typename A, typename P>
POSEMB_HD void float_position_sincos(P p, const FloatFreq& w, A* s, A* c) {
  if (!std::isfinite(p)) {
    *s = *c = A(NAN);
    return;
  }
  sincos(float_angle(p, w), s, c);
}

}  // namespace turns
}  // namespace posemb
