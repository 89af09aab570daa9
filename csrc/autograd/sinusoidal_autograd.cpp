// Autograd of sinusoidal_add and sinusoidal_add_, in C++ so that C++ programs
// can train through them. Both backward passes call the public op
// sinusoidal_add_backward, which AOTAutograd traces like any other op.
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/needs_graph.h"
#include "sinusoidal_op.h"

namespace posemb::detail {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Gradients for (x, positions, offsets, offset, seq_dim, layout, freqs, base,
// scale, padding_idx): only x has one.
variable_list sinusoidal_grads(AutogradContext* ctx, const variable_list& grad_outputs) {
  const double scale = ctx->saved_data["scale"].toDouble();
  variable_list grads(10);
  grads[0] = SinusoidalAddBackwardOp::handle().call(grad_outputs[0], scale);
  return grads;
}

class SinusoidalAdd : public torch::autograd::Function<SinusoidalAdd> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            const std::optional<at::Tensor>& positions,
                            const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                            int64_t seq_dim, std::string_view layout, std::string_view freqs,
                            double base, double scale, std::optional<int64_t> padding_idx) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->saved_data["scale"] = scale;
    return SinusoidalAddOp::handle().call(x, positions, offsets, std::move(offset), seq_dim,
                                          layout, freqs, base, scale, padding_idx);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return sinusoidal_grads(ctx, grad_outputs);
  }
};

class SinusoidalAddInplace : public torch::autograd::Function<SinusoidalAddInplace> {
 public:
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x,
                            const std::optional<at::Tensor>& positions,
                            const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                            int64_t seq_dim, std::string_view layout, std::string_view freqs,
                            double base, double scale, std::optional<int64_t> padding_idx) {
    // Below Autograd but above ADInplaceOrView, which bumps x's version.
    at::AutoDispatchBelowAutograd guard;
    ctx->saved_data["scale"] = scale;
    SinusoidalAddInplaceOp::handle().call(x, positions, offsets, std::move(offset), seq_dim,
                                          layout, freqs, base, scale, padding_idx);
    ctx->mark_dirty({x});
    return x;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return sinusoidal_grads(ctx, grad_outputs);
  }
};

at::Tensor sinusoidal_add_autograd(const at::Tensor& x, const std::optional<at::Tensor>& positions,
                                   const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                                   int64_t seq_dim, std::string_view layout,
                                   std::string_view freqs, double base, double scale,
                                   std::optional<int64_t> padding_idx) {
  if (!needs_graph(x)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return SinusoidalAddOp::handle().call(x, positions, offsets, std::move(offset), seq_dim, layout, freqs, base,
                                          scale, padding_idx);
  }
  return SinusoidalAdd::apply(x, positions, offsets, std::move(offset), seq_dim, layout, freqs,
                              base, scale, padding_idx);
}

void sinusoidal_add_inplace_autograd(const at::Tensor& x,
                                     const std::optional<at::Tensor>& positions,
                                     const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                                     int64_t seq_dim, std::string_view layout,
                                     std::string_view freqs, double base, double scale,
                                     std::optional<int64_t> padding_idx) {
  if (!needs_graph(x)) {
    at::AutoDispatchBelowAutograd guard;  // ADInplaceOrView still bumps x's version
    SinusoidalAddInplaceOp::handle().call(x, positions, offsets, std::move(offset), seq_dim, layout, freqs, base,
                                          scale, padding_idx);
    return;
  }
  SinusoidalAddInplace::apply(x, positions, offsets, std::move(offset), seq_dim, layout, freqs,
                              base, scale, padding_idx);
}

// The in-place op bumps x's version counter, so autograd notices when a
// tensor it saved is overwritten.
void sinusoidal_add_inplace_view(c10::DispatchKeySet keys, const at::Tensor& x,
                                 const std::optional<at::Tensor>& positions,
                                 const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                                 int64_t seq_dim, std::string_view layout, std::string_view freqs,
                                 double base, double scale, std::optional<int64_t> padding_idx) {
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    SinusoidalAddInplaceOp::handle().redispatch(keys & c10::after_ADInplaceOrView_keyset, x,
                                                positions, offsets, std::move(offset), seq_dim,
                                                layout, freqs, base, scale, padding_idx);
  }
  torch::autograd::impl::bump_version(x);
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, Autograd, m) {
  m.impl("sinusoidal_add", &sinusoidal_add_autograd);
  m.impl("sinusoidal_add_", &sinusoidal_add_inplace_autograd);
}

TORCH_LIBRARY_IMPL(posemb, ADInplaceOrView, m) {
  m.impl("sinusoidal_add_", &sinusoidal_add_inplace_view);
}

}  // namespace posemb::detail
