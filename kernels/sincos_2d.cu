// The __global__ shell of sincos_2d_add and its launcher: a grid-stride loop
// over kernels/sincos_2d.cuh's work items.
#include "kernels/dispatch.cuh"
#include "kernels/sincos_2d.cuh"

namespace posemb {
namespace {

template <typename T>
__global__ void sincos_2d_kernel(const Sincos2dParams p, const int64_t items) {
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < items; j += int64_t(gridDim.x) * blockDim.x) {
    sincos_2d_item<T>(p, j);
  }
}

}  // namespace

cudaError_t launch_sincos_2d_add(const Sincos2dParams& params, DType dtype, int num_sms, cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto t) {
    const int64_t items = sincos_2d_items(params);
    const int64_t blocks = sincos_2d_blocks(items, num_sms);
    sincos_2d_kernel<decltype(t)><<<unsigned(blocks), 256, 0, stream>>>(params, items);
    return cudaGetLastError();
  });
}

}  // namespace posemb
