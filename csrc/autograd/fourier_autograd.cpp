// Autograd of fourier_features: differentiable in the frequencies (the
// positions are integers), through the public op fourier_features_backward.
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/needs_graph.h"
#include "fourier_op.h"

namespace posemb::detail {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class FourierFeatures : public torch::autograd::Function<FourierFeatures> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& positions, const at::Tensor& frequencies) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor features = FourierFeaturesOp::handle().call(positions, frequencies);
    ctx->save_for_backward({positions, features});
    return features;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    return {at::Tensor(), FourierFeaturesBackwardOp::handle().call(grad_outputs[0], saved[0], saved[1])};
  }
};

at::Tensor fourier_features_autograd(const at::Tensor& positions, const at::Tensor& frequencies) {
  if (!needs_graph(positions, frequencies)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return FourierFeaturesOp::handle().call(positions, frequencies);
  }
  return FourierFeatures::apply(positions, frequencies);
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, Autograd, m) {
  m.impl("fourier_features", &fourier_features_autograd);
}

}  // namespace posemb::detail
