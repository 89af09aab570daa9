// CPU kernel of timestep_embedding: kernels/timestep.cuh's items, split
// across threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/scalar_ops.h"
#include "timestep_op.h"

namespace posemb::detail {
namespace {

template <typename T, typename P>
void run_typed(const TimestepParams& p) {
  at::parallel_for(0, timestep_items(p), 4096, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) timestep_item<T, P>(p, j);
  });
}

void run_timestep_cpu(const TimestepParams& p, const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "timestep_embedding_cpu", [&] {
    if (p.timesteps_fp64) {
      run_typed<scalar_t, double>(p);
    } else {
      run_typed<scalar_t, float>(p);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CPU, m) {
  m.impl("timestep_embedding", &timestep_embedding_backend<run_timestep_cpu>);
}

}  // namespace posemb::detail
