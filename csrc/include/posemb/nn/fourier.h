// posemb::nn::FourierPositionalEmbedding: x + [sin(α p), cos(α p)] W (+ b),
// trainable W and (optionally) frequencies α; the article's
// E(p) = sin(α p) W1 + cos(α p) W2 (learnable Fourier features).
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <optional>

namespace posemb::nn {

/// Options of FourierPositionalEmbedding.
struct FourierPositionalEmbeddingOptions {
  explicit FourierPositionalEmbeddingOptions(int64_t embedding_dim) : embedding_dim_(embedding_dim) {}

  /// Size of the last dimension of the embeddings.
  TORCH_ARG(int64_t, embedding_dim);
  /// n, the number of frequencies (embedding_dim / 2 when not set).
  TORCH_ARG(std::optional<int64_t>, num_frequencies) = std::nullopt;
  /// α_i = base^(-i / n) at initialisation.
  TORCH_ARG(double, base) = 10000.0;
  /// α is a parameter ("frequencies"), else a buffer.
  TORCH_ARG(bool, learn_frequencies) = true;
  /// A trainable bias of size embedding_dim.
  TORCH_ARG(bool, bias) = false;
  /// -2 for (batch, seq, dim) or (seq, dim), 0 for (seq, batch, dim).
  TORCH_ARG(int64_t, seq_dim) = -2;
};

/// Adds projected Fourier features of each token's position. The features
/// come from posemb::fourier_features (exact angles, exact dE/dα); the
/// projection is one GEMM, with the add fused (baddbmm) when positions differ
/// per sequence. With embedding_dim == 2n the weight starts as the identity
/// (the module starts as the "half"-layout sinusoidal encoding), otherwise
/// Xavier-uniform. The same module as posemb.nn.FourierPositionalEmbedding.
class FourierPositionalEmbeddingImpl : public torch::nn::Cloneable<FourierPositionalEmbeddingImpl> {
 public:
  explicit FourierPositionalEmbeddingImpl(int64_t embedding_dim)
      : FourierPositionalEmbeddingImpl(FourierPositionalEmbeddingOptions(embedding_dim)) {}
  explicit FourierPositionalEmbeddingImpl(FourierPositionalEmbeddingOptions options);

  /// Registers frequencies, weight (and bias) and initialises them.
  void reset() override;
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  /// Casts cast weight and bias; frequencies stay float32 (moved in place,
  /// never rounded through the cast), as in posemb.nn.
  using torch::nn::Module::to;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;

  /// x + E(position): token t at offset + t, or at `positions` ((seq,) or (batch, seq)).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions = {}, int64_t offset = 0);
  /// x + E(offsets[b] + t).
  torch::Tensor forward_offsets(const torch::Tensor& x, const torch::Tensor& offsets);

  FourierPositionalEmbeddingOptions options;
  int64_t num_frequencies = 0;
  torch::Tensor frequencies;  // float32 (n,)
  torch::Tensor weight;       // (2n, embedding_dim)
  torch::Tensor bias;         // (embedding_dim,), or undefined

 private:
  torch::Tensor add(const torch::Tensor& x, torch::Tensor positions);
};

TORCH_MODULE(FourierPositionalEmbedding);

}  // namespace posemb::nn
