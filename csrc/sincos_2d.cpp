// sincos_2d_add and sincos_2d_table: argument checks, the backend-neutral
// part of the kernel, the Meta (fake) kernel, the composite table and the
// public C++ functions.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "float_turns.h"
#include "positions.h"
#include "posemb/sincos_2d.h"
#include "sincos_2d_op.h"

namespace posemb {
namespace detail {
namespace {

constexpr const char* kOp = "sincos_2d_add";

void check_grid_positions(const char* op, const at::Tensor& pos_h, const at::Tensor& pos_w,
                          const std::optional<at::Tensor>& pos_t, const at::Device& device, const char* device_of) {
  const at::Tensor none;
  for (const auto& [name, pos] :
       {std::pair{"pos_h", &pos_h}, std::pair{"pos_w", &pos_w}, std::pair{"pos_t", pos_t ? &*pos_t : &none}}) {
    if (!pos->defined()) continue;
    TORCH_CHECK(pos->dim() == 1 && pos->scalar_type() == at::kFloat, "posemb.", op, ": ", name,
                " must be a 1-D float32 tensor, got ", pos->scalar_type(), " of shape ", pos->sym_sizes());
    TORCH_CHECK(pos->device() == device, "posemb.", op, ": ", name, " must be on ", device_of, "'s device (", device,
                "), got ", pos->device());
  }
}

void check_grid_dim(const char* op, int64_t dim, bool with_t, double base) {
  if (with_t) {
    TORCH_CHECK(dim % 16 == 0, "posemb.", op, ": with pos_t, the embedding dim must be a multiple of 16 (sin and "
                "cos of the frames in dim/4, of two spatial axes in 3*dim/4), got ", dim);
  } else {
    TORCH_CHECK(dim % 4 == 0, "posemb.", op,
                ": the embedding dim must be a multiple of 4 (sin and cos of two axes), got ", dim);
  }
  TORCH_CHECK(std::isfinite(base) && base > 0, "posemb.", op, ": base must be a positive finite number, got ", base);
}

void check_sincos_2d(const at::Tensor& x, const at::Tensor& pos_h, const at::Tensor& pos_w, double base,
                     const std::optional<at::Tensor>& pos_t) {
  check_float_dtype(kOp, "x", x);
  TORCH_CHECK(x.dim() == 3, "posemb.", kOp, ": x must be (batch, ", pos_t ? "T*H*W" : "H*W",
              ", dim), got shape ", x.sym_sizes());
  check_grid_positions(kOp, pos_h, pos_w, pos_t, x.device(), "x");
  const c10::SymInt cells = pos_h.sym_size(0) * pos_w.sym_size(0);
  if (pos_t) {
    TORCH_SYM_CHECK(x.sym_size(1).sym_eq(pos_t->sym_size(0) * cells), "posemb.", kOp, ": x must have T*H*W = ",
                    pos_t->sym_size(0) * cells, " tokens (pos_t, pos_h and pos_w have ", pos_t->sym_size(0), ", ",
                    pos_h.sym_size(0), " and ", pos_w.sym_size(0), "), got ", x.sym_size(1));
  } else {
    TORCH_SYM_CHECK(x.sym_size(1).sym_eq(cells), "posemb.", kOp, ": x must have H*W = ", cells,
                    " tokens (pos_h and pos_w have ", pos_h.sym_size(0), " and ", pos_w.sym_size(0), "), got ",
                    x.sym_size(1));
  }
  // The embedding dim is a model constant, so specialising on it costs nothing.
  check_grid_dim(kOp, x.sym_size(2).guard_int(__FILE__, __LINE__), pos_t.has_value(), base);
}

at::Tensor sincos_2d_add_meta(const at::Tensor& x, const at::Tensor& pos_h, const at::Tensor& pos_w, double base,
                              const std::optional<at::Tensor>& pos_t) {
  check_sincos_2d(x, pos_h, pos_w, base, pos_t);
  return at::empty_symint(x.sym_sizes(), x.options());
}

at::Tensor sincos_2d_table_composite(const at::Tensor& pos_h, const at::Tensor& pos_w, c10::SymInt dim, double base,
                                     std::optional<at::ScalarType> dtype, const std::optional<at::Tensor>& pos_t) {
  constexpr const char* kTable = "sincos_2d_table";
  TORCH_SYM_CHECK(dim.sym_ge(0), "posemb.", kTable, ": dim must be non-negative, got ", dim);
  const at::ScalarType type = dtype.value_or(at::kFloat);
  TORCH_CHECK(type == at::kFloat || type == at::kDouble || type == at::kHalf || type == at::kBFloat16,
              "posemb.", kTable, ": dtype must be float32, float64, float16 or bfloat16, got ", type);
  check_grid_positions(kTable, pos_h, pos_w, pos_t, pos_h.device(), "pos_h");
  check_grid_dim(kTable, dim.guard_int(__FILE__, __LINE__), pos_t.has_value(), base);
  c10::SymInt tokens = pos_h.sym_size(0) * pos_w.sym_size(0);
  if (pos_t) tokens = pos_t->sym_size(0) * tokens;
  const at::Tensor zeros = at::zeros_symint({1, std::move(tokens), std::move(dim)}, pos_h.options().dtype(type));
  // 0 + PE is PE exactly.
  return Sincos2dAddOp::handle().call(zeros, pos_h, pos_w, base, pos_t).squeeze(0);
}

}  // namespace

Sincos2dParams make_sincos_2d_params(const at::Tensor& x, const at::Tensor& y, const at::Tensor& pos_h,
                                     const at::Tensor& pos_w, double base, const std::optional<at::Tensor>& pos_t,
                                     std::vector<at::Tensor>& keep) {
  const at::Tensor h = pos_h.contiguous(), w = pos_w.contiguous();
  const int64_t dim = x.size(2);
  Sincos2dParams p;
  p.x = x.const_data_ptr();
  p.y = y.data_ptr();
  p.batch = x.size(0);
  p.h = h.size(0);
  p.w = w.size(0);
  p.dim = dim;
  p.x_sb = x.stride(0), p.x_st = x.stride(1), p.x_sd = x.stride(2);
  p.y_sb = y.stride(0), p.y_st = y.stride(1), p.y_sd = y.stride(2);
  p.pos_h = h.const_data_ptr<float>();
  p.pos_w = w.const_data_ptr<float>();
  keep.push_back(h);
  keep.push_back(w);
  if (pos_t) {
    // diffusers' get_3d_sincos_pos_embed: a 1-D grid of dim/4 channels for
    // the frames (ω_k = base^(-k / (dim/8))), then the 2-D grid of 3*dim/4.
    const at::Tensor t = pos_t->contiguous();
    p.t = t.size(0);
    p.t_dim = dim / 4;
    p.pos_t = t.const_data_ptr<float>();
    keep.push_back(t);
    const at::Tensor freqs_t = float_freq_table(dim / 8, base, static_cast<double>(dim / 8), 1.0, x.device());
    p.freqs_t = reinterpret_cast<const FloatFreq*>(freqs_t.const_data_ptr<int64_t>());
    keep.push_back(freqs_t);
  }
  // ω_k = base^(-k / (d/4)) of the d = dim - t_dim spatial channels, as
  // diffusers' and MAE's 1-D halves.
  const int64_t q = (dim - p.t_dim) / 4;
  const at::Tensor freqs = float_freq_table(q, base, static_cast<double>(q), 1.0, x.device());
  p.freqs = reinterpret_cast<const FloatFreq*>(freqs.const_data_ptr<int64_t>());
  keep.push_back(freqs);
  return p;
}

at::Tensor sincos_2d_add_impl(Sincos2dRunner run, const at::Tensor& x, const at::Tensor& pos_h,
                              const at::Tensor& pos_w, double base, const std::optional<at::Tensor>& pos_t) {
  check_sincos_2d(x, pos_h, pos_w, base, pos_t);
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return y;
  std::vector<at::Tensor> keep;
  run(make_sincos_2d_params(x, y, pos_h, pos_w, base, pos_t, keep), x);
  return y;
}

}  // namespace detail

at::Tensor sincos_2d_add(const at::Tensor& x, const at::Tensor& pos_h, const at::Tensor& pos_w, double base,
                         const std::optional<at::Tensor>& pos_t) {
  return detail::Sincos2dAddOp::handle().call(x, pos_h, pos_w, base, pos_t);
}

at::Tensor sincos_2d_table(const at::Tensor& pos_h, const at::Tensor& pos_w, int64_t dim, double base,
                           std::optional<at::ScalarType> dtype, const std::optional<at::Tensor>& pos_t) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("posemb::sincos_2d_table", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymInt, double,
                                               std::optional<at::ScalarType>, const std::optional<at::Tensor>&)>();
  return op.call(pos_h, pos_w, c10::SymInt(dim), base, dtype, pos_t);
}

TORCH_LIBRARY_IMPL(posemb, Meta, m) {
  m.impl("sincos_2d_add", &detail::sincos_2d_add_meta);
}

TORCH_LIBRARY_IMPL(posemb, CompositeExplicitAutograd, m) {
  m.impl("sincos_2d_table", &detail::sincos_2d_table_composite);
}

}  // namespace posemb
