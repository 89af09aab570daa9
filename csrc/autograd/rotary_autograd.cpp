// Autograd of rotary and rotary_ in C++: the gradient of a rotation by theta
// (times attention_scaling) is the rotation by -theta of the incoming
// gradient, the public op rotary_backward. inv_freq and the positions are
// constants here (as Hugging Face's inv_freq buffer).
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/needs_graph.h"
#include "rotary_op.h"

namespace posemb::detail {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Saves what the backward needs (the arguments but q and k).
void save(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
          const std::optional<at::Tensor>& positions, const std::optional<at::Tensor>& offsets,
          const c10::SymInt& offset, const std::optional<at::Tensor>& cu_seqlens,
          double attention_scaling, bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  ctx->save_for_backward({inv_freq, positions.value_or(at::Tensor()), offsets.value_or(at::Tensor()),
                          cu_seqlens.value_or(at::Tensor())});
  // Shapes of q and k, for gradients that did not flow: rotary_grads makes
  // those zeros itself (autograd's own would be plain tensors, not DTensors).
  ctx->set_materialize_grads(false);
  ctx->saved_data["q_sizes"] = q.sym_sizes().vec();
  ctx->saved_data["k_sizes"] = k.sym_sizes().vec();
  ctx->saved_data["offset"] = offset;
  ctx->saved_data["attention_scaling"] = attention_scaling;
  ctx->saved_data["interleaved"] = interleaved;
  ctx->saved_data["seq_dim"] = seq_dim;
  ctx->saved_data["mrope_section"] = save_sections(mrope_section);
  ctx->saved_data["mrope_interleaved"] = mrope_interleaved;
}

variable_list rotary_grads(AutogradContext* ctx, const variable_list& grad_outputs) {
  const auto s = ctx->get_saved_variables();
  // A gradient that did not flow is zeros made like the one that did (q and
  // k share dtype and device), so a tensor subclass such as DTensor stays one.
  const at::Tensor& flowed = grad_outputs[0].defined() ? grad_outputs[0] : grad_outputs[1];
  if (!flowed.defined()) return variable_list(12);  // no gradient flowed: none to give
  auto grad_or_zeros = [&](const at::Tensor& g, const char* sizes) {
    if (g.defined()) return g;
    return flowed.new_zeros_symint(ctx->saved_data[sizes].toSymIntVector());
  };
  std::vector<int64_t> sections;
  auto [gq, gk] = RotaryBackwardOp::handle().call(
      grad_or_zeros(grad_outputs[0], "q_sizes"),
      grad_or_zeros(grad_outputs[1], "k_sizes"), s[0], optional_tensor(s[1]),
      optional_tensor(s[2]), ctx->saved_data["offset"].toSymInt(), optional_tensor(s[3]),
      ctx->saved_data["attention_scaling"].toDouble(), ctx->saved_data["interleaved"].toBool(),
      ctx->saved_data["seq_dim"].toInt(), load_sections(ctx->saved_data["mrope_section"], sections),
      ctx->saved_data["mrope_interleaved"].toBool());
  variable_list grads(12);
  grads[0] = gq;
  grads[1] = gk;
  return grads;
}

class Rotary : public torch::autograd::Function<Rotary> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                               const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                               const std::optional<at::Tensor>& cu_seqlens,
                               double attention_scaling, bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
    at::AutoDispatchBelowADInplaceOrView guard;
    save(ctx, q, k, inv_freq, positions, offsets, offset, cu_seqlens, attention_scaling,
         interleaved, seq_dim, mrope_section, mrope_interleaved);
    auto [q_out, k_out] = RotaryOp::handle().call(q, k, inv_freq, positions, offsets, offset,
                                                  cu_seqlens, attention_scaling, interleaved,
                                                  seq_dim, mrope_section, mrope_interleaved);
    return {q_out, k_out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return rotary_grads(ctx, grad_outputs);
  }
};

class RotaryInplace : public torch::autograd::Function<RotaryInplace> {
 public:
  static variable_list forward(AutogradContext* ctx, at::Tensor q, at::Tensor k,
                               const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                               const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                               const std::optional<at::Tensor>& cu_seqlens,
                               double attention_scaling, bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
    // Below Autograd but above ADInplaceOrView, which bumps the versions.
    at::AutoDispatchBelowAutograd guard;
    save(ctx, q, k, inv_freq, positions, offsets, offset, cu_seqlens, attention_scaling,
         interleaved, seq_dim, mrope_section, mrope_interleaved);
    RotaryInplaceOp::handle().call(q, k, inv_freq, positions, offsets, offset, cu_seqlens,
                                   attention_scaling, interleaved, seq_dim, mrope_section, mrope_interleaved);
    ctx->mark_dirty({q, k});
    return {q, k};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return rotary_grads(ctx, grad_outputs);
  }
};

RotaryOutputs rotary_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
                              const std::optional<at::Tensor>& positions,
                              const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                              const std::optional<at::Tensor>& cu_seqlens,
                              double attention_scaling, bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  if (!needs_graph(q, k, inv_freq)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return RotaryOp::handle().call(q, k, inv_freq, positions, offsets, std::move(offset), cu_seqlens,
                                   attention_scaling, interleaved, seq_dim, mrope_section, mrope_interleaved);
  }
  auto out = Rotary::apply(q, k, inv_freq, positions, offsets, std::move(offset), cu_seqlens,
                           attention_scaling, interleaved, seq_dim, mrope_section, mrope_interleaved);
  return {out[0], out[1]};
}

void rotary_inplace_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
                             const std::optional<at::Tensor>& positions,
                             const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                             const std::optional<at::Tensor>& cu_seqlens,
                             double attention_scaling, bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  // An autograd Function may not write two views in place (autograd rebases
  // one view's history per op), and q, k sliced from a projection are views.
  // Those are turned out of place and copied back: copy_ into a view is an
  // ordinary tracked in-place op, so the gradients are the usual ones. Only
  // training pays the extra pass; without grad it is the fused in-place kernel.
  const bool tracked = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad());
  if (tracked && (q.is_view() || k.is_view())) {
    check_rotary_writable(q, k);
    auto out = Rotary::apply(q, k, inv_freq, positions, offsets, std::move(offset), cu_seqlens,
                             attention_scaling, interleaved, seq_dim, mrope_section, mrope_interleaved);
    q.copy_(out[0]);
    k.copy_(out[1]);
    return;
  }
  if (!needs_graph(q, k, inv_freq)) {
    at::AutoDispatchBelowAutograd guard;  // ADInplaceOrView still bumps the versions
    RotaryInplaceOp::handle().call(q, k, inv_freq, positions, offsets, std::move(offset), cu_seqlens,
                                   attention_scaling, interleaved, seq_dim, mrope_section, mrope_interleaved);
    return;
  }
  RotaryInplace::apply(q, k, inv_freq, positions, offsets, std::move(offset), cu_seqlens,
                       attention_scaling, interleaved, seq_dim, mrope_section, mrope_interleaved);
}

void rotary_inplace_view(c10::DispatchKeySet keys, const at::Tensor& q, const at::Tensor& k,
                         const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                         const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                         const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                         bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    RotaryInplaceOp::handle().redispatch(keys & c10::after_ADInplaceOrView_keyset, q, k,
                                         inv_freq, positions, offsets, std::move(offset),
                                         cu_seqlens, attention_scaling, interleaved, seq_dim, mrope_section, mrope_interleaved);
  }
  torch::autograd::impl::bump_version(q);
  torch::autograd::impl::bump_version(k);
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, Autograd, m) {
  m.impl("rotary", &rotary_autograd);
  m.impl("rotary_", &rotary_inplace_autograd);
}

TORCH_LIBRARY_IMPL(posemb, ADInplaceOrView, m) {
  m.impl("rotary_", &rotary_inplace_view);
}

}  // namespace posemb::detail
