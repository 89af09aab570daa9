#include "posemb/nn/timestep.h"

#include <cmath>
#include <ostream>

#include "posemb/sincos_2d.h"
#include "posemb/timestep.h"

namespace posemb::nn {

namespace {

void check_finite(const char* module, const char* name, double value, bool positive) {
  TORCH_CHECK(std::isfinite(value) && (!positive || value > 0), module, ": ", name, " must be a finite number",
              positive ? " > 0" : "", ", got ", value);
}

/// arange(size) / scale in float32, diffusers' operations (and MAE's axis for scale 1).
torch::Tensor scaled_axis(int64_t size, double scale, const torch::Device& device) {
  auto pos = torch::arange(size, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  return scale != 1.0 ? pos / scale : pos;
}

}  // namespace

TimestepsImpl::TimestepsImpl(TimestepsOptions options_) : options(std::move(options_)) { reset(); }

void TimestepsImpl::reset() {
  const char* name = "posemb::nn::Timesteps";
  TORCH_CHECK(options.num_channels() >= 1, name, ": num_channels must be >= 1, got ", options.num_channels());
  check_finite(name, "downscale_freq_shift", options.downscale_freq_shift(), false);
  check_finite(name, "scale", options.scale(), false);
  check_finite(name, "max_period", options.max_period(), true);
}

void TimestepsImpl::pretty_print(std::ostream& stream) const {
  stream << "posemb::nn::Timesteps(" << options.num_channels()
         << ", flip_sin_to_cos=" << (options.flip_sin_to_cos() ? "true" : "false")
         << ", downscale_freq_shift=" << options.downscale_freq_shift() << ", scale=" << options.scale() << ")";
}

torch::Tensor TimestepsImpl::forward(const torch::Tensor& timesteps) {
  return posemb::timestep_embedding(timesteps, options.num_channels(), options.flip_sin_to_cos(),
                                    options.downscale_freq_shift(), options.scale(), options.max_period());
}

SinCos2dPositionalEmbeddingImpl::SinCos2dPositionalEmbeddingImpl(SinCos2dPositionalEmbeddingOptions options_)
    : options(std::move(options_)) {
  reset();
}

void SinCos2dPositionalEmbeddingImpl::reset() {
  const char* name = "posemb::nn::SinCos2dPositionalEmbedding";
  TORCH_CHECK(options.embed_dim() >= 4 && options.embed_dim() % 4 == 0, name,
              ": embed_dim must be a positive multiple of 4, got ", options.embed_dim());
  if (options.base_size().has_value()) check_finite(name, "base_size", *options.base_size(), true);
  check_finite(name, "interpolation_scale", options.interpolation_scale(), true);
  check_finite(name, "base", options.base(), true);
}

void SinCos2dPositionalEmbeddingImpl::pretty_print(std::ostream& stream) const {
  stream << "posemb::nn::SinCos2dPositionalEmbedding(" << options.embed_dim();
  if (options.base_size().has_value()) stream << ", base_size=" << *options.base_size();
  stream << ", interpolation_scale=" << options.interpolation_scale() << ", base=" << options.base() << ")";
}

torch::Tensor SinCos2dPositionalEmbeddingImpl::positions(int64_t size, const torch::Device& device) const {
  // diffusers' float32 operations in its order: arange / (size / base_size) / interpolation_scale.
  auto pos = torch::arange(size, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  if (options.base_size().has_value()) pos = pos / (static_cast<double>(size) / *options.base_size());
  return options.interpolation_scale() != 1.0 ? pos / options.interpolation_scale() : pos;
}

torch::Tensor SinCos2dPositionalEmbeddingImpl::forward(const torch::Tensor& x, int64_t height, int64_t width) {
  TORCH_CHECK(height >= 0 && width >= 0, "posemb::nn::SinCos2dPositionalEmbedding: height and width must be ",
              ">= 0, got ", height, " and ", width);
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == options.embed_dim(), "posemb::nn::SinCos2dPositionalEmbedding: x must ",
              "be (batch, height*width, ", options.embed_dim(), "), got shape ", x.sizes());
  return posemb::sincos_2d_add(x, positions(height, x.device()), positions(width, x.device()), options.base());
}

SinCos3dPositionalEmbeddingImpl::SinCos3dPositionalEmbeddingImpl(SinCos3dPositionalEmbeddingOptions options_)
    : options(std::move(options_)) {
  reset();
}

void SinCos3dPositionalEmbeddingImpl::reset() {
  const char* name = "posemb::nn::SinCos3dPositionalEmbedding";
  TORCH_CHECK(options.embed_dim() >= 16 && options.embed_dim() % 16 == 0, name,
              ": embed_dim must be a positive multiple of 16, got ", options.embed_dim());
  check_finite(name, "spatial_interpolation_scale", options.spatial_interpolation_scale(), true);
  check_finite(name, "temporal_interpolation_scale", options.temporal_interpolation_scale(), true);
  check_finite(name, "base", options.base(), true);
}

void SinCos3dPositionalEmbeddingImpl::pretty_print(std::ostream& stream) const {
  stream << "posemb::nn::SinCos3dPositionalEmbedding(" << options.embed_dim()
         << ", spatial_interpolation_scale=" << options.spatial_interpolation_scale()
         << ", temporal_interpolation_scale=" << options.temporal_interpolation_scale() << ", base=" << options.base()
         << ")";
}

torch::Tensor SinCos3dPositionalEmbeddingImpl::forward(const torch::Tensor& x, int64_t frames, int64_t height,
                                                       int64_t width) {
  TORCH_CHECK(frames >= 0 && height >= 0 && width >= 0, "posemb::nn::SinCos3dPositionalEmbedding: frames, height ",
              "and width must be >= 0, got ", frames, ", ", height, " and ", width);
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == options.embed_dim(), "posemb::nn::SinCos3dPositionalEmbedding: x must ",
              "be (batch, frames*height*width, ", options.embed_dim(), "), got shape ", x.sizes());
  const double spatial = options.spatial_interpolation_scale();
  return posemb::sincos_2d_add(x, scaled_axis(height, spatial, x.device()), scaled_axis(width, spatial, x.device()),
                               options.base(),
                               scaled_axis(frames, options.temporal_interpolation_scale(), x.device()));
}

}  // namespace posemb::nn
