// posemb::nn::LearnedPositionalEmbedding: a LibTorch module around learned_add.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <optional>
#include <string>

namespace posemb::nn {

/// Options of LearnedPositionalEmbedding.
struct LearnedPositionalEmbeddingOptions {
  LearnedPositionalEmbeddingOptions(int64_t num_embeddings, int64_t embedding_dim)
      : num_embeddings_(num_embeddings), embedding_dim_(embedding_dim) {}

  /// Number of positions the table holds.
  TORCH_ARG(int64_t, num_embeddings);
  /// Size of each position's embedding (the last dimension of the input).
  TORCH_ARG(int64_t, embedding_dim);
  /// That row starts at zero and gets no gradient; forward_ids counts
  /// positions from padding_idx + 1 (fairseq, RoBERTa).
  TORCH_ARG(std::optional<int64_t>, padding_idx) = std::nullopt;
  /// Dimension of the input holding the sequence (-2, or 0 for (seq, batch, dim)).
  TORCH_ARG(int64_t, seq_dim) = -2;
  /// Start the table as the sinusoidal encoding of positions 0 .. num_embeddings - 1
  /// (exact, rounded once), with the layout, freqs and base below, instead of
  /// N(0, 1): the article's trainable table initialised from the sinusoid.
  TORCH_ARG(bool, sinusoidal_init) = false;
  TORCH_ARG(std::string, layout) = "interleaved";
  TORCH_ARG(std::string, freqs) = "vaswani";
  TORCH_ARG(double, base) = 10000.0;
  /// With sinusoidal_init: plus N(0, noise_std^2) noise (random + sinusoid).
  TORCH_ARG(double, noise_std) = 0.0;
};

/// Adds a learned embedding of each token's position: x + weight[position].
class LearnedPositionalEmbeddingImpl
    : public torch::nn::Cloneable<LearnedPositionalEmbeddingImpl> {
 public:
  LearnedPositionalEmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim)
      : LearnedPositionalEmbeddingImpl(
            LearnedPositionalEmbeddingOptions(num_embeddings, embedding_dim)) {}
  explicit LearnedPositionalEmbeddingImpl(LearnedPositionalEmbeddingOptions options);

  /// Registers `weight` and initialises it.
  void reset() override;

  /// weight ~ N(0, 1) (as torch::nn::Embedding), or the sinusoidal
  /// encoding (+ noise) with options.sinusoidal_init; the padding row zero.
  void reset_parameters();

  void pretty_print(std::ostream& stream) const override;

  /// x + weight[position]: token t is at offset + t, or at `positions`.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions = {},
                        int64_t offset = 0);

  /// x + weight[offsets[b] + t].
  torch::Tensor forward_offsets(const torch::Tensor& x, const torch::Tensor& offsets);

  /// x + weight[position] with padding-aware positions made from input_ids
  /// (needs options.padding_idx).
  torch::Tensor forward_ids(const torch::Tensor& x, const torch::Tensor& input_ids);

  LearnedPositionalEmbeddingOptions options;
  /// (num_embeddings, embedding_dim).
  torch::Tensor weight;
};

TORCH_MODULE(LearnedPositionalEmbedding);

}  // namespace posemb::nn
