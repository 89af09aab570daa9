// Fourier features of integer positions: the functional C++ API.
#pragma once

#include <ATen/core/Tensor.h>

namespace posemb {

/// [sin(α_i p), cos(α_i p)] for integer positions (batch, seq) and float32
/// frequencies α (n,): a float32 (batch, seq, 2n) tensor. Angles are exact
/// modulo one turn at every position (fixed-point turns, as rotary's);
/// differentiable in the frequencies, with d/dα sin(α p) = p cos(α p) formed
/// from those same exact values (p and the sum over tokens in fp64).
at::Tensor fourier_features(const at::Tensor& positions, const at::Tensor& frequencies);

}  // namespace posemb
