// Autograd of learned_add in C++: d/dx is the identity, d/dW is the public
// op learned_add_backward (a deterministic sum per row of W).
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/needs_graph.h"
#include "learned_op.h"

namespace posemb::detail {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class LearnedAdd : public torch::autograd::Function<LearnedAdd> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& positions,
                            const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                            int64_t seq_dim, std::optional<int64_t> padding_idx) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({positions.value_or(at::Tensor()), offsets.value_or(at::Tensor())});
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["seq_dim"] = seq_dim;
    ctx->saved_data["num_embeddings"] = weight.sym_size(0);
    ctx->saved_data["padding_idx"] = padding_idx;
    return LearnedAddOp::handle().call(x, weight, positions, offsets, std::move(offset), seq_dim,
                                       padding_idx);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    variable_list grads(7);
    const at::Tensor& grad = grad_outputs[0];
    if (ctx->needs_input_grad(0)) grads[0] = grad;
    if (ctx->needs_input_grad(1)) {
      grads[1] = LearnedAddBackwardOp::handle().call(
          grad, optional_tensor(saved[0]), optional_tensor(saved[1]),
          ctx->saved_data["offset"].toSymInt(), ctx->saved_data["seq_dim"].toInt(),
          ctx->saved_data["num_embeddings"].toSymInt(),
          ctx->saved_data["padding_idx"].toOptional<int64_t>());
    }
    return grads;
  }
};

at::Tensor learned_add_autograd(const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& positions,
                                const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                                int64_t seq_dim, std::optional<int64_t> padding_idx) {
  if (!needs_graph(x, weight)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return LearnedAddOp::handle().call(x, weight, positions, offsets, std::move(offset), seq_dim, padding_idx);
  }
  return LearnedAdd::apply(x, weight, positions, offsets, std::move(offset), seq_dim, padding_idx);
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, Autograd, m) {
  m.impl("learned_add", &learned_add_autograd);
}

}  // namespace posemb::detail
