// The __global__ shell of timestep_embedding and its launcher: a grid-stride
// loop over kernels/timestep.cuh's work items.
#include "kernels/dispatch.cuh"
#include "kernels/timestep.cuh"

namespace posemb {
namespace {

template <typename T, typename P>
__global__ void timestep_kernel(const TimestepParams p, const int64_t items) {
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < items; j += int64_t(gridDim.x) * blockDim.x) {
    timestep_item<T, P>(p, j);
  }
}

template <typename T>
cudaError_t launch_typed(const TimestepParams& p, int num_sms, cudaStream_t stream) {
  const int64_t items = timestep_items(p);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((items + 255) / 256, int64_t(num_sms) * 16));
  if (p.timesteps_fp64) {
    timestep_kernel<T, double><<<unsigned(blocks), 256, 0, stream>>>(p, items);
  } else {
    timestep_kernel<T, float><<<unsigned(blocks), 256, 0, stream>>>(p, items);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_timestep_embedding(const TimestepParams& params, DType dtype, int num_sms, cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto t) { return launch_typed<decltype(t)>(params, num_sms, stream); });
}

}  // namespace posemb
