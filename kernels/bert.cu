// The __global__ shells of bert_embeddings and its backward. The warp path
// (rows up to 1024 channels, 512 in fp64): a warp per row, the row in
// registers, sums across the warp by xor butterflies, no block barrier in
// the row loop; the backward's gamma/beta sums are kept per warp across a
// block's chunk of rows and folded once at the end. The block path (wider
// rows): one block per token row, its threads across the channels, row sums
// added across the block, and a separate gamma/beta chunk pass.
#include "kernels/bert.cuh"
#include "kernels/dispatch.cuh"

namespace posemb {
namespace {

// The sum of v over the block (blockDim.x a multiple of 32), in a fixed order.
template <typename A>
__device__ A block_sum(A v, A* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // the previous call's readers are done with `shared`
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? shared[lane] : A(0);
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The sum of v over the warp: lane l adds lane l ^ o's value for o = 16, 8,
// 4, 2, 1 (every lane ends with the same bits; tests/cpp/test_bert_grid.cpp
// adds in this order).
template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
  POSEMB_UNROLL
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Two such sums, their shuffles interleaved.
template <typename A>
__device__ __forceinline__ void warp_sum2(A* a, A* b) {
  A x = *a, y = *b;
  POSEMB_UNROLL
  for (int o = 16; o > 0; o >>= 1) {
    const A xo = __shfl_xor_sync(0xffffffffu, x, o), yo = __shfl_xor_sync(0xffffffffu, y, o);
    x += xo;
    y += yo;
  }
  *a = x;
  *b = y;
}

template <typename T, bool kVector>
__global__ void __launch_bounds__(32 * kBertForwardWarps) bert_warp_forward_kernel(const BertParams p) {
  using A = detail::acc_t<T>;
  constexpr int V = bert_piece<T, kVector>(), K = bert_lane_elems<A>() / V;
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  const uint64_t seed = detail::dropout_seed(p);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
       row < p.batch * p.seq; row += warps) {
    BertLane<A, V, K> s;
    const A mean = warp_sum(bert_warp_gather<T, V, K>(p, row, lane, s)) / A(p.dim);
    const A rstd = bert_rstd<A>(p, warp_sum(bert_warp_sq<T, V, K>(p, lane, s, mean)));
    bert_warp_write<T, V, K>(p, row, lane, s, mean, rstd, seed);
  }
}

// A block per row chunk: its warps take the chunk's rows in turn, then fold
// their gamma/beta sums into the chunk's partials (the barriers of the fold
// are the only ones).
template <typename T, bool kVector>
__global__ void __launch_bounds__(32 * kBertGradWarps) bert_warp_backward_kernel(const BertParams p) {
  using A = detail::acc_t<T>;
  constexpr int V = bert_piece<T, kVector>(), K = bert_lane_elems<A>() / V;
  __shared__ A fold[2 * 32 * bert_lane_elems<A>()];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const uint64_t seed = detail::dropout_seed(p);
  int64_t begin, end;
  detail::bert_chunk_rows(p, blockIdx.x, &begin, &end);
  BertNormLane<A, V, K> acc;
  acc.zero();
  for (int64_t row = begin + warp; row < end; row += warps) {
    BertGradLane<A, V, K> s;
    A s1, s2;
    bert_warp_grad_load<T, V, K>(p, row, lane, seed, s, acc, &s1, &s2);
    warp_sum2(&s1, &s2);
    bert_warp_grad_write<T, V, K>(p, row, lane, s, s1, s2);
  }
  for (int w = 0; w < warps; ++w) {
    if (warp == w) bert_warp_fold<T, V, K>(p, blockIdx.x, w, warps, lane, acc, fold);
    if (w + 1 < warps) __syncthreads();
  }
}

template <typename T>
__global__ void bert_forward_kernel(const BertParams p) {
  using A = detail::acc_t<T>;
  __shared__ A shared[32];
  for (int64_t row = blockIdx.x; row < p.batch * p.seq; row += gridDim.x) {
    const A mean = block_sum(bert_row_sum<T>(p, row, threadIdx.x, blockDim.x), shared) / A(p.dim);
    const A var = block_sum(bert_row_sq<T>(p, row, threadIdx.x, blockDim.x, mean), shared) / A(p.dim);
    const A rstd = A(1) / sqrt(var + detail::bert_eps<A>(p));
    bert_row_write<T>(p, row, threadIdx.x, blockDim.x, mean, rstd);
    if (threadIdx.x == 0) {
      static_cast<A*>(p.mean)[row] = mean;
      static_cast<A*>(p.rstd)[row] = rstd;
    }
  }
}

template <typename T>
__global__ void bert_grad_x_kernel(const BertParams p) {
  using A = detail::acc_t<T>;
  __shared__ A shared[32];
  for (int64_t row = blockIdx.x; row < p.batch * p.seq; row += gridDim.x) {
    A s1, s2;
    bert_row_grad_sums<T>(p, row, threadIdx.x, blockDim.x, &s1, &s2);
    s1 = block_sum(s1, shared);
    s2 = block_sum(s2, shared);
    bert_row_grad_write<T>(p, row, threadIdx.x, blockDim.x, s1, s2);
  }
}

template <typename T>
__global__ void bert_norm_chunk_kernel(const BertParams p) {
  const int64_t d = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (d < p.dim) bert_norm_grad_chunk<T>(p, blockIdx.x, d);
}

template <typename T>
__global__ void bert_norm_final_kernel(const BertParams p) {
  const int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d < p.dim) bert_norm_grad_final<T>(p, d);
}

template <typename T>
cudaError_t forward(const BertParams& p, int num_sms, cudaStream_t stream) {
  const BertLaunch plan = plan_bert_forward(p, sizeof(T), sizeof(detail::acc_t<T>), num_sms);
  const unsigned grid = static_cast<unsigned>(plan.grid), block = static_cast<unsigned>(plan.block);
  if (!plan.warp) {
    bert_forward_kernel<T><<<grid, block, 0, stream>>>(p);
  } else if (plan.vector) {
    bert_warp_forward_kernel<T, true><<<grid, block, 0, stream>>>(p);
  } else {
    bert_warp_forward_kernel<T, false><<<grid, block, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward(const BertParams& p, int num_sms, cudaStream_t stream) {
  const BertLaunch plan = plan_bert_backward(p, sizeof(T), sizeof(detail::acc_t<T>), num_sms);
  const unsigned grid = static_cast<unsigned>(plan.grid), block = static_cast<unsigned>(plan.block);
  const unsigned threads = 128, column_blocks = static_cast<unsigned>((p.dim + threads - 1) / threads);
  if (plan.warp) {
    if (plan.vector) {
      bert_warp_backward_kernel<T, true><<<grid, block, 0, stream>>>(p);
    } else {
      bert_warp_backward_kernel<T, false><<<grid, block, 0, stream>>>(p);
    }
  } else {
    bert_grad_x_kernel<T><<<grid, block, 0, stream>>>(p);
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
    bert_norm_chunk_kernel<T><<<dim3(static_cast<unsigned>(p.row_chunks), column_blocks), threads, 0, stream>>>(p);
  }
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  bert_norm_final_kernel<T><<<column_blocks, threads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_bert_forward(const BertParams& params, DType dtype, int num_sms,
                                cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto t) {
    return forward<decltype(t)>(params, num_sms, stream);
  });
}

cudaError_t launch_bert_backward(const BertParams& params, DType dtype, int num_sms,
                                 cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto t) {
    return backward<decltype(t)>(params, num_sms, stream);
  });
}

}  // namespace posemb
