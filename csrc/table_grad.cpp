#include "table_grad.h"

#include <ATen/ATen.h>

#include <tuple>

#include "op.h"

namespace posemb::detail {

TableGradParams make_table_grad_params(const at::Tensor& grad, const XDims& dims,
                                       const at::Tensor& rows_of_tokens,
                                       const at::Tensor& grad_weight,
                                       std::optional<int64_t> padding_idx,
                                       std::vector<at::Tensor>& keep,
                                       std::optional<int64_t> arange_offset,
                                       std::optional<bool> gpu_indices) {
  const BSDView gv = bsd_view(grad, dims);
  at::Tensor sorted, order;
  if (arange_offset.has_value()) {
    // Row offset + t is read by tokens (b, t), b = 0 .. batch - 1: the stable
    // sort's order (ties by token index b * seq + t), without the sort (tens
    // of microseconds on the CPU for a few thousand tokens).
    const auto index = at::TensorOptions().dtype(at::kLong).device(grad.device());
    const at::Tensor t = at::arange(gv.seq, index).unsqueeze(1);
    sorted = (t + *arange_offset).expand({gv.seq, gv.batch}).reshape({-1});
    order = (t + at::arange(gv.batch, index).mul_(gv.seq)).reshape({-1});
  } else {
    const at::Tensor tokens = rows_of_tokens.to(at::kLong).reshape({-1}).contiguous();
    std::tie(sorted, order) = at::sort(tokens, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  }
  TableGradParams p;
  p.grad = grad.data_ptr();
  p.grad_in_acc_type = grad.scalar_type() != grad_weight.scalar_type();
  p.batch = gv.batch;
  p.seq = gv.seq;
  p.dim = gv.dim;
  p.grad_rows = gv.rows;
  p.sorted_rows = sorted.data_ptr<int64_t>();
  p.order = order.data_ptr<int64_t>();
  p.num_tokens = sorted.numel();
  p.grad_weight = grad_weight.data_ptr();
  p.num_embeddings = grad_weight.size(0);
  p.has_padding_idx = padding_idx.has_value();
  p.padding_idx = padding_idx.value_or(0);
  const auto acc = grad_weight.options().dtype(acc_type(grad_weight.scalar_type()));
  keep.push_back(at::empty({table_grad_chunks(p), 2, p.dim}, acc));
  p.partials = keep.back().data_ptr();
  if (gpu_indices.value_or(!grad.device().is_cpu()) && p.num_tokens > 0) {
    // Device ops, no host sync: each sorted token's grad row offset, and
    // where each row's tokens start (searchsorted of 0 .. rows).
    keep.push_back(order.div(p.seq, "trunc") * p.grad_rows.stride_b +
                   order.remainder(p.seq) * p.grad_rows.stride_t);
    p.grad_offsets = keep.back().data_ptr<int64_t>();
    keep.push_back(at::searchsorted(sorted, at::arange(p.num_embeddings + 1, sorted.options())));
    p.row_starts = keep.back().data_ptr<int64_t>();
  }
  keep.push_back(std::move(sorted));
  keep.push_back(std::move(order));
  return p;
}

void table_grad(TableGradRunner run, const at::Tensor& grad, const XDims& dims,
                const at::Tensor& rows_of_tokens, const at::Tensor& grad_weight,
                std::optional<int64_t> padding_idx, std::optional<int64_t> arange_offset) {
  std::vector<at::Tensor> keep;
  run(make_table_grad_params(grad, dims, rows_of_tokens, grad_weight, padding_idx, keep,
                             arange_offset),
      grad_weight);
}

}  // namespace posemb::detail
