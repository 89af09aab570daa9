// Internal: checks and backend wrappers of learned_add and its backward,
// shared by the CPU, CUDA and Meta registrations.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>

#include <optional>

#include "kernels/learned.cuh"
#include "table_grad.h"

namespace posemb::detail {

/// Checks learned_add's arguments on real or fake tensors.
void check_learned_add(const char* op, const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& positions,
                       const std::optional<at::Tensor>& offsets, const c10::SymInt& offset,
                       int64_t seq_dim, std::optional<int64_t> padding_idx);

/// Checks the backward's arguments on real or fake tensors.
void check_learned_add_backward(const at::Tensor& grad, const std::optional<at::Tensor>& positions,
                                const std::optional<at::Tensor>& offsets,
                                const c10::SymInt& offset, int64_t seq_dim,
                                const c10::SymInt& num_embeddings,
                                std::optional<int64_t> padding_idx);

using LearnedAddRunner = void (*)(const LearnedParams& params, const at::Tensor& x);

/// learned_add on a backend: check (positions' values included), allocate, run.
at::Tensor learned_add_impl(LearnedAddRunner run, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& positions,
                            const std::optional<at::Tensor>& offsets, int64_t offset,
                            int64_t seq_dim, std::optional<int64_t> padding_idx);

/// The weight gradient on a backend: the table gradient of csrc/table_grad.h.
at::Tensor learned_add_backward_impl(TableGradRunner run, const at::Tensor& grad,
                                     const std::optional<at::Tensor>& positions,
                                     const std::optional<at::Tensor>& offsets, int64_t offset,
                                     int64_t seq_dim, int64_t num_embeddings,
                                     std::optional<int64_t> padding_idx);

template <LearnedAddRunner run>
at::Tensor learned_add_backend(const at::Tensor& x, const at::Tensor& weight,
                              const std::optional<at::Tensor>& positions,
                              const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                              int64_t seq_dim, std::optional<int64_t> padding_idx) {
  return learned_add_impl(run, x, weight, positions, offsets, offset.expect_int(), seq_dim,
                          padding_idx);
}

template <TableGradRunner run>
at::Tensor learned_add_backward_backend(const at::Tensor& grad,
                                       const std::optional<at::Tensor>& positions,
                                       const std::optional<at::Tensor>& offsets,
                                       c10::SymInt offset, int64_t seq_dim,
                                       c10::SymInt num_embeddings,
                                       std::optional<int64_t> padding_idx) {
  return learned_add_backward_impl(run, grad, positions, offsets, offset.expect_int(), seq_dim,
                                   num_embeddings.expect_int(), padding_idx);
}

}  // namespace posemb::detail
