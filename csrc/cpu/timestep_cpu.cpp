// CPU kernel of timestep_embedding, one row (timestep) per iteration. On
// AVX2 CPUs an integer timestep (diffusion steps 0..999 as floats) runs the
// integer path's vector loop (its angle n * F is exactly float_angle's);
// another gets each frequency's angle from kernels/float_turns.cuh, then
// the row's sin/cos 8 wide. Both are bitwise what kernels/timestep.cuh's
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
#if defined(POSEMB_CPU_AVX2)
      if constexpr (std::is_same_v<acc_t<T>, float>) {
        if (cpu_avx2() && std::isfinite(t)) {
          if (t == std::trunc(t) && std::fabs(t) < P(4611686018427387904.0)) {
            // An integer step (the usual case): float_angle is n * F, the integer path's product.
            avx2::position_sincos_row(static_cast<int64_t>(t), F.data(), half, s.data(), c.data());
          } else {
            for (int64_t i = 0; i < half; ++i) u[i] = turns::float_angle(t, p.freqs[i]);
            avx2::sincos_turns_row(u.data(), half, s.data(), c.data());
          }
          T* out = static_cast<T*>(p.out) + row * p.dim;
          store_row(p.flip_sin_to_cos ? c.data() : s.data(), out, half);
          store_row(p.flip_sin_to_cos ? s.data() : c.data(), out + half, half);
          if (p.dim % 2) out[p.dim - 1] = ScalarOps<T>::from_acc(0.0f);
          continue;
        }
      }
#endif
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
