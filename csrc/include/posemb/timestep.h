// Diffusion timestep embeddings: the functional C++ API.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace posemb {

/// diffusers' get_timestep_embedding (and, with flip_sin_to_cos = true and
/// downscale_freq_shift = 0, DiT's TimestepEmbedder): for timesteps of any
/// shape, a (*timesteps.shape, embedding_dim) tensor holding
/// [sin(t w_i), cos(t w_i)] (cos first when flipped), w_i = scale ·
/// max_period^(-i / (embedding_dim/2 - downscale_freq_shift)), and a zero last
/// column for an odd embedding_dim. Timesteps are taken as float32 (float64
/// ones as they are); the angle of that float is exact to ~1e-14 rad plus
/// |angle| · 2^-64 (README: "Timestep embeddings and 2-D sin-cos grids"). Output dtype: `dtype`,
/// default float32 as diffusers'. Differentiable in floating timesteps.
at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t embedding_dim, bool flip_sin_to_cos = false,
                              double downscale_freq_shift = 1.0, double scale = 1.0, double max_period = 10000.0,
                              std::optional<at::ScalarType> dtype = std::nullopt);

}  // namespace posemb
