// Internal: checks and the backend-neutral part of bert_embeddings and its
// backward; CPU, CUDA and Meta registrations share them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>

#include <optional>
#include <tuple>

#include "kernels/bert.cuh"
#include "table_grad.h"

namespace posemb::detail {

/// Runs the forward (out, mean, rstd) or the backward up to the tables
/// (grad_x, gamma, beta) on one backend; `table` carries dtype and device.
using BertRunner = void (*)(const BertParams& params, const at::Tensor& table);

using BertOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using BertGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

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
