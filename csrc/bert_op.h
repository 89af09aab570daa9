// Internal: the op glue of bert_embeddings and its backward, shared by their
// CPU, CUDA, Meta and autograd registrations and the public C++ function:
// the typed op handles, the kernel params and the backend adapters.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>

#include <optional>
#include <tuple>
#include <vector>

#include "kernels/bert.cuh"
#include "op.h"
#include "table_grad.h"

namespace posemb::detail {

// ---------------------------------------------------------------- the ops

using BertOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using BertGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

using BertEmbeddingsOp =
    Op<"posemb::bert_embeddings",
       BertOutputs(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                   const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                   const std::optional<at::Tensor>&, c10::SymInt, double, double,
                   const std::optional<at::Tensor>&, std::optional<int64_t>,
                   std::optional<int64_t>)>;
using BertEmbeddingsBackwardOp =
    Op<"posemb::bert_embeddings_backward",
       BertGrads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                 const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                 const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, c10::SymInt,
                 double, const std::optional<at::Tensor>&, std::optional<int64_t>,
                 std::optional<int64_t>)>;

// ------------------------------------------------------------------ params

/// The kernel parameters forward and backward share, for checked real
/// tensors: ids (batch, seq), the three tables, ln_weight, the positions
/// (offset + t unless given), the token types (0 unless given) and dropout.
/// Copies (widened indices, tables made unit-stride) are kept in `keep`.
BertParams make_bert_params(const at::Tensor& ids, const at::Tensor& word,
                            const at::Tensor& position, const at::Tensor& type,
                            const at::Tensor& gamma, const std::optional<at::Tensor>& positions,
                            const std::optional<at::Tensor>& types, int64_t offset,
                            double dropout_p, const std::optional<at::Tensor>& seed,
                            std::vector<at::Tensor>& keep);

/// The forward's own fields: ln_bias, eps, and the outputs out (batch, seq,
/// hidden), mean and rstd (batch, seq).
void set_bert_forward(BertParams& p, const at::Tensor& ln_bias, double eps, const at::Tensor& out,
                      const at::Tensor& mean, const at::Tensor& rstd,
                      std::vector<at::Tensor>& keep);

/// The backward's own fields: grad and the forward's mean and rstd, read;
/// grad_x, the LayerNorm partials [2, p.row_chunks, hidden], grad_gamma and
/// grad_beta, written.
void set_bert_backward(BertParams& p, const at::Tensor& grad, const at::Tensor& mean,
                       const at::Tensor& rstd, const at::Tensor& grad_x,
                       const at::Tensor& norm_partials, const at::Tensor& grad_gamma,
                       const at::Tensor& grad_beta, std::vector<at::Tensor>& keep);

// ---------------------------------------------------------------- backends

/// Runs the forward (out, mean, rstd) or the backward up to the tables
/// (grad_x, gamma, beta) on one backend; `table` carries dtype and device.
using BertRunner = void (*)(const BertParams& params, const at::Tensor& table);

BertOutputs bert_embeddings_impl(BertRunner run, const at::Tensor& input_ids,
                                 const at::Tensor& word_weight, const at::Tensor& position_weight,
                                 const at::Tensor& type_weight, const at::Tensor& ln_weight,
                                 const at::Tensor& ln_bias,
                                 const std::optional<at::Tensor>& positions,
                                 const std::optional<at::Tensor>& token_type_ids, int64_t offset,
                                 double eps, double dropout_p,
                                 const std::optional<at::Tensor>& dropout_seed,
                                 std::optional<int64_t> word_padding_idx,
                                 std::optional<int64_t> position_padding_idx);

BertGrads bert_embeddings_backward_impl(
    BertRunner run, TableGradRunner run_table_grad, const at::Tensor& grad,
    const at::Tensor& input_ids, const at::Tensor& word_weight, const at::Tensor& position_weight,
    const at::Tensor& type_weight, const at::Tensor& ln_weight, const at::Tensor& mean,
    const at::Tensor& rstd, const std::optional<at::Tensor>& positions,
    const std::optional<at::Tensor>& token_type_ids, int64_t offset, double dropout_p,
    const std::optional<at::Tensor>& dropout_seed, std::optional<int64_t> word_padding_idx,
    std::optional<int64_t> position_padding_idx);

/// The registered kernels: the ops' signatures, a backend's runners bound.
template <BertRunner run>
BertOutputs bert_embeddings_backend(const at::Tensor& input_ids, const at::Tensor& word_weight,
                                    const at::Tensor& position_weight, const at::Tensor& type_weight,
                                    const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                                    const std::optional<at::Tensor>& positions,
                                    const std::optional<at::Tensor>& token_type_ids,
                                    c10::SymInt offset, double eps, double dropout_p,
                                    const std::optional<at::Tensor>& dropout_seed,
                                    std::optional<int64_t> word_padding_idx,
                                    std::optional<int64_t> position_padding_idx) {
  return bert_embeddings_impl(run, input_ids, word_weight, position_weight, type_weight, ln_weight,
                              ln_bias, positions, token_type_ids, offset.expect_int(), eps,
                              dropout_p, dropout_seed, word_padding_idx, position_padding_idx);
}

template <BertRunner run, TableGradRunner run_table_grad>
BertGrads bert_embeddings_backward_backend(
    const at::Tensor& grad, const at::Tensor& input_ids, const at::Tensor& word_weight,
    const at::Tensor& position_weight, const at::Tensor& type_weight, const at::Tensor& ln_weight,
    const at::Tensor& mean, const at::Tensor& rstd, const std::optional<at::Tensor>& positions,
    const std::optional<at::Tensor>& token_type_ids, c10::SymInt offset, double dropout_p,
    const std::optional<at::Tensor>& dropout_seed, std::optional<int64_t> word_padding_idx,
    std::optional<int64_t> position_padding_idx) {
  return bert_embeddings_backward_impl(run, run_table_grad, grad, input_ids, word_weight,
                                       position_weight, type_weight, ln_weight, mean, rstd,
                                       positions, token_type_ids, offset.expect_int(), dropout_p,
                                       dropout_seed, word_padding_idx, position_padding_idx);
}

}  // namespace posemb::detail
