// Internal: the op glue of timestep_embedding, shared by its CPU, CUDA, Meta
// and autograd registrations.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

#include "kernels/timestep.cuh"
#include "op.h"

namespace posemb::detail {

using TimestepEmbeddingOp = Op<"posemb::timestep_embedding",
                               at::Tensor(const at::Tensor&, int64_t, bool, double, double, double,
                                          std::optional<at::ScalarType>)>;
using TimestepEmbeddingBackwardOp =
    Op<"posemb::timestep_embedding_backward",
       at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, double, double, double)>;

/// Runs the kernel on one backend for checked, non-empty params; `out` gives the dtype and device.
using TimestepRunner = void (*)(const TimestepParams& params, const at::Tensor& out);

/// The op on a backend: check, allocate, run.
at::Tensor timestep_embedding_impl(TimestepRunner run, const at::Tensor& timesteps, int64_t embedding_dim,
                                   bool flip_sin_to_cos, double downscale_freq_shift, double scale,
                                   double max_period, std::optional<at::ScalarType> dtype);

template <TimestepRunner run>
at::Tensor timestep_embedding_backend(const at::Tensor& timesteps, int64_t embedding_dim, bool flip_sin_to_cos,
                                      double downscale_freq_shift, double scale, double max_period,
                                      std::optional<at::ScalarType> dtype) {
  return timestep_embedding_impl(run, timesteps, embedding_dim, flip_sin_to_cos, downscale_freq_shift, scale,
                                 max_period, dtype);
}

}  // namespace posemb::detail
