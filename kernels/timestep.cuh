// timestep_embedding: the sin/cos embedding of float diffusion timesteps
// (diffusers' get_timestep_embedding, DiT's TimestepEmbedder), one element
// pair per work item. Torch-free; the CPU kernel (csrc/cpu/timestep_cpu.cpp)
// runs the same body over the same items as kernels/timestep.cu's grid.
#pragma once

#include <cstdint>

#include "kernels/float_turns.cuh"
#include "kernels/launch_plan.cuh"
#include "kernels/math.cuh"

namespace posemb {

struct TimestepParams {
  const void* timesteps = nullptr;  // [n] float32, or float64 when timesteps_fp64
  bool timesteps_fp64 = false;
  void* out = nullptr;              // [n, dim] contiguous
  int64_t n = 0, dim = 0;
  bool flip_sin_to_cos = false;     // cos in the first half, sin in the second
  const FloatFreq* freqs = nullptr; // [dim / 2]
};

/// Work items: a (sin, cos) pair per (timestep, frequency), plus the zero
/// column of an odd dim.
inline int64_t timestep_items(const TimestepParams& p) { return p.n * (p.dim / 2 + p.dim % 2); }

/// Item j of the embedding: out[row, i] and out[row, half + i] (swapped when
/// flipped), or the zero pad column.
template <typename T, typename P>
POSEMB_HD void timestep_item(const TimestepParams& p, int64_t j) {
  using A = detail::acc_t<T>;
  using Ops = detail::ScalarOps<T>;
  const int64_t half = p.dim / 2, cols = half + p.dim % 2;
  const int64_t row = j / cols, i = j % cols;
  T* out = static_cast<T*>(p.out) + row * p.dim;
  if (i == half) {
    out[p.dim - 1] = Ops::from_acc(A(0));
    return;
  }
  A s, c;
  turns::float_position_sincos(static_cast<const P*>(p.timesteps)[row], p.freqs[i], &s, &c);
  out[p.flip_sin_to_cos ? half + i : i] = Ops::from_acc(s);
  out[p.flip_sin_to_cos ? i : half + i] = Ops::from_acc(c);
}

#ifdef POSEMB_LAUNCHERS
/// Launches timestep_embedding on `stream` (dtype: the output's). Returns the launch status.
cudaError_t launch_timestep_embedding(const TimestepParams& params, DType dtype, int num_sms, cudaStream_t stream);
#endif

}  // namespace posemb
