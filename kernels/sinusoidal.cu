// The __global__ shell of sinusoidal_add and its launcher. The work itself is
// sinusoidal_add_body (kernels/sinusoidal.cuh), shared with the CPU grid walk.
#include "kernels/dispatch.cuh"
#include "kernels/sinusoidal.cuh"

namespace posemb {
namespace {

template <typename T, SinusoidalLayout L, bool kVector>
__global__ void sinusoidal_add_kernel(const SinusoidalParams params, const SinusoidalLaunch plan) {
  sinusoidal_add_body<T, L, kVector>(params, plan, GridCoord{blockIdx.x, blockIdx.y, threadIdx.x});
}

template <typename T, SinusoidalLayout L>
cudaError_t launch_layout(const SinusoidalParams& p, const SinusoidalLaunch& plan,
                          cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.grid_y));
  const dim3 block(static_cast<unsigned>(plan.block_dim));
  if (plan.vector) {
    sinusoidal_add_kernel<T, L, true><<<grid, block, 0, stream>>>(p, plan);
  } else {
    sinusoidal_add_kernel<T, L, false><<<grid, block, 0, stream>>>(p, plan);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_typed(const SinusoidalParams& p, int num_sms, cudaStream_t stream) {
  const SinusoidalLaunch plan = plan_sinusoidal_launch(p, sizeof(T), num_sms);
  return p.layout == SinusoidalLayout::Interleaved
             ? launch_layout<T, SinusoidalLayout::Interleaved>(p, plan, stream)
             : launch_layout<T, SinusoidalLayout::Half>(p, plan, stream);
}

}  // namespace

cudaError_t launch_sinusoidal_add(const SinusoidalParams& params, DType dtype, int num_sms,
                                  cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto t) {
    return launch_typed<decltype(t)>(params, num_sms, stream);
  });
}

}  // namespace posemb
