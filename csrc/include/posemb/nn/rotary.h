// posemb::nn::RotaryEmbedding: a LibTorch module around the rotary op.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <optional>
#include <tuple>
#include <vector>

namespace posemb::nn {

/// Options of RotaryEmbedding. The frequencies are base^(-2i/rotary_dim)
/// divided by linear_factor (the "default" and "linear" rope types); for the
/// other Hugging Face types give the plan itself (inv_freq and
/// attention_scaling, as posemb.rope computes them).
struct RotaryEmbeddingOptions {
  explicit RotaryEmbeddingOptions(int64_t head_dim) : head_dim_(head_dim) {}

  TORCH_ARG(int64_t, head_dim);
  /// Rotate only the first rotary_dim channels (even); default head_dim.
  TORCH_ARG(std::optional<int64_t>, rotary_dim) = std::nullopt;
  TORCH_ARG(double, base) = 10000.0;
  TORCH_ARG(double, linear_factor) = 1.0;
  /// A precomputed plan: fp32 (rotary_dim / 2,) frequencies, taken as exact.
  TORCH_ARG(std::optional<torch::Tensor>, inv_freq) = std::nullopt;
  TORCH_ARG(double, attention_scaling) = 1.0;
  /// GPT-J pairs (2i, 2i+1) instead of GPT-NeoX/Llama halves.
  TORCH_ARG(bool, interleaved) = false;
  /// 1: (batch, seq, heads, head_dim); 2: (batch, heads, seq, head_dim); 0: (seq, batch, ...).
  TORCH_ARG(int64_t, seq_dim) = 1;
  /// Positions with axes (multimodal rope, axial rotary): the frequencies cut
  /// into runs of these sizes, run a turned by positions[a] of (axes, batch,
  /// seq) positions; see posemb::rotary.
  TORCH_ARG(std::optional<std::vector<int64_t>>, mrope_section) = std::nullopt;
  /// Qwen3-VL's interleaved sections instead of runs.
  TORCH_ARG(bool, mrope_interleaved) = false;
};

class RotaryEmbeddingImpl : public torch::nn::Cloneable<RotaryEmbeddingImpl> {
 public:
  explicit RotaryEmbeddingImpl(int64_t head_dim) : RotaryEmbeddingImpl(RotaryEmbeddingOptions(head_dim)) {}
  explicit RotaryEmbeddingImpl(RotaryEmbeddingOptions options);

  /// Builds the inv_freq buffer from the options.
  void reset() override;

  void pretty_print(std::ostream& stream) const override;

  /// Moves move inv_freq; casts leave it float32, as the op needs it (it is
  /// part of the angle contract, and the module holds nothing else).
  using torch::nn::Module::to;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;

  /// (q_out, k_out): q and k turned by position * inv_freq. Token t is at
  /// offset + t, or at `positions` ((axes, batch, seq) with mrope_section).
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& q, const torch::Tensor& k,
                                                   const torch::Tensor& positions = {},
                                                   int64_t offset = 0);

  RotaryEmbeddingOptions options;
  /// fp32 (rotary_dim / 2,).
  torch::Tensor inv_freq;
};

TORCH_MODULE(RotaryEmbedding);

}  // namespace posemb::nn
