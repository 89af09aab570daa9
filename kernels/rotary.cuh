// rotary: turn each pair of channels of q and k by position * inv_freq[i].
//
// Torch-free. rotary_token handles one token on the CPU (interleaved pairs):
// each frequency's sin/cos once, applied to every head of q and of k. The
// CUDA kernel is the tile body further down; tests/cpp/test_rotary.cpp walks
// its grid on the CPU.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/launch_plan.cuh"
#include "kernels/math.cuh"
#include "kernels/positions.cuh"
#include "kernels/turns.cuh"
#include "kernels/vector.cuh"

namespace posemb {

/// One of q or k as the kernel sees it: logical (batch, seq, heads, head_dim).
struct RotaryTensor {
  const void* in = nullptr;
  void* out = nullptr;  // may equal in (the in-place op)
  int64_t heads = 0;
  StridedRows in_rows, out_rows;  // inner: heads (head_dim has stride 1)
};

/// Arguments of one rotary launch. Tokens are row = b * seq + t; packed
/// (thd) input is batch 1 with cu_seqlens marking where each sequence starts.
struct RotaryParams {
  RotaryTensor q, k;
  int64_t batch = 0, seq = 0, head_dim = 0;
  const float* inv_freq = nullptr;  // [rotary_dim / 2], taken as exact
  int64_t half = 0;                 // rotary_dim / 2
  PositionParams pos;
  // Packed sequences: token t belongs to the sequence s with
  // cu_seqlens[s] <= t < cu_seqlens[s + 1]; its position counts from there
  // (plus offsets[s] or offset) unless positions are given.
  const void* cu_seqlens = nullptr;
  bool cu_seqlens_int64 = true;
  int64_t num_seqs = 0;
  // Pairs (2i, 2i+1) (GPT-J), else (i, i + half) (NeoX, Llama): the launcher
  // makes it the body's template parameter kInterleaved.
  bool interleaved = false;
  bool inverse = false;  // turn by -theta: the backward (a sign, not a code path)
  double attention_scaling = 1.0;
  float attention_scaling_f32 = 1.0f;  // what fp32/bf16/fp16 kernels read
  // Out of place: channels past rotary_dim are copied. A runtime flag: one
  // uniform branch per token, after the rotation.
  bool copy_tail = true;
  // Multimodal (Qwen2-VL's mrope) and axial rotary: positions hold one
  // position per axis (pos.pos_stride_axis apart), and each frequency turns
  // by the position of the axis that owns it (rotary_axis). Sections are held
  // as scalars, read with constant indices only, so that a GPU keeps them in
  // its parameter bank instead of local memory.
  int num_axes = 1;  // 1..kMaxRotaryAxes
  // Contiguous sections: axis a owns frequencies [end[a-1], end[a]); unused
  // ends are past every frequency.
  int32_t section_end0 = INT32_MAX, section_end1 = INT32_MAX, section_end2 = INT32_MAX;
  // Interleaved sections (Qwen3-VL): frequency i belongs to axis a = i % num_axes
  // when a > 0 and i < limit[a], else to axis 0.
  bool sections_interleaved = false;
  int32_t interleave_limit1 = 0, interleave_limit2 = 0, interleave_limit3 = 0;
};

constexpr int kMaxRotaryAxes = 4;

namespace detail {

/// The axis whose position frequency i turns by (0 unless positions have axes).
POSEMB_HD int64_t rotary_axis(const RotaryParams& p, int64_t i) {
  if (p.num_axes <= 1) return 0;
  if (p.sections_interleaved) {
    const int64_t a = i % p.num_axes;
    const int64_t limit = a == 1 ? p.interleave_limit1 : a == 2 ? p.interleave_limit2 : p.interleave_limit3;
    return a != 0 && i < limit ? a : 0;
  }
  return int64_t(i >= p.section_end0) + int64_t(i >= p.section_end1) + int64_t(i >= p.section_end2);
}

/// Position of token `row` (along `axis` for positions with axes).
POSEMB_HD int64_t rotary_position(const RotaryParams& p, int64_t row, int64_t axis = 0) {
  const int64_t b = row / p.seq, t = row % p.seq;
  if (p.cu_seqlens == nullptr || p.pos.positions != nullptr) return token_position(p.pos, b, t, axis);
  // The sequence holding token t: the last s with cu_seqlens[s] <= t.
  int64_t lo = 0, hi = p.num_seqs;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (load_index(p.cu_seqlens, p.cu_seqlens_int64, mid) <= t) lo = mid; else hi = mid;
  }
  const int64_t start = load_index(p.cu_seqlens, p.cu_seqlens_int64, lo);
  return token_position(p.pos, lo, t - start);  // offsets are per sequence
}

template <typename T, bool kInterleaved, typename A>
POSEMB_HD void rotate_heads(const RotaryParams& p, const RotaryTensor& x, int64_t b, int64_t t,
                            int64_t i, A c, A s) {
  using Ops = ScalarOps<T>;
  const int64_t i0 = kInterleaved ? 2 * i : i;
  const int64_t i1 = kInterleaved ? 2 * i + 1 : i + p.half;
  const T* in = static_cast<const T*>(x.in) + x.in_rows.row(b, t);
  T* out = static_cast<T*>(x.out) + x.out_rows.row(b, t);
  for (int64_t h = 0; h < x.heads; ++h) {
    A y0, y1;
    rotate_pair(Ops::to_acc(in[h * x.in_rows.stride_inner + i0]), Ops::to_acc(in[h * x.in_rows.stride_inner + i1]),
                c, s, &y0, &y1);
    out[h * x.out_rows.stride_inner + i0] = Ops::from_acc(y0);
    out[h * x.out_rows.stride_inner + i1] = Ops::from_acc(y1);
  }
}

template <typename T>
POSEMB_HD void copy_tail(const RotaryParams& p, const RotaryTensor& x, int64_t b, int64_t t,
                         int64_t first, int64_t stride) {
  const T* in = static_cast<const T*>(x.in) + x.in_rows.row(b, t);
  T* out = static_cast<T*>(x.out) + x.out_rows.row(b, t);
  const int64_t tail = p.head_dim - 2 * p.half;
  for (int64_t j = first; j < x.heads * tail; j += stride) {
    const int64_t h = j / tail, d = 2 * p.half + j % tail;
    out[h * x.out_rows.stride_inner + d] = in[h * x.in_rows.stride_inner + d];
  }
}

}  // namespace detail

/// Token `row`: frequencies first, first + stride, ... of every head of q and
/// k, and (out of place) their channels past rotary_dim. kInterleaved is
/// p.interleaved.
template <typename T, bool kInterleaved>
POSEMB_HD void rotary_token(const RotaryParams& p, int64_t row, int64_t first, int64_t stride) {
  using A = detail::acc_t<T>;
  const int64_t b = row / p.seq, t = row % p.seq;
  int64_t positions[kMaxRotaryAxes];
  for (int a = 0; a < p.num_axes; ++a) positions[a] = detail::rotary_position(p, row, a);
  const A scale = detail::in_acc<A>(p.attention_scaling, p.attention_scaling_f32);
  for (int64_t i = first; i < p.half; i += stride) {
    A s, c;
    turns::position_sincos(positions[detail::rotary_axis(p, i)], p.inv_freq[i], &s, &c);
    c *= scale;
    s *= p.inverse ? -scale : scale;
    detail::rotate_heads<T, kInterleaved>(p, p.q, b, t, i, c, s);
    detail::rotate_heads<T, kInterleaved>(p, p.k, b, t, i, c, s);
  }
  if (p.copy_tail && 2 * p.half < p.head_dim) {
    detail::copy_tail<T>(p, p.q, b, t, first, stride);
    detail::copy_tail<T>(p, p.k, b, t, first, stride);
  }
}

// ---------------------------------------------------------------- the CUDA kernel
//
// A block owns a tile of consecutive tokens (and, when tokens are few, a
// group of the heads of q and k). First its threads compute the cos and sin
// of each (token, frequency) of the tile once, into shared memory; then they
// take work items, one 16-byte chunk of one head of one token each (one pair
// of channels on the scalar path), two items' loads issued before their
// stores, so every head of q and k reuses the angles and decode gets hundreds
// of parallel items per token instead of a serial walk over heads.

/// How a rotary launch covers the work.
struct RotaryLaunch {
  bool vector = false;        // 128-bit chunks: the tile body's template parameter kVector
  bool tail_vector = false;   // the channels past rotary_dim copied in 16-byte chunks too
  int64_t tile = 1;           // tokens per block (grid x)
  int64_t heads_per_group = 1, head_groups = 1;  // grid y splits the heads of q and k
  int64_t grid_x = 1, grid_y = 1, block = 32;
  int64_t smem_bytes = 0;     // cos, sin [tile][half] accumulators and (b, t) per token
};

/// Channels of one head that one work item covers.
template <typename T, bool kInterleaved, bool kVector>
POSEMB_HD constexpr int rotary_chunk() {
  return kVector ? int(16 / sizeof(T)) : (kInterleaved ? 2 : 1);
}

/// Chooses the launch for params whose elements are `elem_size` bytes and
/// accumulate in `acc_size`-byte types, on `num_sms` multiprocessors. Host
/// code, shared by the launcher and the CPU walk of the grid.
inline RotaryLaunch plan_rotary(const RotaryParams& p, int64_t elem_size, int64_t acc_size, int64_t num_sms) {
  RotaryLaunch plan;
  const int64_t vec = 16 / elem_size;
  auto aligned = [&](const RotaryTensor& x) {
    return x.heads == 0 ||
           (detail::is_aligned(x.in, 16) && detail::is_aligned(x.out, 16) && x.in_rows.stride_b % vec == 0 &&
            x.in_rows.stride_t % vec == 0 && x.in_rows.stride_inner % vec == 0 &&
            x.out_rows.stride_b % vec == 0 && x.out_rows.stride_t % vec == 0 && x.out_rows.stride_inner % vec == 0);
  };
  const int64_t rotated = p.interleaved ? 2 * p.half : p.half;  // channels a chunk walk covers
  plan.vector = rotated % vec == 0 && aligned(p.q) && aligned(p.k);
  plan.tail_vector = plan.vector && (p.head_dim - 2 * p.half) % vec == 0;
  const int64_t chunk = plan.vector ? vec : (p.interleaved ? 2 : 1);
  const int64_t items_per_head = rotated / chunk;
  const int64_t heads = std::max<int64_t>(1, p.q.heads + p.k.heads);
  const int64_t rows = std::max<int64_t>(1, p.batch * p.seq);
  // About 2048 items per block (8 per thread), at most 16 KB of angles.
  const int64_t per_token_angles = 2 * std::max<int64_t>(1, p.half) * acc_size;
  plan.tile = std::max<int64_t>(1, std::min<int64_t>(2048 / std::max<int64_t>(1, heads * items_per_head),
                                                     16384 / per_token_angles));
  plan.tile = std::min(plan.tile, rows);
  plan.grid_x = (rows + plan.tile - 1) / plan.tile;
  // Few tokens (decode): split the heads so that about two blocks per SM run.
  const int64_t want = 2 * std::max<int64_t>(1, num_sms);
  plan.head_groups = plan.grid_x >= want ? 1 : std::min(heads, (want + plan.grid_x - 1) / plan.grid_x);
  plan.heads_per_group = (heads + plan.head_groups - 1) / plan.head_groups;
  plan.head_groups = (heads + plan.heads_per_group - 1) / plan.heads_per_group;
  plan.grid_y = plan.head_groups;
  const int64_t items = plan.tile * plan.heads_per_group * items_per_head;
  plan.block = std::min<int64_t>(256, std::max<int64_t>(32, (items + 31) / 32 * 32));
  plan.smem_bytes = per_token_angles * plan.tile + 2 * static_cast<int64_t>(sizeof(int64_t)) * plan.tile;
  return plan;
}

namespace detail {

/// The tile's shared memory: cos and sin of each (token, frequency), then the
/// (b, t) of each token.
template <typename A>
struct RotaryTile {
  A* cos;
  A* sin;
  int64_t* bt;
  POSEMB_HD RotaryTile(void* smem, const RotaryParams& p, const RotaryLaunch& plan)
      : cos(static_cast<A*>(smem)), sin(cos + plan.tile * p.half),
        bt(reinterpret_cast<int64_t*>(sin + plan.tile * p.half)) {}
};

/// One work item of one head of one token: its loads, then its rotation and stores.
template <typename T, bool kInterleaved, int V>
struct RotaryItem {
  const T* in = nullptr;  // the chunk's first channel (and, for halves, in + half)
  T* out = nullptr;
  Vec<T, V> a, z;  // a: the chunk; z: its partner chunk (halves) or unused
  int64_t freq = 0;  // the first frequency the chunk turns

  POSEMB_HD void load(int64_t half) {
    if constexpr (V * sizeof(T) == 16) {
      a = load_vec<T, V>(in);
      if constexpr (!kInterleaved) z = load_vec<T, V>(in + half);
    } else {
POSEMB_UNROLL
      for (int v = 0; v < V; ++v) {
        a.v[v] = in[v];
        if constexpr (!kInterleaved) z.v[v] = in[half + v];
      }
    }
  }

  template <typename A>
  POSEMB_HD void store(int64_t half, const A* cos, const A* sin) {
    using Ops = ScalarOps<T>;
    if constexpr (kInterleaved) {
POSEMB_UNROLL
      for (int v = 0; v < V; v += 2) {
        const A c = cos[freq + v / 2], s = sin[freq + v / 2];
        A y0, y1;
        rotate_pair(Ops::to_acc(a.v[v]), Ops::to_acc(a.v[v + 1]), c, s, &y0, &y1);
        a.v[v] = Ops::from_acc(y0);
        a.v[v + 1] = Ops::from_acc(y1);
      }
    } else {
POSEMB_UNROLL
      for (int v = 0; v < V; ++v) {
        const A c = cos[freq + v], s = sin[freq + v];
        A y0, y1;
        rotate_pair(Ops::to_acc(a.v[v]), Ops::to_acc(z.v[v]), c, s, &y0, &y1);
        a.v[v] = Ops::from_acc(y0);
        z.v[v] = Ops::from_acc(y1);
      }
    }
    if constexpr (V * sizeof(T) == 16) {
      store_vec<T, V>(out, a);
      if constexpr (!kInterleaved) store_vec<T, V>(out + half, z);
    } else {
POSEMB_UNROLL
      for (int v = 0; v < V; ++v) {
        out[v] = a.v[v];
        if constexpr (!kInterleaved) out[half + v] = z.v[v];
      }
    }
  }
};

}  // namespace detail

/// Phase 1 of block `block_x`, thread `thread`: the tile's (b, t) and the cos
/// and sin (times the attention scaling; sin negated for the inverse) of each
/// of its (token, frequency), into the block's shared memory `smem`.
template <typename T>
POSEMB_HD void rotary_tile_angles(const RotaryParams& p, const RotaryLaunch& plan, int64_t block_x,
                                  int64_t thread, void* smem) {
  using A = detail::acc_t<T>;
  const detail::RotaryTile<A> tile(smem, p, plan);
  const int64_t row0 = block_x * plan.tile;
  const int64_t left = p.batch * p.seq - row0;
  const int64_t tokens = left < plan.tile ? left : plan.tile;
  for (int64_t j = thread; j < tokens; j += plan.block) {
    tile.bt[2 * j] = (row0 + j) / p.seq;
    tile.bt[2 * j + 1] = (row0 + j) % p.seq;
  }
  const A scale = detail::in_acc<A>(p.attention_scaling, p.attention_scaling_f32);
  const A sin_scale = p.inverse ? -scale : scale;
  const uint32_t half = static_cast<uint32_t>(p.half);
  for (uint32_t j = thread; j < tokens * half; j += plan.block) {
    const uint32_t token = j / half, i = j % half;
    A s, c;
    turns::position_sincos(detail::rotary_position(p, row0 + token, detail::rotary_axis(p, i)), p.inv_freq[i],
                           &s, &c);
    tile.cos[j] = c * scale;
    tile.sin[j] = s * sin_scale;
  }
}

/// Phase 2 (after a block-wide barrier): the thread's work items of the tile
/// and head group (block_x, block_y), and (out of place) the channels past
/// rotary_dim.
template <typename T, bool kInterleaved, bool kVector>
POSEMB_HD void rotary_tile_rotate(const RotaryParams& p, const RotaryLaunch& plan, int64_t block_x,
                                  int64_t block_y, int64_t thread, void* smem) {
  using A = detail::acc_t<T>;
  constexpr int V = rotary_chunk<T, kInterleaved, kVector>();
  constexpr int kPairs = kInterleaved ? V / 2 : V;  // frequencies per item
  const detail::RotaryTile<A> tile(smem, p, plan);
  const int64_t row0 = block_x * plan.tile;
  const int64_t left = p.batch * p.seq - row0;
  const uint32_t tokens = static_cast<uint32_t>(left < plan.tile ? left : plan.tile);
  const int64_t h0 = block_y * plan.heads_per_group, heads_left = p.q.heads + p.k.heads - h0;
  const uint32_t group = static_cast<uint32_t>(heads_left < plan.heads_per_group ? heads_left : plan.heads_per_group);
  const uint32_t per_head = static_cast<uint32_t>(p.half / kPairs);
  const uint32_t items = tokens * group * per_head;

  // Where item j reads and writes, and the angles it uses (32-bit index math).
  auto locate = [&](uint32_t j, detail::RotaryItem<T, kInterleaved, V>& item, uint32_t* token) {
    const uint32_t chunk = j % per_head, rest = j / per_head;
    const int64_t h = h0 + rest % group;
    *token = rest / group;
    const bool is_q = h < p.q.heads;
    const RotaryTensor& x = is_q ? p.q : p.k;
    const int64_t head = is_q ? h : h - p.q.heads;
    const int64_t b = tile.bt[2 * *token], t = tile.bt[2 * *token + 1];
    const int64_t channel = static_cast<int64_t>(chunk) * V;
    item.in = static_cast<const T*>(x.in) + x.in_rows.row(b, t) + head * x.in_rows.stride_inner + channel;
    item.out = static_cast<T*>(x.out) + x.out_rows.row(b, t) + head * x.out_rows.stride_inner + channel;
    item.freq = static_cast<int64_t>(chunk) * kPairs;
  };
  const uint32_t step = static_cast<uint32_t>(plan.block);
  for (uint32_t j = static_cast<uint32_t>(thread); j < items; j += 2 * step) {
    detail::RotaryItem<T, kInterleaved, V> first, second;
    uint32_t t0 = 0, t1 = 0;
    const bool two = j + step < items;
    locate(j, first, &t0);
    first.load(p.half);
    if (two) {
      locate(j + step, second, &t1);
      second.load(p.half);
    }
    first.store(p.half, tile.cos + t0 * p.half, tile.sin + t0 * p.half);
    if (two) second.store(p.half, tile.cos + t1 * p.half, tile.sin + t1 * p.half);
  }

  // Channels past rotary_dim, out of place: copied (16 bytes at a time when aligned).
  const int64_t tail = p.head_dim - 2 * p.half;
  if (!p.copy_tail || tail <= 0) return;
  const int64_t width = plan.tail_vector ? 16 / int64_t(sizeof(T)) : 1;
  const uint32_t per_head_tail = static_cast<uint32_t>(tail / width);
  for (uint32_t j = static_cast<uint32_t>(thread); j < tokens * group * per_head_tail; j += step) {
    const uint32_t piece = j % per_head_tail, rest = j / per_head_tail;
    const int64_t h = h0 + rest % group;
    const uint32_t token = rest / group;
    const bool is_q = h < p.q.heads;
    const RotaryTensor& x = is_q ? p.q : p.k;
    const int64_t head = is_q ? h : h - p.q.heads;
    const int64_t b = tile.bt[2 * token], t = tile.bt[2 * token + 1];
    const int64_t channel = 2 * p.half + static_cast<int64_t>(piece) * width;
    const T* in = static_cast<const T*>(x.in) + x.in_rows.row(b, t) + head * x.in_rows.stride_inner + channel;
    T* out = static_cast<T*>(x.out) + x.out_rows.row(b, t) + head * x.out_rows.stride_inner + channel;
    if constexpr (kVector) {
      if (plan.tail_vector) {
        detail::store_vec<T, 16 / sizeof(T)>(out, detail::load_vec<T, 16 / sizeof(T)>(in));
        continue;
      }
    }
    *out = *in;
  }
}

#ifdef POSEMB_LAUNCHERS
/// Launches rotary (or its inverse, the backward) on `stream`.
cudaError_t launch_rotary(const RotaryParams& params, DType dtype, int num_sms,
                          cudaStream_t stream);
#endif

}  // namespace posemb
