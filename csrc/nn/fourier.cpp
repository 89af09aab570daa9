#include "posemb/nn/fourier.h"

#include <torch/nn/init.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <ostream>

#include "posemb/fourier.h"

namespace posemb::nn {

FourierPositionalEmbeddingImpl::FourierPositionalEmbeddingImpl(FourierPositionalEmbeddingOptions options_)
    : options(std::move(options_)) {
  reset();
}

void FourierPositionalEmbeddingImpl::reset() {
  const char* name = "posemb::nn::FourierPositionalEmbedding";
  TORCH_CHECK(options.embedding_dim() >= 1, name, ": embedding_dim must be >= 1, got ", options.embedding_dim());
  num_frequencies = options.num_frequencies().value_or(std::max<int64_t>(1, options.embedding_dim() / 2));
  TORCH_CHECK(num_frequencies >= 1, name, ": num_frequencies must be >= 1, got ", num_frequencies);
  TORCH_CHECK(std::isfinite(options.base()) && options.base() > 0, name,
              ": base must be a finite number > 0, got ", options.base());
  TORCH_CHECK(options.seq_dim() == -2 || options.seq_dim() == 0, name, ": seq_dim must be -2 or 0, got ",
              options.seq_dim());
  const auto freqs = torch::empty({num_frequencies}, torch::kFloat32);
  frequencies = options.learn_frequencies() ? register_parameter("frequencies", freqs)
                                            : register_buffer("frequencies", freqs);
  weight = register_parameter("weight", torch::empty({2 * num_frequencies, options.embedding_dim()}));
  if (options.bias()) bias = register_parameter("bias", torch::empty({options.embedding_dim()}));
  reset_parameters();
}

void FourierPositionalEmbeddingImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  const auto exponents = torch::arange(num_frequencies, torch::kFloat64) / static_cast<double>(num_frequencies);
  frequencies.copy_(torch::pow(options.base(), -exponents));
  if (options.embedding_dim() == 2 * num_frequencies) {
    weight.copy_(torch::eye(2 * num_frequencies));
  } else {
    torch::nn::init::xavier_uniform_(weight);
  }
  if (bias.defined()) bias.zero_();
}

void FourierPositionalEmbeddingImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  const torch::Tensor exact = frequencies.detach().to(device, /*non_blocking=*/non_blocking, /*copy=*/true);
  torch::nn::Module::to(device, dtype, non_blocking);
  frequencies.set_data(exact);
}

void FourierPositionalEmbeddingImpl::to(torch::Dtype dtype, bool non_blocking) {
  const torch::Tensor exact = frequencies.detach().clone();
  torch::nn::Module::to(dtype, non_blocking);
  frequencies.set_data(exact);
}

void FourierPositionalEmbeddingImpl::pretty_print(std::ostream& stream) const {
  stream << "posemb::nn::FourierPositionalEmbedding(" << options.embedding_dim()
         << ", num_frequencies=" << num_frequencies << ", learn_frequencies=" << std::boolalpha
         << options.learn_frequencies() << ", bias=" << options.bias() << ")";
}

torch::Tensor FourierPositionalEmbeddingImpl::add(const torch::Tensor& x, torch::Tensor positions) {
  const char* name = "posemb::nn::FourierPositionalEmbedding";
  TORCH_CHECK((x.dim() == 2 || x.dim() == 3) && x.size(-1) == options.embedding_dim(), name,
              ": x must be (batch, seq, ", options.embedding_dim(), "), (seq, batch, ", options.embedding_dim(),
              ") or (seq, ", options.embedding_dim(), "), got shape ", x.sizes());
  TORCH_CHECK(x.is_floating_point(), name, ": x must be a floating-point tensor, got ", x.scalar_type());
  const bool seq_first = options.seq_dim() == 0 && x.dim() == 3;
  const auto batch_first = seq_first ? x.transpose(0, 1) : (x.dim() == 3 ? x : x.unsqueeze(0));
  const int64_t batch = batch_first.size(0), seq = batch_first.size(1);
  if (positions.dim() == 1) positions = positions.unsqueeze(0);
  TORCH_CHECK(positions.dim() == 2 && positions.size(1) == seq && (positions.size(0) == 1 || positions.size(0) == batch),
              name, ": positions must be (seq,) or (batch, seq) = (", batch, ", ", seq, "), got shape ",
              positions.sizes());
  const auto features = posemb::fourier_features(positions, frequencies).to(weight.scalar_type());
  torch::Tensor y;
  if (positions.size(0) == 1) {  // shared: one (seq, 2n) @ (2n, dim) product for the batch
    auto encoding = features[0].matmul(weight);
    if (bias.defined()) encoding = encoding + bias;
    y = batch_first + encoding;
  } else {
    y = torch::baddbmm(batch_first, features, weight.expand({batch, weight.size(0), weight.size(1)}));
    if (bias.defined()) y = y + bias;
  }
  if (x.dim() == 2) return y.squeeze(0);
  return seq_first ? y.transpose(0, 1) : y;
}

// What the ops check of an offset, as posemb.nn's module does.
torch::Tensor FourierPositionalEmbeddingImpl::forward(const torch::Tensor& x, const torch::Tensor& positions,
                                                       int64_t offset) {
  const char* name = "posemb::nn::FourierPositionalEmbedding";
  if (positions.defined()) {
    TORCH_CHECK(offset == 0, name, ": pass positions or offset, not both");
    return add(x, positions);
  }
  const int64_t seq = x.size(x.dim() == 3 && options.seq_dim() == 0 ? 0 : -2);
  TORCH_CHECK(offset <= std::numeric_limits<int64_t>::max() - std::max<int64_t>(seq - 1, 0), name,
              ": offset + seq - 1 must fit in int64, got offset=", offset, " and seq=", seq);
  return add(x, (torch::arange(seq, torch::dtype(torch::kLong).device(x.device())) + offset).unsqueeze(0));
}

torch::Tensor FourierPositionalEmbeddingImpl::forward_offsets(const torch::Tensor& x, const torch::Tensor& offsets) {
  const char* name = "posemb::nn::FourierPositionalEmbedding";
  const int64_t seq = x.size(x.dim() == 3 && options.seq_dim() == 0 ? 0 : -2);
  TORCH_CHECK(c10::isIntegralType(offsets.scalar_type(), /*includeBool=*/false) && offsets.dim() <= 1, name,
              ": offsets must be an integer tensor (batch,), got ", offsets.scalar_type(), " of shape ",
              offsets.sizes());
  // Host values only (a device read would sync).
  if (offsets.device().is_cpu() && offsets.numel() > 0 && seq > 0) {
    const int64_t largest = offsets.max().item<int64_t>();
    TORCH_CHECK(largest <= std::numeric_limits<int64_t>::max() - (seq - 1), name,
                ": offset + seq - 1 must fit in int64, got an offset of ", largest, " and seq=", seq);
  }
  const auto steps = torch::arange(seq, torch::dtype(torch::kLong).device(x.device()));
  return add(x, offsets.to(x.device(), torch::kLong).reshape({-1, 1}) + steps);
}

}  // namespace posemb::nn
