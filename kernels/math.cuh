// Per-element math shared by every posemb kernel, CPU and GPU alike.
//
// This header is torch-free and compiles with nvcc (device and host) and with a
// plain C++ compiler, so the CPU kernels and the CUDA kernels share it. The
// angles are turns.cuh's.
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

/// A host-given scalar in the accumulation type A, from its fp64 value or
/// (for fp32 accumulation) its fp32 copy, so fp32 kernels convert nothing.
template <typename A>
POSEMB_HD A in_acc(double as_double, float as_float) {
  if constexpr (sizeof(A) == sizeof(double)) {
    return as_double;
  } else {
    return as_float;
  }
}

/// a * b + c rounded once, on every device: nvcc fuses `a * b + c` on its
/// own, a host compiler without FMA instructions does not, so the CPU loops,
/// the AVX2 loops (_mm256_fmadd_ps) and the CUDA kernels would round
/// differently wherever the product is inexact. (std::fma on the host is a
/// call where the compiler cannot emit FMA: callers keep it off their
/// common exact-product paths.)
POSEMB_HD float mul_add(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
POSEMB_HD double mul_add(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __fma_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

/// A pair (x0, x1) turned by the angle whose cos and sin are c and s:
/// (x0 c - x1 s, x1 c + x0 s), each product rounded before the sum on every
/// device. nvcc would fuse one product of each into an FMA; the CPU loops
/// (host code is compiled with -ffp-contract=off) round both, so the CPU
/// and GPU give the same bits.
POSEMB_HD void rotate_pair(float x0, float x1, float c, float s, float* y0, float* y1) {
#if defined(__CUDA_ARCH__)
  *y0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
  *y1 = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
#else
  *y0 = x0 * c - x1 * s;
  *y1 = x1 * c + x0 * s;
#endif
}
POSEMB_HD void rotate_pair(double x0, double x1, double c, double s, double* y0, double* y1) {
#if defined(__CUDA_ARCH__)
  *y0 = __dsub_rn(__dmul_rn(x0, c), __dmul_rn(x1, s));
  *y1 = __dadd_rn(__dmul_rn(x1, c), __dmul_rn(x0, s));
#else
  *y0 = x0 * c - x1 * s;
  *y1 = x1 * c + x0 * s;
#endif
}

/// Loads element i of an integer index tensor stored as int32 or int64.
POSEMB_HD int64_t load_index(const void* data, bool is_int64, int64_t i) {
  return is_int64 ? static_cast<const int64_t*>(data)[i]
                  : static_cast<int64_t>(static_cast<const int32_t*>(data)[i]);
}

}  // namespace detail
}  // namespace posemb
