// Launchers of the CUDA kernels. Torch-free: raw pointers, strides, a dtype
// tag and a stream go in; a cudaError_t comes out, which the torch glue in
// csrc/cuda turns into a clear error.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/bert.cuh"
#include "kernels/learned.cuh"
#include "kernels/math.cuh"
#include "kernels/rotary.cuh"
#include "kernels/sinusoidal.cuh"

namespace posemb {

/// Launches sinusoidal_add on `stream`. Returns the launch status.
cudaError_t launch_sinusoidal_add(const SinusoidalParams& params, DType dtype, int num_sms,
                                  cudaStream_t stream);

/// Launches learned_add on `stream`.
cudaError_t launch_learned_add(const LearnedParams& params, DType dtype, int num_sms,
                               cudaStream_t stream);

/// Launches the gradient of a table of `dtype` on `stream`; the incoming
/// gradient has the table's dtype, or its accumulation type (fp32, fp64 for
/// fp64) when grad_in_acc_type.
cudaError_t launch_learned_grad(const LearnedGradParams& params, DType dtype,
                                bool grad_in_acc_type, int num_sms, cudaStream_t stream);

/// Launches bert_embeddings' forward (out, mean, rstd) on `stream`.
cudaError_t launch_bert_forward(const BertParams& params, DType dtype, int num_sms,
                                cudaStream_t stream);

/// Launches bert_embeddings' backward up to the tables: grad_x and the
/// LayerNorm gradients. The tables' gradients follow via launch_learned_grad.
cudaError_t launch_bert_backward(const BertParams& params, DType dtype, int num_sms,
                                 cudaStream_t stream);

/// Launches rotary (or its inverse, the backward) on `stream`.
cudaError_t launch_rotary(const RotaryParams& params, DType dtype, int num_sms,
                          cudaStream_t stream);

}  // namespace posemb
