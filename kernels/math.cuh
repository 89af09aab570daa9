// Per-element math shared by every posemb kernel, CPU and GPU alike.
//
// This header is torch-free and compiles with nvcc (device and host) and with a
// plain C++ compiler, so the CPU kernels and the CUDA kernels compute exactly
// the same angles. The README's "Numerical contract" says what it guarantees.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define POSEMB_HD __host__ __device__ __forceinline__
#define POSEMB_UNROLL _Pragma("unroll")
#else
#define POSEMB_HD inline
#define POSEMB_UNROLL
#endif

namespace posemb {

/// Element types the kernels are instantiated for; the launchers take this
/// instead of a torch dtype so that nothing below them depends on torch.
enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

namespace detail {

/// Conversions between a storage type and its accumulation type. float and
/// double are defined here; half-precision types are specialised next to the
/// code that knows them (c10 types on the host, cuda_fp16/bf16 on the device).
template <typename T>
struct ScalarOps;

template <>
struct ScalarOps<float> {
  using acc_t = float;
  POSEMB_HD static float to_acc(float v) { return v; }
  POSEMB_HD static float from_acc(float v) { return v; }
};

template <>
struct ScalarOps<double> {
  using acc_t = double;
  POSEMB_HD static double to_acc(double v) { return v; }
  POSEMB_HD static double from_acc(double v) { return v; }
};

template <typename T>
using acc_t = typename ScalarOps<T>::acc_t;

// π/2 as an unevaluated sum hi + lo of two doubles (Cody–Waite reduction).
constexpr double kHalfPiHi = 1.5707963267948966;
constexpr double kHalfPiLo = 6.123233995736766e-17;
constexpr double kTwoOverPi = 0.6366197723675814;

POSEMB_HD void sincos_small(float r, float* s, float* c) {
#if defined(__CUDA_ARCH__)
  sincosf(r, s, c);
#else
  *s = std::sin(r);
  *c = std::cos(r);
#endif
}

POSEMB_HD void sincos_small(double r, double* s, double* c) {
#if defined(__CUDA_ARCH__)
  sincos(r, s, c);
#else
  *s = std::sin(r);
  *c = std::cos(r);
#endif
}

/// sin and cos of theta = position * frequency, in the accumulation type A.
///
/// The product is formed in fp64: exact when the frequency is an fp32 value
/// (24-bit mantissa) and |position| < 2^29, within 1 ulp of fp64 otherwise.
/// theta is reduced in fp64 to r in [-π/4, π/4] plus a quadrant, subtracting
/// k·π/2 in two FMA steps, so r carries ~1e-16·|theta| absolute error. Only
/// then is r rounded to A (fp32 for fp32/fp16/bf16): the rounding is relative
/// to r, so results near zero keep their relative accuracy. Naive fp32
/// (`float(p) * w`) is off by up to ulp(theta)/2: 3e-2 at p = 2^20.
template <typename A>
POSEMB_HD void position_sincos(double position, double frequency, A* s, A* c) {
  const double theta = position * frequency;
  const double k = rint(theta * kTwoOverPi);
  double r = fma(-k, kHalfPiHi, theta);
  r = fma(-k, kHalfPiLo, r);
  A sr, cr;
  sincos_small(static_cast<A>(r), &sr, &cr);
  // sin and cos of r + quadrant * π/2.
  switch (static_cast<int>(static_cast<int64_t>(k) & 3)) {
    case 0: *s = sr; *c = cr; break;
    case 1: *s = cr; *c = -sr; break;
    case 2: *s = -sr; *c = -cr; break;
    default: *s = -cr; *c = sr; break;
  }
}

/// Loads element i of an integer index tensor stored as int32 or int64.
POSEMB_HD int64_t load_index(const void* data, bool is_int64, int64_t i) {
  return is_int64 ? static_cast<const int64_t*>(data)[i]
                  : static_cast<int64_t>(static_cast<const int32_t*>(data)[i]);
}

}  // namespace detail
}  // namespace posemb
