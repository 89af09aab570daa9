// Internal: the op glue of rotary, rotary_ and rotary_backward, shared by
// their CPU, CUDA, Meta and autograd registrations and the public C++
// functions: the typed op handles, the checks, the kernel params and the
// backend adapters.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <c10/core/SymInt.h>

#include <optional>
#include <tuple>
#include <vector>

#include "kernels/rotary.cuh"
#include "op.h"

namespace posemb::detail {

// ---------------------------------------------------------------- the ops

using RotaryOutputs = std::tuple<at::Tensor, at::Tensor>;

// rotary and rotary_backward share a signature; rotary_ returns nothing.
using RotarySig = RotaryOutputs(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                c10::SymInt, const std::optional<at::Tensor>&, double, bool,
                                int64_t, at::OptionalIntArrayRef, bool);
using RotaryOp = Op<"posemb::rotary", RotarySig>;
using RotaryBackwardOp = Op<"posemb::rotary_backward", RotarySig>;
using RotaryInplaceOp =
    Op<"posemb::rotary_",
       void(const at::Tensor&, const at::Tensor&, const at::Tensor&,
            const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, c10::SymInt,
            const std::optional<at::Tensor>&, double, bool, int64_t, at::OptionalIntArrayRef, bool)>;

/// mrope_section as autograd saves it (None or the list of sizes), and back:
/// `keep` holds the sizes the returned view points to.
inline c10::IValue save_sections(at::OptionalIntArrayRef sections) {
  return sections.has_value() ? c10::IValue(sections->vec()) : c10::IValue();
}
inline at::OptionalIntArrayRef load_sections(const c10::IValue& saved, std::vector<int64_t>& keep) {
  if (saved.isNone()) return std::nullopt;
  keep = saved.toIntVector();
  return at::IntArrayRef(keep);
}

// ------------------------------------------------------- checks and params

/// Checks the arguments of `op` on real or fake tensors.
void check_rotary(const char* op, const at::Tensor& q, const at::Tensor& k,
                  const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                  const std::optional<at::Tensor>& offsets, const c10::SymInt& offset,
                  const std::optional<at::Tensor>& cu_seqlens, int64_t seq_dim,
                  at::OptionalIntArrayRef mrope_section, bool mrope_interleaved);

/// Checks that q and k can both be written in place: neither overlaps itself,
/// and they share no element (q and k sliced from one qkv tensor may, when
/// their elements do not meet: csrc/memory_overlap.h decides exactly).
void check_rotary_writable(const at::Tensor& q, const at::Tensor& k);

/// Kernel parameters for checked real tensors: q and k are read, q_out and
/// k_out written (the same tensors in place); cu_seqlens' values are checked
/// here (one host sync). Copies are kept in `keep`.
RotaryParams make_rotary_params(const char* op, const at::Tensor& q, const at::Tensor& k,
                                const at::Tensor& q_out, const at::Tensor& k_out,
                                const at::Tensor& inv_freq,
                                const std::optional<at::Tensor>& positions,
                                const std::optional<at::Tensor>& offsets, int64_t offset,
                                const std::optional<at::Tensor>& cu_seqlens,
                                double attention_scaling, bool interleaved, int64_t seq_dim,
                                at::OptionalIntArrayRef mrope_section, bool mrope_interleaved,
                                std::vector<at::Tensor>& keep);

// ---------------------------------------------------------------- backends

using RotaryRunner = void (*)(const RotaryParams& params, const at::Tensor& q);

/// Out of place: rotate q and k into new tensors (inverse: the backward).
RotaryOutputs rotary_impl(RotaryRunner run, const char* op, bool inverse, const at::Tensor& q,
                          const at::Tensor& k, const at::Tensor& inv_freq,
                          const std::optional<at::Tensor>& positions,
                          const std::optional<at::Tensor>& offsets, int64_t offset,
                          const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                          bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved);

/// In place: rotate q and k where they are.
void rotary_inplace_impl(RotaryRunner run, const at::Tensor& q, const at::Tensor& k,
                         const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                         const std::optional<at::Tensor>& offsets, int64_t offset,
                         const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                         bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved);

/// The registered kernels: the ops' signatures, a backend's runner bound.
template <RotaryRunner run, bool kInverse>
RotaryOutputs rotary_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
                             const std::optional<at::Tensor>& positions,
                             const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                             const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                             bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  return rotary_impl(run, kInverse ? "rotary_backward" : "rotary", kInverse, q, k, inv_freq,
                     positions, offsets, offset.expect_int(), cu_seqlens, attention_scaling,
                     interleaved, seq_dim, mrope_section, mrope_interleaved);
}

template <RotaryRunner run>
void rotary_inplace_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
                            const std::optional<at::Tensor>& positions,
                            const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                            const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                            bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  rotary_inplace_impl(run, q, k, inv_freq, positions, offsets, offset.expect_int(), cu_seqlens,
                      attention_scaling, interleaved, seq_dim, mrope_section, mrope_interleaved);
}

}  // namespace posemb::detail
