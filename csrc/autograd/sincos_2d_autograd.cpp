// Autograd of sincos_2d_add: the gradient of x is the incoming gradient; the
// positions take none (a clear error if they ask for one).
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/needs_graph.h"
#include "sincos_2d_op.h"

namespace posemb::detail {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class Sincos2dAdd : public torch::autograd::Function<Sincos2dAdd> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& pos_h,
                            const at::Tensor& pos_w, double base, const std::optional<at::Tensor>& pos_t) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return Sincos2dAddOp::handle().call(x, pos_h, pos_w, base, pos_t);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return {grad_outputs[0], at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor sincos_2d_add_autograd(const at::Tensor& x, const at::Tensor& pos_h, const at::Tensor& pos_w,
                                  double base, const std::optional<at::Tensor>& pos_t) {
  TORCH_CHECK(!pos_h.requires_grad() && !pos_w.requires_grad() && !(pos_t && pos_t->requires_grad()),
              "posemb.sincos_2d_add: pos_h, pos_w and pos_t take no gradient (only x does); detach them");
  if (!needs_graph(x)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return Sincos2dAddOp::handle().call(x, pos_h, pos_w, base, pos_t);
  }
  return Sincos2dAdd::apply(x, pos_h, pos_w, base, pos_t);
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, Autograd, m) {
  m.impl("sincos_2d_add", &sincos_2d_add_autograd);
}

}  // namespace posemb::detail
