#include <posemb/posemb.h>
#include <torch/torch.h>

#include <iostream>

int main() {
  // Token embeddings for a batch of 2 sequences of 5 tokens (1 is padding).
  const auto ids = torch::tensor({{5, 6, 7, 8, 1}, {9, 10, 1, 1, 1}});
  torch::nn::Embedding embed(torch::nn::EmbeddingOptions(32, 16).padding_idx(1));

  // Fairseq-style: half layout, fairseq frequencies, padding-aware positions.
  posemb::nn::SinusoidalPositionalEmbedding pe(
      posemb::nn::SinusoidalPositionalEmbeddingOptions(16)
          .layout("half").freqs("fairseq").padding_idx(1).scale(4.0));
  std::cout << pe << "\n";

  const auto x = embed(ids);
  const auto y = pe->forward_ids(x, ids);  // x * 4 + PE(positions from ids)
  std::cout << "output shape: " << y.sizes() << "\n";

  // The same through a table: PE at position p is row p.
  const auto table = posemb::sinusoidal_table(16, 16, 0, "half", "fairseq", 10000.0, 1);
  const auto positions = posemb::make_positions(ids, 1);
  const auto expected = x * 4.0 + table.index({positions});
  std::cout << "max abs difference from the table: " << (y - expected).abs().max().item<float>()
            << "\n";

  y.sum().backward();  // C++ autograd: d(sum)/dx = 4 everywhere
  std::cout << "embedding grad is finite: " << std::boolalpha
            << embed->weight.grad().isfinite().all().item<bool>() << "\n";
  return 0;
}
