// torch dtype -> the launchers' torch-free dtype tag.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include "math.cuh"

namespace posemb::detail {

inline DType dtype_tag(c10::ScalarType t) {
  switch (t) {
    case c10::kFloat: return DType::Float32;
    case c10::kDouble: return DType::Float64;
    case c10::kHalf: return DType::Float16;
    case c10::kBFloat16: return DType::BFloat16;
    default: TORCH_CHECK(false, "posemb: no CUDA kernel for dtype ", t);
  }
}

}  // namespace posemb::detail
