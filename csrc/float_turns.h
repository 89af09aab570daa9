// Frequency tables for float positions (kernels/float_turns.cuh): built once
// on the host in extended precision, kept per device (as csrc/turns.h does
// for integer positions).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace posemb::detail {

/// The n frequencies w_i = scale · base^(-i / denom) as FloatFreq
/// (kernels/float_turns.cuh), an int64 [n, 4] tensor on `device`.
at::Tensor float_freq_table(int64_t n, double base, double denom, double scale, const at::Device& device);

}  // namespace posemb::detail
