// Launchers of the CUDA kernels. Torch-free: raw pointers, strides, a dtype
// tag and a stream go in; a cudaError_t comes out, which the torch glue in
// csrc/cuda turns into a clear error.
#pragma once

#include <cuda_runtime_api.h>

#include "learned.cuh"
#include "math.cuh"
#include "sinusoidal.cuh"

namespace posemb {

/// Launches sinusoidal_add on `stream`. Returns the launch status.
cudaError_t launch_sinusoidal_add(const SinusoidalParams& params, DType dtype, int num_sms,
                                  cudaStream_t stream);

/// Launches learned_add on `stream`.
cudaError_t launch_learned_add(const LearnedParams& params, DType dtype, int num_sms,
                               cudaStream_t stream);

/// Launches the weight gradient of learned_add on `stream`.
cudaError_t launch_learned_grad(const LearnedGradParams& params, DType dtype, int num_sms,
                                cudaStream_t stream);

}  // namespace posemb
