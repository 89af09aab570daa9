// CUDA registration of sinusoidal_add / sinusoidal_add_: the launcher of
// kernels/sinusoidal.cu through run_cuda (device guard, current stream,
// launch check).
#include <torch/library.h>

#include "cuda/device.h"
#include "sinusoidal_op.h"

namespace posemb::detail {

TORCH_LIBRARY_IMPL(posemb, CUDA, m) {
  constexpr auto run = &run_cuda<SinusoidalParams, launch_sinusoidal_add>;
  m.impl("sinusoidal_add", &sinusoidal_add_backend<run>);
  m.impl("sinusoidal_add_", &sinusoidal_add_inplace_backend<run>);
}

}  // namespace posemb::detail
