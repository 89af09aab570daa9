// Learned absolute positions (BERT, GPT-2, fairseq): the functional C++ API.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace posemb {

/// y = x + weight[position], gather and add fused in one kernel.
///
/// x: (batch, seq, dim), (seq, batch, dim) (seq_dim = 0) or (seq, dim).
/// weight: (num_embeddings, dim), x's dtype and device.
/// Positions as for sinusoidal_add: explicit integer positions broadcastable
/// to (batch, seq), per-sequence offsets, or offset + t. Every position must
/// be in [0, num_embeddings): an error says so (for position tensors this
/// costs one min/max reduction, a host sync on CUDA), never a read outside
/// the weight.
/// padding_idx: that row of weight gets no gradient (as nn.Embedding).
/// The gradient of weight is deterministic: each row sums its tokens in one
/// fixed order, without atomics.
at::Tensor learned_add(const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& positions = std::nullopt,
                       const std::optional<at::Tensor>& offsets = std::nullopt,
                       int64_t offset = 0, int64_t seq_dim = -2,
                       std::optional<int64_t> padding_idx = std::nullopt);

}  // namespace posemb
