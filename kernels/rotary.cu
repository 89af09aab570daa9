// The __global__ shell of rotary and its launcher. The work is rotary_token
// (kernels/rotary.cuh), shared with the CPU kernel.
#include "kernels/dispatch.cuh"
#include "kernels/launch.h"
#include "kernels/rotary.cuh"

namespace posemb {
namespace {

template <typename T>
__global__ void rotary_kernel(const RotaryParams p) {
  for (int64_t row = blockIdx.x; row < p.batch * p.seq; row += gridDim.x) {
    rotary_token<T>(p, row, threadIdx.x, blockDim.x);
  }
}

}  // namespace

cudaError_t launch_rotary(const RotaryParams& params, DType dtype, int num_sms,
                          cudaStream_t stream) {
  int64_t grid = 1, block = 32;
  plan_rotary(params, num_sms, &grid, &block);
  return detail::dispatch_dtype(dtype, [&](auto t) {
    rotary_kernel<decltype(t)><<<static_cast<unsigned>(grid), static_cast<unsigned>(block), 0,
                                 stream>>>(params);
    return cudaGetLastError();
  });
}

}  // namespace posemb
