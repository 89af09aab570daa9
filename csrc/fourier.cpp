// fourier_features and its backward: built from the rotary op (so every
// backend and the fake tensors have them), registered as
// CompositeExplicitAutograd; their autograd is csrc/autograd/fourier_autograd.cpp.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "fourier_op.h"
#include "posemb/fourier.h"
#include "positions.h"
#include "rotary_op.h"

namespace posemb {
namespace detail {
namespace {

void check_fourier(const char* op, const at::Tensor& positions, const at::Tensor& frequencies) {
  TORCH_CHECK(positions.dim() == 2 && is_index_dtype(positions.scalar_type()), "posemb.", op,
              ": positions must be an integer (batch, seq) tensor, got ", positions.scalar_type(),
              " of shape ", positions.sym_sizes());
  TORCH_CHECK(frequencies.dim() == 1 && frequencies.scalar_type() == at::kFloat &&
                  frequencies.sym_numel().sym_gt(0).guard_bool(__FILE__, __LINE__),
              "posemb.", op, ": frequencies must be a non-empty 1-D float32 tensor, got ",
              frequencies.scalar_type(), " of shape ", frequencies.sym_sizes());
  TORCH_CHECK(positions.device() == frequencies.device(), "posemb.", op,
              ": positions must be on frequencies' device (", frequencies.device(), "), got ",
              positions.device());
}

at::Tensor fourier_features_impl(const at::Tensor& positions, const at::Tensor& frequencies) {
  check_fourier("fourier_features", positions, frequencies);
  // rotary turns the row (1..1, 0..0) into (cos(α p) .., sin(α p) ..): the
  // exact angle core, α taken as exact.
  const c10::SymInt n = frequencies.sym_size(0), batch = positions.sym_size(0), seq = positions.sym_size(1);
  const at::Tensor unit = at::arange(c10::Scalar(2 * n), frequencies.options()).lt(c10::Scalar(n)).to(at::kFloat);
  const at::Tensor q = unit.expand_symint({batch, seq, 1, 2 * n});
  const at::Tensor no_k = at::empty_symint({batch, seq, 0, 2 * n}, frequencies.options());
  const at::Tensor turned = std::get<0>(RotaryOp::handle().call(q, no_k, frequencies, positions, std::nullopt,
                                                                0, std::nullopt, 1.0, false, 1, std::nullopt, false))
                                .squeeze(2);
  return at::cat({turned.slice_symint(-1, n), turned.slice_symint(-1, 0, n)}, -1);
}

// d/dα_i of sum(grad * features): Σ p (g_sin cos - g_cos sin), in fp64.
at::Tensor fourier_features_backward_impl(const at::Tensor& grad, const at::Tensor& positions,
                                          const at::Tensor& features) {
  const c10::SymInt n = features.sym_size(-1) / 2;
  const at::Tensor sin = features.slice_symint(-1, 0, n), cos = features.slice_symint(-1, n);
  const at::Tensor per_token =
      (grad.slice_symint(-1, 0, n) * cos - grad.slice_symint(-1, n) * sin).to(at::kDouble);
  return (per_token * positions.to(at::kDouble).unsqueeze(-1)).sum({0, 1}).to(at::kFloat);
}

}  // namespace
}  // namespace detail

at::Tensor fourier_features(const at::Tensor& positions, const at::Tensor& frequencies) {
  return detail::FourierFeaturesOp::handle().call(positions, frequencies);
}

TORCH_LIBRARY_IMPL(posemb, CompositeExplicitAutograd, m) {
  m.impl("fourier_features", &detail::fourier_features_impl);
  m.impl("fourier_features_backward", &detail::fourier_features_backward_impl);
}

}  // namespace posemb
