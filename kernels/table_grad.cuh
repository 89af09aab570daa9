// The gradient of an embedding table, deterministic: learned_add's weight and
// the BERT block's three tables.
//
// Torch-free. The GPU passes below are __host__ __device__ so that
// tests/cpp/test_table_grad_grid.cpp walks them on the CPU; the CPU kernel sums
// whole rows its own way (csrc/cpu/table_grad_cpu.h), in a fixed order too.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/launch_plan.cuh"
#include "kernels/math.cuh"
#include "kernels/positions.cuh"
#include "kernels/vector.cuh"

namespace posemb {

/// Arguments of a table gradient: the tokens sorted (stably) by the table row
/// they read. On the GPU the sorted tokens are cut into fixed chunks of
/// chunk_tokens, so a row that thousands of tokens hit (BERT's type row) is
/// summed by many threads, chunk partials then added in chunk order:
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
  // The GPU passes' indices, made on the device by csrc/table_grad.cpp so no
  // per-element loop divides: the element offset of sorted token k's grad
  // row, and the first sorted index of each row (row_starts[n + 1] ends it).
  const int64_t* grad_offsets = nullptr;  // [num_tokens]
  const int64_t* row_starts = nullptr;    // [num_embeddings + 1]
  int64_t chunk_tokens = 64;
  void* partials = nullptr;  // [num_chunks, 2, dim], accumulation type (GPU only)
};

/// Number of token chunks of the GPU passes.
POSEMB_HD int64_t table_grad_chunks(const TableGradParams& p) {
  return (p.num_tokens + p.chunk_tokens - 1) / p.chunk_tokens;
}

/// Channels per work item of the GPU passes: one 16-byte vector of `elem`
/// bytes when the rows allow it (dim a multiple, unit channel stride, every
/// row start aligned), else 1. The chunk pass reads grad (its G), the combine
/// pass writes the table (its T).
inline int table_grad_vector(const TableGradParams& p, int64_t elem, bool of_grad) {
  const int64_t v = 16 / elem;
  const bool rows_ok = of_grad ? p.grad_rows.stride_inner == 1 && p.grad_rows.stride_b % v == 0 &&
                                     p.grad_rows.stride_t % v == 0 &&
                                     reinterpret_cast<std::uintptr_t>(p.grad) % 16 == 0
                               : true;
  const bool ok = v > 1 && p.dim % v == 0 && rows_ok &&
                  reinterpret_cast<std::uintptr_t>(p.grad_weight) % 16 == 0 &&
                  reinterpret_cast<std::uintptr_t>(p.partials) % 16 == 0;
  return ok ? static_cast<int>(v) : 1;
}

/// The launch of a pass over `items` independent work items: a flat grid
/// stride, 256 threads a block, at most 8 blocks per multiprocessor.
inline RowLaunch plan_table_grad_items(int64_t items, int64_t num_sms) {
  RowLaunch plan;
  plan.block = 256;
  plan.grid = std::max<int64_t>(1, std::min<int64_t>((items + 255) / 256, std::max<int64_t>(1, num_sms) * 8));
  return plan;
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

POSEMB_HD bool zero_row(const TableGradParams& p, int64_t n) {
  return p.has_padding_idx && n == p.padding_idx;
}

}  // namespace detail

/// Pass 1, work item (token chunk j, channels d0 .. d0 + V - 1), with
/// item = j * (dim / V) + d0 / V: neighbouring threads read neighbouring
/// 16-byte vectors of one token's grad row. Each run of equal rows in the
/// chunk is summed in token order. A row whose tokens all lie in the chunk is
/// written to the gradient; a run that crosses the chunk's start or end goes
/// to the chunk's partial slot 0 (the run that starts the chunk) or 1 (the
/// one ending it). Rows outside the table (only in a captured CUDA graph,
/// where the host check is skipped) get nothing. G is the incoming
/// gradient's type, T the table's.
template <typename G, typename T, int V>
POSEMB_HD void table_grad_chunk(const TableGradParams& p, int64_t item) {
  using A = detail::acc_t<T>;
  constexpr int kLoadsInFlight = 4;  // tokens whose loads are issued before any add
  const int64_t vectors = p.dim / V;
  const int64_t j = item / vectors, d0 = (item - j * vectors) * V;
  const int64_t k0 = j * p.chunk_tokens;
  const int64_t k1 = k0 + p.chunk_tokens < p.num_tokens ? k0 + p.chunk_tokens : p.num_tokens;
  const int64_t before = k0 > 0 ? p.sorted_rows[k0 - 1] : -1;
  const int64_t after = k1 < p.num_tokens ? p.sorted_rows[k1] : -1;
  const G* grad = static_cast<const G*>(p.grad) + d0 * p.grad_rows.stride_inner;
  A acc[V];
  int64_t n = p.sorted_rows[k0], run_start = k0;
  auto flush = [&](int64_t run_end) {
    if (n >= 0 && n < p.num_embeddings && !detail::zero_row(p, n)) {
      const bool contained = !(run_start == k0 && before == n) && !(run_end == k1 && after == n);
      if (contained) {
        detail::Vec<T, V> out;
        POSEMB_UNROLL
        for (int i = 0; i < V; ++i) out.v[i] = detail::ScalarOps<T>::from_acc(acc[i]);
        detail::store_vec(static_cast<T*>(p.grad_weight) + n * p.dim + d0, out);
      } else {
        detail::Vec<A, V> out;
        POSEMB_UNROLL
        for (int i = 0; i < V; ++i) out.v[i] = acc[i];
        const int64_t slot = run_start == k0 ? 0 : 1;
        detail::store_vec(static_cast<A*>(p.partials) + (j * 2 + slot) * p.dim + d0, out);
      }
    }
    POSEMB_UNROLL
    for (int i = 0; i < V; ++i) acc[i] = A(0);
  };
  POSEMB_UNROLL
  for (int i = 0; i < V; ++i) acc[i] = A(0);
  for (int64_t k = k0; k < k1; k += kLoadsInFlight) {
    detail::Vec<G, V> g[kLoadsInFlight];
    int64_t rows[kLoadsInFlight];
    POSEMB_UNROLL
    for (int u = 0; u < kLoadsInFlight; ++u) {
      if (k + u < k1) {
        rows[u] = p.sorted_rows[k + u];
        g[u] = detail::load_vec<G, V>(grad + p.grad_offsets[k + u]);
      }
    }
    POSEMB_UNROLL
    for (int u = 0; u < kLoadsInFlight; ++u) {
      if (k + u < k1) {
        if (rows[u] != n) {
          flush(k + u);
          n = rows[u];
          run_start = k + u;
        }
        POSEMB_UNROLL
        for (int i = 0; i < V; ++i) acc[i] += static_cast<A>(detail::ScalarOps<G>::to_acc(g[u].v[i]));
      }
    }
  }
  flush(k1);
}

/// Pass 2, work item (table row n, channels d0 .. d0 + V - 1): rows no token
/// hits, and the padding row, are zero; a row cut by chunk boundaries adds
/// its chunks' partials in chunk order. (Rows inside one chunk were written
/// by pass 1.)
template <typename T, int V>
POSEMB_HD void table_grad_combine(const TableGradParams& p, int64_t item) {
  using A = detail::acc_t<T>;
  const int64_t vectors = p.dim / V;
  const int64_t n = item / vectors, d0 = (item - n * vectors) * V;
  T* gw = static_cast<T*>(p.grad_weight) + n * p.dim + d0;
  const int64_t seg_lo = p.row_starts[n], seg_hi = p.row_starts[n + 1];
  A acc[V];
  POSEMB_UNROLL
  for (int i = 0; i < V; ++i) acc[i] = A(0);
  if (seg_lo != seg_hi && !detail::zero_row(p, n)) {
    const int64_t j0 = seg_lo / p.chunk_tokens, j1 = (seg_hi - 1) / p.chunk_tokens;
    if (j0 == j1) return;
    const A* partials = static_cast<const A*>(p.partials) + d0;
    for (int64_t j = j0; j <= j1; ++j) {
      const int64_t slot = (j == j0 && seg_lo != j * p.chunk_tokens) ? 1 : 0;
      const detail::Vec<A, V> part = detail::load_vec<A, V>(partials + (j * 2 + slot) * p.dim);
      POSEMB_UNROLL
      for (int i = 0; i < V; ++i) acc[i] += part.v[i];
    }
  }
  detail::Vec<T, V> out;
  POSEMB_UNROLL
  for (int i = 0; i < V; ++i) out.v[i] = detail::ScalarOps<T>::from_acc(acc[i]);
  detail::store_vec(gw, out);
}

#ifdef POSEMB_LAUNCHERS
/// Launches the gradient of a table of `dtype` on `stream`.
cudaError_t launch_table_grad(const TableGradParams& params, DType dtype, int num_sms,
                              cudaStream_t stream);
#endif

}  // namespace posemb
