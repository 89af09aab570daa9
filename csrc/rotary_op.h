// Internal: checks and backend wrappers of rotary, rotary_ and
// rotary_backward, shared by the CPU, CUDA and Meta registrations.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>

#include <optional>
#include <tuple>
#include <vector>

#include "kernels/rotary.cuh"

namespace posemb::detail {

using RotaryRunner = void (*)(const RotaryParams& params, const at::Tensor& q);
using RotaryOutputs = std::tuple<at::Tensor, at::Tensor>;

/// Checks the arguments of `op` on real or fake tensors.
void check_rotary(const char* op, const at::Tensor& q, const at::Tensor& k,
                  const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                  const std::optional<at::Tensor>& offsets, const c10::SymInt& offset,
                  const std::optional<at::Tensor>& cu_seqlens, int64_t seq_dim);

/// Out of place: rotate q and k into new tensors (inverse: the backward).
RotaryOutputs rotary_impl(RotaryRunner run, const char* op, bool inverse, const at::Tensor& q,
                          const at::Tensor& k, const at::Tensor& inv_freq,
                          const std::optional<at::Tensor>& positions,
                          const std::optional<at::Tensor>& offsets, int64_t offset,
                          const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                          bool interleaved, int64_t seq_dim);

/// In place: rotate q and k where they are.
void rotary_inplace_impl(RotaryRunner run, const at::Tensor& q, const at::Tensor& k,
                         const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                         const std::optional<at::Tensor>& offsets, int64_t offset,
                         const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                         bool interleaved, int64_t seq_dim);

template <RotaryRunner run, bool kInverse>
RotaryOutputs rotary_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
                             const std::optional<at::Tensor>& positions,
                             const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                             const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                             bool interleaved, int64_t seq_dim) {
  return rotary_impl(run, kInverse ? "rotary_backward" : "rotary", kInverse, q, k, inv_freq,
                     positions, offsets, offset.expect_int(), cu_seqlens, attention_scaling,
                     interleaved, seq_dim);
}

template <RotaryRunner run>
void rotary_inplace_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
                            const std::optional<at::Tensor>& positions,
                            const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                            const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                            bool interleaved, int64_t seq_dim) {
  rotary_inplace_impl(run, q, k, inv_freq, positions, offsets, offset.expect_int(), cu_seqlens,
                      attention_scaling, interleaved, seq_dim);
}

}  // namespace posemb::detail
