// Frequencies as fixed-point turns (kernels' turns.cuh) for the ops whose
// frequencies are defined by a formula: computed once on the host in
// extended precision, then kept per device, so a call costs no host work
// and no copy, and a captured CUDA graph reads a table that stays alive (the
// first call for a given dim and base on a device must come before capture).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "posemb/types.h"

namespace posemb::detail {

/// F_i = round(frac(w_i / 2π) · 2^64) of the dim / 2 sinusoidal frequencies
/// (posemb/types.h), as an int64 tensor holding the uint64 bits, on `device`.
at::Tensor sinusoidal_turns(int64_t dim, SinusoidalFreqs freqs, double base, const at::Device& device);

}  // namespace posemb::detail
