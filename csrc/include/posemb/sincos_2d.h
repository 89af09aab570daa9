// 2-D sin-cos grids of image patches (MAE, ViT, DiT, SD3) and 3-D grids of
// video patches (CogVideoX): the functional C++ API.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace posemb {

/// y = x + PE2d for patch embeddings x (batch, H*W, dim), dim a multiple of
/// 4, token t at grid cell (t / W, t % W): channels [0, dim/2) are
/// [sin(pos_w ω_k), cos(pos_w ω_k)] of the cell's column, [dim/2, dim) the
/// same of its row's pos_h, ω_k = base^(-k / (dim/4)) (diffusers'
/// get_2d_sincos_pos_embed and MAE's order). pos_h (H,) and pos_w (W,) are
/// float32 positions, on x's device; their angles are exact for the floats
/// given. Differentiable in x.
///
/// With pos_t (T,) float32 frame positions, y = x + PE3d for video patch
/// embeddings x (batch, T*H*W, dim), dim a multiple of 16, token t in frame
/// t / (H*W) at cell t % (H*W) as above: channels [0, dim/4) are
/// [sin(pos_t ν_k), cos(pos_t ν_k)] of the frame, ν_k = base^(-k / (dim/8)),
/// and [dim/4, dim) the 2-D grid of 3*dim/4 channels (diffusers'
/// get_3d_sincos_pos_embed).
at::Tensor sincos_2d_add(const at::Tensor& x, const at::Tensor& pos_h, const at::Tensor& pos_w,
                         double base = 10000.0, const std::optional<at::Tensor>& pos_t = std::nullopt);

/// The grid alone, (H*W, dim) or with pos_t (T*H*W, dim), in `dtype`
/// (default float32), on pos_h's device.
at::Tensor sincos_2d_table(const at::Tensor& pos_h, const at::Tensor& pos_w, int64_t dim, double base = 10000.0,
                           std::optional<at::ScalarType> dtype = std::nullopt,
                           const std::optional<at::Tensor>& pos_t = std::nullopt);

}  // namespace posemb
