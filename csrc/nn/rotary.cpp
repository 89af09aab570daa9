#include "posemb/nn/rotary.h"

#include <ostream>

#include "op.h"
#include "posemb/rotary.h"

namespace posemb::nn {

RotaryEmbeddingImpl::RotaryEmbeddingImpl(RotaryEmbeddingOptions options_)
    : options(std::move(options_)) {
  reset();
}

void RotaryEmbeddingImpl::reset() {
  const int64_t dim = options.rotary_dim().value_or(options.head_dim());
  TORCH_CHECK(dim >= 2 && dim % 2 == 0 && dim <= options.head_dim(),
              "posemb::nn::RotaryEmbedding: rotary_dim must be even and in [2, head_dim = ",
              options.head_dim(), "], got ", dim);
  if (options.inv_freq().has_value()) {
    const auto& given = *options.inv_freq();
    TORCH_CHECK(given.dim() == 1 && given.scalar_type() == torch::kFloat && given.size(0) * 2 == dim,
                "posemb::nn::RotaryEmbedding: inv_freq must be float32 (rotary_dim / 2,) = (",
                dim / 2, ",), got ", given.scalar_type(), " of shape ", given.sizes());
    inv_freq = given.clone();
  } else {
    // The same fp32 operations, in the same order, as posemb.rope.
    const auto exponents = torch::arange(0, dim, 2, torch::kLong).to(torch::kFloat) / dim;
    inv_freq = 1.0 / torch::pow(options.base(), exponents) / options.linear_factor();
  }
  inv_freq = register_buffer("inv_freq", inv_freq);
}

void RotaryEmbeddingImpl::to(torch::Device device, torch::Dtype /*dtype*/, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
}

void RotaryEmbeddingImpl::to(torch::Dtype /*dtype*/, bool /*non_blocking*/) {}

void RotaryEmbeddingImpl::pretty_print(std::ostream& stream) const {
  stream << "posemb::nn::RotaryEmbedding(head_dim=" << options.head_dim()
         << ", rotary_dim=" << 2 * inv_freq.size(0) << ", interleaved="
         << (options.interleaved() ? "true" : "false");
  if (options.mrope_section().has_value()) {
    stream << ", mrope_section=" << c10::IntArrayRef(*options.mrope_section())
           << ", mrope_interleaved=" << (options.mrope_interleaved() ? "true" : "false");
  }
  stream << ")";
}

std::tuple<torch::Tensor, torch::Tensor> RotaryEmbeddingImpl::forward(const torch::Tensor& q,
                                                                      const torch::Tensor& k,
                                                                      const torch::Tensor& positions,
                                                                      int64_t offset) {
  const auto& sections = options.mrope_section();
  return posemb::rotary(q, k, inv_freq, detail::optional_tensor(positions), std::nullopt, offset,
                        std::nullopt, options.attention_scaling(), options.interleaved(),
                        options.seq_dim(),
                        sections.has_value() ? at::OptionalIntArrayRef(*sections) : at::OptionalIntArrayRef(),
                        options.mrope_interleaved());
}

}  // namespace posemb::nn
