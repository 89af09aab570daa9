// CUDA registration of sincos_2d_add: kernels/sincos_2d.cu's launcher
// through run_cuda (device guard, current stream, launch check).
#include <torch/library.h>

#include "cuda/device.h"
#include "sincos_2d_op.h"

namespace posemb::detail {

TORCH_LIBRARY_IMPL(posemb, CUDA, m) {
  m.impl("sincos_2d_add", &sincos_2d_add_backend<run_cuda<Sincos2dParams, launch_sincos_2d_add>>);
}

}  // namespace posemb::detail
