// rotary, rotary_ and rotary_backward: argument checks, the backend-neutral
// part of the kernels, Meta (fake) kernels and the public C++ functions.
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <c10/core/SymBool.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "posemb/rotary.h"
#include "positions.h"
#include "rotary_op.h"

namespace posemb {
namespace detail {
namespace {

// Which dimension of q is which: (batch, seq, heads) for rank 4, chosen by
// seq_dim; packed (tokens, heads, head_dim) when cu_seqlens is given.
struct RotaryDims {
  int64_t batch, seq, heads;  // batch is -1 for packed input
};

RotaryDims rotary_dims(const char* op, const at::Tensor& q, bool packed, int64_t seq_dim) {
  if (packed) {
    TORCH_CHECK(q.dim() == 3, "posemb.", op, ": with cu_seqlens, q must be packed (tokens, heads, ",
                "head_dim), got shape ", q.sym_sizes());
    return {-1, 0, 1};
  }
  TORCH_CHECK(q.dim() == 4, "posemb.", op, ": q must be (batch, seq, heads, head_dim) or another ",
              "order of its first three dimensions (seq_dim says where seq is), got shape ",
              q.sym_sizes());
  const int64_t s = seq_dim < 0 ? seq_dim + 4 : seq_dim;
  TORCH_CHECK(s >= 0 && s <= 2, "posemb.", op, ": seq_dim must be 0, 1 or 2 (head_dim is last), ",
              "got ", seq_dim);
  const int64_t batch = s == 0 ? 1 : 0;
  const int64_t heads = 3 - s - batch;
  return {batch, s, heads};
}

void check_like_q(const char* op, const at::Tensor& q, const at::Tensor& k, const RotaryDims& d) {
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && k.device() == q.device() && k.dim() == q.dim(),
              "posemb.", op, ": k must have q's dtype, device and rank (", q.scalar_type(), ", ",
              q.device(), ", ", q.dim(), "), got ", k.scalar_type(), ", ", k.device(), ", ", k.dim());
  bool same = k.sym_size(d.seq) == q.sym_size(d.seq) && k.sym_size(-1) == q.sym_size(-1);
  if (d.batch >= 0) same = same && k.sym_size(d.batch) == q.sym_size(d.batch);
  TORCH_CHECK(same, "posemb.", op, ": k must match q in every dimension but heads, got q ",
              q.sym_sizes(), " and k ", k.sym_sizes());
}

}  // namespace

void check_rotary(const char* op, const at::Tensor& q, const at::Tensor& k,
                  const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                  const std::optional<at::Tensor>& offsets, const c10::SymInt& offset,
                  const std::optional<at::Tensor>& cu_seqlens, int64_t seq_dim) {
  check_float_dtype(op, "q", q);
  const RotaryDims d = rotary_dims(op, q, cu_seqlens.has_value(), seq_dim);
  check_like_q(op, q, k, d);
  TORCH_CHECK(inv_freq.dim() == 1 && inv_freq.scalar_type() == at::kFloat &&
                  inv_freq.device() == q.device(),
              "posemb.", op, ": inv_freq must be a 1-D float32 tensor on q's device, got ",
              inv_freq.scalar_type(), " of shape ", inv_freq.sym_sizes(), " on ", inv_freq.device());
  TORCH_SYM_CHECK(inv_freq.sym_size(0).sym_ge(1).sym_and((2 * inv_freq.sym_size(0)).sym_le(q.sym_size(-1))),
                  "posemb.", op, ": rotary_dim = 2 * len(inv_freq) = ", 2 * inv_freq.sym_size(0),
                  " must be in [2, head_dim = ", q.sym_size(-1), "]");
  if (cu_seqlens.has_value()) {
    const at::Tensor& c = *cu_seqlens;
    TORCH_CHECK(is_index_dtype(c.scalar_type()) && c.dim() == 1 && c.device() == q.device(),
                "posemb.", op, ": cu_seqlens must be a 1-D integer tensor on q's device, got ",
                c.scalar_type(), " of shape ", c.sym_sizes(), " on ", c.device());
    TORCH_SYM_CHECK(c.sym_size(0).sym_ge(2), "posemb.", op,
                    ": cu_seqlens must hold at least [0, tokens], got shape ", c.sym_sizes());
    // Positions are per token; offsets per sequence.
    check_positions(op, q, XDims{0, -1}, positions, std::nullopt, offset, {"q"});
    if (offsets.has_value()) {
      TORCH_CHECK(is_index_dtype(offsets->scalar_type()) && offsets->device() == q.device(),
                  "posemb.", op, ": offsets must be an integer tensor on q's device");
      TORCH_SYM_CHECK(offsets->sym_numel().sym_eq(c.sym_size(0) - 1), "posemb.", op,
                      ": with cu_seqlens, offsets must hold one offset per sequence (",
                      c.sym_size(0) - 1, "), got shape ", offsets->sym_sizes());
      TORCH_CHECK(!positions.has_value(), "posemb.", op, ": pass positions or offsets, not both");
    }
  } else {
    check_positions(op, q, XDims{d.seq, d.batch}, positions, offsets, offset, {"q"});
  }
}

namespace {

RotaryTensor rotary_tensor(const char* op, const char* name, const at::Tensor& in,
                           const at::Tensor& out, const RotaryDims& d) {
  TORCH_CHECK(in.size(-1) <= 1 || in.stride(-1) == 1, "posemb.", op, ": ", name,
              "'s head_dim must be contiguous (stride 1), got strides ", in.strides());
  RotaryTensor r;
  r.in = in.data_ptr();
  r.out = out.data_ptr();
  r.heads = in.size(d.heads);
  r.in_rows = strided_rows(in, d.batch, d.seq, d.heads);
  r.out_rows = strided_rows(out, d.batch, d.seq, d.heads);
  return r;
}

// cu_seqlens must start at 0, never decrease and end at the token count:
// checked on real data with one host sync.
void check_cu_seqlens_values(const char* op, const at::Tensor& c, int64_t tokens) {
  const at::Tensor l = c.to(at::kLong);
  const bool ok = l[0].item<int64_t>() == 0 && l[-1].item<int64_t>() == tokens &&
                  (c.size(0) < 2 || (l.slice(0, 1) >= l.slice(0, 0, -1)).all().item<bool>());
  TORCH_CHECK(ok, "posemb.", op, ": cu_seqlens must start at 0, never decrease and end at the ",
              "number of tokens (", tokens, "), got ", l.cpu());
}

}  // namespace

RotaryParams make_rotary_params(const char* op, const at::Tensor& q, const at::Tensor& k,
                                const at::Tensor& q_out, const at::Tensor& k_out,
                                const at::Tensor& inv_freq,
                                const std::optional<at::Tensor>& positions,
                                const std::optional<at::Tensor>& offsets, int64_t offset,
                                const std::optional<at::Tensor>& cu_seqlens,
                                double attention_scaling, bool interleaved, int64_t seq_dim,
                                std::vector<at::Tensor>& keep) {
  const RotaryDims d = rotary_dims(op, q, cu_seqlens.has_value(), seq_dim);
  RotaryParams p;
  p.q = rotary_tensor(op, "q", q, q_out, d);
  p.k = rotary_tensor(op, "k", k, k_out, d);
  p.batch = d.batch >= 0 ? q.size(d.batch) : 1;
  p.seq = q.size(d.seq);
  p.head_dim = q.size(-1);
  keep.push_back(inv_freq.contiguous());
  p.inv_freq = keep.back().data_ptr<float>();
  p.half = inv_freq.size(0);
  p.interleaved = interleaved;
  p.attention_scaling = attention_scaling;
  p.attention_scaling_f32 = static_cast<float>(attention_scaling);
  if (cu_seqlens.has_value()) {
    check_cu_seqlens_values(op, *cu_seqlens, p.seq);
    keep.push_back(cu_seqlens->scalar_type() == at::kInt ? cu_seqlens->contiguous()
                                                         : cu_seqlens->to(at::kLong).contiguous());
    p.cu_seqlens = keep.back().data_ptr();
    p.cu_seqlens_int64 = keep.back().scalar_type() == at::kLong;
    p.num_seqs = cu_seqlens->size(0) - 1;
    p.pos = make_position_params(op, q, XDims{0, -1}, positions, std::nullopt, offset, keep);
    if (offsets.has_value()) {  // one per sequence, read by sequence index
      keep.push_back(offsets->to(at::kLong).contiguous());
      p.pos.offsets = keep.back().data_ptr();
      p.pos.offsets_int64 = true;
      p.pos.offsets_stride = 1;
    }
  } else {
    p.pos = make_position_params(op, q, XDims{d.seq, d.batch}, positions, offsets, offset, keep);
  }
  return p;
}

RotaryOutputs rotary_impl(RotaryRunner run, const char* op, bool inverse, const at::Tensor& q,
                          const at::Tensor& k, const at::Tensor& inv_freq,
                          const std::optional<at::Tensor>& positions,
                          const std::optional<at::Tensor>& offsets, int64_t offset,
                          const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                          bool interleaved, int64_t seq_dim) {
  check_rotary(op, q, k, inv_freq, positions, offsets, offset, cu_seqlens, seq_dim);
  at::Tensor q_out = at::empty(q.sizes(), q.options()), k_out = at::empty(k.sizes(), k.options());
  if (q.numel() == 0 && k.numel() == 0) {
    if (cu_seqlens.has_value()) check_cu_seqlens_values(op, *cu_seqlens, q.size(0));  // still the caller's bug
    return {q_out, k_out};
  }
  // Incoming gradients can be expanded (from a sum, say): the backward takes
  // any strides, copying when head_dim is not innermost.
  auto innermost = [inverse](const at::Tensor& t) {
    return inverse && t.size(-1) > 1 && t.stride(-1) != 1 ? t.contiguous() : t;
  };
  const at::Tensor qi = innermost(q), ki = innermost(k);
  std::vector<at::Tensor> keep;
  RotaryParams p = make_rotary_params(op, qi, ki, q_out, k_out, inv_freq, positions, offsets,
                                      offset, cu_seqlens, attention_scaling, interleaved, seq_dim,
                                      keep);
  p.inverse = inverse;
  run(p, q);
  return {q_out, k_out};
}

// True when q and k, written in place, could share an element: the same
// storage with intersecting ranges, unless their layout proves the elements
// apart (equal token strides, and each token's heads of q and of k in
// disjoint ranges that fit in one token stride: q and k sliced from one
// fused qkv projection). Written twice, a shared element would be turned twice.
bool may_share_elements(const at::Tensor& q, const at::Tensor& k, int64_t heads_dim) {
  if (q.numel() == 0 || k.numel() == 0) return false;
  const at::MemOverlapStatus status = at::get_overlap_status(q, k);
  if (status == at::MemOverlapStatus::No) return false;
  if (status == at::MemOverlapStatus::Full) return true;
  int64_t window = std::numeric_limits<int64_t>::max();
  for (int64_t d = 0; d + 1 < q.dim(); ++d) {
    if (d == heads_dim || (q.size(d) <= 1 && k.size(d) <= 1)) continue;
    if (q.stride(d) != k.stride(d) || q.stride(d) <= 0) return true;
    window = std::min(window, q.stride(d));
  }
  auto extent = [&](const at::Tensor& t) {
    return t.size(heads_dim) == 0 ? 0 : (t.size(heads_dim) - 1) * t.stride(heads_dim) + t.size(-1);
  };
  if (q.stride(heads_dim) < 0 || k.stride(heads_dim) < 0) return true;
  const int64_t q0 = q.storage_offset(), q1 = q0 + extent(q), k0 = k.storage_offset(), k1 = k0 + extent(k);
  const bool apart = q1 <= k0 || k1 <= q0;
  return !(apart && std::max(q1, k1) - std::min(q0, k0) <= window);
}

void check_rotary_writable(const at::Tensor& q, const at::Tensor& k, bool packed, int64_t seq_dim) {
  for (const at::Tensor* t : {&q, &k}) {
    TORCH_CHECK(at::has_internal_overlap(*t) != at::MemOverlap::Yes, "posemb.rotary_: ",
                t == &q ? "q" : "k", " has overlapping memory and cannot be written in place");
  }
  const int64_t heads_dim = packed ? 1 : (seq_dim == 2 ? 1 : 2);
  TORCH_CHECK(!may_share_elements(q, k, heads_dim), "posemb.rotary_: q and k share memory (the same "
              "tensor, or overlapping slices of one qkv tensor) and cannot both be turned in place; pass "
              "q and k that do not overlap, or use the out-of-place rotary");
}

void rotary_inplace_impl(RotaryRunner run, const at::Tensor& q, const at::Tensor& k,
                         const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                         const std::optional<at::Tensor>& offsets, int64_t offset,
                         const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                         bool interleaved, int64_t seq_dim) {
  const char* op = "rotary_";
  check_rotary(op, q, k, inv_freq, positions, offsets, offset, cu_seqlens, seq_dim);
  check_rotary_writable(q, k, cu_seqlens.has_value(), seq_dim);
  if (q.numel() == 0 && k.numel() == 0) {
    if (cu_seqlens.has_value()) check_cu_seqlens_values(op, *cu_seqlens, q.size(0));
    return;
  }
  std::vector<at::Tensor> keep;
  RotaryParams p = make_rotary_params(op, q, k, q, k, inv_freq, positions, offsets, offset,
                                      cu_seqlens, attention_scaling, interleaved, seq_dim, keep);
  p.copy_tail = false;  // in place, the channels past rotary_dim are already there
  run(p, q);
}

namespace {

template <bool kInverse>
RotaryOutputs rotary_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
                          const std::optional<at::Tensor>& positions,
                          const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                          const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                          bool interleaved, int64_t seq_dim) {
  check_rotary(kInverse ? "rotary_backward" : "rotary", q, k, inv_freq, positions, offsets, offset,
               cu_seqlens, seq_dim);
  return {at::empty_symint(q.sym_sizes(), q.options()), at::empty_symint(k.sym_sizes(), k.options())};
}

void rotary_inplace_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
                         const std::optional<at::Tensor>& positions,
                         const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                         const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                         bool interleaved, int64_t seq_dim) {
  check_rotary("rotary_", q, k, inv_freq, positions, offsets, offset, cu_seqlens, seq_dim);
}

}  // namespace
}  // namespace detail

std::tuple<at::Tensor, at::Tensor> rotary(const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& inv_freq,
                                          const std::optional<at::Tensor>& positions,
                                          const std::optional<at::Tensor>& offsets,
                                          int64_t offset,
                                          const std::optional<at::Tensor>& cu_seqlens,
                                          double attention_scaling, bool interleaved,
                                          int64_t seq_dim) {
  return detail::RotaryOp::handle().call(q, k, inv_freq, positions, offsets, c10::SymInt(offset),
                                         cu_seqlens, attention_scaling, interleaved, seq_dim);
}

void rotary_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
             const std::optional<at::Tensor>& positions, const std::optional<at::Tensor>& offsets,
             int64_t offset, const std::optional<at::Tensor>& cu_seqlens,
             double attention_scaling, bool interleaved, int64_t seq_dim) {
  detail::RotaryInplaceOp::handle().call(q, k, inv_freq, positions, offsets, c10::SymInt(offset),
                                          cu_seqlens, attention_scaling, interleaved, seq_dim);
}

TORCH_LIBRARY_IMPL(posemb, Meta, m) {
  m.impl("rotary", &detail::rotary_meta<false>);
  m.impl("rotary_backward", &detail::rotary_meta<true>);
  m.impl("rotary_", &detail::rotary_inplace_meta);
}

}  // namespace posemb
