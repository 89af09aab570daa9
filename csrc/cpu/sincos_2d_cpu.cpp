// CPU kernel of sincos_2d_add. The grid is separable: a token's channels are
// its frame's encoding (3-D only), then its column's, then its row's. So the
// encodings of the T frames, W columns and H rows are computed once
// (kernels/sincos_2d.cuh's formula, the same values), and the
// add is a streaming pass over x, whole rows at a time (16 wide on AVX2), as
// cheap as a copy: no sin/cos per token, none per batch entry. Channels that
// are not contiguous run kernels/sincos_2d.cuh's body, as the GPU does.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "cpu/rows.h"
#include "sincos_2d_op.h"

namespace posemb::detail {
namespace {

/// [sin(p w_0) .. sin(p w_{q-1}), cos(p w_0) .. cos(p w_{q-1})] of each
/// position, one row of 2q per position: 8 wide where the vector row can
/// (fp32 accumulation, AVX2, a finite position), else element by element.
template <typename A>
std::vector<A> axis_encodings(const FloatFreq* freqs, int64_t q, const float* positions, int64_t count) {
  const int64_t width = 2 * q;
  std::vector<A> out(count * width);
  std::vector<uint64_t> F(q);  // contiguous for the vector row
  for (int64_t i = 0; i < q; ++i) F[i] = freqs[i].F;
  at::parallel_for(0, count, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, q)), [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> u(q);
    for (int64_t n = begin; n < end; ++n) {
      A* s = out.data() + n * width;
      if constexpr (std::is_same_v<A, float>) {
        if (float_position_sincos_row(positions[n], freqs, F.data(), q, s, s + q, u.data())) continue;
      }
      for (int64_t i = 0; i < q; ++i) turns::float_position_sincos(positions[n], freqs[i], &s[i], &s[q + i]);
    }
  });
  return out;
}

template <typename T>
void sincos_2d_cpu_typed(const Sincos2dParams& p) {
  using A = acc_t<T>;
  if (p.x_sd != 1 || p.y_sd != 1) {  // channels not contiguous: the shared body, item by item
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, p.batch));
    at::parallel_for(0, sincos_2d_items(p), grain, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) sincos_2d_item<T>(p, j);
    });
    return;
  }
  // Channels [0, td) the frame's, [td, td + half) the column's, then the row's.
  const int64_t td = p.t_dim, half = (p.dim - td) / 2, cells = p.h * p.w, tokens = p.t * cells;
  const std::vector<A> cols = axis_encodings<A>(p.freqs, half / 2, p.pos_w, p.w),
                       rows = axis_encodings<A>(p.freqs, half / 2, p.pos_h, p.h),
                       frames = td ? axis_encodings<A>(p.freqs_t, td / 2, p.pos_t, p.t) : std::vector<A>();
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, p.dim));
  [[maybe_unused]] const bool vectorised = cpu_avx2();
  at::parallel_for(0, p.batch * tokens, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> buf(p.dim);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / tokens, t = r % tokens, cell = t % cells;
      const T* x = static_cast<const T*>(p.x) + b * p.x_sb + t * p.x_st;
      T* y = static_cast<T*>(p.y) + b * p.y_sb + t * p.y_st;
      const A* frame = frames.data() + (t / cells) * td;
      const A* col = cols.data() + (cell % p.w) * half;
      const A* row = rows.data() + (cell / p.w) * half;
#if defined(POSEMB_CPU_AVX2)
      if constexpr (std::is_same_v<A, float>) {
        if (vectorised) {  // each segment's fused add, 16 wide in fp32, rounded once (x * 1 + e is x + e)
          auto add = [&](int64_t from, const float* e, int64_t n) {
            const T* xs = x + from;
            T* ys = y + from;
            avx2::fused_rows(&xs, &ys, 1, e, 1.0f, n);
          };
          add(0, frame, td);
          add(td, col, half);
          add(td + half, row, half);
          continue;
        }
      }
#endif
      if constexpr (std::is_same_v<T, A>) {  // fp32, fp64: passes the compiler vectorises
        for (int64_t d = 0; d < td; ++d) y[d] = x[d] + frame[d];
        for (int64_t d = 0; d < half; ++d) y[td + d] = x[td + d] + col[d];
        for (int64_t d = 0; d < half; ++d) y[td + half + d] = x[td + half + d] + row[d];
      } else {
        load_row(x, buf.data(), p.dim);
        for (int64_t d = 0; d < td; ++d) buf[d] += frame[d];
        for (int64_t d = 0; d < half; ++d) buf[td + d] += col[d];
        for (int64_t d = 0; d < half; ++d) buf[td + half + d] += row[d];
        store_row(buf.data(), y, p.dim);
      }
    }
  });
}

void run_sincos_2d_cpu(const Sincos2dParams& p, const at::Tensor& x) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sincos_2d_add_cpu",
                                  [&] { sincos_2d_cpu_typed<scalar_t>(p); });
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CPU, m) {
  m.impl("sincos_2d_add", &sincos_2d_add_backend<run_sincos_2d_cpu>);
}

}  // namespace posemb::detail
