// posemb::nn::SinusoidalPositionalEmbedding: a LibTorch module around the
// sinusoidal_add op. It holds no table and no parameters.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <optional>
#include <string>

namespace posemb::nn {

/// Options of SinusoidalPositionalEmbedding.
///
///   SinusoidalPositionalEmbedding pe(
///       SinusoidalPositionalEmbeddingOptions(512).layout("half").freqs("fairseq")
///           .padding_idx(1).scale(std::sqrt(512.0)));
struct SinusoidalPositionalEmbeddingOptions {
  explicit SinusoidalPositionalEmbeddingOptions(int64_t embedding_dim)
      : embedding_dim_(embedding_dim) {}

  /// Size of the last dimension of the embeddings the module is applied to.
  TORCH_ARG(int64_t, embedding_dim);
  /// "interleaved" (sin at 2i, cos at 2i+1) or "half" (all sins, then all cosines).
  TORCH_ARG(std::string, layout) = "interleaved";
  /// "vaswani" (w_i = base^(-2i/dim)) or "fairseq" (w_i = exp(-i ln(base)/(dim/2-1))).
  TORCH_ARG(std::string, freqs) = "vaswani";
  /// Base of the geometric frequency progression.
  TORCH_ARG(double, base) = 10000.0;
  /// Where set, the encoding of this position is zero and forward_ids() counts
  /// positions from padding_idx + 1 (fairseq).
  TORCH_ARG(std::optional<int64_t>, padding_idx) = std::nullopt;
  /// The embeddings are multiplied by this before the encoding is added.
  TORCH_ARG(double, scale) = 1.0;
  /// Dimension of the input holding the sequence: -2 for (batch, seq, dim)
  /// and (seq, dim), 0 for (seq, batch, dim).
  TORCH_ARG(int64_t, seq_dim) = -2;
};

/// Adds sinusoidal position encodings to embeddings, computed on the fly.
class SinusoidalPositionalEmbeddingImpl
    : public torch::nn::Cloneable<SinusoidalPositionalEmbeddingImpl> {
 public:
  explicit SinusoidalPositionalEmbeddingImpl(int64_t embedding_dim)
      : SinusoidalPositionalEmbeddingImpl(SinusoidalPositionalEmbeddingOptions(embedding_dim)) {}
  explicit SinusoidalPositionalEmbeddingImpl(SinusoidalPositionalEmbeddingOptions options);

  /// Checks the options; the module has no state to reset.
  void reset() override;

  void pretty_print(std::ostream& stream) const override;

  /// x * scale + PE: token t is at `offset + t`, or at `positions` (integer,
  /// broadcastable to (batch, seq)) when they are given.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions = {},
                        int64_t offset = 0);

  /// x * scale + PE with positions of each sequence starting at offsets[b].
  torch::Tensor forward_offsets(const torch::Tensor& x, const torch::Tensor& offsets);

  /// x * scale + PE with padding-aware positions made from input_ids
  /// (fairseq's rule; needs options.padding_idx).
  torch::Tensor forward_ids(const torch::Tensor& x, const torch::Tensor& input_ids);

  SinusoidalPositionalEmbeddingOptions options;
};

TORCH_MODULE(SinusoidalPositionalEmbedding);

}  // namespace posemb::nn
