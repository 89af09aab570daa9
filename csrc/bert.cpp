// bert_embeddings and bert_embeddings_backward: argument checks, the
// backend-neutral part of the kernels, Meta (fake) kernels and the public
// C++ function.
#include <ATen/ATen.h>
#include <c10/core/SymBool.h>
#include <torch/library.h>

#include "bert_op.h"
#include "posemb/bert.h"
#include "positions.h"

namespace posemb {
namespace detail {
namespace {

// input_ids is (batch, seq): the positions' reference tensor.
constexpr XDims kIdsDims{/*seq=*/1, /*batch=*/0};

void check_table(const char* op, const char* name, const at::Tensor& table, const at::Tensor& word) {
  TORCH_CHECK(table.dim() == 2, "posemb.", op, ": ", name, " must be (rows, hidden), got shape ",
              table.sym_sizes());
  TORCH_CHECK(table.scalar_type() == word.scalar_type(), "posemb.", op, ": ", name,
              " must have word_weight's dtype (", word.scalar_type(), "), got ", table.scalar_type());
  TORCH_CHECK(table.device() == word.device(), "posemb.", op, ": ", name,
              " must be on word_weight's device (", word.device(), "), got ", table.device());
  TORCH_SYM_CHECK(table.sym_size(-1).sym_eq(word.sym_size(1)), "posemb.", op, ": ", name,
                  " must have hidden size ", word.sym_size(1), ", got shape ", table.sym_sizes());
}

void check_padding(const char* op, const char* name, std::optional<int64_t> idx, const at::Tensor& table) {
  if (!idx.has_value()) return;
  TORCH_SYM_CHECK(table.sym_size(0).sym_gt(*idx).sym_and(c10::SymBool(*idx >= 0)), "posemb.", op,
                  ": ", name, " must be in [0, ", table.sym_size(0), "), got ", *idx);
}

void check_bert(const char* op, const at::Tensor& ids, const at::Tensor& word,
                const at::Tensor& position, const at::Tensor& type, const at::Tensor& gamma,
                const at::Tensor* beta, const std::optional<at::Tensor>& positions,
                const std::optional<at::Tensor>& types, const c10::SymInt& offset,
                double dropout_p, const std::optional<at::Tensor>& seed,
                std::optional<int64_t> word_padding_idx,
                std::optional<int64_t> position_padding_idx) {
  TORCH_CHECK(is_index_dtype(ids.scalar_type()), "posemb.", op,
              ": input_ids must be an integer tensor, got ", ids.scalar_type());
  TORCH_CHECK(ids.dim() == 2, "posemb.", op, ": input_ids must be (batch, seq), got shape ",
              ids.sym_sizes());
  check_float_dtype(op, "word_weight", word);
  TORCH_CHECK(word.dim() == 2, "posemb.", op, ": word_weight must be (vocab, hidden), got shape ",
              word.sym_sizes());
  TORCH_CHECK(word.device() == ids.device(), "posemb.", op, ": word_weight must be on input_ids' ",
              "device (", ids.device(), "), got ", word.device());
  check_table(op, "position_weight", position, word);
  check_table(op, "type_weight", type, word);
  for (const at::Tensor* t : {&gamma, beta}) {
    if (t == nullptr) continue;
    const char* name = t == &gamma ? "ln_weight" : "ln_bias";
    TORCH_CHECK(t->dim() == 1 && t->scalar_type() == word.scalar_type() &&
                    t->device() == word.device(),
                "posemb.", op, ": ", name, " must be (hidden,) with word_weight's dtype and ",
                "device, got shape ", t->sym_sizes(), ", ", t->scalar_type(), ", ", t->device());
    TORCH_SYM_CHECK(t->sym_size(0).sym_eq(word.sym_size(1)), "posemb.", op, ": ", name,
                    " must be (hidden,) = (", word.sym_size(1), ",), got shape ", t->sym_sizes());
  }
  check_positions(op, ids, kIdsDims, positions, std::nullopt, offset, {"input_ids", "position_ids", "cache_length"});
  if (!positions.has_value()) {
    const c10::SymInt last = offset + ids.sym_size(1);
    TORCH_SYM_CHECK(offset.sym_ge(0).sym_and(last.sym_le(position.sym_size(0))), "posemb.", op,
                    ": the positions cache_length .. cache_length + seq - 1 = ", offset, " .. ", last - 1,
                    " must be in [0, max_position_embeddings=", position.sym_size(0), ")");
  }
  if (!types.has_value()) {
    TORCH_SYM_CHECK(type.sym_size(0).sym_ge(1), "posemb.", op, ": type_weight must have a row ",
                    "for type 0 (token_type_ids not given), got shape ", type.sym_sizes());
  } else {
    const at::Tensor& t = *types;
    TORCH_CHECK(is_index_dtype(t.scalar_type()) && t.device() == ids.device(), "posemb.", op,
                ": token_type_ids must be an integer tensor on input_ids' device, got ",
                t.scalar_type(), " on ", t.device());
    const bool shape_ok =
        (t.dim() == 1 && t.sym_size(0) == ids.sym_size(1)) ||
        (t.dim() == 2 && (t.sym_size(0) == ids.sym_size(0) || t.sym_size(0) == 1) &&
         (t.sym_size(1) == ids.sym_size(1) || t.sym_size(1) == 1));
    TORCH_CHECK(shape_ok, "posemb.", op, ": token_type_ids must be broadcastable to input_ids' ",
                "shape ", ids.sym_sizes(), ", got ", t.sym_sizes());
  }
  // 1 drops everything (zeros, as nn.Dropout(1.0)): no uniform in [0, 1) is kept.
  TORCH_CHECK(dropout_p >= 0.0 && dropout_p <= 1.0, "posemb.", op,
              ": dropout_p must be in [0, 1], got ", dropout_p);
  if (seed.has_value()) {
    // (The fake kernel sees every tensor on the meta device, the seed too;
    // a meta seed beside real ids would send the call to that kernel.)
    TORCH_CHECK(seed->scalar_type() == at::kLong && seed->numel() == 1 &&
                    (seed->device().is_cpu() || seed->device() == ids.device()),
                "posemb.", op, ": dropout_seed must be one int64 on the CPU or on input_ids' ",
                "device, got ",
                seed->scalar_type(), " of shape ", seed->sym_sizes(), " on ", seed->device());
  }
  check_padding(op, "word_padding_idx", word_padding_idx, word);
  check_padding(op, "position_padding_idx", position_padding_idx, position);
}

// The backward's own tensors: grad as the output, mean and rstd as the
// forward returned them (a direct call may pass anything).
void check_backward_tensors(const at::Tensor& grad, const at::Tensor& mean, const at::Tensor& rstd,
                            const at::Tensor& ids, const at::Tensor& word) {
  const char* op = "bert_embeddings_backward";
  TORCH_CHECK(grad.scalar_type() == word.scalar_type() && grad.device() == word.device(), "posemb.",
              op, ": grad must have word_weight's dtype and device (", word.scalar_type(), ", ",
              word.device(), "), got ", grad.scalar_type(), ", ", grad.device());
  TORCH_CHECK(grad.dim() == 3, "posemb.", op, ": grad must be (batch, seq, hidden), got shape ",
              grad.sym_sizes());
  TORCH_SYM_CHECK(grad.sym_size(0).sym_eq(ids.sym_size(0))
                      .sym_and(grad.sym_size(1).sym_eq(ids.sym_size(1)))
                      .sym_and(grad.sym_size(2).sym_eq(word.sym_size(1))),
                  "posemb.", op, ": grad must be (batch, seq, hidden) = (", ids.sym_size(0), ", ",
                  ids.sym_size(1), ", ", word.sym_size(1), "), got ", grad.sym_sizes());
  const auto stats = word.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  for (const at::Tensor* t : {&mean, &rstd}) {
    const char* name = t == &mean ? "mean" : "rstd";
    TORCH_CHECK(t->scalar_type() == stats && t->device() == word.device(), "posemb.", op, ": ", name,
                " must be ", stats, " on ", word.device(), " (as the forward returns it), got ",
                t->scalar_type(), " on ", t->device());
    TORCH_SYM_CHECK(t->sym_numel().sym_eq(ids.sym_numel()), "posemb.", op, ": ", name,
                    " must have one value per token (", ids.sym_numel(), "), got shape ",
                    t->sym_sizes());
  }
}

// (batch, seq) int64 view of optional ids broadcast to input_ids' shape.
at::Tensor broadcast_ids(const at::Tensor& t, const at::Tensor& ids) {
  const at::Tensor l = t.to(at::kLong);
  return (l.dim() == 1 ? l.unsqueeze(0) : l).expand(ids.sizes());
}

// Every id in range, checked with one host sync (none while a CUDA graph is
// captured: op.h, stream_is_capturing); the error names the culprit.
void check_index_values(const char* op, const at::Tensor& ids, const at::Tensor& word,
                        const std::optional<at::Tensor>& positions, const at::Tensor& position,
                        const std::optional<at::Tensor>& types, const at::Tensor& type) {
  if (ids.numel() == 0 || stream_is_capturing(ids)) return;
  struct Index {
    const char* name;
    at::Tensor values;
    int64_t rows;
  };
  std::vector<Index> all{{"input_ids", ids, word.size(0)}};
  if (positions.has_value()) all.push_back({"position_ids", *positions, position.size(0)});
  if (types.has_value()) all.push_back({"token_type_ids", *types, type.size(0)});
  at::Tensor bad = at::zeros({}, ids.options().dtype(at::kBool));
  for (const auto& i : all) bad = bad.logical_or((i.values < 0).logical_or(i.values >= i.rows).any());
  if (!bad.item<bool>()) return;
  for (const auto& i : all) {
    const auto [lo, hi] = at::aminmax(i.values);
    TORCH_CHECK(lo.item<int64_t>() >= 0 && hi.item<int64_t>() < i.rows, "posemb.", op, ": ",
                i.name, " must be in [0, ", i.rows, "), got values in [", lo.item<int64_t>(), ", ",
                hi.item<int64_t>(), "]");
  }
}

}  // namespace

BertParams make_bert_params(const at::Tensor& ids, const at::Tensor& word,
                            const at::Tensor& position, const at::Tensor& type,
                            const at::Tensor& gamma, const std::optional<at::Tensor>& positions,
                            const std::optional<at::Tensor>& types, int64_t offset,
                            double dropout_p, const std::optional<at::Tensor>& seed,
                            std::vector<at::Tensor>& keep) {
  auto rows = [&keep](const at::Tensor& t) {  // unit column stride for the kernels
    if (t.stride(1) == 1) return t;
    keep.push_back(t.contiguous());
    return keep.back();
  };
  BertParams p;
  p.batch = ids.size(0);
  p.seq = ids.size(1);
  p.dim = word.size(1);
  const at::Tensor id = as_index(ids, keep);
  p.ids = id.data_ptr();
  p.ids_int64 = id.scalar_type() == at::kLong;
  p.ids_stride_b = id.stride(0);
  p.ids_stride_t = id.stride(1);
  p.pos = make_position_params("bert_embeddings", ids, kIdsDims, positions, std::nullopt, offset, keep);
  if (types.has_value()) {
    at::Tensor t = as_index(*types, keep);
    t = (t.dim() == 1 ? t.unsqueeze(0) : t).expand(ids.sizes());
    p.types = t.data_ptr();
    p.types_int64 = t.scalar_type() == at::kLong;
    p.types_stride_b = t.stride(0);
    p.types_stride_t = t.stride(1);
  }
  const at::Tensor w = rows(word), pw = rows(position), tw = rows(type);
  p.word = w.data_ptr();
  p.position = pw.data_ptr();
  p.type = tw.data_ptr();
  p.word_stride = w.stride(0);
  p.position_stride = pw.stride(0);
  p.type_stride = tw.stride(0);
  p.word_rows = word.size(0);
  p.position_rows = position.size(0);
  p.type_rows = type.size(0);
  keep.push_back(gamma.contiguous());
  p.gamma = keep.back().data_ptr();
  p.dropout = dropout_p > 0.0 && seed.has_value();
  p.dropout_p = static_cast<float>(dropout_p);
  p.dropout_scale = 1.0 / (1.0 - dropout_p);
  p.dropout_keep_f32 = static_cast<float>(1.0 - dropout_p);
  if (p.dropout && seed->device().is_cpu()) {
    p.seed = static_cast<uint64_t>(seed->item<int64_t>());  // a host value: no sync
  } else if (p.dropout) {
    keep.push_back(seed->contiguous());
    p.seed_on_device = keep.back().data_ptr<int64_t>();
  }
  return p;
}

void set_bert_forward(BertParams& p, const at::Tensor& ln_bias, double eps, const at::Tensor& out,
                      const at::Tensor& mean, const at::Tensor& rstd,
                      std::vector<at::Tensor>& keep) {
  keep.push_back(ln_bias.contiguous());
  p.beta = keep.back().data_ptr();
  p.eps = eps;
  p.eps_f32 = static_cast<float>(eps);
  p.out = out.data_ptr();
  p.mean = mean.data_ptr();
  p.rstd = rstd.data_ptr();
}

void set_bert_backward(BertParams& p, const at::Tensor& grad, const at::Tensor& mean,
                       const at::Tensor& rstd, const at::Tensor& grad_x,
                       const at::Tensor& norm_partials, const at::Tensor& grad_gamma,
                       const at::Tensor& grad_beta, std::vector<at::Tensor>& keep) {
  keep.push_back(grad.contiguous());
  p.grad_out = keep.back().data_ptr();
  keep.push_back(mean.contiguous());
  p.mean = keep.back().data_ptr();
  keep.push_back(rstd.contiguous());
  p.rstd = keep.back().data_ptr();
  p.grad_x = grad_x.data_ptr();
  p.norm_partials = norm_partials.data_ptr();
  p.grad_gamma = grad_gamma.data_ptr();
  p.grad_beta = grad_beta.data_ptr();
}

BertOutputs bert_embeddings_impl(BertRunner run, const at::Tensor& input_ids,
                                 const at::Tensor& word_weight, const at::Tensor& position_weight,
                                 const at::Tensor& type_weight, const at::Tensor& ln_weight,
                                 const at::Tensor& ln_bias,
                                 const std::optional<at::Tensor>& positions,
                                 const std::optional<at::Tensor>& token_type_ids, int64_t offset,
                                 double eps, double dropout_p,
                                 const std::optional<at::Tensor>& dropout_seed,
                                 std::optional<int64_t> word_padding_idx,
                                 std::optional<int64_t> position_padding_idx) {
  const char* op = "bert_embeddings";
  check_bert(op, input_ids, word_weight, position_weight, type_weight, ln_weight, &ln_bias,
             positions, token_type_ids, offset, dropout_p, dropout_seed, word_padding_idx,
             position_padding_idx);
  TORCH_CHECK(eps > 0.0, "posemb.", op, ": eps must be positive, got ", eps);
  check_index_values(op, input_ids, word_weight, positions, position_weight, token_type_ids,
                     type_weight);
  const int64_t batch = input_ids.size(0), seq = input_ids.size(1), dim = word_weight.size(1);
  at::Tensor out = at::empty({batch, seq, dim}, word_weight.options());
  const auto stats = word_weight.options().dtype(acc_type(word_weight.scalar_type()));
  at::Tensor mean = at::empty({batch, seq}, stats), rstd = at::empty({batch, seq}, stats);
  if (out.numel() == 0) return {out, mean, rstd};
  std::vector<at::Tensor> keep;
  BertParams p = make_bert_params(input_ids, word_weight, position_weight, type_weight, ln_weight,
                                  positions, token_type_ids, offset, dropout_p, dropout_seed, keep);
  set_bert_forward(p, ln_bias, eps, out, mean, rstd, keep);
  run(p, word_weight);
  return {out, mean, rstd};
}

BertGrads bert_embeddings_backward_impl(
    BertRunner run, TableGradRunner run_table_grad, const at::Tensor& grad,
    const at::Tensor& input_ids, const at::Tensor& word_weight, const at::Tensor& position_weight,
    const at::Tensor& type_weight, const at::Tensor& ln_weight, const at::Tensor& mean,
    const at::Tensor& rstd, const std::optional<at::Tensor>& positions,
    const std::optional<at::Tensor>& token_type_ids, int64_t offset, double dropout_p,
    const std::optional<at::Tensor>& dropout_seed, std::optional<int64_t> word_padding_idx,
    std::optional<int64_t> position_padding_idx) {
  const char* op = "bert_embeddings_backward";
  check_bert(op, input_ids, word_weight, position_weight, type_weight, ln_weight, nullptr,
             positions, token_type_ids, offset, dropout_p, dropout_seed, word_padding_idx,
             position_padding_idx);
  check_backward_tensors(grad, mean, rstd, input_ids, word_weight);
  // The kernels gather the rows again: the same one-sync range check as forward.
  check_index_values(op, input_ids, word_weight, positions, position_weight, token_type_ids,
                     type_weight);
  const int64_t batch = input_ids.size(0), seq = input_ids.size(1), dim = word_weight.size(1);
  const auto acc = word_weight.options().dtype(acc_type(word_weight.scalar_type()));
  at::Tensor grad_word = at::empty_like(word_weight, at::MemoryFormat::Contiguous);
  at::Tensor grad_position = at::empty_like(position_weight, at::MemoryFormat::Contiguous);
  at::Tensor grad_type = at::empty_like(type_weight, at::MemoryFormat::Contiguous);
  at::Tensor grad_gamma = at::empty({dim}, word_weight.options());
  at::Tensor grad_beta = at::empty({dim}, word_weight.options());
  if (batch * seq == 0 || dim == 0) {
    for (at::Tensor* t : {&grad_word, &grad_position, &grad_type, &grad_gamma, &grad_beta}) t->zero_();
    return {grad_word, grad_position, grad_type, grad_gamma, grad_beta};
  }
  std::vector<at::Tensor> keep;
  BertParams p = make_bert_params(input_ids, word_weight, position_weight, type_weight, ln_weight,
                                  positions, token_type_ids, offset, dropout_p, dropout_seed, keep);
  at::Tensor grad_x = at::empty({batch, seq, dim}, acc);
  p.row_chunks = bert_row_chunks(batch * seq);
  const at::Tensor partials = at::empty({2, p.row_chunks, dim}, acc);
  set_bert_backward(p, grad, mean, rstd, grad_x, partials, grad_gamma, grad_beta, keep);
  run(p, word_weight);

  // Each table's gradient from grad_x (batch, seq, dim), the table gradient
  // that learned_add uses too.
  const at::Tensor all_positions =
      resolve_positions("bert_embeddings_backward", input_ids, kIdsDims, positions, std::nullopt, offset);
  const at::Tensor all_types = token_type_ids.has_value()
                                   ? broadcast_ids(*token_type_ids, input_ids)
                                   : at::zeros({batch, seq}, input_ids.options().dtype(at::kLong));
  const XDims grad_x_dims{/*seq=*/1, /*batch=*/0};
  table_grad(run_table_grad, grad_x, grad_x_dims, input_ids, grad_word, word_padding_idx);
  table_grad(run_table_grad, grad_x, grad_x_dims, all_positions, grad_position,
             position_padding_idx,
             positions.has_value() ? std::nullopt : std::optional<int64_t>(offset));
  table_grad(run_table_grad, grad_x, grad_x_dims, all_types, grad_type, std::nullopt);
  return {grad_word, grad_position, grad_type, grad_gamma, grad_beta};
}

namespace {

BertOutputs bert_embeddings_meta(const at::Tensor& input_ids, const at::Tensor& word_weight,
                                 const at::Tensor& position_weight, const at::Tensor& type_weight,
                                 const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                                 const std::optional<at::Tensor>& positions,
                                 const std::optional<at::Tensor>& token_type_ids,
                                 c10::SymInt offset, double eps, double dropout_p,
                                 const std::optional<at::Tensor>& dropout_seed,
                                 std::optional<int64_t> word_padding_idx,
                                 std::optional<int64_t> position_padding_idx) {
  check_bert("bert_embeddings", input_ids, word_weight, position_weight, type_weight, ln_weight,
             &ln_bias, positions, token_type_ids, offset, dropout_p, dropout_seed,
             word_padding_idx, position_padding_idx);
  TORCH_CHECK(eps > 0.0, "posemb.bert_embeddings: eps must be positive, got ", eps);
  const auto b = input_ids.sym_size(0), s = input_ids.sym_size(1), d = word_weight.sym_size(1);
  const auto stats = word_weight.options().dtype(acc_type(word_weight.scalar_type()));
  return {at::empty_symint({b, s, d}, word_weight.options()), at::empty_symint({b, s}, stats),
          at::empty_symint({b, s}, stats)};
}

BertGrads bert_embeddings_backward_meta(
    const at::Tensor& grad, const at::Tensor& input_ids, const at::Tensor& word_weight,
    const at::Tensor& position_weight, const at::Tensor& type_weight, const at::Tensor& ln_weight,
    const at::Tensor& mean, const at::Tensor& rstd, const std::optional<at::Tensor>& positions,
    const std::optional<at::Tensor>& token_type_ids, c10::SymInt offset, double dropout_p,
    const std::optional<at::Tensor>& dropout_seed, std::optional<int64_t> word_padding_idx,
    std::optional<int64_t> position_padding_idx) {
  check_bert("bert_embeddings_backward", input_ids, word_weight, position_weight, type_weight,
             ln_weight, nullptr, positions, token_type_ids, offset, dropout_p, dropout_seed,
             word_padding_idx, position_padding_idx);
  check_backward_tensors(grad, mean, rstd, input_ids, word_weight);
  auto like = [](const at::Tensor& t) { return at::empty_symint(t.sym_sizes(), t.options()); };
  return {like(word_weight), like(position_weight), like(type_weight), like(ln_weight),
          like(ln_weight)};
}

}  // namespace
}  // namespace detail

at::Tensor bert_embeddings(const at::Tensor& input_ids, const at::Tensor& word_weight,
                           const at::Tensor& position_weight, const at::Tensor& type_weight,
                           const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                           const std::optional<at::Tensor>& positions,
                           const std::optional<at::Tensor>& token_type_ids, int64_t offset,
                           double eps, double dropout_p,
                           const std::optional<at::Tensor>& dropout_seed,
                           std::optional<int64_t> word_padding_idx,
                           std::optional<int64_t> position_padding_idx) {
  return std::get<0>(detail::BertEmbeddingsOp::handle().call(
      input_ids, word_weight, position_weight, type_weight, ln_weight, ln_bias, positions,
      token_type_ids, c10::SymInt(offset), eps, dropout_p, dropout_seed, word_padding_idx,
      position_padding_idx));
}

TORCH_LIBRARY_IMPL(posemb, Meta, m) {
  m.impl("bert_embeddings", &detail::bert_embeddings_meta);
  m.impl("bert_embeddings_backward", &detail::bert_embeddings_backward_meta);
}

}  // namespace posemb
