// How a launch covers its work, shared by every family that walks token (or
// table) rows; and where the launchers exist.
//
// Torch-free host code: the CUDA launchers and the CPU walks of the grids
// (tests/cpp/grid_walk.h) take the same plan, so both run the same shape.
#pragma once

#include <algorithm>
#include <cstdint>

// Each family declares its launcher next to its parameters (kernels/X.cuh).
// Launchers exist in CUDA builds only: nvcc compiles them and the CUDA glue
// calls them; a CPU build may have no CUDA headers at all.
#if defined(__CUDACC__) || defined(POSEMB_WITH_CUDA)
#include <cuda_runtime_api.h>
#define POSEMB_LAUNCHERS 1
#endif

namespace posemb {

/// Grid-stride over rows (one block per row at a time), threads across the
/// row's steps (channels, frequencies; 128-bit vectors when `vector`).
struct RowLaunch {
  bool vector = false;  // the bodies' template parameter kVector
  int64_t grid = 1, block = 32;
};

/// Blocks of whole warps up to 256 threads, enough for `steps_per_row`; at
/// most 16 blocks per multiprocessor, the rest by grid-stride.
inline RowLaunch plan_rows(int64_t rows, int64_t steps_per_row, int64_t num_sms) {
  RowLaunch plan;
  plan.block = std::min<int64_t>(256, std::max<int64_t>(32, (steps_per_row + 31) / 32 * 32));
  plan.grid = std::max<int64_t>(1, std::min<int64_t>(rows, std::max<int64_t>(1, num_sms) * 16));
  return plan;
}

}  // namespace posemb
