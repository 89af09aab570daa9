// The __global__ shell of rotary and its launcher. The work is the tile body
// of kernels/rotary.cuh: the angles of a tile of tokens into shared memory,
// a barrier, then 16-byte work items over every head of q and k.
#include "kernels/dispatch.cuh"
#include "kernels/rotary.cuh"

namespace posemb {
namespace {

template <typename T, bool kInterleaved, bool kVector>
__global__ void rotary_kernel(const RotaryParams p, const RotaryLaunch plan) {
  extern __shared__ int64_t smem[];  // int64_t: aligned for every accumulation type
  rotary_tile_angles<T>(p, plan, blockIdx.x, threadIdx.x, smem);
  __syncthreads();
  rotary_tile_rotate<T, kInterleaved, kVector>(p, plan, blockIdx.x, blockIdx.y, threadIdx.x, smem);
}

template <typename T, bool kInterleaved>
void launch_typed(const RotaryParams& p, const RotaryLaunch& plan, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.grid_y));
  const dim3 block(static_cast<unsigned>(plan.block));
  const size_t smem = static_cast<size_t>(plan.smem_bytes);
  if (plan.vector) {
    rotary_kernel<T, kInterleaved, true><<<grid, block, smem, stream>>>(p, plan);
  } else {
    rotary_kernel<T, kInterleaved, false><<<grid, block, smem, stream>>>(p, plan);
  }
}

}  // namespace

cudaError_t launch_rotary(const RotaryParams& params, DType dtype, int num_sms,
                          cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    const RotaryLaunch plan = plan_rotary(params, sizeof(T), sizeof(detail::acc_t<T>), num_sms);
    if (plan.smem_bytes > 48 * 1024) return cudaErrorInvalidConfiguration;  // rotary_dim/2 > 3000 or so
    if (params.interleaved) {
      launch_typed<T, true>(params, plan, stream);
    } else {
      launch_typed<T, false>(params, plan, stream);
    }
    return cudaGetLastError();
  });
}

}  // namespace posemb
