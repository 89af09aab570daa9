// sincos_2d_add: y = x + PE2d(h, w), the 2-D sin-cos grid of MAE, ViT, DiT,
// PixArt and SD3 (diffusers' get_2d_sincos_pos_embed) computed on the fly,
// and with frame positions the 3-D grid of video patches (CogVideoX,
// diffusers' get_3d_sincos_pos_embed).
// 2-D: token t of x is grid cell (t / W, t % W); channels [0, dim/2) encode
// the column's position pos_w (sin then cos), [dim/2, dim) the row's pos_h,
// with frequencies base^(-k / (dim/4)).
// 3-D: token t is frame t / (H*W), then the cell of t % (H*W) as above;
// channels [0, dim/4) encode the frame's pos_t (sin then cos, frequencies
// base^(-k / (dim/8))), [dim/4, dim) are the 2-D grid of 3*dim/4 channels.
// Positions are floats (kernels/float_turns.cuh). Torch-free; the CPU kernel
// runs the same body.
#pragma once

#include <cstdint>

#include "kernels/float_turns.cuh"
#include "kernels/launch_plan.cuh"
#include "kernels/math.cuh"

namespace posemb {

struct Sincos2dParams {
  const void* x = nullptr;  // [batch, t * h * w, dim], any strides
  void* y = nullptr;        // [batch, t * h * w, dim], any strides; may be x
  int64_t batch = 0, t = 1, h = 0, w = 0, dim = 0;
  int64_t t_dim = 0;        // channels of the frame axis: dim / 4 with pos_t, else 0
  int64_t x_sb = 0, x_st = 0, x_sd = 0, y_sb = 0, y_st = 0, y_sd = 0;
  const float* pos_t = nullptr;        // [t] frame positions, or null (2-D)
  const float* pos_h = nullptr;        // [h] row positions
  const float* pos_w = nullptr;        // [w] column positions
  const FloatFreq* freqs = nullptr;    // [(dim - t_dim) / 4] of the spatial axes
  const FloatFreq* freqs_t = nullptr;  // [t_dim / 2] of the frame axis
};

/// Work items: one (sin, cos) pair per (token, axis, frequency); each serves
/// the whole batch.
inline int64_t sincos_2d_items(const Sincos2dParams& p) { return p.t * p.h * p.w * (p.dim / 2); }

/// Blocks of 256 threads for `items` work items: enough to fill the SMs,
/// the rest by the grid-stride loop.
inline int64_t sincos_2d_blocks(int64_t items, int64_t num_sms) {
  const int64_t blocks = (items + 255) / 256, cap = num_sms * 16;
  return blocks < 1 ? 1 : (blocks < cap ? blocks : cap);
}

template <typename T>
POSEMB_HD void sincos_2d_item(const Sincos2dParams& p, int64_t j) {
  using A = detail::acc_t<T>;
  using Ops = detail::ScalarOps<T>;
  const int64_t pairs = p.dim / 2, qt = p.t_dim / 2, q = (p.dim - p.t_dim) / 4;
  const int64_t token = j / pairs, k = j % pairs;
  float pos;
  const FloatFreq* freq;
  int64_t cs, cc;
  if (k < qt) {  // the frame axis
    pos = p.pos_t[token / (p.h * p.w)];
    freq = p.freqs_t + k;
    cs = k, cc = k + qt;
  } else {
    const int64_t s = k - qt, axis = s / q, i = s % q;  // axis 0: the column (w), 1: the row (h)
    pos = axis == 0 ? p.pos_w[token % p.w] : p.pos_h[(token / p.w) % p.h];
    freq = p.freqs + i;
    cs = p.t_dim + axis * 2 * q + i, cc = cs + q;
  }
  A s, c;
  turns::float_position_sincos(pos, *freq, &s, &c);
  for (int64_t b = 0; b < p.batch; ++b) {
    const T* x = static_cast<const T*>(p.x) + b * p.x_sb + token * p.x_st;
    T* y = static_cast<T*>(p.y) + b * p.y_sb + token * p.y_st;
    const A xs = Ops::to_acc(x[cs * p.x_sd]), xc = Ops::to_acc(x[cc * p.x_sd]);
    y[cs * p.y_sd] = Ops::from_acc(xs + s);
    y[cc * p.y_sd] = Ops::from_acc(xc + c);
  }
}

#ifdef POSEMB_LAUNCHERS
/// Launches sincos_2d_add on `stream`. Returns the launch status.
cudaError_t launch_sincos_2d_add(const Sincos2dParams& params, DType dtype, int num_sms, cudaStream_t stream);
#endif

}  // namespace posemb
