// CPU kernel of sincos_2d_add: kernels/sincos_2d.cuh's items, split across
// threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/scalar_ops.h"
#include "sincos_2d_op.h"

namespace posemb::detail {
namespace {

void run_sincos_2d_cpu(const Sincos2dParams& p, const at::Tensor& x) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sincos_2d_add_cpu", [&] {
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, p.batch));
    at::parallel_for(0, sincos_2d_items(p), grain, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) sincos_2d_item<scalar_t>(p, j);
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CPU, m) {
  m.impl("sincos_2d_add", &sincos_2d_add_backend<run_sincos_2d_cpu>);
}

}  // namespace posemb::detail
