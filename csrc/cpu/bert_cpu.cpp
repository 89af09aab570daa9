// CPU kernels of bert_embeddings and its backward: the row passes of
// cuda/bert.cuh over all channels of a row, rows split across threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "bert_kernels.h"
#include "cpu/scalar_ops.h"

namespace posemb::detail {
namespace {

int64_t row_grain(int64_t dim) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, dim)); }

template <typename T>
void forward_typed(const BertParams& p) {
  using A = acc_t<T>;
  at::parallel_for(0, p.batch * p.seq, row_grain(p.dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const A mean = bert_row_sum<T>(p, row, 0, 1) / A(p.dim);
      const A var = bert_row_sq<T>(p, row, 0, 1, mean) / A(p.dim);
      const A rstd = A(1) / std::sqrt(var + A(p.eps));
      bert_row_write<T>(p, row, 0, 1, mean, rstd);
      static_cast<A*>(p.mean)[row] = mean;
      static_cast<A*>(p.rstd)[row] = rstd;
    }
  });
}

template <typename T>
void backward_typed(const BertParams& p) {
  using A = acc_t<T>;
  at::parallel_for(0, p.batch * p.seq, row_grain(p.dim), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      A s1, s2;
      bert_row_grad_sums<T>(p, row, 0, 1, &s1, &s2);
      bert_row_grad_write<T>(p, row, 0, 1, s1, s2);
    }
  });
  at::parallel_for(0, p.row_chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk)
      for (int64_t d = 0; d < p.dim; ++d) bert_norm_grad_chunk<T>(p, chunk, d);
  });
  for (int64_t d = 0; d < p.dim; ++d) bert_norm_grad_final<T>(p, d);
}

template <typename T>
void table_grad_typed(const LearnedGradParams& p) {
  at::parallel_for(0, p.num_embeddings, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, p.dim)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t n = begin; n < end; ++n) learned_grad_row<acc_t<T>, T>(p, n, 0, 1);
                   });
}

void run_forward(const BertParams& p, const at::Tensor& table) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, table.scalar_type(),
                                  "bert_embeddings_cpu", [&] { forward_typed<scalar_t>(p); });
}

void run_backward(const BertParams& p, const at::Tensor& table) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, table.scalar_type(),
                                  "bert_embeddings_backward_cpu", [&] { backward_typed<scalar_t>(p); });
}

void run_table_grad(const LearnedGradParams& p, const at::Tensor& table) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, table.scalar_type(),
                                  "bert_embeddings_table_grad_cpu", [&] { table_grad_typed<scalar_t>(p); });
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CPU, m) {
  m.impl("bert_embeddings", &bert_embeddings_kernel<run_forward>);
  m.impl("bert_embeddings_backward", &bert_embeddings_backward_kernel<run_backward, run_table_grad>);
}

}  // namespace posemb::detail
