// CUDA registration of sinusoidal_add / sinusoidal_add_: device guard,
// current stream, launch check. The kernel itself is in kernels/sinusoidal.cu.
// Only c10/cuda headers: ATen/cuda/CUDAContext.h would pull in cuBLAS and
// cuSPARSE headers that a kernel build does not need.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/device.h"
#include "sinusoidal_op.h"

namespace posemb::detail {
namespace {

void run_sinusoidal_cuda(const SinusoidalParams& params, const at::Tensor& x) {
  const c10::cuda::CUDAGuard guard(x.device());
  // The launcher returns cudaGetLastError() after the launch: the launch check.
  C10_CUDA_CHECK(launch_sinusoidal_add(params, dtype_tag(x.scalar_type()), num_sms(x),
                                       c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CUDA, m) {
  m.impl("sinusoidal_add", &sinusoidal_add_backend<run_sinusoidal_cuda>);
  m.impl("sinusoidal_add_", &sinusoidal_add_inplace_backend<run_sinusoidal_cuda>);
}

}  // namespace posemb::detail
