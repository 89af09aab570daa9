// Autograd of bert_embeddings in C++: the backward is the public op
// bert_embeddings_backward (all five parameter gradients, deterministic).
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/needs_graph.h"
#include "bert_op.h"

namespace posemb::detail {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class BertEmbeddings : public torch::autograd::Function<BertEmbeddings> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input_ids,
                               const at::Tensor& word, const at::Tensor& position,
                               const at::Tensor& type, const at::Tensor& gamma,
                               const at::Tensor& beta, const std::optional<at::Tensor>& positions,
                               const std::optional<at::Tensor>& token_type_ids,
                               c10::SymInt offset, double eps, double dropout_p,
                               const std::optional<at::Tensor>& dropout_seed,
                               std::optional<int64_t> word_padding_idx,
                               std::optional<int64_t> position_padding_idx) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, mean, rstd] = BertEmbeddingsOp::handle().call(
        input_ids, word, position, type, gamma, beta, positions, token_type_ids, offset, eps,
        dropout_p, dropout_seed, word_padding_idx, position_padding_idx);
    ctx->save_for_backward({input_ids, word, position, type, gamma, mean, rstd,
                            positions.value_or(at::Tensor()), token_type_ids.value_or(at::Tensor()),
                            dropout_seed.value_or(at::Tensor())});
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["dropout_p"] = dropout_p;
    ctx->saved_data["word_padding_idx"] = word_padding_idx;
    ctx->saved_data["position_padding_idx"] = position_padding_idx;
    ctx->mark_non_differentiable({mean, rstd});
    return {out, mean, rstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto s = ctx->get_saved_variables();
    auto [gw, gp, gt, gg, gb] = BertEmbeddingsBackwardOp::handle().call(
        grad_outputs[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], optional_tensor(s[7]),
        optional_tensor(s[8]), ctx->saved_data["offset"].toSymInt(),
        ctx->saved_data["dropout_p"].toDouble(), optional_tensor(s[9]),
        ctx->saved_data["word_padding_idx"].toOptional<int64_t>(),
        ctx->saved_data["position_padding_idx"].toOptional<int64_t>());
    variable_list grads(14);
    grads[1] = gw;
    grads[2] = gp;
    grads[3] = gt;
    grads[4] = gg;
    grads[5] = gb;
    return grads;
  }
};

BertOutputs bert_embeddings_autograd(
    const at::Tensor& input_ids, const at::Tensor& word, const at::Tensor& position,
    const at::Tensor& type, const at::Tensor& gamma, const at::Tensor& beta,
    const std::optional<at::Tensor>& positions, const std::optional<at::Tensor>& token_type_ids,
    c10::SymInt offset, double eps, double dropout_p, const std::optional<at::Tensor>& dropout_seed,
    std::optional<int64_t> word_padding_idx, std::optional<int64_t> position_padding_idx) {
  if (!needs_graph(word, position, type, gamma, beta)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return BertEmbeddingsOp::handle().call(input_ids, word, position, type, gamma, beta, positions, token_type_ids,
                                           std::move(offset), eps, dropout_p, dropout_seed, word_padding_idx,
                                           position_padding_idx);
  }
  auto out = BertEmbeddings::apply(input_ids, word, position, type, gamma, beta, positions,
                                   token_type_ids, std::move(offset), eps, dropout_p, dropout_seed,
                                   word_padding_idx, position_padding_idx);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, Autograd, m) {
  m.impl("bert_embeddings", &bert_embeddings_autograd);
}

}  // namespace posemb::detail
