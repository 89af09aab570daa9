#include "posemb/nn/bert.h"

#include <ostream>

#include "op.h"
#include "posemb/bert.h"

namespace posemb::nn {

BertEmbeddingsImpl::BertEmbeddingsImpl(BertEmbeddingsOptions options_)
    : options(std::move(options_)) {
  reset();
}

void BertEmbeddingsImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.hidden_dropout_prob() >= 0 && o.hidden_dropout_prob() < 1,
              "posemb::nn::BertEmbeddings: hidden_dropout_prob must be in [0, 1), got ",
              o.hidden_dropout_prob());
  TORCH_CHECK(!o.padding_aware_positions() || o.pad_token_id().has_value(),
              "posemb::nn::BertEmbeddings: padding_aware_positions needs pad_token_id");
  auto word = torch::nn::EmbeddingOptions(o.vocab_size(), o.hidden_size());
  if (o.pad_token_id()) word.padding_idx(*o.pad_token_id());
  auto position = torch::nn::EmbeddingOptions(o.max_position_embeddings(), o.hidden_size());
  if (o.padding_aware_positions()) position.padding_idx(*o.pad_token_id());
  word_embeddings = register_module("word_embeddings", torch::nn::Embedding(word));
  position_embeddings = register_module("position_embeddings", torch::nn::Embedding(position));
  token_type_embeddings = register_module(
      "token_type_embeddings",
      torch::nn::Embedding(torch::nn::EmbeddingOptions(o.type_vocab_size(), o.hidden_size())));
  LayerNorm = register_module(
      "LayerNorm",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden_size()}).eps(o.layer_norm_eps())));
}

void BertEmbeddingsImpl::pretty_print(std::ostream& stream) const {
  stream << "posemb::nn::BertEmbeddings(vocab_size=" << options.vocab_size()
         << ", hidden_size=" << options.hidden_size()
         << ", max_position_embeddings=" << options.max_position_embeddings()
         << ", type_vocab_size=" << options.type_vocab_size()
         << ", dropout=" << options.hidden_dropout_prob();
  if (options.padding_aware_positions()) stream << ", padding_aware_positions=true";
  stream << ")";
}

torch::Tensor BertEmbeddingsImpl::forward(const torch::Tensor& input_ids,
                                          const torch::Tensor& token_type_ids,
                                          const torch::Tensor& position_ids,
                                          int64_t cache_length) {
  std::optional<at::Tensor> positions;
  if (position_ids.defined()) {
    positions = position_ids;
  } else if (options.padding_aware_positions()) {
    const int64_t pad = *options.pad_token_id();
    const auto mask = input_ids.ne(pad).to(torch::kLong);
    positions = (mask.cumsum(1) + cache_length) * mask + pad;
  }
  const double p = options.hidden_dropout_prob();
  std::optional<at::Tensor> seed;
  if (is_training() && p > 0) {  // from the generator of input_ids' device, as nn::Dropout draws
    seed = torch::randint(0, int64_t(1) << 62, {}, input_ids.options().dtype(torch::kLong));
  }
  return posemb::bert_embeddings(
      input_ids, word_embeddings->weight, position_embeddings->weight,
      token_type_embeddings->weight, LayerNorm->weight, LayerNorm->bias, positions,
      detail::optional_tensor(token_type_ids),
      positions ? 0 : cache_length, options.layer_norm_eps(), p, seed,
      word_embeddings->options.padding_idx(), position_embeddings->options.padding_idx());
}

}  // namespace posemb::nn
