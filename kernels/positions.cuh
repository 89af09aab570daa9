// Where each token sits: its row in memory and its position (the position
// schemes every family shares).
#pragma once

#include <cstdint>

#include "kernels/math.cuh"

namespace posemb {

/// The strides, in elements, of a tensor seen as (batch, seq, inner): token
/// (b, t)'s row starts at row(b, t); stride_inner steps through the row
/// (channels; heads for rotary, whose channels are contiguous).
struct StridedRows {
  int64_t stride_b = 0, stride_t = 0, stride_inner = 1;
  POSEMB_HD int64_t row(int64_t b, int64_t t) const { return b * stride_b + t * stride_t; }
};

/// Position of token (b, t): positions[b, t] when given, else offsets[b] + t
/// when given, else offset + t. Scheme and index widths are runtime values:
/// one uniform branch per token, where templates would multiply every body.
/// Positions with several axes hold one position per axis: positions[axis, b, t].
struct PositionParams {
  const void* positions = nullptr;  // [batch, seq] int32/int64, stride 0 allowed
  bool positions_int64 = true;
  int64_t pos_stride_b = 0, pos_stride_t = 0;
  // Positions with several axes (multimodal or axial rotary: positions
  // [axes, batch, seq]): the stride from one axis to the next.
  int64_t pos_stride_axis = 0;
  const void* offsets = nullptr;  // [batch] int32/int64, stride 0 allowed
  bool offsets_int64 = true;
  int64_t offsets_stride = 0;
  int64_t offset = 0;
};

POSEMB_HD int64_t token_position(const PositionParams& p, int64_t b, int64_t t, int64_t axis = 0) {
  if (p.positions != nullptr) {
    return detail::load_index(p.positions, p.positions_int64,
                              axis * p.pos_stride_axis + b * p.pos_stride_b + t * p.pos_stride_t);
  }
  const int64_t base = p.offsets != nullptr
                           ? detail::load_index(p.offsets, p.offsets_int64, b * p.offsets_stride)
                           : p.offset;
  return base + t;
}

/// True when every batch entry has the same positions, so work per position
/// (an encoding, a table row) can be shared across the batch.
inline bool positions_shared(const PositionParams& p, int64_t batch) {
  if (batch <= 1) return true;
  if (p.positions != nullptr) return p.pos_stride_b == 0;
  if (p.offsets != nullptr) return p.offsets_stride == 0;
  return true;
}

}  // namespace posemb
