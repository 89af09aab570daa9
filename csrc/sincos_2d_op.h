// Internal: the op glue of sincos_2d_add, shared by its CPU, CUDA, Meta and
// autograd registrations.
#pragma once

#include <ATen/core/Tensor.h>

#include "kernels/sincos_2d.cuh"
#include "op.h"

namespace posemb::detail {

using Sincos2dAddOp =
    Op<"posemb::sincos_2d_add", at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>;

/// Runs the kernel on one backend for checked, non-empty params; x gives the dtype and device.
using Sincos2dRunner = void (*)(const Sincos2dParams& params, const at::Tensor& x);

/// The op on a backend: check, allocate, run.
at::Tensor sincos_2d_add_impl(Sincos2dRunner run, const at::Tensor& x, const at::Tensor& pos_h,
                              const at::Tensor& pos_w, double base);

template <Sincos2dRunner run>
at::Tensor sincos_2d_add_backend(const at::Tensor& x, const at::Tensor& pos_h, const at::Tensor& pos_w,
                                 double base) {
  return sincos_2d_add_impl(run, x, pos_h, pos_w, base);
}

}  // namespace posemb::detail
