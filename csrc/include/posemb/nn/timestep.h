// posemb::nn::Timesteps, posemb::nn::SinCos2dPositionalEmbedding and
// posemb::nn::SinCos3dPositionalEmbedding: LibTorch modules around the
// diffusion ops (timestep embeddings, 2-D sin-cos grids of image patches,
// 3-D grids of video patches). No parameters or buffers: the encodings are computed in the
// kernels.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <optional>

namespace posemb::nn {

/// Options of Timesteps: diffusers' Timesteps arguments.
struct TimestepsOptions {
  explicit TimestepsOptions(int64_t num_channels) : num_channels_(num_channels) {}

  TORCH_ARG(int64_t, num_channels);
  /// cos before sin (DiT's order with downscale_freq_shift 0).
  TORCH_ARG(bool, flip_sin_to_cos) = false;
  TORCH_ARG(double, downscale_freq_shift) = 1.0;
  TORCH_ARG(double, scale) = 1.0;
  TORCH_ARG(double, max_period) = 10000.0;
};

/// The embedding of float timesteps: posemb::timestep_embedding, float32
/// (*timesteps.shape, num_channels). The same module as posemb.nn.Timesteps.
class TimestepsImpl : public torch::nn::Cloneable<TimestepsImpl> {
 public:
  explicit TimestepsImpl(int64_t num_channels) : TimestepsImpl(TimestepsOptions(num_channels)) {}
  explicit TimestepsImpl(TimestepsOptions options);

  /// Checks the options (nothing to register).
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  torch::Tensor forward(const torch::Tensor& timesteps);

  TimestepsOptions options;
};

TORCH_MODULE(Timesteps);

/// Options of SinCos2dPositionalEmbedding.
struct SinCos2dPositionalEmbeddingOptions {
  explicit SinCos2dPositionalEmbeddingOptions(int64_t embed_dim) : embed_dim_(embed_dim) {}

  /// A multiple of 4: half the channels for the columns, half for the rows.
  TORCH_ARG(int64_t, embed_dim);
  /// diffusers' base_size: positions i / (size / base_size); unset: MAE's i.
  TORCH_ARG(std::optional<double>, base_size) = std::nullopt;
  TORCH_ARG(double, interpolation_scale) = 1.0;
  TORCH_ARG(double, base) = 10000.0;
};

/// x + the 2-D sin-cos grid of a height x width patch grid, for patch
/// embeddings x (batch, height * width, embed_dim): posemb::sincos_2d_add with
/// each axis' positions as diffusers' get_2d_sincos_pos_embed computes them
/// (the same float32 operations). The same module as
/// posemb.nn.SinCos2dPositionalEmbedding.
class SinCos2dPositionalEmbeddingImpl : public torch::nn::Cloneable<SinCos2dPositionalEmbeddingImpl> {
 public:
  explicit SinCos2dPositionalEmbeddingImpl(int64_t embed_dim)
      : SinCos2dPositionalEmbeddingImpl(SinCos2dPositionalEmbeddingOptions(embed_dim)) {}
  explicit SinCos2dPositionalEmbeddingImpl(SinCos2dPositionalEmbeddingOptions options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  torch::Tensor forward(const torch::Tensor& x, int64_t height, int64_t width);

  /// The float32 positions of one axis of `size` patches, on `device`.
  torch::Tensor positions(int64_t size, const torch::Device& device) const;

  SinCos2dPositionalEmbeddingOptions options;
};

TORCH_MODULE(SinCos2dPositionalEmbedding);

/// Options of SinCos3dPositionalEmbedding: diffusers' get_3d_sincos_pos_embed arguments.
struct SinCos3dPositionalEmbeddingOptions {
  explicit SinCos3dPositionalEmbeddingOptions(int64_t embed_dim) : embed_dim_(embed_dim) {}

  /// A multiple of 16: a quarter of the channels for the frames, the rest the 2-D grid.
  TORCH_ARG(int64_t, embed_dim);
  /// Row and column positions i / spatial_interpolation_scale.
  TORCH_ARG(double, spatial_interpolation_scale) = 1.0;
  /// Frame positions i / temporal_interpolation_scale.
  TORCH_ARG(double, temporal_interpolation_scale) = 1.0;
  TORCH_ARG(double, base) = 10000.0;
};

/// x + the 3-D sin-cos grid of frames x height x width video patches, for
/// patch embeddings x (batch, frames * height * width, embed_dim), frames
/// major: posemb::sincos_2d_add with pos_t, the positions as diffusers'
/// get_3d_sincos_pos_embed computes them (CogVideoX). The same module as
/// posemb.nn.SinCos3dPositionalEmbedding.
class SinCos3dPositionalEmbeddingImpl : public torch::nn::Cloneable<SinCos3dPositionalEmbeddingImpl> {
 public:
  explicit SinCos3dPositionalEmbeddingImpl(int64_t embed_dim)
      : SinCos3dPositionalEmbeddingImpl(SinCos3dPositionalEmbeddingOptions(embed_dim)) {}
  explicit SinCos3dPositionalEmbeddingImpl(SinCos3dPositionalEmbeddingOptions options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  torch::Tensor forward(const torch::Tensor& x, int64_t frames, int64_t height, int64_t width);

  SinCos3dPositionalEmbeddingOptions options;
};

TORCH_MODULE(SinCos3dPositionalEmbedding);

}  // namespace posemb::nn
