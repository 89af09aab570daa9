// The BERT embedding block in one kernel: the functional C++ API.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace posemb {

/// dropout(LayerNorm(word[input_ids] + position[positions] + type[token_type_ids]))
/// in one kernel forward and one backward pass, as Hugging Face's
/// BertEmbeddings computes it.
///
/// input_ids: (batch, seq) integer. Tables (vocab|positions|types, hidden) and
/// ln_weight, ln_bias (hidden,) share one float dtype and device.
/// positions: integer, broadcastable to (batch, seq); without them token t is
///   at offset + t (offset = the length of a KV cache, HF's cache_length).
/// token_type_ids: broadcastable to (batch, seq); without them every token is
///   type 0 (as HF's buffered zeros).
/// LayerNorm statistics in fp32 (fp64 for fp64 tables); one rounding at the end.
/// Dropout is applied when dropout_seed (one int64 on the CPU) is given and
///   dropout_p > 0: the mask is a pure function of (seed, element), so the
///   backward regenerates it and CPU and CUDA draw the same mask.
/// word_padding_idx / position_padding_idx: those rows get no gradient.
/// Gradients of all five parameters are deterministic (fixed-order sums).
at::Tensor bert_embeddings(const at::Tensor& input_ids, const at::Tensor& word_weight,
                           const at::Tensor& position_weight, const at::Tensor& type_weight,
                           const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                           const std::optional<at::Tensor>& positions = std::nullopt,
                           const std::optional<at::Tensor>& token_type_ids = std::nullopt,
                           int64_t offset = 0, double eps = 1e-12, double dropout_p = 0.0,
                           const std::optional<at::Tensor>& dropout_seed = std::nullopt,
                           std::optional<int64_t> word_padding_idx = std::nullopt,
                           std::optional<int64_t> position_padding_idx = std::nullopt);

}  // namespace posemb
