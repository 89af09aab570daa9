// The __global__ shells of the table gradient's two passes and their
// launcher. The work is in kernels/table_grad.cuh.
#include "kernels/dispatch.cuh"
#include "kernels/table_grad.cuh"

namespace posemb {
namespace {

template <typename G, typename T, int V>
__global__ void table_grad_chunk_kernel(const TableGradParams p, int64_t items) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < items;
       i += int64_t(gridDim.x) * blockDim.x) {
    table_grad_chunk<G, T, V>(p, i);
  }
}

template <typename T, int V>
__global__ void table_grad_combine_kernel(const TableGradParams p, int64_t items) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < items;
       i += int64_t(gridDim.x) * blockDim.x) {
    table_grad_combine<T, V>(p, i);
  }
}

// Pass 1 with 16-byte vectors of G where the rows allow, else channel by channel.
template <typename G, typename T>
void launch_chunks(const TableGradParams& p, int num_sms, cudaStream_t stream) {
  constexpr int kVector = 16 / sizeof(G);
  const bool vector = table_grad_vector(p, sizeof(G), /*of_grad=*/true) == kVector;
  const int64_t items = table_grad_chunks(p) * (vector ? p.dim / kVector : p.dim);
  const RowLaunch plan = plan_table_grad_items(items, num_sms);
  const dim3 grid(static_cast<unsigned>(plan.grid)), block(static_cast<unsigned>(plan.block));
  if (vector) {
    table_grad_chunk_kernel<G, T, kVector><<<grid, block, 0, stream>>>(p, items);
  } else {
    table_grad_chunk_kernel<G, T, 1><<<grid, block, 0, stream>>>(p, items);
  }
}

template <typename T>
cudaError_t launch_typed(const TableGradParams& p, int num_sms, cudaStream_t stream) {
  using A = detail::acc_t<T>;
  if (table_grad_chunks(p) > 0) {
    if (p.grad_in_acc_type) {
      launch_chunks<A, T>(p, num_sms, stream);
    } else {
      launch_chunks<T, T>(p, num_sms, stream);
    }
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
  }
  constexpr int kVector = 16 / sizeof(T);
  const bool vector = table_grad_vector(p, sizeof(T), /*of_grad=*/false) == kVector;
  const int64_t items = p.num_embeddings * (vector ? p.dim / kVector : p.dim);
  const RowLaunch plan = plan_table_grad_items(items, num_sms);
  const dim3 grid(static_cast<unsigned>(plan.grid)), block(static_cast<unsigned>(plan.block));
  if (vector) {
    table_grad_combine_kernel<T, kVector><<<grid, block, 0, stream>>>(p, items);
  } else {
    table_grad_combine_kernel<T, 1><<<grid, block, 0, stream>>>(p, items);
  }
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
