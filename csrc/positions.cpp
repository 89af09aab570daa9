#include "positions.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

namespace posemb::detail {

bool is_index_dtype(at::ScalarType t) { return at::isIntegralType(t, /*includeBool=*/false); }

void check_float_dtype(const char* op, const char* name, const at::Tensor& t) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "posemb.", op, ": ", name, " must be float32, float64, float16 or bfloat16, got ", st);
}

at::Tensor as_index(const at::Tensor& t, std::vector<at::Tensor>& keep) {
  if (t.scalar_type() == at::kInt || t.scalar_type() == at::kLong) return t;
  keep.push_back(t.to(at::kLong));
  return keep.back();
}

XDims x_dims(const char* op, const at::Tensor& x, int64_t seq_dim) {
  const int64_t rank = x.dim();
  TORCH_CHECK(rank == 2 || rank == 3, "posemb.", op,
              ": x must be (batch, seq, dim), (seq, batch, dim) or (seq, dim), got shape ",
              x.sym_sizes());
  const int64_t s = seq_dim < 0 ? seq_dim + rank : seq_dim;
  TORCH_CHECK(s >= 0 && s < rank - 1, "posemb.", op, ": seq_dim must name a dimension of x ",
              "other than the last (embedding) one, got seq_dim=", seq_dim, " for x of shape ",
              x.sym_sizes());
  return {s, rank == 3 ? 1 - s : -1};
}

StridedRows strided_rows(const at::Tensor& t, int64_t batch_dim, int64_t seq_dim,
                         int64_t inner_dim) {
  StridedRows r;
  r.stride_b = batch_dim >= 0 ? t.stride(batch_dim) : 0;
  r.stride_t = t.stride(seq_dim);
  r.stride_inner = t.stride(inner_dim);
  return r;
}

BSDView bsd_view(const at::Tensor& t, const XDims& dims) {
  return {dims.batch >= 0 ? t.size(dims.batch) : 1, t.size(dims.seq), t.size(-1),
          strided_rows(t, dims.batch, dims.seq, -1)};
}

void check_positions(const char* op, const at::Tensor& x, const XDims& dims,
                     const std::optional<at::Tensor>& positions,
                     const std::optional<at::Tensor>& offsets, const c10::SymInt& offset,
                     const PositionNames& names) {
  const c10::SymInt seq = x.sym_size(dims.seq);
  const c10::SymInt batch = dims.batch >= 0 ? x.sym_size(dims.batch) : c10::SymInt(1);
  TORCH_CHECK(!(positions.has_value() && offsets.has_value()), "posemb.", op,
              ": pass ", names.positions, " or offsets, not both");
  // The last token's position, offset + seq - 1, must not wrap around.
  const auto known_offset = offset.maybe_as_int(), known_seq = seq.maybe_as_int();
  if (known_offset && known_seq && *known_seq > 0) {
    TORCH_CHECK(*known_offset <= std::numeric_limits<int64_t>::max() - (*known_seq - 1), "posemb.", op, ": ",
                names.offset, " + seq - 1 must fit in int64, got ", names.offset, "=", *known_offset,
                " and seq=", *known_seq);
  }
  if (positions.has_value() || offsets.has_value()) {
    TORCH_SYM_CHECK(offset.sym_eq(0), "posemb.", op, ": ", names.offset, " must be 0 when ",
                    positions.has_value() ? names.positions : "offsets", " are given, got ", offset);
  }
  if (positions.has_value()) {
    const at::Tensor& p = *positions;
    TORCH_CHECK(is_index_dtype(p.scalar_type()), "posemb.", op, ": ", names.positions,
                " must be an integer tensor, got ", p.scalar_type());
    TORCH_CHECK(p.device() == x.device(), "posemb.", op, ": ", names.positions, " must be on ", names.x,
                "'s device (", x.device(), "), got ", p.device());
    const bool shape_ok =
        (p.dim() == 1 && p.sym_size(0) == seq) ||
        (p.dim() == 2 && (p.sym_size(0) == batch || p.sym_size(0) == 1) &&
         (p.sym_size(1) == seq || p.sym_size(1) == 1));
    TORCH_CHECK(shape_ok, "posemb.", op, ": ", names.positions, " must be (seq,) or broadcastable to ",
                "(batch, seq) = (", batch, ", ", seq, "), got shape ", p.sym_sizes());
  }
  if (offsets.has_value()) {
    const at::Tensor& o = *offsets;
    TORCH_CHECK(is_index_dtype(o.scalar_type()), "posemb.", op,
                ": offsets must be an integer tensor, got ", o.scalar_type());
    TORCH_CHECK(o.device() == x.device(), "posemb.", op, ": offsets must be on ", names.x,
                "'s device (", x.device(), "), got ", o.device());
    const bool shape_ok =
        o.dim() == 0 || (o.dim() == 1 && (o.sym_size(0) == batch || o.sym_size(0) == 1));
    TORCH_CHECK(shape_ok, "posemb.", op, ": offsets must be a scalar or (batch,) = (", batch,
                ",), got shape ", o.sym_sizes());
  }
}

PositionParams make_position_params(const char* op, const at::Tensor& x, const XDims& dims,
                                    const std::optional<at::Tensor>& positions,
                                    const std::optional<at::Tensor>& offsets, int64_t offset,
                                    std::vector<at::Tensor>& keep) {
  const int64_t seq = x.size(dims.seq);
  const int64_t batch = dims.batch >= 0 ? x.size(dims.batch) : 1;
  PositionParams p;
  if (positions.has_value()) {
    at::Tensor pos = as_index(*positions, keep);
    if (pos.dim() == 1) pos = pos.unsqueeze(0);
    pos = pos.expand({batch, seq});
    p.positions = pos.data_ptr();
    p.positions_int64 = pos.scalar_type() == at::kLong;
    p.pos_stride_b = pos.stride(0);
    p.pos_stride_t = pos.stride(1);
  }
  if (offsets.has_value()) {
    const at::Tensor off = as_index(*offsets, keep);
    check_offsets_fit(op, off, seq);
    p.offsets = off.data_ptr();
    p.offsets_int64 = off.scalar_type() == at::kLong;
    p.offsets_stride = (off.dim() == 0 || off.size(0) == 1) ? 0 : off.stride(0);
  }
  p.offset = offset;
  return p;
}

namespace {

// The largest of a CPU offsets tensor (0-d or 1-d). int32 and int64 ones are
// read in place: a reduction and .item() cost about 1 µs of a decode call.
int64_t largest_offset(const at::Tensor& o) {
  const int64_t n = o.numel(), stride = o.dim() == 0 ? 0 : o.stride(0);
  auto scan = [&](const auto* v) {
    int64_t m = std::numeric_limits<int64_t>::min();
    for (int64_t i = 0; i < n; ++i) m = std::max<int64_t>(m, v[i * stride]);
    return m;
  };
  if (o.dim() <= 1 && o.scalar_type() == at::kLong) return scan(o.const_data_ptr<int64_t>());
  if (o.dim() <= 1 && o.scalar_type() == at::kInt) return scan(o.const_data_ptr<int32_t>());
  return o.max().item<int64_t>();
}

}  // namespace

void check_offsets_fit(const char* op, const at::Tensor& offsets, int64_t seq) {
  if (!offsets.device().is_cpu() || offsets.numel() == 0 || seq == 0) return;
  const int64_t largest = largest_offset(offsets);
  TORCH_CHECK(largest <= std::numeric_limits<int64_t>::max() - (seq - 1), "posemb.", op,
              ": offsets + seq - 1 must fit in int64, got an offset of ", largest, " and seq=", seq);
}

at::Tensor resolve_positions(const char* op, const at::Tensor& x, const XDims& dims,
                             const std::optional<at::Tensor>& positions,
                             const std::optional<at::Tensor>& offsets, int64_t offset) {
  const int64_t seq = x.size(dims.seq);
  const int64_t batch = dims.batch >= 0 ? x.size(dims.batch) : 1;
  const auto index = at::TensorOptions().dtype(at::kLong).device(x.device());
  if (positions.has_value()) {
    const at::Tensor p = positions->to(at::kLong);
    return (p.dim() == 1 ? p.unsqueeze(0) : p).expand({batch, seq});
  }
  const at::Tensor t = at::arange(seq, index).unsqueeze(0);
  if (offsets.has_value()) {
    check_offsets_fit(op, *offsets, seq);  // the sum below would wrap
    return (offsets->to(at::kLong).reshape({-1, 1}) + t).expand({batch, seq});
  }
  return (t + offset).expand({batch, seq});
}

}  // namespace posemb::detail
