// Autograd of the public backward ops, so second-order gradients
// (create_graph=True) are right or a clear error, never a silent None.
//
// rotary_backward is linear in its incoming gradients: the rotation by -theta
// (times the scaling), whose own gradient is the rotation by +theta, the
// rotary op itself. learned_add_backward and bert_embeddings_backward are not
// differentiated: their outputs carry an error that fires only if a later
// backward reaches them, so a create_graph=True backward that never goes
// that far still works.
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <string>

#include "rotary_op.h"

namespace posemb::detail {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class RotaryBackward : public torch::autograd::Function<RotaryBackward> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_q, const at::Tensor& grad_k,
                               const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                               const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                               const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                               bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({inv_freq, positions.value_or(at::Tensor()), offsets.value_or(at::Tensor()),
                            cu_seqlens.value_or(at::Tensor())});
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["attention_scaling"] = attention_scaling;
    ctx->saved_data["interleaved"] = interleaved;
    ctx->saved_data["seq_dim"] = seq_dim;
    ctx->saved_data["mrope_section"] = save_sections(mrope_section);
    ctx->saved_data["mrope_interleaved"] = mrope_interleaved;
    auto [gq, gk] = RotaryBackwardOp::handle().call(grad_q, grad_k, inv_freq, positions, offsets, std::move(offset), cu_seqlens,
                            attention_scaling, interleaved, seq_dim, mrope_section, mrope_interleaved);
    return {gq, gk};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    variable_list out(12);
    if (!grads[0].defined() && !grads[1].defined()) return out;
    const at::Tensor& like = grads[0].defined() ? grads[0] : grads[1];
    // Through rotary's own autograd: gradients of any order.
    std::vector<int64_t> sections;
    auto [gq, gk] = RotaryOp::handle().call(grads[0].defined() ? grads[0] : at::zeros_like(like),
                            grads[1].defined() ? grads[1] : at::zeros_like(like), s[0], optional_tensor(s[1]),
                            optional_tensor(s[2]), ctx->saved_data["offset"].toSymInt(), optional_tensor(s[3]),
                            ctx->saved_data["attention_scaling"].toDouble(),
                            ctx->saved_data["interleaved"].toBool(), ctx->saved_data["seq_dim"].toInt(),
                            load_sections(ctx->saved_data["mrope_section"], sections),
                            ctx->saved_data["mrope_interleaved"].toBool());
    out[0] = gq;
    out[1] = gk;
    return out;
  }
};

RotaryOutputs rotary_backward_autograd(const at::Tensor& grad_q, const at::Tensor& grad_k,
                                       const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                                       const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                                       const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                                       bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  auto out = RotaryBackward::apply(grad_q, grad_k, inv_freq, positions, offsets, std::move(offset), cu_seqlens,
                                   attention_scaling, interleaved, seq_dim, mrope_section, mrope_interleaved);
  return {out[0], out[1]};
}

// The op's outputs, below autograd; when a graph is being built, their
// grad_fn is an Error node whose edges lead to the op's inputs that need a
// gradient, so every path from them back to those inputs (a backward, or an
// autograd.grad asking for any tensor upstream) reaches it and raises
// `message`. (Edges to fresh leaves, as torch's @once_differentiable makes,
// would let autograd.grad prune the node and answer None.)
void once_differentiable(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack,
                         const char* name) {
  torch::autograd::edge_list edges;
  if (at::GradMode::is_enabled()) {
    const size_t n = op.schema().arguments().size();
    for (size_t i = stack->size() - n; i < stack->size(); ++i) {
      const c10::IValue& v = (*stack)[i];
      if (v.isTensor() && v.toTensor().requires_grad()) {
        edges.push_back(torch::autograd::impl::gradient_edge(v.toTensor()));
      }
    }
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(keys & c10::after_autograd_keyset, stack);
  }
  if (edges.empty()) return;
  const std::string message = std::string("posemb.") + name +
                              ": second-order gradients (differentiating its backward) are not supported";
  const c10::intrusive_ptr<torch::autograd::Node> node =
      c10::make_intrusive<torch::autograd::Error>(message, std::move(edges));
  const size_t outputs = op.schema().returns().size();
  for (size_t i = stack->size() - outputs; i < stack->size(); ++i) {
    torch::autograd::set_history((*stack)[i].toTensor(), node);
  }
}

void learned_add_backward_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                                   torch::jit::Stack* stack) {
  once_differentiable(op, keys, stack, "learned_add");
}

void bert_embeddings_backward_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                                       torch::jit::Stack* stack) {
  once_differentiable(op, keys, stack, "bert_embeddings");
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, Autograd, m) {
  m.impl("rotary_backward", &rotary_backward_autograd);
  m.impl("learned_add_backward", torch::CppFunction::makeFromBoxedFunction<&learned_add_backward_autograd>());
  m.impl("bert_embeddings_backward",
         torch::CppFunction::makeFromBoxedFunction<&bert_embeddings_backward_autograd>());
}

}  // namespace posemb::detail
