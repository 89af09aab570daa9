// sincos_2d_add and sincos_2d_table: argument checks, the backend-neutral
// part of the kernel, the Meta (fake) kernel, the composite table and the
// public C++ functions.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "float_turns.h"
#include "positions.h"
#include "posemb/sincos_2d.h"
#include "sincos_2d_op.h"

namespace posemb {
namespace detail {
namespace {

constexpr const char* kOp = "sincos_2d_add";

void check_sincos_2d(const at::Tensor& x, const at::Tensor& pos_h, const at::Tensor& pos_w, double base) {
  check_float_dtype(kOp, "x", x);
  TORCH_CHECK(x.dim() == 3, "posemb.", kOp, ": x must be (batch, H*W, dim), got shape ", x.sym_sizes());
  for (const auto& [name, pos] : {std::pair{"pos_h", &pos_h}, std::pair{"pos_w", &pos_w}}) {
    TORCH_CHECK(pos->dim() == 1 && pos->scalar_type() == at::kFloat, "posemb.", kOp, ": ", name,
                " must be a 1-D float32 tensor, got ", pos->scalar_type(), " of shape ", pos->sym_sizes());
    TORCH_CHECK(pos->device() == x.device(), "posemb.", kOp, ": ", name, " must be on x's device (", x.device(),
                "), got ", pos->device());
  }
  TORCH_SYM_CHECK(x.sym_size(1).sym_eq(pos_h.sym_size(0) * pos_w.sym_size(0)), "posemb.", kOp,
                  ": x must have H*W = ", pos_h.sym_size(0) * pos_w.sym_size(0), " tokens (pos_h and pos_w have ",
                  pos_h.sym_size(0), " and ", pos_w.sym_size(0), "), got ", x.sym_size(1));
  // The embedding dim is a model constant, so specialising on it costs nothing.
  const int64_t dim = x.sym_size(2).guard_int(__FILE__, __LINE__);
  TORCH_CHECK(dim % 4 == 0, "posemb.", kOp, ": x's last dim must be a multiple of 4 (sin and cos of two axes), got ",
              dim);
  TORCH_CHECK(std::isfinite(base) && base > 0, "posemb.", kOp, ": base must be a positive finite number, got ", base);
}

at::Tensor sincos_2d_add_meta(const at::Tensor& x, const at::Tensor& pos_h, const at::Tensor& pos_w, double base) {
  check_sincos_2d(x, pos_h, pos_w, base);
  return at::empty_symint(x.sym_sizes(), x.options());
}

at::Tensor sincos_2d_table_composite(const at::Tensor& pos_h, const at::Tensor& pos_w, c10::SymInt dim, double base,
                                     std::optional<at::ScalarType> dtype) {
  TORCH_SYM_CHECK(dim.sym_ge(0), "posemb.sincos_2d_table: dim must be non-negative, got ", dim);
  const at::ScalarType type = dtype.value_or(at::kFloat);
  TORCH_CHECK(type == at::kFloat || type == at::kDouble || type == at::kHalf || type == at::kBFloat16,
              "posemb.sincos_2d_table: dtype must be float32, float64, float16 or bfloat16, got ", type);
  const at::Tensor zeros =
      at::zeros_symint({1, pos_h.sym_size(0) * pos_w.sym_size(0), std::move(dim)}, pos_h.options().dtype(type));
  // 0 + PE is PE exactly.
  return Sincos2dAddOp::handle().call(zeros, pos_h, pos_w, base).squeeze(0);
}

}  // namespace

at::Tensor sincos_2d_add_impl(Sincos2dRunner run, const at::Tensor& x, const at::Tensor& pos_h,
                              const at::Tensor& pos_w, double base) {
  check_sincos_2d(x, pos_h, pos_w, base);
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return y;
  const at::Tensor h = pos_h.contiguous(), w = pos_w.contiguous();
  const int64_t dim = x.size(2);
  // ω_k = base^(-k / (dim/4)), as diffusers' and MAE's 1-D halves.
  const at::Tensor freqs = float_freq_table(dim / 4, base, static_cast<double>(dim / 4), 1.0, x.device());
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
  p.freqs = reinterpret_cast<const FloatFreq*>(freqs.const_data_ptr<int64_t>());
  run(p, x);
  return y;
}

}  // namespace detail

at::Tensor sincos_2d_add(const at::Tensor& x, const at::Tensor& pos_h, const at::Tensor& pos_w, double base) {
  return detail::Sincos2dAddOp::handle().call(x, pos_h, pos_w, base);
}

at::Tensor sincos_2d_table(const at::Tensor& pos_h, const at::Tensor& pos_w, int64_t dim, double base,
                           std::optional<at::ScalarType> dtype) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("posemb::sincos_2d_table", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymInt, double,
                                               std::optional<at::ScalarType>)>();
  return op.call(pos_h, pos_w, c10::SymInt(dim), base, dtype);
}

TORCH_LIBRARY_IMPL(posemb, Meta, m) {
  m.impl("sincos_2d_add", &detail::sincos_2d_add_meta);
}

TORCH_LIBRARY_IMPL(posemb, CompositeExplicitAutograd, m) {
  m.impl("sincos_2d_table", &detail::sincos_2d_table_composite);
}

}  // namespace posemb
