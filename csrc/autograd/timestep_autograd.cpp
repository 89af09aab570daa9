// Autograd of timestep_embedding: differentiable in floating timesteps,
// through the public op timestep_embedding_backward (AOTAutograd traces it).
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd/needs_graph.h"
#include "timestep_op.h"

namespace posemb::detail {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class TimestepEmbedding : public torch::autograd::Function<TimestepEmbedding> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& timesteps, int64_t embedding_dim,
                            bool flip_sin_to_cos, double downscale_freq_shift, double scale, double max_period,
                            std::optional<at::ScalarType> dtype) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = TimestepEmbeddingOp::handle().call(timesteps, embedding_dim, flip_sin_to_cos,
                                                        downscale_freq_shift, scale, max_period, dtype);
    ctx->saved_data["flip"] = flip_sin_to_cos;
    ctx->saved_data["shift"] = downscale_freq_shift;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["max_period"] = max_period;
    ctx->save_for_backward({timesteps, out});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    variable_list grads(7);
    grads[0] = TimestepEmbeddingBackwardOp::handle().call(
        grad_outputs[0], saved[0], saved[1], ctx->saved_data["flip"].toBool(), ctx->saved_data["shift"].toDouble(),
        ctx->saved_data["scale"].toDouble(), ctx->saved_data["max_period"].toDouble());
    return grads;
  }
};

at::Tensor timestep_embedding_autograd(const at::Tensor& timesteps, int64_t embedding_dim, bool flip_sin_to_cos,
                                       double downscale_freq_shift, double scale, double max_period,
                                       std::optional<at::ScalarType> dtype) {
  if (!needs_graph(timesteps)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return TimestepEmbeddingOp::handle().call(timesteps, embedding_dim, flip_sin_to_cos, downscale_freq_shift, scale,
                                              max_period, dtype);
  }
  return TimestepEmbedding::apply(timesteps, embedding_dim, flip_sin_to_cos, downscale_freq_shift, scale,
                                  max_period, dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, Autograd, m) {
  m.impl("timestep_embedding", &timestep_embedding_autograd);
}

}  // namespace posemb::detail
