// CPU kernel of sinusoidal_add / sinusoidal_add_.
//
// Rows (tokens) are split across threads; each row's encoding is computed
// once, with the same per-element math as the CUDA kernel (cuda/math.cuh),
// and reused for every batch entry that shares the position.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "cpu/scalar_ops.h"
#include "sinusoidal_kernels.h"

namespace posemb::detail {
namespace {

// enc[channel] for one position: sin/cos of every frequency, zero on the
// padding position and on the last channel of an odd dim.
template <typename A>
void encode_row(const SinusoidalParams& p, const std::vector<double>& freq, int64_t pos, A* enc) {
  const int64_t half = p.dim / 2;
  if (p.dim % 2) enc[p.dim - 1] = A(0);
  const bool is_pad = p.has_padding_idx && pos == p.padding_idx;
  for (int64_t i = 0; i < half; ++i) {
    A s = A(0), c = A(0);
    if (!is_pad) position_sincos(static_cast<double>(pos), freq[i], &s, &c);
    if (p.layout == SinusoidalLayout::Interleaved) {
      enc[2 * i] = s;
      enc[2 * i + 1] = c;
    } else {
      enc[i] = s;
      enc[half + i] = c;
    }
  }
}

template <typename T>
void sinusoidal_add_cpu_typed(const SinusoidalParams& p) {
  using Ops = ScalarOps<T>;
  using A = acc_t<T>;
  std::vector<double> freq(p.dim / 2);
  for (size_t i = 0; i < freq.size(); ++i) freq[i] = exp(-static_cast<double>(i) * p.log_freq_step);

  const bool shared = sinusoidal_positions_shared(p);
  const int64_t rows = shared ? p.seq : p.batch * p.seq;
  const int64_t per_row = p.dim * (shared ? p.batch : 1);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, per_row));
  const A scale = static_cast<A>(p.scale);
  const bool unit_stride = p.x_stride_d == 1 && p.y_stride_d == 1;

  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> enc(p.dim);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t t = shared ? row : row % p.seq;
      const int64_t b_begin = shared ? 0 : row / p.seq;
      const int64_t b_end = shared ? p.batch : b_begin + 1;
      encode_row(p, freq, token_position(p, b_begin, t), enc.data());
      for (int64_t b = b_begin; b < b_end; ++b) {
        const T* x = static_cast<const T*>(p.x) + b * p.x_stride_b + t * p.x_stride_t;
        T* y = static_cast<T*>(p.y) + b * p.y_stride_b + t * p.y_stride_t;
        if (unit_stride) {  // the common case, kept simple for the vectoriser
          for (int64_t d = 0; d < p.dim; ++d) y[d] = Ops::from_acc(Ops::to_acc(x[d]) * scale + enc[d]);
        } else {
          for (int64_t d = 0; d < p.dim; ++d) {
            y[d * p.y_stride_d] = Ops::from_acc(Ops::to_acc(x[d * p.x_stride_d]) * scale + enc[d]);
          }
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
  m.impl("sinusoidal_add", &sinusoidal_add_kernel<run_sinusoidal_cpu>);
  m.impl("sinusoidal_add_", &sinusoidal_add_inplace_kernel<run_sinusoidal_cpu>);
}

}  // namespace posemb::detail
