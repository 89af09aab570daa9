// The launchers' one dtype switch: calls f with a value of the device type
// that a DType tag names.
#pragma once

#include "kernels/device_types.cuh"
#include "kernels/math.cuh"

namespace posemb::detail {

template <typename F>
cudaError_t dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    case DType::Float16: return f(__half{});
    case DType::BFloat16: return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace posemb::detail
