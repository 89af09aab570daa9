// What the CUDA glue asks of torch and of the device: the launchers'
// torch-free dtype tag, the number of multiprocessors, and run_cuda, the one
// runner every family's CUDA registration binds to its launcher.
// Only c10/cuda headers: ATen/cuda/CUDAContext.h would pull in cuBLAS and
// cuSPARSE headers that a kernel build does not need.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#include "kernels/math.cuh"

namespace posemb::detail {

inline DType dtype_tag(c10::ScalarType t) {
  switch (t) {
    case c10::kFloat: return DType::Float32;
    case c10::kDouble: return DType::Float64;
    case c10::kHalf: return DType::Float16;
    case c10::kBFloat16: return DType::BFloat16;
    default: break;
  }
  TORCH_CHECK(false, "posemb: no CUDA kernel for dtype ", t);
}

/// Multiprocessors of t's device (sizes launch grids).
inline int num_sms(const at::Tensor& t) {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, t.get_device()));
  return count;
}

/// A family's runner on CUDA: `launch` (kernels/X.cuh) for params p with the
/// dtype and device of t, on the current stream, under a device guard. The
/// launcher returns cudaGetLastError() after its launches: the launch check.
template <typename P, cudaError_t (*launch)(const P&, DType, int, cudaStream_t)>
void run_cuda(const P& p, const at::Tensor& t) {
  const c10::cuda::CUDAGuard guard(t.device());
  C10_CUDA_CHECK(launch(p, dtype_tag(t.scalar_type()), num_sms(t),
                        c10::cuda::getCurrentCUDAStream()));
}

}  // namespace posemb::detail
