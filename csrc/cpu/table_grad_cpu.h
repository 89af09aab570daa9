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

/// G: the incoming gradient's type (the table's, or its accumulation type);
/// T: the table's type.
template <typename G, typename T>
void table_grad_cpu(const TableGradParams& p) {
  using A = acc_t<T>;
  const int64_t D = p.dim;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, D));
  at::parallel_for(0, p.num_embeddings, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> acc(D), row(D);
    for (int64_t n = begin; n < end; ++n) {
      std::fill(acc.begin(), acc.end(), A(0));
      if (!(p.has_padding_idx && n == p.padding_idx)) {
        const int64_t lo = lower_bound(p.sorted_rows, p.num_tokens, n);
        const int64_t hi = lower_bound(p.sorted_rows, p.num_tokens, n + 1);
        for (int64_t k = lo; k < hi; ++k) {
          const int64_t token = p.order[k], b = token / p.seq, t = token % p.seq;
          const G* g = static_cast<const G*>(p.grad) + p.grad_rows.row(b, t);
          if (p.grad_rows.stride_inner == 1) {
            load_row(g, row.data(), D);
          } else {
            for (int64_t d = 0; d < D; ++d) row[d] = ScalarOps<G>::to_acc(g[d * p.grad_rows.stride_inner]);
          }
          for (int64_t d = 0; d < D; ++d) acc[d] += row[d];
        }
      }
      store_row(acc.data(), static_cast<T*>(p.grad_weight) + n * D, D);
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
