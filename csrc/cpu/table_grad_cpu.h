// The gradient of an embedding table on the CPU: one table row per
// iteration, its tokens added in sorted (token) order, a whole row at a time
// so the adds run as vectors. (The GPU cuts hot rows into token chunks,
// kernels/table_grad.cuh; both orders are fixed, so both are deterministic.)
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/rows.h"
#include "kernels/table_grad.cuh"

namespace posemb::detail {

/// acc[d] = a + g[0][d * stride] + ... + g[count - 1][d * stride], added
/// in that order in the accumulation type A, a = 0 when from_zero, else
/// acc[d].
template <typename G, typename A>
void sum_rows(const G* const* g, int64_t count, int64_t stride, A* acc, int64_t n, bool from_zero) {
#if defined(POSEMB_CPU_AVX2)
  if constexpr (std::is_same_v<A, float>) {
    if (stride == 1 && cpu_avx2()) return avx2::sum_rows(g, count, n, acc, from_zero);
  }
#endif
  if (from_zero) std::fill(acc, acc + n, A(0));
  for (int64_t j = 0; j < count; ++j) {
    for (int64_t d = 0; d < n; ++d) acc[d] += ScalarOps<G>::to_acc(g[j][d * stride]);
  }
}

/// G: the incoming gradient's type (the table's, or its accumulation type);
/// T: the table's type.
///
/// A table row at a time: its tokens' gradient rows (in sorted order) added
/// up to kRows at once, the partial sums in registers, one fp32 add per
/// element and token in that order. Where the positions are offset + t, the
/// rows of consecutive table rows follow each other in memory, so the loop
/// reads one stream per batch entry and writes one.
template <typename G, typename T>
void table_grad_cpu(const TableGradParams& p) {
  using A = acc_t<T>;
  constexpr bool kInPlace = std::is_same_v<A, T>;  // the sums build up in grad_weight itself
  constexpr int64_t kRows = 16;
  const int64_t D = p.dim, N = p.num_embeddings;
  const G* grad = static_cast<const G*>(p.grad);
  T* out = static_cast<T*>(p.grad_weight);
  // Small tables with few tokens are not worth waking the other threads.
  const int64_t grain = (N + p.num_tokens) * D < (64 << 10) ? N : std::max<int64_t>(1, 4096 / std::max<int64_t>(1, D));
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> scratch(kInPlace ? 0 : D);
    const G* rows[kRows];
    int64_t lo = lower_bound(p.sorted_rows, p.num_tokens, begin);
    for (int64_t n = begin; n < end; ++n) {
      const int64_t hi = lower_bound(p.sorted_rows, p.num_tokens, n + 1);
      A* acc = kInPlace ? reinterpret_cast<A*>(out + n * D) : scratch.data();
      if (lo == hi || (p.has_padding_idx && n == p.padding_idx)) {
        std::fill(acc, acc + D, A(0));  // no token, or the padding row: learns nothing
      } else {
        for (int64_t k0 = lo; k0 < hi; k0 += kRows) {
          const int64_t count = std::min(kRows, hi - k0);
          for (int64_t j = 0; j < count; ++j) {
            const int64_t token = p.order[k0 + j];
            rows[j] = grad + p.grad_rows.row(token / p.seq, token % p.seq);
          }
          sum_rows(rows, count, p.grad_rows.stride_inner, acc, D, /*from_zero=*/k0 == lo);
        }
      }
      if constexpr (!kInPlace) store_row(acc, out + n * D, D);
      lo = hi;
    }
  });
}

/// The CPU TableGradRunner (csrc/table_grad.h).
inline void run_table_grad_cpu(const TableGradParams& p, const at::Tensor& grad_weight) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_weight.scalar_type(),
                                  "table_grad_cpu", [&] {
    if (p.grad_in_acc_type) {
      table_grad_cpu<acc_t<scalar_t>, scalar_t>(p);
    } else {
      table_grad_cpu<scalar_t, scalar_t>(p);
    }
  });
}

}  // namespace posemb::detail
