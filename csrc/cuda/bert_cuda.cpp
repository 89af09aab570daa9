// CUDA registration of bert_embeddings and its backward: device guard,
// current stream, launch checks. The kernels are in kernels/bert.cu and
// kernels/table_grad.cu (the tables' gradients).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bert_op.h"
#include "cuda/device.h"

namespace posemb::detail {
namespace {

void run_forward(const BertParams& p, const at::Tensor& table) {
  const c10::cuda::CUDAGuard guard(table.device());
  C10_CUDA_CHECK(launch_bert_forward(p, dtype_tag(table.scalar_type()), num_sms(table),
                                     c10::cuda::getCurrentCUDAStream()));
}

void run_backward(const BertParams& p, const at::Tensor& table) {
  const c10::cuda::CUDAGuard guard(table.device());
  C10_CUDA_CHECK(launch_bert_backward(p, dtype_tag(table.scalar_type()), num_sms(table),
                                      c10::cuda::getCurrentCUDAStream()));
}

void run_table_grad(const TableGradParams& p, const at::Tensor& grad_weight) {
  const c10::cuda::CUDAGuard guard(grad_weight.device());
  C10_CUDA_CHECK(launch_table_grad(p, dtype_tag(grad_weight.scalar_type()), num_sms(grad_weight),
                                   c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, CUDA, m) {
  m.impl("bert_embeddings", &bert_embeddings_backend<run_forward>);
  m.impl("bert_embeddings_backward", &bert_embeddings_backward_backend<run_backward, run_table_grad>);
}

}  // namespace posemb::detail
