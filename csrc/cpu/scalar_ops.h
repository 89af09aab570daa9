// Host conversions of torch's half-precision types to fp32, for the CPU
// kernels and for walking the CUDA kernel bodies on the CPU.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "kernels/math.cuh"

namespace posemb::detail {

template <>
struct ScalarOps<c10::Half> {
  using acc_t = float;
  static float to_acc(c10::Half v) { return static_cast<float>(v); }
  static c10::Half from_acc(float v) { return static_cast<c10::Half>(v); }
};

template <>
struct ScalarOps<c10::BFloat16> {
  using acc_t = float;
  static float to_acc(c10::BFloat16 v) { return static_cast<float>(v); }
  static c10::BFloat16 from_acc(float v) { return static_cast<c10::BFloat16>(v); }
};

}  // namespace posemb::detail
