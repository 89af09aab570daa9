// CPU kernel of sinusoidal_add / sinusoidal_add_.
//
// Rows (tokens), and a shared row's batch entries in groups, are split
// across threads. A row's encoding is computed once per thread that takes
// it, from the same exact angles as the CUDA kernel (kernels/turns.cuh), and
// reused for every batch entry sharing the position.
// On CPUs with AVX2 the sincos runs 8 wide and the fused multiply-add 16
// wide, the next row's encoding computed during the current row's sweep
// (cpu/avx2.cpp); with AVX-512, 16 and 32 wide (cpu/avx512.cpp); elsewhere,
// and for fp64, a portable loop does. All of them compute the same bits.
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

// The widest vector loops the CPU and ATen's capability allow (AVX-512 needs
// AVX512F/BW/DQ/VL; AVX2 needs FMA and F16C too).
enum class Simd { kNone, kAvx2, kAvx512 };

Simd cpu_simd() { return cpu_avx512() ? Simd::kAvx512 : cpu_avx2() ? Simd::kAvx2 : Simd::kNone; }

// s[i], c[i] = sin, cos of position times frequency i (as turns), i < n.
template <typename A>
void sincos_row(int64_t position, const uint64_t* F, int64_t n, A* s, A* c, Simd simd) {
  if constexpr (std::is_same_v<A, float>) {
    if (simd != Simd::kNone && vector_position_sincos_row(position, F, n, s, c)) return;
  }
  for (int64_t i = 0; i < n; ++i) turns::position_sincos(position, F[i], &s[i], &c[i]);
}

// enc[2i], enc[2i + 1] = sin, cos of position times frequency i, i < n.
// The vector loops store the pairs; the portable one goes through s and c.
template <typename A>
void interleaved_row(int64_t position, const uint64_t* F, int64_t n, A* enc, A* s, A* c, Simd simd) {
  if constexpr (std::is_same_v<A, float>) {
#if defined(POSEMB_CPU_AVX512)
    if (simd == Simd::kAvx512) return avx512::position_sincos_row_interleaved(position, F, n, enc);
#endif
#if defined(POSEMB_CPU_AVX2)
    if (simd != Simd::kNone) return avx2::position_sincos_row_interleaved(position, F, n, enc);
#endif
  }
  sincos_row(position, F, n, s, c, simd);
  for (int64_t i = 0; i < n; ++i) {
    enc[2 * i] = s[i];
    enc[2 * i + 1] = c[i];
  }
}

// enc[0..dim) = the encoding of one position, in the op's layout (halves
// are written in place).
template <typename A>
void encode_row(const SinusoidalParams& p, int64_t pos, A* enc, A* s, A* c, Simd simd) {
  const int64_t half = p.dim / 2;
  if (p.has_padding_idx && pos == p.padding_idx) {
    std::fill(enc, enc + p.dim, A(0));
    return;
  }
  if (p.layout == SinusoidalLayout::Interleaved) {
    interleaved_row(pos, p.turns, half, enc, s, c, simd);
  } else {
    sincos_row(pos, p.turns, half, enc, enc + half, simd);
  }
  if (p.dim % 2) enc[p.dim - 1] = A(0);
}

// y[r] = x[r] * scale + enc for the `rows` rows that share enc. With next
// (a vector loop, fp32 accumulation, unit inner strides) the next row's
// encoding is computed in the same sweep; returns whether it was.
template <typename T, typename A>
bool fused_rows(const SinusoidalParams& p, const T* const* x, T* const* y, int64_t rows, const A* enc, A scale,
                Simd simd, int64_t next_position, A* next_enc) {
  using Ops = ScalarOps<T>;
#if defined(POSEMB_CPU_AVX2)
  if constexpr (std::is_same_v<A, float>) {
    if (simd != Simd::kNone && p.x_rows.stride_inner == 1 && p.y_rows.stride_inner == 1) {
      const Encoding row{next_position, p.turns, p.dim / 2, p.layout == SinusoidalLayout::Interleaved, next_enc};
      const Encoding* next = next_enc ? &row : nullptr;
#if defined(POSEMB_CPU_AVX512)
      if (simd == Simd::kAvx512) {
        avx512::fused_rows(x, y, rows, enc, scale, p.dim, next);
        return next != nullptr;
      }
#endif
      avx2::fused_rows(x, y, rows, enc, scale, p.dim, next);
      return next != nullptr;
    }
  }
#endif
  (void)next_position;
  (void)next_enc;
  // x * scale + enc rounded once, as the AVX2 and CUDA kernels do
  // (mul_add); with scale 1 the product is exact and a plain add, a loop the
  // compiler vectorises, gives the same bits.
  const int64_t xs = p.x_rows.stride_inner, ys = p.y_rows.stride_inner;
  for (int64_t r = 0; r < rows; ++r) {
    if (scale == A(1) && xs == 1 && ys == 1) {
      for (int64_t d = 0; d < p.dim; ++d) y[r][d] = Ops::from_acc(Ops::to_acc(x[r][d]) + enc[d]);
    } else if (scale == A(1)) {
      for (int64_t d = 0; d < p.dim; ++d) y[r][d * ys] = Ops::from_acc(Ops::to_acc(x[r][d * xs]) + enc[d]);
    } else {
      for (int64_t d = 0; d < p.dim; ++d) {
        y[r][d * ys] = Ops::from_acc(mul_add(Ops::to_acc(x[r][d * xs]), scale, enc[d]));
      }
    }
  }
  return false;
}

template <typename T>
void sinusoidal_add_cpu_typed(const SinusoidalParams& p) {
  using A = acc_t<T>;
  // A shared row's encoding serves every batch entry. The entries are swept
  // together, in groups of kGroup, so the encoding is read from L1 once per
  // group and each entry's rows stay one sequential stream (sweeping the
  // entries one after another, or reading encodings of many rows back from
  // L2, measured 1.4-1.8x slower on a Zen 4 core: bench/results). Four, not
  // eight: batch strides are often a multiple of 4 KB (512 x 384 fp32), so
  // the entries' lines fall in the same cache sets, and eight entries, in
  // and out, overflowed their ways (in place at (32, 512, 384): 541 us with
  // eight, 371 with four, 390 with two, and no in-place case slower with
  // four; one entry at a time over tiles of 64 KB of encodings, 480:
  // bench/results/cpu-2026-12-04-groups.txt). The next row's encoding is
  // computed during the sweep of the row's first group where the vector
  // loop can, hiding its sin/cos work under that sweep's memory traffic
  // (computed between the sweeps, it left the memory idle: in place at
  // (8, 2048, 1024) fp32 ran at 0.75 of an in-place mul_).
  constexpr int64_t kGroup = 4;
  const bool shared = positions_shared(p.pos, p.batch);
  const int64_t rows = shared ? p.seq : p.batch * p.seq;
  const int64_t per_row = shared ? p.batch : 1;  // batch entries a row's encoding serves
  // Threads take (row, group) items, not whole rows: at decode a shared row
  // is all the work (one row of 64 entries ran serially, and opening the
  // parallel region for it made 2 threads slower than 1).
  const int64_t groups = (per_row + kGroup - 1) / kGroup;
  const int64_t items = rows * groups;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, p.dim * std::min(kGroup, per_row)));
  const A scale = static_cast<A>(p.scale);
  const Simd simd = cpu_simd();
  // Shared: row is t, for every batch entry; otherwise row = b * seq + t.
  auto position_of = [&](int64_t row) {
    return shared ? token_position(p.pos, 0, row) : token_position(p.pos, row / p.seq, row % p.seq);
  };
  auto is_padding = [&](int64_t position) { return p.has_padding_idx && position == p.padding_idx; };

  at::parallel_for(0, items, grain, [&](int64_t begin, int64_t end) {
    if (begin >= end) return;
    // Zero-filled: an odd dim's last channel stays 0 in both buffers.
    std::vector<A> enc(p.dim), next(p.dim), s(p.dim / 2), c(p.dim / 2);
    const T* x[kGroup];
    T* y[kGroup];
    encode_row(p, position_of(begin / groups), enc.data(), s.data(), c.data(), simd);
    for (int64_t item = begin; item < end;) {
      const int64_t row = item / groups;
      const int64_t t = shared ? row : row % p.seq;
      const int64_t first = shared ? 0 : row / p.seq;
      const int64_t row_end = std::min(end, (row + 1) * groups);  // this row's items in the chunk
      const bool has_next = row_end < end;
      const int64_t next_position = has_next ? position_of(row + 1) : 0;
      bool next_done = false;
      for (const int64_t row_begin = item; item < row_end; ++item) {
        const int64_t group = (item - row * groups) * kGroup;
        const int64_t n = std::min(kGroup, per_row - group);
        for (int64_t k = 0; k < n; ++k) {
          x[k] = static_cast<const T*>(p.x) + p.x_rows.row(first + group + k, t);
          y[k] = static_cast<T*>(p.y) + p.y_rows.row(first + group + k, t);
        }
        A* next_enc = item == row_begin && has_next && !is_padding(next_position) ? next.data() : nullptr;
        next_done |= fused_rows(p, x, y, n, enc.data(), scale, simd, next_position, next_enc);
      }
      if (!has_next) break;
      if (!next_done) encode_row(p, next_position, next.data(), s.data(), c.data(), simd);
      enc.swap(next);
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
