// Rotary position embeddings (RoPE): the functional C++ API.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <tuple>

namespace posemb {

/// Rotates q and k in one launch: each pair of channels of every head is
/// turned by position * inv_freq[i] and scaled by attention_scaling.
///
/// q, k: (batch, seq, heads, head_dim), or (batch, heads, seq, head_dim) /
///   (seq, batch, heads, head_dim) with seq_dim 2 / 0; any strides with
///   head_dim innermost (views of a fused qkv projection work); k may have
///   fewer heads than q (grouped-query attention), or none.
///   With cu_seqlens (int, [sequences + 1]): packed (tokens, heads, head_dim).
/// inv_freq: float32 [rotary_dim / 2], taken as exact (see posemb.rope for
///   every Hugging Face scaling type); channels past rotary_dim pass through.
/// Positions: explicit integers broadcastable to (batch, seq) (or per token
///   when packed), per-sequence offsets, or offset + t; packed sequences
///   restart at their start unless positions are given.
/// interleaved: pairs (2i, 2i+1) (GPT-J); otherwise (i, i + rotary_dim/2)
///   (GPT-NeoX, Llama).
/// mrope_section: positions with axes (multimodal rope, Qwen2-VL's (t, h, w);
///   axial 2-D rotary, (h, w)): positions are (axes, batch, seq), and the
///   frequencies are cut into len(mrope_section) runs of these sizes, run a
///   turning by axis a's positions. mrope_interleaved: Qwen3-VL's layout
///   instead, frequency i on axis i % axes while i < axes * mrope_section[a].
/// Angles are exact modulo one turn (fixed-point turns, no fp64 on the fp32/bf16/fp16
/// paths): fp32 results within 2.5e-7 at every position below 2^31.
std::tuple<at::Tensor, at::Tensor> rotary(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
    const std::optional<at::Tensor>& positions = std::nullopt,
    const std::optional<at::Tensor>& offsets = std::nullopt, int64_t offset = 0,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt, double attention_scaling = 1.0,
    bool interleaved = false, int64_t seq_dim = 1, at::OptionalIntArrayRef mrope_section = std::nullopt,
    bool mrope_interleaved = false);

/// rotary in place: q and k are overwritten.
void rotary_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
             const std::optional<at::Tensor>& positions = std::nullopt,
             const std::optional<at::Tensor>& offsets = std::nullopt, int64_t offset = 0,
             const std::optional<at::Tensor>& cu_seqlens = std::nullopt,
             double attention_scaling = 1.0, bool interleaved = false, int64_t seq_dim = 1,
             at::OptionalIntArrayRef mrope_section = std::nullopt, bool mrope_interleaved = false);

}  // namespace posemb
