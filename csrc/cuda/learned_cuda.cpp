// CUDA registration of learned_add and its backward: the launchers of
// kernels/learned.cu and kernels/table_grad.cu (the weight's gradient)
// through run_cuda (device guard, current stream, launch check).
#include <torch/library.h>

#include "cuda/device.h"
#include "learned_op.h"

namespace posemb::detail {

TORCH_LIBRARY_IMPL(posemb, CUDA, m) {
  m.impl("learned_add", &learned_add_backend<run_cuda<LearnedParams, launch_learned_add>>);
  m.impl("learned_add_backward",
         &learned_add_backward_backend<run_cuda<TableGradParams, launch_table_grad>>);
}

}  // namespace posemb::detail
