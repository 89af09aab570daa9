// learned_add and learned_add_backward: argument checks, the backend-neutral
// part of the kernels, Meta (fake) kernels and the public C++ functions.
#include <ATen/ATen.h>
#include <c10/core/SymBool.h>
#include <torch/library.h>

#include "learned_op.h"
#include "posemb/learned.h"
#include "op.h"
#include "positions.h"

namespace posemb {
namespace detail {

namespace {

// Positions offset .. offset + seq - 1 must all be rows of the table (checked
// on the host values, real or fake).
void check_offset_in_table(const char* op, const c10::SymInt& offset, const c10::SymInt& seq,
                           const c10::SymInt& num_embeddings) {
  const c10::SymInt last = offset + seq;
  TORCH_SYM_CHECK(offset.sym_ge(0).sym_and(last.sym_le(num_embeddings)), "posemb.", op,
                  ": positions offset .. offset + seq - 1 = ", offset, " .. ", last - 1,
                  " must be in [0, num_embeddings=", num_embeddings, ")");
}

}  // namespace

void check_learned_add(const char* op, const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& positions,
                       const std::optional<at::Tensor>& offsets, const c10::SymInt& offset,
                       int64_t seq_dim, std::optional<int64_t> padding_idx) {
  check_float_dtype(op, "x", x);
  const auto st = x.scalar_type();
  const XDims dims = x_dims(op, x, seq_dim);
  TORCH_CHECK(weight.dim() == 2, "posemb.", op, ": weight must be (num_embeddings, dim), got shape ",
              weight.sym_sizes());
  TORCH_CHECK(weight.scalar_type() == st, "posemb.", op, ": weight must have x's dtype (", st,
              "), got ", weight.scalar_type());
  TORCH_CHECK(weight.device() == x.device(), "posemb.", op, ": weight must be on x's device (",
              x.device(), "), got ", weight.device());
  TORCH_SYM_CHECK(weight.sym_size(1).sym_eq(x.sym_size(-1)), "posemb.", op,
                  ": weight must have x's embedding dim ", x.sym_size(-1), ", got shape ",
                  weight.sym_sizes());
  const c10::SymInt n = weight.sym_size(0);
  if (padding_idx.has_value()) {
    TORCH_SYM_CHECK(n.sym_gt(*padding_idx).sym_and(c10::SymBool(*padding_idx >= 0)), "posemb.",
                    op, ": padding_idx must be in [0, num_embeddings=", n, "), got ", *padding_idx);
  }
  check_positions(op, x, dims, positions, offsets, offset);
  if (!positions.has_value() && !offsets.has_value()) {
    check_offset_in_table(op, offset, x.sym_size(dims.seq), n);
  }
}

void check_learned_add_backward(const at::Tensor& grad, const std::optional<at::Tensor>& positions,
                                const std::optional<at::Tensor>& offsets,
                                const c10::SymInt& offset, int64_t seq_dim,
                                const c10::SymInt& num_embeddings,
                                std::optional<int64_t> padding_idx) {
  const char* op = "learned_add_backward";
  check_float_dtype(op, "grad", grad);
  const XDims dims = x_dims(op, grad, seq_dim);
  check_positions(op, grad, dims, positions, offsets, offset);
  TORCH_SYM_CHECK(num_embeddings.sym_ge(0), "posemb.", op,
                  ": num_embeddings must be non-negative, got ", num_embeddings);
  if (padding_idx.has_value()) {
    TORCH_SYM_CHECK(num_embeddings.sym_gt(*padding_idx).sym_and(c10::SymBool(*padding_idx >= 0)), "posemb.", op,
                    ": padding_idx must be in [0, num_embeddings=", num_embeddings, "), got ", *padding_idx);
  }
  if (!positions.has_value() && !offsets.has_value()) {
    check_offset_in_table(op, offset, grad.sym_size(dims.seq), num_embeddings);
  }
}

namespace {

// The values of tensor positions can only be checked on real data: one
// min/max reduction and one host sync on CUDA, none while a CUDA graph is
// captured (op.h: stream_is_capturing).
void check_position_values(const char* op, const at::Tensor& resolved, int64_t num_embeddings) {
  if (resolved.numel() == 0 || stream_is_capturing(resolved)) return;
  const auto [lo, hi] = at::aminmax(resolved);
  const at::Tensor range = at::stack({lo, hi}).to(at::kCPU, at::kLong);
  const int64_t min = range[0].item<int64_t>(), max = range[1].item<int64_t>();
  TORCH_CHECK(min >= 0 && max < num_embeddings, "posemb.", op,
              ": positions must be in [0, num_embeddings=", num_embeddings, "), got values in [",
              min, ", ", max, "]");
}

}  // namespace

LearnedParams make_learned_params(const at::Tensor& x, const at::Tensor& y,
                                  const at::Tensor& weight,
                                  const std::optional<at::Tensor>& positions,
                                  const std::optional<at::Tensor>& offsets, int64_t offset,
                                  int64_t seq_dim, std::vector<at::Tensor>& keep) {
  const XDims dims = x_dims("learned_add", x, seq_dim);
  const BSDView xv = bsd_view(x, dims);
  LearnedParams p;
  p.x = x.data_ptr();
  p.y = y.data_ptr();
  p.weight = weight.data_ptr();
  p.batch = xv.batch;
  p.seq = xv.seq;
  p.dim = xv.dim;
  p.num_embeddings = weight.size(0);
  p.x_rows = xv.rows;
  p.y_rows = bsd_view(y, dims).rows;
  p.w_stride_n = weight.stride(0);
  p.w_stride_d = weight.stride(1);
  p.pos = make_position_params("learned_add", x, dims, positions, offsets, offset, keep);
  return p;
}

at::Tensor learned_add_impl(LearnedAddRunner run, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& positions,
                            const std::optional<at::Tensor>& offsets, int64_t offset,
                            int64_t seq_dim, std::optional<int64_t> padding_idx) {
  check_learned_add("learned_add", x, weight, positions, offsets, offset, seq_dim, padding_idx);
  const XDims dims = x_dims("learned_add", x, seq_dim);
  if (positions.has_value() || offsets.has_value()) {
    check_position_values("learned_add", resolve_positions("learned_add", x, dims, positions, offsets, offset),
                          weight.size(0));
  }
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return y;
  std::vector<at::Tensor> keep;
  run(make_learned_params(x, y, weight, positions, offsets, offset, seq_dim, keep), x);
  return y;
}

at::Tensor learned_add_backward_impl(TableGradRunner run, const at::Tensor& grad,
                                     const std::optional<at::Tensor>& positions,
                                     const std::optional<at::Tensor>& offsets, int64_t offset,
                                     int64_t seq_dim, int64_t num_embeddings,
                                     std::optional<int64_t> padding_idx) {
  check_learned_add_backward(grad, positions, offsets, offset, seq_dim, num_embeddings,
                             padding_idx);
  const XDims dims = x_dims("learned_add_backward", grad, seq_dim);
  at::Tensor grad_weight = at::empty({num_embeddings, grad.size(-1)}, grad.options());
  if (grad_weight.numel() == 0) return grad_weight;
  // A position outside the table would have its gradient dropped: an error.
  const at::Tensor resolved = resolve_positions("learned_add_backward", grad, dims, positions, offsets, offset);
  if (positions.has_value() || offsets.has_value()) {
    check_position_values("learned_add_backward", resolved, num_embeddings);
  }
  const bool implicit = !positions.has_value() && !offsets.has_value();
  table_grad(run, grad, dims, resolved, grad_weight, padding_idx,
             implicit ? std::optional<int64_t>(offset) : std::nullopt);
  return grad_weight;
}

namespace {

at::Tensor learned_add_meta(const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& positions,
                            const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                            int64_t seq_dim, std::optional<int64_t> padding_idx) {
  check_learned_add("learned_add", x, weight, positions, offsets, offset, seq_dim, padding_idx);
  return at::empty_symint(x.sym_sizes(), x.options());
}

at::Tensor learned_add_backward_meta(const at::Tensor& grad,
                                     const std::optional<at::Tensor>& positions,
                                     const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                                     int64_t seq_dim, c10::SymInt num_embeddings,
                                     std::optional<int64_t> padding_idx) {
  check_learned_add_backward(grad, positions, offsets, offset, seq_dim, num_embeddings,
                             padding_idx);
  return at::empty_symint({num_embeddings, grad.sym_size(-1)}, grad.options());
}

}  // namespace
}  // namespace detail

at::Tensor learned_add(const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& positions,
                       const std::optional<at::Tensor>& offsets, int64_t offset, int64_t seq_dim,
                       std::optional<int64_t> padding_idx) {
  return detail::LearnedAddOp::handle().call(x, weight, positions, offsets, c10::SymInt(offset),
                                             seq_dim, padding_idx);
}

TORCH_LIBRARY_IMPL(posemb, Meta, m) {
  m.impl("learned_add", &detail::learned_add_meta);
  m.impl("learned_add_backward", &detail::learned_add_backward_meta);
}

}  // namespace posemb
