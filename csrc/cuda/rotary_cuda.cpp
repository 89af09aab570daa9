// CUDA registration of rotary, rotary_ and rotary_backward: device guard,
// current stream, launch check. The kernel is in kernels/rotary.cu.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/device.h"
#include "rotary_op.h"

namespace posemb::detail {
namespace {

void run_rotary_cuda(const RotaryParams& p, const at::Tensor& q) {
  const c10::cuda::CUDAGuard guard(q.device());
  C10_CUDA_CHECK(launch_rotary(p, dtype_tag(q.scalar_type()), num_sms(q),
                               c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CUDA, m) {
  m.impl("rotary", &rotary_backend<run_rotary_cuda, false>);
  m.impl("rotary_backward", &rotary_backend<run_rotary_cuda, true>);
  m.impl("rotary_", &rotary_inplace_backend<run_rotary_cuda>);
}

}  // namespace posemb::detail
