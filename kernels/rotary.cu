// The __global__ shell of rotary and its launcher. The work is rotary_token
// (kernels/rotary.cuh), shared with the CPU kernel.
#include "kernels/dispatch.cuh"
#include "kernels/rotary.cuh"

namespace posemb {
namespace {

template <typename T, bool kInterleaved>
__global__ void rotary_kernel(const RotaryParams p) {
  for (int64_t row = blockIdx.x; row < p.batch * p.seq; row += gridDim.x) {
    rotary_token<T, kInterleaved>(p, row, threadIdx.x, blockDim.x);
  }
}

}  // namespace

cudaError_t launch_rotary(const RotaryParams& params, DType dtype, int num_sms,
                          cudaStream_t stream) {
  const RowLaunch plan = plan_rotary(params, num_sms);
  const dim3 grid(static_cast<unsigned>(plan.grid)), block(static_cast<unsigned>(plan.block));
  return detail::dispatch_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    if (params.interleaved) {
      rotary_kernel<T, true><<<grid, block, 0, stream>>>(params);
    } else {
      rotary_kernel<T, false><<<grid, block, 0, stream>>>(params);
    }
    return cudaGetLastError();
  });
}

}  // namespace posemb
