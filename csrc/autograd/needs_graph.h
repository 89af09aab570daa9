// Whether an autograd kernel must build a graph node. When nothing needs
// one (grad mode off, as in inference and torch.no_grad, or no input
// requiring grad) the kernels call their op below Autograd directly, as
// PyTorch's own kernels do: a torch::autograd::Function node (its context,
// saved-data map and output wrapping) costs about 1 µs per call, as much as
// the kernel at small shapes (README: Performance, per-call cost). Inputs
// with a forward-mode tangent keep the node path, which reports forward AD.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>

#include <optional>

namespace posemb::detail {

inline bool requires_grad_of(const at::Tensor& t) { return t.defined() && t.requires_grad(); }
inline bool requires_grad_of(const std::optional<at::Tensor>& t) { return t && requires_grad_of(*t); }
inline bool has_tangent(const at::Tensor& t) { return t.defined() && t._fw_grad(/*level=*/0).defined(); }
inline bool has_tangent(const std::optional<at::Tensor>& t) { return t && has_tangent(*t); }

template <typename... Tensors>
bool needs_graph(const Tensors&... inputs) {
  return (c10::GradMode::is_enabled() && (requires_grad_of(inputs) || ...)) || (has_tangent(inputs) || ...);
}

}  // namespace posemb::detail
