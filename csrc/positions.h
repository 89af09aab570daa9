// Internal: the (batch, seq, dim) view of an input and the position schemes
// (explicit positions, per-sequence offsets, an offset) that every family
// accepts, checked the same way on real and fake tensors.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>

#include <optional>
#include <vector>

#include "kernels/positions.cuh"

namespace posemb::detail {

/// Which dimension of x is which in its logical (batch, seq, dim) view.
struct XDims {
  int64_t seq;    // dimension of x holding the sequence
  int64_t batch;  // dimension of x holding the batch, or -1 for (seq, dim)
};

/// x must be (batch, seq, dim), (seq, batch, dim) or (seq, dim); seq_dim says
/// where the sequence is.
XDims x_dims(const char* op, const at::Tensor& x, int64_t seq_dim);

/// The kernels' view of t's dimensions batch_dim (-1: none, stride 0),
/// seq_dim and inner_dim.
StridedRows strided_rows(const at::Tensor& t, int64_t batch_dim, int64_t seq_dim,
                         int64_t inner_dim);

/// Sizes and strides of t in its logical (batch, seq, dim) view; a tensor
/// without a batch dimension has batch 1 and batch stride 0.
struct BSDView {
  int64_t batch, seq, dim;
  StridedRows rows;
};
BSDView bsd_view(const at::Tensor& t, const XDims& dims);

/// The names the caller knows the arguments by, for the error messages
/// (the BERT block takes HF's position_ids and cache_length).
struct PositionNames {
  const char* x = "x";
  const char* positions = "positions";
  const char* offset = "offset";
};

/// Checks positions (integer, broadcastable to (batch, seq)), offsets
/// (integer, scalar or (batch,)), offset (0 unless neither is given) and
/// that offset + seq - 1 is an int64.
void check_positions(const char* op, const at::Tensor& x, const XDims& dims,
                     const std::optional<at::Tensor>& positions,
                     const std::optional<at::Tensor>& offsets, const c10::SymInt& offset,
                     const PositionNames& names = {});

/// Kernel view of the positions of x's tokens. Index tensors of integer
/// dtypes other than int32/int64 are widened to int64 and kept in `keep`.
/// Offsets on the CPU are checked so that no position overflows int64 (on
/// CUDA that would cost a host sync per call; README: Numerical contract).
PositionParams make_position_params(const char* op, const at::Tensor& x, const XDims& dims,
                                    const std::optional<at::Tensor>& positions,
                                    const std::optional<at::Tensor>& offsets, int64_t offset,
                                    std::vector<at::Tensor>& keep);

/// The positions of x's tokens as an int64 (batch, seq) tensor, for ops that
/// need them whole (bounds checks, sorting for deterministic backward).
at::Tensor resolve_positions(const char* op, const at::Tensor& x, const XDims& dims,
                             const std::optional<at::Tensor>& positions,
                             const std::optional<at::Tensor>& offsets, int64_t offset);

/// Per-sequence offsets whose last position, offset + seq - 1, would pass
/// int64 are an error (checked on host values; device offsets are not read).
void check_offsets_fit(const char* op, const at::Tensor& offsets, int64_t seq);

bool is_index_dtype(at::ScalarType t);

/// `name` of `op` must be float32, float64, float16 or bfloat16 (the dtypes
/// every kernel is built for).
void check_float_dtype(const char* op, const char* name, const at::Tensor& t);

/// t as the kernels read index tensors: int32 or int64 as it is, other
/// integer types widened to int64 (the copy is kept alive in `keep`).
at::Tensor as_index(const at::Tensor& t, std::vector<at::Tensor>& keep);

}  // namespace posemb::detail
