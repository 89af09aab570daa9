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

/// acc[d] += g[d * stride] for d < n, in the accumulation type A.
template <typename G, typename A>
void accumulate_row(const G* g, int64_t stride, A* acc, int64_t n) {
#if defined(POSEMB_CPU_AVX2)
  if constexpr (std::is_same_v<A, float>) {
    if (stride == 1 && cpu_avx2()) return avx2::accumulate_row(g, acc, n);
  }
#endif
  for (int64_t d = 0; d < n; ++d) acc[d] += ScalarOps<G>::to_acc(g[d * stride]);
}

/// G: the incoming gradient's type (the table's, or its accumulation type);
/// T: the table's type.
///
/// The table rows go in blocks of a few (their sums fit in L2) and each
/// block's tokens in rounds: round k adds the k-th token (in sorted order) of
/// every row of the block. Each row still adds its own tokens in their sorted
/// order, one fp32 add per element, so the sums are those of a row-by-row
/// loop, bit for bit; but where the positions are offset + t, round k reads
/// batch entry k's gradient rows one after another, a single stream, where a
/// row at a time jumps between batch entries every dim elements.
template <typename G, typename T>
void table_grad_cpu(const TableGradParams& p) {
  using A = acc_t<T>;
  constexpr bool kInPlace = std::is_same_v<A, T>;  // the sums build up in grad_weight itself
  const int64_t D = p.dim, N = p.num_embeddings;
  const int64_t block = std::clamp<int64_t>((64 << 10) / std::max<int64_t>(1, D * int64_t(sizeof(A))), 1, 64);
  const int64_t blocks = (N + block - 1) / block;
  const G* grad = static_cast<const G*>(p.grad);
  T* out = static_cast<T*>(p.grad_weight);
  // Small tables with few tokens are not worth waking the other threads.
  const int64_t grain = (N + p.num_tokens) * D < (64 << 10) ? blocks : 1;
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> scratch(kInPlace ? 0 : block * D);
    std::vector<int64_t> lo(block), hi(block);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t n0 = blk * block, rows = std::min(N, n0 + block) - n0;
      A* acc = kInPlace ? reinterpret_cast<A*>(out + n0 * D) : scratch.data();
      std::fill(acc, acc + rows * D, A(0));
      int64_t rounds = 0;
      lo[0] = lower_bound(p.sorted_rows, p.num_tokens, n0);
      for (int64_t i = 0; i < rows; ++i) {
        hi[i] = lower_bound(p.sorted_rows, p.num_tokens, n0 + i + 1);
        if (i + 1 < rows) lo[i + 1] = hi[i];
      }
      for (int64_t i = 0; i < rows; ++i) {
        if (p.has_padding_idx && n0 + i == p.padding_idx) hi[i] = lo[i];  // learns nothing
        rounds = std::max(rounds, hi[i] - lo[i]);
      }
      for (int64_t k = 0; k < rounds; ++k) {
        for (int64_t i = 0; i < rows; ++i) {
          if (lo[i] + k >= hi[i]) continue;
          const int64_t token = p.order[lo[i] + k], b = token / p.seq, t = token % p.seq;
          accumulate_row(grad + p.grad_rows.row(b, t), p.grad_rows.stride_inner, acc + i * D, D);
        }
      }
      if constexpr (!kInPlace) store_row(acc, out + n0 * D, rows * D);
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
