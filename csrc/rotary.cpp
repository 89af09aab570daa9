// rotary, rotary_ and rotary_backward: argument checks, the backend-neutral
// part of the kernels, Meta (fake) kernels and the public C++ functions.
#include <ATen/ATen.h>
#include <c10/core/SymBool.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "memory_overlap.h"
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

// Positions with axes (mrope_section): 1 to kMaxRotaryAxes sections of the
// frequencies, summing to len(inv_freq); positions (axes or 1, ...) whose
// every axis follows the usual rules; no offsets.
void check_sections(const char* op, const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                    const std::optional<at::Tensor>& offsets, at::IntArrayRef sections, bool interleaved) {
  const int64_t axes = static_cast<int64_t>(sections.size());
  TORCH_CHECK(axes >= 1 && axes <= kMaxRotaryAxes, "posemb.", op, ": mrope_section must hold 1 to ",
              kMaxRotaryAxes, " section sizes (one per position axis), got ", sections);
  int64_t sum = 0;
  for (const int64_t n : sections) {
    TORCH_CHECK(n >= 0, "posemb.", op, ": mrope_section sizes must not be negative, got ", sections);
    sum += n;
  }
  TORCH_SYM_CHECK(inv_freq.sym_size(0).sym_eq(sum), "posemb.", op, ": mrope_section must add up to ",
                  "len(inv_freq) = rotary_dim / 2 = ", inv_freq.sym_size(0), ", got ", sections, " (sum ", sum, ")");
  if (interleaved) {
    // Axis a's frequencies are a, a + axes, ...: its last must exist.
    for (int64_t a = 1; a < axes; ++a) {
      TORCH_CHECK(sections[a] == 0 || a + axes * (sections[a] - 1) < sum, "posemb.", op,
                  ": interleaved mrope_section ", sections, ": axis ", a, "'s frequencies (", a, ", ",
                  a + axes, ", ...) reach index ", a + axes * (sections[a] - 1), ", past the last, ", sum - 1);
    }
  }
  TORCH_CHECK(positions.has_value(), "posemb.", op, ": mrope_section needs positions, one row per axis: ",
              "(", axes, ", batch, seq)");
  TORCH_CHECK(!offsets.has_value(), "posemb.", op, ": with mrope_section, pass positions (one row per ",
              "axis), not offsets");
  const at::Tensor& p = *positions;
  TORCH_CHECK(p.dim() >= 2 && (p.sym_size(0) == axes || p.sym_size(0) == 1), "posemb.", op,
              ": with mrope_section, positions must be (axes, batch, seq) or (axes, seq) with axes = ",
              "len(mrope_section) = ", axes, " (or 1), got shape ", p.sym_sizes());
}

}  // namespace

void check_rotary(const char* op, const at::Tensor& q, const at::Tensor& k,
                  const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                  const std::optional<at::Tensor>& offsets, const c10::SymInt& offset,
                  const std::optional<at::Tensor>& cu_seqlens, int64_t seq_dim,
                  at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  check_float_dtype(op, "q", q);
  TORCH_CHECK(mrope_section.has_value() || !mrope_interleaved, "posemb.", op,
              ": mrope_interleaved needs mrope_section");
  // With axes, each axis' positions are checked as positions without them.
  std::optional<at::Tensor> axis0 = positions;
  if (mrope_section.has_value()) {
    check_sections(op, inv_freq, positions, offsets, *mrope_section, mrope_interleaved);
    axis0 = positions->select(0, 0);
  }
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
    check_positions(op, q, XDims{0, -1}, axis0, std::nullopt, offset, {"q"});
    if (offsets.has_value()) {
      TORCH_CHECK(is_index_dtype(offsets->scalar_type()) && offsets->device() == q.device(),
                  "posemb.", op, ": offsets must be an integer tensor on q's device");
      TORCH_SYM_CHECK(offsets->sym_numel().sym_eq(c.sym_size(0) - 1), "posemb.", op,
                      ": with cu_seqlens, offsets must hold one offset per sequence (",
                      c.sym_size(0) - 1, "), got shape ", offsets->sym_sizes());
      TORCH_CHECK(!axis0.has_value(), "posemb.", op, ": pass positions or offsets, not both");
    }
  } else {
    check_positions(op, q, XDims{d.seq, d.batch}, axis0, offsets, offset, {"q"});
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
// checked on real data with one host sync, none while a CUDA graph is
// captured (op.h: stream_is_capturing; bad cu_seqlens then only give wrong
// positions, the kernels read nothing outside their tensors).
void check_cu_seqlens_values(const char* op, const at::Tensor& c, int64_t tokens) {
  if (stream_is_capturing(c)) return;
  const at::Tensor l = c.to(at::kLong);
  const bool ok = (l[0].eq(0) & l[-1].eq(tokens) &
                   (l.slice(0, 1) >= l.slice(0, 0, -1)).all()).item<bool>();
  if (ok) return;
  const at::Tensor values = l.cpu().contiguous();
  const int64_t shown = std::min<int64_t>(values.numel(), 16);
  TORCH_CHECK(false, "posemb.", op, ": cu_seqlens must start at 0, never decrease and end at the ",
              "number of tokens (", tokens, "), got ", at::IntArrayRef(values.const_data_ptr<int64_t>(), shown),
              values.numel() > shown ? " ..." : "");
}

// Sequence s's last position, offsets[s] + its length - 1, must fit in int64
// (checked on host data, as make_position_params does for the other layouts).
void check_packed_offsets(const char* op, const at::Tensor& offsets, const at::Tensor& cu_seqlens) {
  if (!offsets.device().is_cpu() || offsets.numel() == 0) return;
  const at::Tensor c = cu_seqlens.to(at::kLong);
  const at::Tensor last = (c.slice(0, 1) - c.slice(0, 0, -1) - 1).clamp_min(0);
  const at::Tensor room = last.neg().add(std::numeric_limits<int64_t>::max());
  TORCH_CHECK(!(offsets > room).any().item<bool>(), "posemb.", op, ": offsets + each sequence's length - 1 must ",
              "fit in int64, got offsets ", at::IntArrayRef(offsets.const_data_ptr<int64_t>(),
                                                            std::min<int64_t>(offsets.numel(), 16)),
              offsets.numel() > 16 ? " ..." : "");
}

// The kernels' view of checked sections (kernels/rotary.cuh: rotary_axis).
void set_sections(RotaryParams& p, at::IntArrayRef sections, bool interleaved) {
  const int axes = static_cast<int>(sections.size());
  p.num_axes = axes;
  p.sections_interleaved = interleaved;
  int32_t* ends[] = {&p.section_end0, &p.section_end1, &p.section_end2};
  int32_t* limits[] = {&p.interleave_limit1, &p.interleave_limit2, &p.interleave_limit3};
  int64_t end = 0;
  for (int a = 0; a + 1 < axes; ++a) {
    end += sections[a];
    *ends[a] = static_cast<int32_t>(end);  // the last axis keeps INT32_MAX: it owns the rest
    *limits[a] = static_cast<int32_t>(axes * sections[a + 1]);
  }
}

}  // namespace

RotaryParams make_rotary_params(const char* op, const at::Tensor& q, const at::Tensor& k,
                                const at::Tensor& q_out, const at::Tensor& k_out,
                                const at::Tensor& inv_freq,
                                const std::optional<at::Tensor>& positions,
                                const std::optional<at::Tensor>& offsets, int64_t offset,
                                const std::optional<at::Tensor>& cu_seqlens,
                                double attention_scaling, bool interleaved, int64_t seq_dim,
                                at::OptionalIntArrayRef mrope_section, bool mrope_interleaved,
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
  // With axes: the kernels read axis a's positions pos_stride_axis past axis 0's.
  std::optional<at::Tensor> axis0 = positions;
  int64_t stride_axis = 0;
  if (mrope_section.has_value()) {
    const at::Tensor all = as_index(*positions, keep);
    axis0 = all.select(0, 0);
    stride_axis = all.size(0) == 1 ? 0 : all.stride(0);
    set_sections(p, *mrope_section, mrope_interleaved);
  }
  if (cu_seqlens.has_value()) {
    check_cu_seqlens_values(op, *cu_seqlens, p.seq);
    keep.push_back(cu_seqlens->scalar_type() == at::kInt ? cu_seqlens->contiguous()
                                                         : cu_seqlens->to(at::kLong).contiguous());
    p.cu_seqlens = keep.back().data_ptr();
    p.cu_seqlens_int64 = keep.back().scalar_type() == at::kLong;
    p.num_seqs = cu_seqlens->size(0) - 1;
    p.pos = make_position_params(op, q, XDims{0, -1}, axis0, std::nullopt, offset, keep);
    if (offsets.has_value()) {  // one per sequence, read by sequence index
      keep.push_back(offsets->to(at::kLong).contiguous());
      check_packed_offsets(op, keep.back(), *cu_seqlens);
      p.pos.offsets = keep.back().data_ptr();
      p.pos.offsets_int64 = true;
      p.pos.offsets_stride = 1;
    }
  } else {
    p.pos = make_position_params(op, q, XDims{d.seq, d.batch}, axis0, offsets, offset, keep);
  }
  p.pos.pos_stride_axis = stride_axis;
  return p;
}

RotaryOutputs rotary_impl(RotaryRunner run, const char* op, bool inverse, const at::Tensor& q,
                          const at::Tensor& k, const at::Tensor& inv_freq,
                          const std::optional<at::Tensor>& positions,
                          const std::optional<at::Tensor>& offsets, int64_t offset,
                          const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                          bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  check_rotary(op, q, k, inv_freq, positions, offsets, offset, cu_seqlens, seq_dim, mrope_section, mrope_interleaved);
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
                                      mrope_section, mrope_interleaved, keep);
  p.inverse = inverse;
  run(p, q);
  return {q_out, k_out};
}

void check_rotary_writable(const at::Tensor& q, const at::Tensor& k) {
  for (const at::Tensor* t : {&q, &k}) {
    TORCH_CHECK(!overlaps_itself(*t), "posemb.rotary_: ", t == &q ? "q" : "k",
                " has overlapping memory (an expanded or as_strided view whose elements meet) and cannot be "
                "written in place; use the out-of-place rotary");
  }
  // Written twice, a shared element would be turned twice. Slices of one
  // fused qkv tensor that do not meet are fine, whatever their strides.
  TORCH_CHECK(!may_share_memory(q, k), "posemb.rotary_: q and k share memory (the same tensor, or "
              "overlapping slices of one qkv tensor) and cannot both be turned in place; pass q and k that "
              "do not overlap, or use the out-of-place rotary");
}

void rotary_inplace_impl(RotaryRunner run, const at::Tensor& q, const at::Tensor& k,
                         const at::Tensor& inv_freq, const std::optional<at::Tensor>& positions,
                         const std::optional<at::Tensor>& offsets, int64_t offset,
                         const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                         bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  const char* op = "rotary_";
  check_rotary(op, q, k, inv_freq, positions, offsets, offset, cu_seqlens, seq_dim, mrope_section, mrope_interleaved);
  check_rotary_writable(q, k);
  if (q.numel() == 0 && k.numel() == 0) {
    if (cu_seqlens.has_value()) check_cu_seqlens_values(op, *cu_seqlens, q.size(0));
    return;
  }
  std::vector<at::Tensor> keep;
  RotaryParams p = make_rotary_params(op, q, k, q, k, inv_freq, positions, offsets, offset,
                                      cu_seqlens, attention_scaling, interleaved, seq_dim, mrope_section,
                                      mrope_interleaved, keep);
  p.copy_tail = false;  // in place, the channels past rotary_dim are already there
  run(p, q);
}

namespace {

template <bool kInverse>
RotaryOutputs rotary_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
                          const std::optional<at::Tensor>& positions,
                          const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                          const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                          bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  check_rotary(kInverse ? "rotary_backward" : "rotary", q, k, inv_freq, positions, offsets, offset,
               cu_seqlens, seq_dim, mrope_section, mrope_interleaved);
  return {at::empty_symint(q.sym_sizes(), q.options()), at::empty_symint(k.sym_sizes(), k.options())};
}

void rotary_inplace_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
                         const std::optional<at::Tensor>& positions,
                         const std::optional<at::Tensor>& offsets, c10::SymInt offset,
                         const std::optional<at::Tensor>& cu_seqlens, double attention_scaling,
                         bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  check_rotary("rotary_", q, k, inv_freq, positions, offsets, offset, cu_seqlens, seq_dim, mrope_section, mrope_interleaved);
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
                                          int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  return detail::RotaryOp::handle().call(q, k, inv_freq, positions, offsets, c10::SymInt(offset),
                                         cu_seqlens, attention_scaling, interleaved, seq_dim, mrope_section, mrope_interleaved);
}

void rotary_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& inv_freq,
             const std::optional<at::Tensor>& positions, const std::optional<at::Tensor>& offsets,
             int64_t offset, const std::optional<at::Tensor>& cu_seqlens,
             double attention_scaling, bool interleaved, int64_t seq_dim, at::OptionalIntArrayRef mrope_section, bool mrope_interleaved) {
  detail::RotaryInplaceOp::handle().call(q, k, inv_freq, positions, offsets, c10::SymInt(offset),
                                          cu_seqlens, attention_scaling, interleaved, seq_dim, mrope_section, mrope_interleaved);
}

TORCH_LIBRARY_IMPL(posemb, Meta, m) {
  m.impl("rotary", &detail::rotary_meta<false>);
  m.impl("rotary_backward", &detail::rotary_meta<true>);
  m.impl("rotary_", &detail::rotary_inplace_meta);
}

}  // namespace posemb
