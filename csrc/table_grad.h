// Internal: the host side of a table's gradient, shared by learned_add's
// backward and the BERT block's three tables: tokens sorted stably by the
// row they read, the kernel params and the GPU partials. Each row then sums
// its tokens in that fixed order on any backend: deterministic, no atomics.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "kernels/table_grad.cuh"
#include "positions.h"

namespace posemb::detail {

/// Runs a table gradient on one backend; grad_weight carries the table's
/// dtype and device.
using TableGradRunner = void (*)(const TableGradParams& params, const at::Tensor& grad_weight);

/// Kernel params for grad, seen as (batch, seq, dim) through `dims`, whose
/// token (b, t) reads table row rows_of_tokens[b, t] ((batch, seq) integer);
/// grad_weight is the contiguous (rows, dim) output, of the table's dtype.
/// The sorted tokens and the partials live in `keep`. `arange_offset`, when
/// given, says that rows_of_tokens[b, t] is *arange_offset + t (implicit
/// positions): the stable sort's result is then written down, not sorted.
/// The GPU passes' indices (grad_offsets, row_starts) are made for a grad
/// off the CPU, or as gpu_indices says (the CPU walk of the GPU passes).
TableGradParams make_table_grad_params(const at::Tensor& grad, const XDims& dims,
                                       const at::Tensor& rows_of_tokens,
                                       const at::Tensor& grad_weight,
                                       std::optional<int64_t> padding_idx,
                                       std::vector<at::Tensor>& keep,
                                       std::optional<int64_t> arange_offset = std::nullopt,
                                       std::optional<bool> gpu_indices = std::nullopt);

/// grad_weight[n] = the sum of grad over the tokens that read row n, the
/// padding row zero.
void table_grad(TableGradRunner run, const at::Tensor& grad, const XDims& dims,
                const at::Tensor& rows_of_tokens, const at::Tensor& grad_weight,
                std::optional<int64_t> padding_idx,
                std::optional<int64_t> arange_offset = std::nullopt);

}  // namespace posemb::detail
