// The __global__ shells of learned_add and its weight gradient, and their
// launchers. The work is in kernels/learned.cuh, shared with the CPU kernels.
#include "kernels/dispatch.cuh"
#include "kernels/learned.cuh"

namespace posemb {
namespace {

template <typename T, bool kVector>
__global__ void learned_add_kernel(const LearnedParams p) {
  for (int64_t row = blockIdx.x; row < p.batch * p.seq; row += gridDim.x) {
    learned_add_row<T, kVector>(p, row, threadIdx.x, blockDim.x);
  }
}

template <typename G, typename T>
__global__ void learned_grad_chunk_kernel(const LearnedGradParams p) {
  for (int64_t j = blockIdx.x; j < learned_grad_chunks(p); j += gridDim.x) {
    learned_grad_chunk<G, T>(p, j, threadIdx.x, blockDim.x);
  }
}

template <typename T>
__global__ void learned_grad_combine_kernel(const LearnedGradParams p) {
  for (int64_t n = blockIdx.x; n < p.num_embeddings; n += gridDim.x) {
    learned_grad_combine<T>(p, n, threadIdx.x, blockDim.x);
  }
}

template <typename T>
cudaError_t launch_add(const LearnedParams& p, int num_sms, cudaStream_t stream) {
  const RowLaunch plan = plan_learned_add(p, sizeof(T), num_sms);
  const dim3 grid(static_cast<unsigned>(plan.grid)), block(static_cast<unsigned>(plan.block));
  if (plan.vector) {
    learned_add_kernel<T, true><<<grid, block, 0, stream>>>(p);
  } else {
    learned_add_kernel<T, false><<<grid, block, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_grad(const LearnedGradParams& p, bool grad_in_acc_type, int num_sms,
                        cudaStream_t stream) {
  using A = detail::acc_t<T>;
  if (learned_grad_chunks(p) > 0) {
    const RowLaunch chunks = plan_learned_grad_chunks(p, num_sms);
    const dim3 grid(static_cast<unsigned>(chunks.grid)), block(static_cast<unsigned>(chunks.block));
    if (grad_in_acc_type) {
      learned_grad_chunk_kernel<A, T><<<grid, block, 0, stream>>>(p);
    } else {
      learned_grad_chunk_kernel<T, T><<<grid, block, 0, stream>>>(p);
    }
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
  }
  const RowLaunch rows = plan_learned_grad_rows(p, num_sms);
  learned_grad_combine_kernel<T><<<static_cast<unsigned>(rows.grid), static_cast<unsigned>(rows.block),
                                   0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_learned_add(const LearnedParams& params, DType dtype, int num_sms,
                               cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto t) {
    return launch_add<decltype(t)>(params, num_sms, stream);
  });
}

cudaError_t launch_learned_grad(const LearnedGradParams& params, DType dtype,
                                bool grad_in_acc_type, int num_sms, cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto t) {
    return launch_grad<decltype(t)>(params, grad_in_acc_type, num_sms, stream);
  });
}

}  // namespace posemb
