// The __global__ shells of the table gradient's two passes and their
// launcher. The work is in kernels/table_grad.cuh.
#include "kernels/dispatch.cuh"
#include "kernels/table_grad.cuh"

namespace posemb {
namespace {

template <typename G, typename T>
__global__ void table_grad_chunk_kernel(const TableGradParams p) {
  for (int64_t j = blockIdx.x; j < table_grad_chunks(p); j += gridDim.x) {
    table_grad_chunk<G, T>(p, j, threadIdx.x, blockDim.x);
  }
}

template <typename T>
__global__ void table_grad_combine_kernel(const TableGradParams p) {
  for (int64_t n = blockIdx.x; n < p.num_embeddings; n += gridDim.x) {
    table_grad_combine<T>(p, n, threadIdx.x, blockDim.x);
  }
}

template <typename T>
cudaError_t launch_typed(const TableGradParams& p, int num_sms, cudaStream_t stream) {
  using A = detail::acc_t<T>;
  if (table_grad_chunks(p) > 0) {
    const RowLaunch chunks = plan_table_grad_chunks(p, num_sms);
    const dim3 grid(static_cast<unsigned>(chunks.grid)), block(static_cast<unsigned>(chunks.block));
    if (p.grad_in_acc_type) {
      table_grad_chunk_kernel<A, T><<<grid, block, 0, stream>>>(p);
    } else {
      table_grad_chunk_kernel<T, T><<<grid, block, 0, stream>>>(p);
    }
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
  }
  const RowLaunch rows = plan_table_grad_rows(p, num_sms);
  table_grad_combine_kernel<T><<<static_cast<unsigned>(rows.grid), static_cast<unsigned>(rows.block),
                                 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_table_grad(const TableGradParams& params, DType dtype, int num_sms,
                              cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto t) {
    return launch_typed<decltype(t)>(params, num_sms, stream);
  });
}

}  // namespace posemb
