// Per-element math shared by every posemb kernel, CPU and GPU alike.
//
// This header is torch-free and compiles with nvcc (device and host) and with a
// plain C++ compiler, so the CPU kernels and the CUDA kernels compute exactly
// the same angles. See DESIGN.md §2 for the numerical contract it implements.
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

// 2π as an unevaluated sum hi + lo of two doubles (Cody–Waite reduction).
constexpr double kTwoPiHi = 6.283185307179586;
constexpr double kTwoPiLo = 2.4492935982947064e-16;
constexpr double kInvTwoPi = 0.15915494309189535;

/// Reduces theta = position * frequency to [-π, π].
///
/// The product is formed in fp64: exact when the frequency is an fp32 value
/// (24-bit mantissa) and |position| < 2^29, and within 1 ulp of fp64 for an
/// fp64 frequency. The reduction subtracts k·2π in two FMA steps, so the
/// reduced angle carries ~1e-16·|theta| absolute error, far below fp32's
/// resolution. Naive fp32 (`float(p) * w`) is off by up to ulp(theta)/2, which
/// is 3e-2 at p = 2^20.
POSEMB_HD double reduced_angle(double position, double frequency) {
  const double theta = position * frequency;
  const double k = rint(theta * kInvTwoPi);
  double r = fma(-k, kTwoPiHi, theta);
  r = fma(-k, kTwoPiLo, r);
  return r;
}

/// sin and cos of a reduced angle in the accumulation type (one rounding of
/// the fp64 angle to fp32, then fp32 sincos; fp64 throughout for fp64).
POSEMB_HD void sincos_acc(double r, float* s, float* c) {
#if defined(__CUDA_ARCH__)
  sincosf(static_cast<float>(r), s, c);
#else
  const float rf = static_cast<float>(r);
  *s = std::sin(rf);
  *c = std::cos(rf);
#endif
}

POSEMB_HD void sincos_acc(double r, double* s, double* c) {
#if defined(__CUDA_ARCH__)
  sincos(r, s, c);
#else
  *s = std::sin(r);
  *c = std::cos(r);
#endif
}

/// Loads element i of an integer index tensor stored as int32 or int64.
POSEMB_HD int64_t load_index(const void* data, bool is_int64, int64_t i) {
  return is_int64 ? static_cast<const int64_t*>(data)[i]
                  : static_cast<int64_t>(static_cast<const int32_t*>(data)[i]);
}

}  // namespace detail
}  // namespace posemb
