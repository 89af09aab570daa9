// Internal: the op glue of sincos_2d_add, shared by its CPU, CUDA, Meta and
// autograd registrations.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

#include "kernels/sincos_2d.cuh"
#include "op.h"

namespace posemb::detail {

using Sincos2dAddOp = Op<"posemb::sincos_2d_add", at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                               double, const std::optional<at::Tensor>&)>;

/// Runs the kernel on one backend for checked, non-empty params; x gives the dtype and device.
using Sincos2dRunner = void (*)(const Sincos2dParams& params, const at::Tensor& x);

/// The op on a backend: check, allocate, run.
at::Tensor sincos_2d_add_impl(Sincos2dRunner run, const at::Tensor& x, const at::Tensor& pos_h,
                              const at::Tensor& pos_w, double base, const std::optional<at::Tensor>& pos_t);

/// The kernel's params for checked x, y and positions (tests/cpp walks the
/// CUDA body over them). `keep` holds the contiguous positions and the
/// frequency tables the params point into.
Sincos2dParams make_sincos_2d_params(const at::Tensor& x, const at::Tensor& y, const at::Tensor& pos_h,
                                     const at::Tensor& pos_w, double base, const std::optional<at::Tensor>& pos_t,
                                     std::vector<at::Tensor>& keep);

template <Sincos2dRunner run>
at::Tensor sincos_2d_add_backend(const at::Tensor& x, const at::Tensor& pos_h, const at::Tensor& pos_w,
                                 double base, const std::optional<at::Tensor>& pos_t) {
  return sincos_2d_add_impl(run, x, pos_h, pos_w, base, pos_t);
}

}  // namespace posemb::detail
