// CUDA registration of bert_embeddings and its backward: the launchers of
// kernels/bert.cu and kernels/table_grad.cu (the tables' gradients) through
// run_cuda (device guard, current stream, launch check).
#include <torch/library.h>

#include "bert_op.h"
#include "cuda/device.h"

namespace posemb::detail {

TORCH_LIBRARY_IMPL(posemb, CUDA, m) {
  m.impl("bert_embeddings", &bert_embeddings_backend<run_cuda<BertParams, launch_bert_forward>>);
  m.impl("bert_embeddings_backward",
         &bert_embeddings_backward_backend<run_cuda<BertParams, launch_bert_backward>,
                                           run_cuda<TableGradParams, launch_table_grad>>);
}

}  // namespace posemb::detail
