// Launchers of the CUDA kernels. Torch-free: raw pointers, strides, a dtype
// tag and a stream go in; a cudaError_t comes out, which the torch glue in
// csrc/cuda turns into a clear error.
#pragma once

#include <cuda_runtime_api.h>

#include "math.cuh"
#include "sinusoidal.cuh"

namespace posemb {

/// Launches sinusoidal_add on `stream`. Returns the launch status.
cudaError_t launch_sinusoidal_add(const SinusoidalParams& params, DType dtype, int num_sms,
                                  cudaStream_t stream);

}  // namespace posemb
