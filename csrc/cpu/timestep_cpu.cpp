// CPU kernel of timestep_embedding, one row (timestep) per iteration. On
// AVX2 CPUs a row's sin/cos run 8 wide (cpu/rows.h:
// float_position_sincos_row; an integer timestep, diffusion steps 0..999 as
// floats, takes the integer angle path), bitwise what kernels/timestep.cuh's
// per-element items compute, which other CPUs, fp64 outputs and non-finite
// timesteps run.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/rows.h"
#include "timestep_op.h"

namespace posemb::detail {
namespace {

template <typename T, typename P>
void run_typed(const TimestepParams& p) {
  const int64_t half = p.dim / 2, cols = half + p.dim % 2;
  std::vector<uint64_t> F(half);  // each frequency's turns, contiguous for the integer rows' vector loop
  for (int64_t i = 0; i < half; ++i) F[i] = p.freqs[i].F;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, cols));
  at::parallel_for(0, p.n, grain, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> u(half);
    std::vector<float> s(half), c(half);
    for (int64_t row = begin; row < end; ++row) {
      const P t = static_cast<const P*>(p.timesteps)[row];
      if constexpr (std::is_same_v<acc_t<T>, float>) {
        if (float_position_sincos_row(t, p.freqs, F.data(), half, s.data(), c.data(), u.data())) {
          T* out = static_cast<T*>(p.out) + row * p.dim;
          store_row(p.flip_sin_to_cos ? c.data() : s.data(), out, half);
          store_row(p.flip_sin_to_cos ? s.data() : c.data(), out + half, half);
          if (p.dim % 2) out[p.dim - 1] = ScalarOps<T>::from_acc(0.0f);
          continue;
        }
      }
      for (int64_t i = 0; i < cols; ++i) timestep_item<T, P>(p, row * cols + i);
    }
  });
}

void run_timestep_cpu(const TimestepParams& p, const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "timestep_embedding_cpu", [&] {
    if (p.timesteps_fp64) {
      run_typed<scalar_t, double>(p);
    } else {
      run_typed<scalar_t, float>(p);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CPU, m) {
  m.impl("timestep_embedding", &timestep_embedding_backend<run_timestep_cpu>);
}

}  // namespace posemb::detail
