// CPU kernel of rotary, rotary_ and rotary_backward: the body of
// cuda/rotary.cuh, one token per iteration, tokens split across threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/scalar_ops.h"
#include "rotary_kernels.h"

namespace posemb::detail {
namespace {

void run_rotary_cpu(const RotaryParams& p, const at::Tensor& q) {
  const int64_t per_token = std::max<int64_t>(1, (p.q.heads + p.k.heads) * p.head_dim);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "rotary_cpu", [&] {
    at::parallel_for(0, p.batch * p.seq, std::max<int64_t>(1, 16384 / per_token),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t row = begin; row < end; ++row) rotary_token<scalar_t>(p, row, 0, 1);
                     });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CPU, m) {
  m.impl("rotary", &rotary_kernel<run_rotary_cpu, false>);
  m.impl("rotary_backward", &rotary_kernel<run_rotary_cpu, true>);
  m.impl("rotary_", &rotary_inplace_kernel<run_rotary_cpu>);
}

}  // namespace posemb::detail
