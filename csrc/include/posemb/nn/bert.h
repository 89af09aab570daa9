// posemb::nn::BertEmbeddings: Hugging Face's BertEmbeddings block as one
// fused op, for LibTorch programs.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <optional>

namespace posemb::nn {

/// Options of BertEmbeddings, named as in a Hugging Face BertConfig.
struct BertEmbeddingsOptions {
  BertEmbeddingsOptions(int64_t vocab_size, int64_t hidden_size)
      : vocab_size_(vocab_size), hidden_size_(hidden_size) {}

  TORCH_ARG(int64_t, vocab_size);
  TORCH_ARG(int64_t, hidden_size);
  TORCH_ARG(int64_t, max_position_embeddings) = 512;
  TORCH_ARG(int64_t, type_vocab_size) = 2;
  /// The word table's padding row (no gradient); RoBERTa positions count from it.
  TORCH_ARG(std::optional<int64_t>, pad_token_id) = 0;
  TORCH_ARG(double, layer_norm_eps) = 1e-12;
  TORCH_ARG(double, hidden_dropout_prob) = 0.1;
  /// RoBERTa's positions: pads keep pad_token_id, the rest count from pad_token_id + 1.
  TORCH_ARG(bool, padding_aware_positions) = false;
};

/// dropout(LayerNorm(word(ids) + position(pos) + token_type(types))), forward
/// and backward each one posemb op. Submodules and parameters carry Hugging
/// Face's names (word_embeddings.weight, ..., LayerNorm.bias).
class BertEmbeddingsImpl : public torch::nn::Cloneable<BertEmbeddingsImpl> {
 public:
  BertEmbeddingsImpl(int64_t vocab_size, int64_t hidden_size)
      : BertEmbeddingsImpl(BertEmbeddingsOptions(vocab_size, hidden_size)) {}
  explicit BertEmbeddingsImpl(BertEmbeddingsOptions options);

  /// Builds the three tables and the LayerNorm.
  void reset() override;

  void pretty_print(std::ostream& stream) const override;

  /// Hidden states (batch, seq, hidden) for input_ids (batch, seq). Undefined
  /// token_type_ids mean type 0; undefined position_ids mean cache_length + t
  /// (or RoBERTa's padding-aware positions). Dropout in training mode, its
  /// seed drawn from torch's default CPU generator.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids = {},
                        const torch::Tensor& position_ids = {}, int64_t cache_length = 0);

  BertEmbeddingsOptions options;
  torch::nn::Embedding word_embeddings{nullptr};
  torch::nn::Embedding position_embeddings{nullptr};
  torch::nn::Embedding token_type_embeddings{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};  // NOLINT: Hugging Face's name
};

TORCH_MODULE(BertEmbeddings);

}  // namespace posemb::nn
