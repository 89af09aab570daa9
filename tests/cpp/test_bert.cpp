// posemb::nn::BertEmbeddings from C++: against the unfused computation from
// ATen, dropout reproducible from torch's seed, and C++ training.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "posemb/posemb.h"

namespace {

torch::Tensor unfused(posemb::nn::BertEmbeddings& m, const torch::Tensor& ids,
                      const torch::Tensor& types) {
  const auto x = m->word_embeddings(ids) + m->position_embeddings(torch::arange(ids.size(1))) +
                 m->token_type_embeddings(types);
  return torch::layer_norm(x, {x.size(-1)}, m->LayerNorm->weight, m->LayerNorm->bias, 1e-12);
}

TEST(BertEmbeddings, MatchesUnfusedAndTrains) {
  torch::manual_seed(0);
  posemb::nn::BertEmbeddings m(posemb::nn::BertEmbeddingsOptions(50, 32).max_position_embeddings(16));
  m->eval();
  const auto ids = torch::randint(0, 50, {3, 9});
  const auto types = torch::randint(0, 2, {3, 9});
  const auto out = m->forward(ids, types);
  const auto ref = unfused(m, ids, types);
  EXPECT_TRUE(torch::allclose(out, ref, 1e-5, 2e-6));

  const auto grad = torch::randn_like(out);
  out.backward(grad);
  std::vector<torch::Tensor> ours;
  for (auto& p : m->parameters()) {
    ours.push_back(p.grad().clone());
    p.mutable_grad().zero_();
  }
  unfused(m, ids, types).backward(grad);
  const auto params = m->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(torch::allclose(ours[i], params[i].grad(), 1e-4, 1e-5)) << i;
  }
  EXPECT_EQ(m->named_parameters().keys(),
            (std::vector<std::string>{"word_embeddings.weight", "position_embeddings.weight",
                                      "token_type_embeddings.weight", "LayerNorm.weight",
                                      "LayerNorm.bias"}));
}

TEST(BertEmbeddings, DropoutFollowsTorchSeed) {
  posemb::nn::BertEmbeddings m(posemb::nn::BertEmbeddingsOptions(50, 64).hidden_dropout_prob(0.2));
  m->train();
  const auto ids = torch::randint(0, 50, {4, 32});
  torch::manual_seed(5);
  const auto a = m->forward(ids);
  torch::manual_seed(5);
  const auto b = m->forward(ids);
  EXPECT_TRUE(torch::equal(a, b));
  const double dropped = (a == 0).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(dropped, 0.2, 0.03);
  std::ostringstream s;
  m->pretty_print(s);  // (operator<< adds the submodules)
  EXPECT_EQ(s.str(), "posemb::nn::BertEmbeddings(vocab_size=50, hidden_size=64, "
                     "max_position_embeddings=512, type_vocab_size=2, dropout=0.2)");
}

}  // namespace
