// The __global__ shell of learned_add and its launcher. The work is in
// kernels/learned.cuh; the weight's gradient is kernels/table_grad.cu.
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

template <typename T>
cudaError_t launch_typed(const LearnedParams& p, int num_sms, cudaStream_t stream) {
  const RowLaunch plan = plan_learned_add(p, sizeof(T), num_sms);
  const dim3 grid(static_cast<unsigned>(plan.grid)), block(static_cast<unsigned>(plan.block));
  if (plan.vector) {
    learned_add_kernel<T, true><<<grid, block, 0, stream>>>(p);
  } else {
    learned_add_kernel<T, false><<<grid, block, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_learned_add(const LearnedParams& params, DType dtype, int num_sms,
                               cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto t) {
    return launch_typed<decltype(t)>(params, num_sms, stream);
  });
}

}  // namespace posemb
