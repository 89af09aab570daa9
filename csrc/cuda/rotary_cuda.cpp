// CUDA registration of rotary, rotary_ and rotary_backward: the launcher of
// kernels/rotary.cu through run_cuda (device guard, current stream, launch
// check).
#include <torch/library.h>

#include "cuda/device.h"
#include "rotary_op.h"

namespace posemb::detail {

TORCH_LIBRARY_IMPL(posemb, CUDA, m) {
  constexpr auto run = &run_cuda<RotaryParams, launch_rotary>;
  m.impl("rotary", &rotary_backend<run, false>);
  m.impl("rotary_backward", &rotary_backend<run, true>);
  m.impl("rotary_", &rotary_inplace_backend<run>);
}

}  // namespace posemb::detail
