// Half-precision storage types on the device: how they convert to and from
// the fp32 accumulation type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/math.cuh"

namespace posemb {
namespace detail {

template <>
struct ScalarOps<__half> {
  using acc_t = float;
  POSEMB_HD static float to_acc(__half v) { return __half2float(v); }
  POSEMB_HD static __half from_acc(float v) { return __float2half_rn(v); }
};

template <>
struct ScalarOps<__nv_bfloat16> {
  using acc_t = float;
  POSEMB_HD static float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
  POSEMB_HD static __nv_bfloat16 from_acc(float v) { return __float2bfloat16_rn(v); }
};

}  // namespace detail
}  // namespace posemb
