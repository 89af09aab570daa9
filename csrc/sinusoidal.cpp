// sinusoidal_add, sinusoidal_add_, sinusoidal_add_backward, sinusoidal_table
// and make_positions: argument checks, the backend-neutral part of the
// kernels, Meta (fake) kernels, the composite ops, and the public C++
// functions that call the dispatcher.
#include <ATen/ATen.h>
#include <c10/core/SymBool.h>
#include <c10/util/safe_numerics.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "memory_overlap.h"
#include "posemb/sinusoidal.h"
#include "positions.h"
#include "sinusoidal_op.h"
#include "turns.h"

namespace posemb {
namespace detail {
namespace {

SinusoidalLayout parse_layout(const char* op, std::string_view layout) {
  if (layout == "interleaved") return SinusoidalLayout::Interleaved;
  TORCH_CHECK(layout == "half", "posemb.", op, ": layout must be 'interleaved' or 'half', got '",
              layout, "'");
  return SinusoidalLayout::Half;
}

SinusoidalFreqs parse_freqs(const char* op, std::string_view freqs) {
  if (freqs == "vaswani") return SinusoidalFreqs::Vaswani;
  TORCH_CHECK(freqs == "fairseq", "posemb.", op, ": freqs must be 'vaswani' or 'fairseq', got '",
              freqs, "'");
  return SinusoidalFreqs::Fairseq;
}

}  // namespace

SinusoidalSpec check_sinusoidal_add(const char* op, const at::Tensor& x,
                                    const std::optional<at::Tensor>& positions,
                                    const std::optional<at::Tensor>& offsets,
                                    const c10::SymInt& offset, int64_t seq_dim,
                                    std::string_view layout, std::string_view freqs, double base,
                                    std::optional<int64_t> padding_idx) {
  check_float_dtype(op, "x", x);
  const XDims dims = x_dims(op, x, seq_dim);
  const c10::SymInt dim = x.sym_size(-1);

  SinusoidalSpec spec;
  spec.layout = parse_layout(op, layout);
  const SinusoidalFreqs f = parse_freqs(op, freqs);
  TORCH_CHECK(std::isfinite(base) && base > 0.0, "posemb.", op,
              ": base must be a positive finite number, got ", base);
  // Below 1 the frequencies pass 1 rad per position and grow without bound
  // (1/base); their turns, taken in long double, then lose the accuracy
  // the angle contract promises at large positions.
  TORCH_CHECK(base >= 1.0, "posemb.", op, ": base must be >= 1 (frequencies of at most 1 rad per position), got ",
              base);
  spec.freqs = f;
  spec.base = base;
  // The embedding dim is a model constant, so specialising on it costs nothing.
  const int64_t half = dim.guard_int(__FILE__, __LINE__) / 2;
  TORCH_CHECK(f == SinusoidalFreqs::Vaswani || half >= 2, "posemb.", op,
              ": freqs='fairseq' divides by dim/2 - 1 and needs an embedding dim of at least 4, got ", dim);

  TORCH_CHECK(!padding_idx.has_value() || *padding_idx >= 0, "posemb.", op,
              ": padding_idx must be non-negative, got ", padding_idx.value_or(0));
  check_positions(op, x, dims, positions, offsets, offset);
  return spec;
}

SinusoidalParams make_sinusoidal_params(const SinusoidalSpec& spec, const at::Tensor& x,
                                        const at::Tensor& y,
                                        const std::optional<at::Tensor>& positions,
                                        const std::optional<at::Tensor>& offsets,
                                        int64_t offset, int64_t seq_dim, double scale,
                                        std::optional<int64_t> padding_idx,
                                        std::vector<at::Tensor>& keep) {
  const XDims dims = x_dims("sinusoidal_add", x, seq_dim);
  const BSDView xv = bsd_view(x, dims);
  SinusoidalParams p;
  p.x = x.data_ptr();
  p.y = y.data_ptr();
  p.batch = xv.batch;
  p.seq = xv.seq;
  p.dim = xv.dim;
  p.x_rows = xv.rows;
  p.y_rows = bsd_view(y, dims).rows;
  p.pos = make_position_params("sinusoidal_add", x, dims, positions, offsets, offset, keep);
  p.has_padding_idx = padding_idx.has_value();
  p.padding_idx = padding_idx.value_or(0);
  p.layout = spec.layout;
  // The frequencies as turns, from their formula (README: Numerical contract).
  keep.push_back(sinusoidal_turns(p.dim, spec.freqs, spec.base, x.device()));
  p.turns = reinterpret_cast<const uint64_t*>(keep.back().const_data_ptr<int64_t>());
  p.scale = scale;
  p.scale_f32 = static_cast<float>(scale);
  return p;
}

at::Tensor sinusoidal_add_impl(SinusoidalRunner run, const at::Tensor& x,
                               const std::optional<at::Tensor>& positions,
                               const std::optional<at::Tensor>& offsets, int64_t offset,
                               int64_t seq_dim, std::string_view layout, std::string_view freqs,
                               double base, double scale, std::optional<int64_t> padding_idx) {
  const auto spec = check_sinusoidal_add("sinusoidal_add", x, positions, offsets, offset, seq_dim,
                                         layout, freqs, base, padding_idx);
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return y;
  std::vector<at::Tensor> keep;
  run(make_sinusoidal_params(spec, x, y, positions, offsets, offset, seq_dim, scale, padding_idx,
                             keep),
      x);
  return y;
}

void sinusoidal_add_inplace_impl(SinusoidalRunner run, const at::Tensor& x,
                                 const std::optional<at::Tensor>& positions,
                                 const std::optional<at::Tensor>& offsets, int64_t offset,
                                 int64_t seq_dim, std::string_view layout, std::string_view freqs,
                                 double base, double scale, std::optional<int64_t> padding_idx) {
  const auto spec = check_sinusoidal_add("sinusoidal_add_", x, positions, offsets, offset, seq_dim,
                                         layout, freqs, base, padding_idx);
  TORCH_CHECK(!overlaps_itself(x),
              "posemb.sinusoidal_add_: x has overlapping memory (an expanded or as_strided view) and cannot ",
              "be written in place; use sinusoidal_add");
  if (x.numel() == 0) return;
  std::vector<at::Tensor> keep;
  run(make_sinusoidal_params(spec, x, x, positions, offsets, offset, seq_dim, scale, padding_idx,
                             keep),
      x);
}

namespace {

at::Tensor sinusoidal_add_meta(const at::Tensor& x, const std::optional<at::Tensor>& positions,
                               const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                               int64_t seq_dim, std::string_view layout, std::string_view freqs,
                               double base, double scale, std::optional<int64_t> padding_idx) {
  check_sinusoidal_add("sinusoidal_add", x, positions, offsets, offset, seq_dim, layout, freqs,
                       base, padding_idx);
  return at::empty_symint(x.sym_sizes(), x.options());
}

void sinusoidal_add_inplace_meta(const at::Tensor& x, const std::optional<at::Tensor>& positions,
                                 const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                                 int64_t seq_dim, std::string_view layout, std::string_view freqs,
                                 double base, double scale, std::optional<int64_t> padding_idx) {
  check_sinusoidal_add("sinusoidal_add_", x, positions, offsets, offset, seq_dim, layout, freqs,
                       base, padding_idx);
}

// d(x * scale + PE)/dx = scale; positions carry no gradient.
at::Tensor sinusoidal_add_backward_composite(const at::Tensor& grad, double scale) {
  return grad * scale;
}

at::Tensor sinusoidal_table_composite(c10::SymInt num_positions, c10::SymInt dim,
                                      c10::SymInt offset, std::string_view layout,
                                      std::string_view freqs, double base,
                                      std::optional<int64_t> padding_idx,
                                      std::optional<at::ScalarType> dtype,
                                      std::optional<at::Device> device) {
  TORCH_SYM_CHECK(num_positions.sym_ge(0), "posemb.sinusoidal_table: num_positions must be ",
                  "non-negative, got ", num_positions);
  TORCH_SYM_CHECK(dim.sym_ge(0), "posemb.sinusoidal_table: dim must be non-negative, got ", dim);
  const at::ScalarType type = dtype.value_or(at::kFloat);
  TORCH_CHECK(type == at::kFloat || type == at::kDouble || type == at::kHalf || type == at::kBFloat16,
              "posemb.sinusoidal_table: dtype must be float32, float64, float16 or bfloat16, got ", type);
  const auto n = num_positions.maybe_as_int(), d = dim.maybe_as_int();
  int64_t bytes = 0;
  TORCH_CHECK(!n || !d ||
                  !(c10::mul_overflows(*n, *d, &bytes) ||
                    c10::mul_overflows(bytes, static_cast<int64_t>(c10::elementSize(type)), &bytes)),
              "posemb.sinusoidal_table: a table of num_positions x dim = ", *n, " x ", *d,
              " elements is too large to allocate");
  const auto options = at::TensorOptions()
                           .dtype(type)
                           .device(device.value_or(at::kCPU));
  at::Tensor table = at::zeros_symint({num_positions, dim}, options);
  // The in-place op's checks, under this op's name.
  check_sinusoidal_add("sinusoidal_table", table, std::nullopt, std::nullopt, offset, 0, layout, freqs, base,
                       padding_idx);
  // 0 * 1 + PE is PE exactly.
  SinusoidalAddInplaceOp::handle().call(table, std::nullopt, std::nullopt, std::move(offset), 0,
                                        layout, freqs, base, 1.0, padding_idx);
  return table;
}

// fairseq's make_positions: pads keep padding_idx, the rest count from padding_idx + 1.
at::Tensor make_positions_composite(const at::Tensor& input_ids, int64_t padding_idx) {
  TORCH_CHECK(is_index_dtype(input_ids.scalar_type()), "posemb.make_positions: input_ids must be ",
              "an integer tensor, got ", input_ids.scalar_type());
  TORCH_CHECK(input_ids.dim() >= 1, "posemb.make_positions: input_ids must have a sequence ",
              "dimension, got a scalar");
  TORCH_CHECK(padding_idx >= 0, "posemb.make_positions: padding_idx must be non-negative, got ",
              padding_idx);
  TORCH_SYM_CHECK(input_ids.sym_size(-1).sym_le(std::numeric_limits<int64_t>::max() - padding_idx),
                  "posemb.make_positions: padding_idx + the sequence length must fit in int64, got padding_idx ",
                  padding_idx, " and ", input_ids.sym_size(-1), " tokens");
  // Compared in int64: in the ids' own dtype a padding_idx out of its range
  // would wrap (257 as uint8 is 1) and match ids that are not pads.
  const at::Tensor mask = input_ids.to(at::kLong).ne(padding_idx).to(at::kLong);
  return at::cumsum(mask, -1).mul_(mask).add_(padding_idx);
}

}  // namespace
}  // namespace detail

at::Tensor sinusoidal_add(const at::Tensor& x, const std::optional<at::Tensor>& positions,
                          const std::optional<at::Tensor>& offsets, int64_t offset,
                          int64_t seq_dim, const std::string& layout, const std::string& freqs,
                          double base, double scale, std::optional<int64_t> padding_idx) {
  return detail::SinusoidalAddOp::handle().call(x, positions, offsets, c10::SymInt(offset),
                                                seq_dim, layout, freqs, base, scale, padding_idx);
}

at::Tensor& sinusoidal_add_(at::Tensor& x, const std::optional<at::Tensor>& positions,
                            const std::optional<at::Tensor>& offsets, int64_t offset,
                            int64_t seq_dim, const std::string& layout, const std::string& freqs,
                            double base, double scale, std::optional<int64_t> padding_idx) {
  detail::SinusoidalAddInplaceOp::handle().call(x, positions, offsets, c10::SymInt(offset),
                                                seq_dim, layout, freqs, base, scale, padding_idx);
  return x;
}

at::Tensor sinusoidal_add_backward(const at::Tensor& grad, double scale) {
  return detail::SinusoidalAddBackwardOp::handle().call(grad, scale);
}

at::Tensor sinusoidal_table(int64_t num_positions, int64_t dim, int64_t offset,
                            const std::string& layout, const std::string& freqs, double base,
                            std::optional<int64_t> padding_idx, at::TensorOptions options) {
  return detail::SinusoidalTableOp::handle().call(
      c10::SymInt(num_positions), c10::SymInt(dim), c10::SymInt(offset), layout, freqs, base,
      padding_idx, c10::typeMetaToScalarType(options.dtype()), options.device());
}

at::Tensor make_positions(const at::Tensor& input_ids, int64_t padding_idx) {
  return detail::MakePositionsOp::handle().call(input_ids, padding_idx);
}

TORCH_LIBRARY_IMPL(posemb, Meta, m) {
  m.impl("sinusoidal_add", &detail::sinusoidal_add_meta);
  m.impl("sinusoidal_add_", &detail::sinusoidal_add_inplace_meta);
}

TORCH_LIBRARY_IMPL(posemb, CompositeExplicitAutograd, m) {
  m.impl("sinusoidal_add_backward", &detail::sinusoidal_add_backward_composite);
  m.impl("sinusoidal_table", &detail::sinusoidal_table_composite);
}

TORCH_LIBRARY_IMPL(posemb, CompositeImplicitAutograd, m) {
  m.impl("make_positions", &detail::make_positions_composite);
}

}  // namespace posemb
