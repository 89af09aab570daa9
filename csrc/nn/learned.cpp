#include "posemb/nn/learned.h"

#include <cmath>
#include <ostream>

#include "op.h"
#include "posemb/learned.h"
#include "posemb/sinusoidal.h"

namespace posemb::nn {

LearnedPositionalEmbeddingImpl::LearnedPositionalEmbeddingImpl(
    LearnedPositionalEmbeddingOptions options_)
    : options(std::move(options_)) {
  reset();
}

void LearnedPositionalEmbeddingImpl::reset() {
  TORCH_CHECK(options.num_embeddings() >= 0 && options.embedding_dim() >= 0,
              "posemb::nn::LearnedPositionalEmbedding: num_embeddings and embedding_dim must be ",
              "non-negative, got ", options.num_embeddings(), " and ", options.embedding_dim());
  if (options.padding_idx().has_value()) {
    const int64_t p = *options.padding_idx();
    TORCH_CHECK(p >= 0 && p < options.num_embeddings(),
                "posemb::nn::LearnedPositionalEmbedding: padding_idx must be in [0, ",
                "num_embeddings=", options.num_embeddings(), "), got ", p);
  }
  weight = register_parameter(
      "weight", torch::empty({options.num_embeddings(), options.embedding_dim()}));
  reset_parameters();
}

void LearnedPositionalEmbeddingImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  if (options.sinusoidal_init()) {
    TORCH_CHECK(std::isfinite(options.noise_std()) && options.noise_std() >= 0,
                "posemb::nn::LearnedPositionalEmbedding: noise_std must be a finite number >= 0, got ",
                options.noise_std());
    // Built in fp64 and rounded once into the weight's dtype.
    auto table = posemb::sinusoidal_table(options.num_embeddings(), options.embedding_dim(), 0,
                                          options.layout(), options.freqs(), options.base(),
                                          std::nullopt, torch::kFloat64);
    if (options.noise_std() > 0) table += options.noise_std() * torch::randn_like(table);
    weight.copy_(table);
  } else {
    weight.normal_(0, 1);
  }
  if (options.padding_idx().has_value()) weight[*options.padding_idx()].zero_();
}

void LearnedPositionalEmbeddingImpl::pretty_print(std::ostream& stream) const {
  stream << "posemb::nn::LearnedPositionalEmbedding(" << options.num_embeddings() << ", "
         << options.embedding_dim();
  if (options.padding_idx()) stream << ", padding_idx=" << *options.padding_idx();
  if (options.sinusoidal_init()) stream << ", sinusoidal_init=true";
  stream << ")";
}

torch::Tensor LearnedPositionalEmbeddingImpl::forward(const torch::Tensor& x,
                                                      const torch::Tensor& positions,
                                                      int64_t offset) {
  return posemb::learned_add(x, weight, detail::optional_tensor(positions), std::nullopt, offset,
                             options.seq_dim(), options.padding_idx());
}

torch::Tensor LearnedPositionalEmbeddingImpl::forward_offsets(const torch::Tensor& x,
                                                              const torch::Tensor& offsets) {
  return posemb::learned_add(x, weight, std::nullopt, offsets, 0, options.seq_dim(),
                             options.padding_idx());
}

torch::Tensor LearnedPositionalEmbeddingImpl::forward_ids(const torch::Tensor& x,
                                                          const torch::Tensor& input_ids) {
  TORCH_CHECK(options.padding_idx().has_value(),
              "posemb::nn::LearnedPositionalEmbedding: forward_ids needs options.padding_idx");
  return forward(x, posemb::make_positions(input_ids, *options.padding_idx()));
}

}  // namespace posemb::nn
