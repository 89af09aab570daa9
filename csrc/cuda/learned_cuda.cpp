// CUDA registration of learned_add and its backward: device guard, current
// stream, launch check. The kernels are in kernels/learned.cu and
// kernels/table_grad.cu (the weight's gradient).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/device.h"
#include "learned_op.h"

namespace posemb::detail {
namespace {

void run_learned_add_cuda(const LearnedParams& params, const at::Tensor& x) {
  const c10::cuda::CUDAGuard guard(x.device());
  C10_CUDA_CHECK(launch_learned_add(params, dtype_tag(x.scalar_type()), num_sms(x),
                                    c10::cuda::getCurrentCUDAStream()));
}

void run_table_grad_cuda(const TableGradParams& params, const at::Tensor& grad_weight) {
  const c10::cuda::CUDAGuard guard(grad_weight.device());
  C10_CUDA_CHECK(launch_table_grad(params, dtype_tag(grad_weight.scalar_type()),
                                   num_sms(grad_weight), c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CUDA, m) {
  m.impl("learned_add", &learned_add_backend<run_learned_add_cuda>);
  m.impl("learned_add_backward", &learned_add_backward_backend<run_table_grad_cuda>);
}

}  // namespace posemb::detail
