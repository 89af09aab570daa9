// The __global__ shells of bert_embeddings and its backward: one block per
// token row, its threads across the channels, row sums added across the block.
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
  const RowLaunch rows = plan_bert_rows(p, num_sms);
  bert_forward_kernel<T><<<static_cast<unsigned>(rows.grid), static_cast<unsigned>(rows.block), 0,
                           stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward(const BertParams& p, int num_sms, cudaStream_t stream) {
  const RowLaunch rows = plan_bert_rows(p, num_sms);
  bert_grad_x_kernel<T><<<static_cast<unsigned>(rows.grid), static_cast<unsigned>(rows.block), 0,
                          stream>>>(p);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  const unsigned threads = 128, column_blocks = static_cast<unsigned>((p.dim + threads - 1) / threads);
  bert_norm_chunk_kernel<T><<<dim3(static_cast<unsigned>(p.row_chunks), column_blocks), threads, 0, stream>>>(p);
  status = cudaGetLastError();
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
