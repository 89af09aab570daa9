// CPU kernel of sinusoidal_add / sinusoidal_add_.
//
// Rows (tokens) are split across threads. Each row's encoding is computed
// once, from the same exact angles as the CUDA kernel (kernels/turns.cuh),
// and reused for every batch entry sharing the position.
// On CPUs with AVX2 the sincos and the fused multiply-add run 8 wide
// (cpu/avx2.cpp); elsewhere, and for fp64, a portable loop does.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "cpu/rows.h"
#include "kernels/turns.cuh"
#include "sinusoidal_op.h"

namespace posemb::detail {
namespace {

// s[i], c[i] = sin, cos of position times frequency i (as turns), i < n.
template <typename A>
void sincos_row(int64_t position, const uint64_t* F, int64_t n, A* s, A* c, bool vectorised) {
#if defined(POSEMB_CPU_AVX2)
  if constexpr (std::is_same_v<A, float>) {
    if (vectorised) return avx2::position_sincos_row(position, F, n, s, c);
  }
#endif
  for (int64_t i = 0; i < n; ++i) turns::position_sincos(position, F[i], &s[i], &c[i]);
}

// y[0..dim) = x * scale + enc.
template <typename T, typename A>
void fused_row(const SinusoidalParams& p, const T* x, T* y, const A* enc, A scale, bool vectorised) {
  using Ops = ScalarOps<T>;
  const bool unit_stride = p.x_rows.stride_inner == 1 && p.y_rows.stride_inner == 1;
#if defined(POSEMB_CPU_AVX2)
  if constexpr (std::is_same_v<A, float>) {
    if (vectorised && unit_stride) return avx2::fused_row(x, y, enc, scale, p.dim);
  }
#endif
  if (unit_stride) {
    for (int64_t d = 0; d < p.dim; ++d) y[d] = Ops::from_acc(Ops::to_acc(x[d]) * scale + enc[d]);
  } else {
    for (int64_t d = 0; d < p.dim; ++d) {
      y[d * p.y_rows.stride_inner] = Ops::from_acc(Ops::to_acc(x[d * p.x_rows.stride_inner]) * scale + enc[d]);
    }
  }
}

template <typename T>
void sinusoidal_add_cpu_typed(const SinusoidalParams& p) {
  using A = acc_t<T>;
  const int64_t half = p.dim / 2;

  const bool shared = positions_shared(p.pos, p.batch);
  const int64_t rows = shared ? p.seq : p.batch * p.seq;
  const int64_t per_row = p.dim * (shared ? p.batch : 1);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, per_row));
  const A scale = static_cast<A>(p.scale);
  const bool vectorised = cpu_avx2();

  // Rows go in blocks: their encodings first, then each batch entry's block
  // of rows, so writes to y stay sequential within a block.
  constexpr int64_t kRowBlock = 16;
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> enc(kRowBlock * p.dim), s(half), c(half);
    for (int64_t block = begin; block < end; block += kRowBlock) {
      const int64_t block_end = std::min(end, block + kRowBlock);
      for (int64_t row = block; row < block_end; ++row) {
        A* e = enc.data() + (row - block) * p.dim;
        const int64_t t = shared ? row : row % p.seq;
        const int64_t pos = token_position(p.pos, shared ? 0 : row / p.seq, t);
        if (p.has_padding_idx && pos == p.padding_idx) {
          std::fill(e, e + p.dim, A(0));
          continue;
        }
        sincos_row(pos, p.turns, half, s.data(), c.data(), vectorised);
        const bool interleaved = p.layout == SinusoidalLayout::Interleaved;
        for (int64_t i = 0; i < half; ++i) {
          e[interleaved ? 2 * i : i] = s[i];
          e[interleaved ? 2 * i + 1 : half + i] = c[i];
        }
        if (p.dim % 2) e[p.dim - 1] = A(0);
      }
      // A shared row serves every batch entry; otherwise row = b * seq + t.
      const int64_t batches = shared ? p.batch : 1;
      for (int64_t b = 0; b < batches; ++b) {
        for (int64_t row = block; row < block_end; ++row) {
          const int64_t t = shared ? row : row % p.seq;
          const int64_t bb = shared ? b : row / p.seq;
          const T* x = static_cast<const T*>(p.x) + p.x_rows.row(bb, t);
          T* y = static_cast<T*>(p.y) + p.y_rows.row(bb, t);
          fused_row(p, x, y, enc.data() + (row - block) * p.dim, scale, vectorised);
        }
      }
    }
  });
}

void run_sinusoidal_cpu(const SinusoidalParams& params, const at::Tensor& x) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sinusoidal_add_cpu",
                                  [&] { sinusoidal_add_cpu_typed<scalar_t>(params); });
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CPU, m) {
  m.impl("sinusoidal_add", &sinusoidal_add_backend<run_sinusoidal_cpu>);
  m.impl("sinusoidal_add_", &sinusoidal_add_inplace_backend<run_sinusoidal_cpu>);
}

}  // namespace posemb::detail
