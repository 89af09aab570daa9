// Internal: the argument checks and the kernel wrapper that the CPU, CUDA and
// Meta registrations of sinusoidal_add / sinusoidal_add_ share, so every
// backend (fake tensors included) accepts and rejects exactly the same calls.
#pragma once

#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/SymInt.h>

#include <optional>
#include <string_view>
#include <vector>

#include "kernels/sinusoidal.cuh"

namespace posemb::detail {

/// The encoding an op call asks for, once its arguments are checked.
struct SinusoidalSpec {
  SinusoidalLayout layout = SinusoidalLayout::Interleaved;
  SinusoidalFreqs freqs = SinusoidalFreqs::Vaswani;
  double base = 10000.0;
};

/// Checks the arguments of `op` (sinusoidal_add or sinusoidal_add_) on real or
/// fake tensors; each error names the op and the argument.
SinusoidalSpec check_sinusoidal_add(const char* op, const at::Tensor& x,
                                    const std::optional<at::Tensor>& positions,
                                    const std::optional<at::Tensor>& offsets,
                                    const c10::SymInt& offset, int64_t seq_dim,
                                    std::string_view layout, std::string_view freqs, double base,
                                    std::optional<int64_t> padding_idx);

/// Kernel parameters for real tensors x (input) and y (output, may be x).
/// Index tensors of other integer dtypes are converted to int64 and kept
/// alive in `keep` until the kernel has run.
SinusoidalParams make_sinusoidal_params(const SinusoidalSpec& spec, const at::Tensor& x,
                                        const at::Tensor& y,
                                        const std::optional<at::Tensor>& positions,
                                        const std::optional<at::Tensor>& offsets,
                                        int64_t offset, int64_t seq_dim, double scale,
                                        std::optional<int64_t> padding_idx,
                                        std::vector<at::Tensor>& keep);

/// Runs sinusoidal_add on one backend for checked, non-empty params.
using SinusoidalRunner = void (*)(const SinusoidalParams& params, const at::Tensor& x);

/// The out-of-place op on a backend: check, allocate, run.
template <SinusoidalRunner run>
at::Tensor sinusoidal_add_backend(const at::Tensor& x, const std::optional<at::Tensor>& positions,
                                 const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                                 int64_t seq_dim, std::string_view layout, std::string_view freqs,
                                 double base, double scale, std::optional<int64_t> padding_idx) {
  const auto spec = check_sinusoidal_add("sinusoidal_add", x, positions, offsets, offset, seq_dim,
                                         layout, freqs, base, padding_idx);
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return y;
  std::vector<at::Tensor> keep;
  run(make_sinusoidal_params(spec, x, y, positions, offsets, offset.expect_int(), seq_dim, scale,
                             padding_idx, keep),
      x);
  return y;
}

/// The in-place op on a backend.
template <SinusoidalRunner run>
void sinusoidal_add_inplace_backend(const at::Tensor& x, const std::optional<at::Tensor>& positions,
                                           const std::optional<at::Tensor>& offsets,
                                           c10::SymInt offset, int64_t seq_dim,
                                           std::string_view layout, std::string_view freqs,
                                           double base, double scale,
                                           std::optional<int64_t> padding_idx) {
  const auto spec = check_sinusoidal_add("sinusoidal_add_", x, positions, offsets, offset, seq_dim,
                                         layout, freqs, base, padding_idx);
  TORCH_CHECK(at::has_internal_overlap(x) != at::MemOverlap::Yes,
              "posemb.sinusoidal_add_: x has overlapping memory (an expanded view?) and cannot ",
              "be written in place; use sinusoidal_add");
  if (x.numel() == 0) return;
  std::vector<at::Tensor> keep;
  run(make_sinusoidal_params(spec, x, x, positions, offsets, offset.expect_int(), seq_dim, scale,
                             padding_idx, keep),
      x);
}

}  // namespace posemb::detail
