#include "posemb/nn/sinusoidal.h"

#include <ostream>

#include "op.h"
#include "posemb/sinusoidal.h"

namespace posemb::nn {

SinusoidalPositionalEmbeddingImpl::SinusoidalPositionalEmbeddingImpl(
    SinusoidalPositionalEmbeddingOptions options_)
    : options(std::move(options_)) {
  reset();
}

void SinusoidalPositionalEmbeddingImpl::reset() {
  TORCH_CHECK(options.embedding_dim() >= 0,
              "posemb::nn::SinusoidalPositionalEmbedding: embedding_dim must be non-negative, got ",
              options.embedding_dim());
  TORCH_CHECK(options.layout() == "interleaved" || options.layout() == "half",
              "posemb::nn::SinusoidalPositionalEmbedding: layout must be 'interleaved' or 'half', ",
              "got '", options.layout(), "'");
  TORCH_CHECK(options.freqs() == "vaswani" || options.freqs() == "fairseq",
              "posemb::nn::SinusoidalPositionalEmbedding: freqs must be 'vaswani' or 'fairseq', ",
              "got '", options.freqs(), "'");
}

void SinusoidalPositionalEmbeddingImpl::pretty_print(std::ostream& stream) const {
  stream << "posemb::nn::SinusoidalPositionalEmbedding(" << options.embedding_dim()
         << ", layout=" << options.layout() << ", freqs=" << options.freqs()
         << ", base=" << options.base();
  if (options.padding_idx()) stream << ", padding_idx=" << *options.padding_idx();
  if (options.scale() != 1.0) stream << ", scale=" << options.scale();
  stream << ")";
}

namespace {

void check_dim(const SinusoidalPositionalEmbeddingOptions& o, const torch::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == o.embedding_dim(),
              "posemb::nn::SinusoidalPositionalEmbedding: x must end in embedding_dim=",
              o.embedding_dim(), ", got shape ", x.sizes());
}

}  // namespace

torch::Tensor SinusoidalPositionalEmbeddingImpl::forward(const torch::Tensor& x,
                                                         const torch::Tensor& positions,
                                                         int64_t offset) {
  check_dim(options, x);
  return posemb::sinusoidal_add(x, detail::optional_tensor(positions), std::nullopt, offset,
                                options.seq_dim(), options.layout(), options.freqs(),
                                options.base(), options.scale(), options.padding_idx());
}

torch::Tensor SinusoidalPositionalEmbeddingImpl::forward_offsets(const torch::Tensor& x,
                                                                 const torch::Tensor& offsets) {
  check_dim(options, x);
  return posemb::sinusoidal_add(x, std::nullopt, offsets, 0, options.seq_dim(), options.layout(),
                                options.freqs(), options.base(), options.scale(),
                                options.padding_idx());
}

torch::Tensor SinusoidalPositionalEmbeddingImpl::forward_ids(const torch::Tensor& x,
                                                             const torch::Tensor& input_ids) {
  TORCH_CHECK(options.padding_idx().has_value(),
              "posemb::nn::SinusoidalPositionalEmbedding: forward_ids needs options.padding_idx");
  return forward(x, posemb::make_positions(input_ids, *options.padding_idx()));
}

}  // namespace posemb::nn
