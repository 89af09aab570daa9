// The gradient of an embedding table, deterministic: learned_add's weight and
// the BERT block's three tables.
//
// Torch-free. The GPU passes below are __host__ __device__ so that
// tests/cpp/test_table_grad_grid.cpp walks them on the CPU; the CPU kernel sums
// whole rows its own way (csrc/cpu/table_grad_cpu.h), in a fixed order too.
#pragma once

#include <cstdint>

#include "kernels/launch_plan.cuh"
#include "kernels/math.cuh"
#include "kernels/positions.cuh"

namespace posemb {

/// Arguments of a table gradient: the tokens sorted (stably) by the table row
/// they read. On the GPU the sorted tokens are cut into fixed chunks of
/// chunk_tokens, so a row that thousands of tokens hit (BERT's type row) is
/// summed by many blocks, chunk partials then added in chunk order:
/// deterministic, since the cut depends on the sizes only.
struct TableGradParams {
  const void* grad = nullptr;  // [batch, seq, dim], any strides (grad_rows)
  // grad's type is the table's, or its accumulation type (BERT's fp32
  // grad_x for a bf16 table): the launcher makes it the passes' G.
  bool grad_in_acc_type = false;
  int64_t batch = 0, seq = 0, dim = 0;
  StridedRows grad_rows;
  const int64_t* sorted_rows = nullptr;  // [num_tokens] each token's table row, ascending
  const int64_t* order = nullptr;        // [num_tokens] token index b * seq + t
  int64_t num_tokens = 0;
  void* grad_weight = nullptr;  // [num_embeddings, dim], contiguous
  int64_t num_embeddings = 0;
  bool has_padding_idx = false;  // that row's gradient is zero
  int64_t padding_idx = 0;
  int64_t chunk_tokens = 256;
  void* partials = nullptr;  // [num_chunks, 2, dim], accumulation type (GPU only)
};

/// Number of token chunks of the GPU passes.
POSEMB_HD int64_t table_grad_chunks(const TableGradParams& p) {
  return (p.num_tokens + p.chunk_tokens - 1) / p.chunk_tokens;
}

/// The two GPU passes: one block per token chunk, then one block per table
/// row; threads across the channels.
inline RowLaunch plan_table_grad_chunks(const TableGradParams& p, int64_t num_sms) {
  return plan_rows(table_grad_chunks(p), p.dim, num_sms);
}

inline RowLaunch plan_table_grad_rows(const TableGradParams& p, int64_t num_sms) {
  return plan_rows(p.num_embeddings, p.dim, num_sms);
}

namespace detail {

/// First index in sorted[0, n) whose value is >= key.
POSEMB_HD int64_t lower_bound(const int64_t* sorted, int64_t n, int64_t key) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (sorted[mid] < key) lo = mid + 1; else hi = mid;
  }
  return lo;
}

template <typename G, typename A>
POSEMB_HD A grad_at(const TableGradParams& p, int64_t k, int64_t d) {
  const int64_t token = p.order[k];
  const int64_t b = token / p.seq, t = token % p.seq;
  return static_cast<A>(ScalarOps<G>::to_acc(
      static_cast<const G*>(p.grad)[p.grad_rows.row(b, t) + d * p.grad_rows.stride_inner]));
}

POSEMB_HD bool zero_row(const TableGradParams& p, int64_t n) {
  return p.has_padding_idx && n == p.padding_idx;
}

}  // namespace detail

/// Pass 1, token chunk j: each run of equal rows in the chunk is summed in
/// token order. A row whose tokens all lie in the chunk is written to the
/// gradient; a run that crosses the chunk's start or end goes to the chunk's
/// partial slot 0 (the run that starts the chunk) or 1 (the one ending it).
/// G is the incoming gradient's type, T the table's.
template <typename G, typename T>
POSEMB_HD void table_grad_chunk(const TableGradParams& p, int64_t j, int64_t first,
                                int64_t stride) {
  using A = detail::acc_t<T>;
  const int64_t k0 = j * p.chunk_tokens;
  const int64_t k1 = k0 + p.chunk_tokens < p.num_tokens ? k0 + p.chunk_tokens : p.num_tokens;
  for (int64_t k = k0; k < k1;) {
    const int64_t n = p.sorted_rows[k];
    const int64_t seg_lo = detail::lower_bound(p.sorted_rows, p.num_tokens, n);
    const int64_t seg_hi = detail::lower_bound(p.sorted_rows, p.num_tokens, n + 1);
    const int64_t run_end = seg_hi < k1 ? seg_hi : k1;
    if (!detail::zero_row(p, n)) {
      const bool contained = seg_lo >= k0 && seg_hi <= k1;
      for (int64_t d = first; d < p.dim; d += stride) {
        A acc = A(0);
        for (int64_t i = k; i < run_end; ++i) acc += detail::grad_at<G, A>(p, i, d);
        if (contained) {
          static_cast<T*>(p.grad_weight)[n * p.dim + d] = detail::ScalarOps<T>::from_acc(acc);
        } else {
          static_cast<A*>(p.partials)[(j * 2 + (k == k0 ? 0 : 1)) * p.dim + d] = acc;
        }
      }
    }
    k = run_end;
  }
}

/// Pass 2, table row n: rows no token hits, and the padding row, are zero;
/// a row cut by chunk boundaries adds its chunks' partials in chunk order.
/// (Rows inside one chunk were written by pass 1.)
template <typename T>
POSEMB_HD void table_grad_combine(const TableGradParams& p, int64_t n, int64_t first,
                                  int64_t stride) {
  using A = detail::acc_t<T>;
  T* gw = static_cast<T*>(p.grad_weight) + n * p.dim;
  const int64_t seg_lo = detail::lower_bound(p.sorted_rows, p.num_tokens, n);
  const int64_t seg_hi = detail::lower_bound(p.sorted_rows, p.num_tokens, n + 1);
  if (seg_lo == seg_hi || detail::zero_row(p, n)) {
    for (int64_t d = first; d < p.dim; d += stride) gw[d] = detail::ScalarOps<T>::from_acc(A(0));
    return;
  }
  const int64_t j0 = seg_lo / p.chunk_tokens, j1 = (seg_hi - 1) / p.chunk_tokens;
  if (j0 == j1) return;
  const A* partials = static_cast<const A*>(p.partials);
  for (int64_t d = first; d < p.dim; d += stride) {
    A acc = A(0);
    for (int64_t j = j0; j <= j1; ++j) {
      const int slot = (j == j0 && seg_lo != j * p.chunk_tokens) ? 1 : 0;
      acc += partials[(j * 2 + slot) * p.dim + d];
    }
    gw[d] = detail::ScalarOps<T>::from_acc(acc);
  }
}

#ifdef POSEMB_LAUNCHERS
/// Launches the gradient of a table of `dtype` on `stream`.
cudaError_t launch_table_grad(const TableGradParams& params, DType dtype, int num_sms,
                              cudaStream_t stream);
#endif

}  // namespace posemb
