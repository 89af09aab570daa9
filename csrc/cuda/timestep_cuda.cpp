// CUDA registration of timestep_embedding: kernels/timestep.cu's launcher
// through run_cuda (device guard, current stream, launch check).
#include <torch/library.h>

#include "cuda/device.h"
#include "timestep_op.h"

namespace posemb::detail {

TORCH_LIBRARY_IMPL(posemb, CUDA, m) {
  m.impl("timestep_embedding", &timestep_embedding_backend<run_cuda<TimestepParams, launch_timestep_embedding>>);
}

}  // namespace posemb::detail
