// CPU kernels of learned_add and its weight gradient: the bodies of
// cuda/learned.cuh, one row per iteration, rows split across threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/scalar_ops.h"
#include "learned_kernels.h"

namespace posemb::detail {
namespace {

template <typename T>
void learned_add_cpu_typed(const LearnedParams& p) {
  const bool vector = learned_vectorizable(p, sizeof(T));
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, p.dim));
  at::parallel_for(0, p.batch * p.seq, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      if (vector) {
        learned_add_row<T, true>(p, row, 0, 1);
      } else {
        learned_add_row<T, false>(p, row, 0, 1);
      }
    }
  });
}

template <typename T>
void learned_grad_cpu_typed(const LearnedGradParams& p) {
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, p.dim));
  at::parallel_for(0, p.num_embeddings, grain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) learned_grad_row<T, T>(p, n, 0, 1);
  });
}

void run_learned_add_cpu(const LearnedParams& params, const at::Tensor& x) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "learned_add_cpu",
                                  [&] { learned_add_cpu_typed<scalar_t>(params); });
}

void run_learned_grad_cpu(const LearnedGradParams& params, const at::Tensor& grad) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "learned_add_backward_cpu",
                                  [&] { learned_grad_cpu_typed<scalar_t>(params); });
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CPU, m) {
  m.impl("learned_add", &learned_add_kernel<run_learned_add_cpu>);
  m.impl("learned_add_backward", &learned_add_backward_kernel<run_learned_grad_cpu>);
}

}  // namespace posemb::detail
