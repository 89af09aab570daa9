// Internal: the op glue of the sinusoidal family, shared by its CPU, CUDA,
// Meta and autograd registrations and its public C++ functions: the typed
// handle of each op, the argument checks (so every backend, fake tensors
// included, accepts and rejects the same calls), the kernel params, and the
// backend adapters.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>

#include <optional>
#include <string_view>
#include <vector>

#include "kernels/sinusoidal.cuh"
#include "op.h"

namespace posemb::detail {

// ---------------------------------------------------------------- the ops

using SinusoidalAddOp =
    Op<"posemb::sinusoidal_add",
       at::Tensor(const at::Tensor&, const std::optional<at::Tensor>&,
                  const std::optional<at::Tensor>&, c10::SymInt, int64_t, std::string_view,
                  std::string_view, double, double, std::optional<int64_t>)>;
using SinusoidalAddInplaceOp =
    Op<"posemb::sinusoidal_add_",
       void(const at::Tensor&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
            c10::SymInt, int64_t, std::string_view, std::string_view, double, double,
            std::optional<int64_t>)>;
using SinusoidalAddBackwardOp =
    Op<"posemb::sinusoidal_add_backward", at::Tensor(const at::Tensor&, double)>;
using SinusoidalTableOp =
    Op<"posemb::sinusoidal_table",
       at::Tensor(c10::SymInt, c10::SymInt, c10::SymInt, std::string_view, std::string_view,
                  double, std::optional<int64_t>, std::optional<at::ScalarType>,
                  std::optional<at::Device>)>;
using MakePositionsOp = Op<"posemb::make_positions", at::Tensor(const at::Tensor&, int64_t)>;

// ------------------------------------------------------- checks and params

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

// ---------------------------------------------------------------- backends

/// Runs sinusoidal_add on one backend for checked, non-empty params.
using SinusoidalRunner = void (*)(const SinusoidalParams& params, const at::Tensor& x);

/// The out-of-place op on a backend: check, allocate, run.
at::Tensor sinusoidal_add_impl(SinusoidalRunner run, const at::Tensor& x,
                               const std::optional<at::Tensor>& positions,
                               const std::optional<at::Tensor>& offsets, int64_t offset,
                               int64_t seq_dim, std::string_view layout, std::string_view freqs,
                               double base, double scale, std::optional<int64_t> padding_idx);

/// The in-place op on a backend.
void sinusoidal_add_inplace_impl(SinusoidalRunner run, const at::Tensor& x,
                                 const std::optional<at::Tensor>& positions,
                                 const std::optional<at::Tensor>& offsets, int64_t offset,
                                 int64_t seq_dim, std::string_view layout, std::string_view freqs,
                                 double base, double scale, std::optional<int64_t> padding_idx);

/// The registered kernels: the ops' signatures, a backend's runner bound.
template <SinusoidalRunner run>
at::Tensor sinusoidal_add_backend(const at::Tensor& x, const std::optional<at::Tensor>& positions,
                                  const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                                  int64_t seq_dim, std::string_view layout, std::string_view freqs,
                                  double base, double scale, std::optional<int64_t> padding_idx) {
  return sinusoidal_add_impl(run, x, positions, offsets, offset.expect_int(), seq_dim, layout,
                             freqs, base, scale, padding_idx);
}

template <SinusoidalRunner run>
void sinusoidal_add_inplace_backend(const at::Tensor& x, const std::optional<at::Tensor>& positions,
                                    const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                                    int64_t seq_dim, std::string_view layout,
                                    std::string_view freqs, double base, double scale,
                                    std::optional<int64_t> padding_idx) {
  sinusoidal_add_inplace_impl(run, x, positions, offsets, offset.expect_int(), seq_dim, layout,
                              freqs, base, scale, padding_idx);
}

}  // namespace posemb::detail
