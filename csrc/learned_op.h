// Internal: the op glue of learned_add and its backward, shared by their CPU,
// CUDA, Meta and autograd registrations and the public C++ function: the
// typed op handles, the checks, the kernel params and the backend adapters.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>

#include <optional>
#include <vector>

#include "kernels/learned.cuh"
#include "op.h"
#include "table_grad.h"

namespace posemb::detail {

// ---------------------------------------------------------------- the ops

using LearnedAddOp =
    Op<"posemb::learned_add",
       at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                  const std::optional<at::Tensor>&, c10::SymInt, int64_t,
                  std::optional<int64_t>)>;
using LearnedAddBackwardOp =
    Op<"posemb::learned_add_backward",
       at::Tensor(const at::Tensor&, const std::optional<at::Tensor>&,
                  const std::optional<at::Tensor>&, c10::SymInt, int64_t, c10::SymInt,
                  std::optional<int64_t>)>;

// ------------------------------------------------------- checks and params

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

/// Kernel parameters for real tensors x (input) and y (output); index
/// tensors widened to int64 are kept alive in `keep`.
LearnedParams make_learned_params(const at::Tensor& x, const at::Tensor& y,
                                  const at::Tensor& weight,
                                  const std::optional<at::Tensor>& positions,
                                  const std::optional<at::Tensor>& offsets, int64_t offset,
                                  int64_t seq_dim, std::vector<at::Tensor>& keep);

// ---------------------------------------------------------------- backends

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

/// The registered kernels: the ops' signatures, a backend's runners bound.
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
