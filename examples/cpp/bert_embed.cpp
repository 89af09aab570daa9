// A LibTorch program on real weights: all-MiniLM-L6-v2's embedding block.
//
//   python examples/cpp/export_minilm.py minilm.pt   # weights + token ids (torch.save)
//   build/example/bert_embed minilm.pt bert_out.pt    # this program
//   python examples/cpp/check_minilm.py minilm.pt bert_out.pt
//
// It reads the dict that torch.save wrote with torch::pickle_load, loads it
// into posemb::nn::BertEmbeddings by parameter name (Hugging Face's names),
// runs the block, turns a q/k pair made from its output with
// posemb::nn::RotaryEmbedding for decoder-style (causal) attention, trains one
// SGD step, and writes what it computed with torch::pickle_save.
#include <posemb/posemb.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

namespace {

c10::Dict<c10::IValue, c10::IValue> load_dict(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  TORCH_CHECK(file, "cannot open ", path);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  return torch::pickle_load(bytes).toGenericDict();
}

// Mean of the hidden states over the real (unmasked) tokens: (batch, hidden).
torch::Tensor mean_pool(const torch::Tensor& hidden, const torch::Tensor& mask) {
  const auto m = mask.unsqueeze(-1).to(hidden.dtype());
  return (hidden * m).sum(1) / m.sum(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " EXPORT.pt OUT.pt\n";
    return 2;
  }
  torch::NoGradGuard no_grad;  // loading and inference; the training step turns grad mode on
  const auto data = load_dict(argv[1]);
  const auto get = [&](const std::string& key) { return data.at(key).toTensor(); };
  const auto input_ids = get("input_ids");
  const auto token_type_ids = get("token_type_ids");
  const auto attention_mask = get("attention_mask");
  const auto labels = get("labels");

  // The options from the tables' shapes; MiniLM's config otherwise (pad 0).
  const auto word = get("word_embeddings.weight");
  const auto position = get("position_embeddings.weight");
  const auto types = get("token_type_embeddings.weight");
  posemb::nn::BertEmbeddings bert(posemb::nn::BertEmbeddingsOptions(word.size(0), word.size(1))
                                      .max_position_embeddings(position.size(0))
                                      .type_vocab_size(types.size(0))
                                      .pad_token_id(0)
                                      .layer_norm_eps(data.at("layer_norm_eps").toDouble()));
  // Every parameter by its (Hugging Face) name, shapes checked.
  for (auto& p : bert->named_parameters()) {
    const auto& name = p.key();
    TORCH_CHECK(data.contains(name), "no ", name, " in ", argv[1]);
    const auto value = data.at(name).toTensor();
    TORCH_CHECK(value.sizes() == p.value().sizes(), name, ": shape ", value.sizes(), " for ",
                p.value().sizes());
    p.value().copy_(value);
  }
  std::cout << bert << "\n";

  // The block itself (eval: no dropout), as Hugging Face's BertEmbeddings computes it.
  bert->eval();
  const auto hidden = bert(input_ids, token_type_ids);
  std::cout << "hidden states: " << hidden.sizes() << "\n";

  // Decoder-style use: a q/k pair from the hidden states, 12 heads of 32,
  // turned by rotary embedding (token t at position t), then causal attention.
  const int64_t batch = hidden.size(0), seq = hidden.size(1), heads = 12;
  const int64_t head_dim = hidden.size(2) / heads;
  const auto q = hidden.view({batch, seq, heads, head_dim});
  const auto k = hidden.roll(1, -1).view({batch, seq, heads, head_dim});
  posemb::nn::RotaryEmbedding rope(posemb::nn::RotaryEmbeddingOptions(head_dim).base(10000.0));
  const auto [q_rot, k_rot] = rope(q, k);
  const auto scores = torch::einsum("bqhd,bkhd->bhqk", {q_rot, k_rot}) / std::sqrt(double(head_dim));
  const auto causal = torch::ones({seq, seq}, torch::kBool).triu(1);
  const auto attention = scores.masked_fill(causal, -INFINITY).softmax(-1);
  std::cout << "rotary q, k: " << q_rot.sizes() << ", causal attention: " << attention.sizes() << "\n";

  // One training step: a linear head on the mean-pooled embeddings, the
  // sentences' labels, cross-entropy, SGD through the fused block's backward.
  // Dropout stays off, so the loss before and after is one function.
  torch::manual_seed(0);
  torch::nn::Linear head(hidden.size(2), 2);
  const auto head_weight = head->weight.clone(), head_bias = head->bias.clone();
  std::vector<torch::Tensor> params = bert->parameters();
  for (const auto& p : head->parameters()) params.push_back(p);
  const double lr = 0.1;
  torch::optim::SGD sgd(params, torch::optim::SGDOptions(lr));
  const auto loss_of = [&] {
    torch::AutoGradMode grad(true);
    return torch::cross_entropy_loss(head(mean_pool(bert(input_ids, token_type_ids), attention_mask)), labels);
  };
  double loss_before, loss_after;
  {
    torch::AutoGradMode grad(true);
    sgd.zero_grad();
    auto loss = loss_of();
    loss_before = loss.item<double>();
    loss.backward();
    sgd.step();
    loss_after = loss_of().item<double>();
  }
  std::cout << "loss before: " << loss_before << "\nloss after: " << loss_after << "\n";

  c10::impl::GenericDict out(c10::StringType::get(), c10::AnyType::get());
  out.insert("hidden", hidden);
  out.insert("q_rot", q_rot);
  out.insert("k_rot", k_rot);
  out.insert("attention", attention);
  out.insert("head.weight", head_weight);
  out.insert("head.bias", head_bias);
  out.insert("lr", lr);
  out.insert("loss_before", loss_before);
  out.insert("loss_after", loss_after);
  for (const auto& p : bert->named_parameters())
    if (p.key() != "word_embeddings.weight") out.insert("trained." + p.key(), p.value().clone());
  const auto bytes = torch::pickle_save(out);
  std::ofstream(argv[2], std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  std::cout << "wrote " << argv[2] << "\n";
  return 0;
}
