// What the CUDA glue asks of torch and of the device: the launchers'
// torch-free dtype tag and the number of multiprocessors.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/cuda/CUDAException.h>
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

}  // namespace posemb::detail
