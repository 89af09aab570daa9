// sincos_2d_add: y = x + PE2d(h, w), the 2-D sin-cos grid of MAE, ViT, DiT,
// PixArt and SD3 (diffusers' get_2d_sincos_pos_embed) computed on the fly.
// Token t of x is grid cell (t / W, t % W); channels [0, dim/2) encode the
// column's position pos_w (sin then cos), [dim/2, dim) the row's pos_h, with
// frequencies base^(-k / (dim/4)). Positions are floats
// (kernels/float_turns.cuh). Torch-free; the CPU kernel runs the same body.
#pragma once

#include <cstdint>

#include "kernels/float_turns.cuh"
#include "kernels/launch_plan.cuh"
#include "kernels/math.cuh"

namespace posemb {

struct Sincos2dParams {
  const void* x = nullptr;  // [batch, h * w, dim], any strides
  void* y = nullptr;        // [batch, h * w, dim], any strides; may be x
  int64_t batch = 0, h = 0, w = 0, dim = 0;
  int64_t x_sb = 0, x_st = 0, x_sd = 0, y_sb = 0, y_st = 0, y_sd = 0;
  const float* pos_h = nullptr;      // [h] row positions
  const float* pos_w = nullptr;      // [w] column positions
  const FloatFreq* freqs = nullptr;  // [dim / 4]
};

/// Work items: one (sin, cos) pair per (token, axis, frequency); each serves
/// the whole batch.
inline int64_t sincos_2d_items(const Sincos2dParams& p) { return p.h * p.w * (p.dim / 2); }

template <typename T>
POSEMB_HD void sincos_2d_item(const Sincos2dParams& p, int64_t j) {
  using A = detail::acc_t<T>;
  using Ops = detail::ScalarOps<T>;
  const int64_t pairs = p.dim / 2, q = p.dim / 4;
  const int64_t token = j / pairs, k = j % pairs;
  const int64_t axis = k / q, i = k % q;  // axis 0: the column (w), 1: the row (h)
  const float pos = axis == 0 ? p.pos_w[token % p.w] : p.pos_h[token / p.w];
  A s, c;
  turns::float_position_sincos(pos, p.freqs[i], &s, &c);
  const int64_t cs = axis * pairs + i, cc = cs + q;
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
