// CPU kernels of learned_add (rows split across threads, 8 wide on AVX2,
// else the body of kernels/learned.cuh) and of its weight gradient (the
// table gradient, cpu/table_grad_cpu.h).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/rows.h"
#include "cpu/table_grad_cpu.h"
#include "learned_op.h"

namespace posemb::detail {
namespace {

// y = x + w for a row of unit strides, 8 wide where the CPU allows.
template <typename T>
bool add_row_avx2(const LearnedParams& p, int64_t row) {
#if defined(POSEMB_CPU_AVX2)
  if constexpr (!std::is_same_v<T, double>) {
    const int64_t b = row / p.seq, t = row % p.seq;
    const int64_t pos = token_position(p.pos, b, t);
    if (pos < 0 || pos >= p.num_embeddings) return false;  // the body writes NaN
    avx2::add_rows(static_cast<const T*>(p.x) + p.x_rows.row(b, t),
                   static_cast<const T*>(p.weight) + pos * p.w_stride_n,
                   static_cast<T*>(p.y) + p.y_rows.row(b, t), p.dim);
    return true;
  }
#endif
  return false;
}

template <typename T>
void learned_add_cpu_typed(const LearnedParams& p) {
  const bool vector = learned_vectorizable(p, sizeof(T));
  const bool avx2 = cpu_avx2() && p.x_rows.stride_inner == 1 && p.y_rows.stride_inner == 1 &&
                    p.w_stride_d == 1;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, p.dim));
  at::parallel_for(0, p.batch * p.seq, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      if (avx2 && add_row_avx2<T>(p, row)) continue;
      if (vector) {
        learned_add_row<T, true>(p, row, 0, 1);
      } else {
        learned_add_row<T, false>(p, row, 0, 1);
      }
    }
  });
}

void run_learned_add_cpu(const LearnedParams& params, const at::Tensor& x) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "learned_add_cpu",
                                  [&] { learned_add_cpu_typed<scalar_t>(params); });
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CPU, m) {
  m.impl("learned_add", &learned_add_backend<run_learned_add_cpu>);
  m.impl("learned_add_backward", &learned_add_backward_backend<run_table_grad_cpu>);
}

}  // namespace posemb::detail
