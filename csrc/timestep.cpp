// timestep_embedding and its backward: argument checks, the backend-neutral
// part of the kernel, the Meta (fake) kernel, the composite backward and the
// public C++ function.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "float_turns.h"
#include "posemb/timestep.h"
#include "timestep_op.h"

namespace posemb {
namespace detail {
namespace {

constexpr const char* kOp = "timestep_embedding";

/// Checks the arguments (real or fake tensors) and returns the output dtype.
at::ScalarType check_timestep(const at::Tensor& timesteps, int64_t embedding_dim, double downscale_freq_shift,
                              double scale, double max_period, std::optional<at::ScalarType> dtype) {
  const auto t = timesteps.scalar_type();
  TORCH_CHECK(at::isIntegralType(t, /*includeBool=*/false) || at::isFloatingType(t), "posemb.", kOp,
              ": timesteps must be an integer or floating tensor, got ", t);
  TORCH_CHECK(embedding_dim >= 1, "posemb.", kOp, ": embedding_dim must be positive, got ", embedding_dim);
  TORCH_CHECK(std::isfinite(max_period) && max_period > 0, "posemb.", kOp,
              ": max_period must be a positive finite number, got ", max_period);
  TORCH_CHECK(std::isfinite(scale), "posemb.", kOp, ": scale must be finite, got ", scale);
  const int64_t half = embedding_dim / 2;
  TORCH_CHECK(std::isfinite(downscale_freq_shift) && (half == 0 || half - downscale_freq_shift != 0), "posemb.",
              kOp, ": downscale_freq_shift must be finite and differ from embedding_dim // 2 = ", half,
              " (the frequencies divide by their difference), got ", downscale_freq_shift);
  const at::ScalarType out = dtype.value_or(at::kFloat);
  TORCH_CHECK(out == at::kFloat || out == at::kDouble || out == at::kHalf || out == at::kBFloat16, "posemb.", kOp,
              ": dtype must be float32, float64, float16 or bfloat16, got ", out);
  return out;
}

std::vector<c10::SymInt> out_shape(const at::Tensor& timesteps, int64_t embedding_dim) {
  std::vector<c10::SymInt> shape(timesteps.sym_sizes().begin(), timesteps.sym_sizes().end());
  shape.emplace_back(embedding_dim);
  return shape;
}

at::Tensor timestep_embedding_meta(const at::Tensor& timesteps, int64_t embedding_dim, bool flip_sin_to_cos,
                                   double downscale_freq_shift, double scale, double max_period,
                                   std::optional<at::ScalarType> dtype) {
  const auto out = check_timestep(timesteps, embedding_dim, downscale_freq_shift, scale, max_period, dtype);
  return at::empty_symint(out_shape(timesteps, embedding_dim), timesteps.options().dtype(out));
}

// d/dt of sum(grad * emb) = Σ_i w_i (g_sin,i cos_i - g_cos,i sin_i), from the
// embedding itself, in fp64.
at::Tensor timestep_embedding_backward_composite(const at::Tensor& grad, const at::Tensor& timesteps,
                                                 const at::Tensor& embedding, bool flip_sin_to_cos,
                                                 double downscale_freq_shift, double scale, double max_period) {
  const int64_t half = embedding.size(-1) / 2;
  const auto options = grad.options().dtype(at::kDouble);
  const at::Tensor w =
      at::exp(at::arange(half, options) * (-std::log(max_period) / (half - downscale_freq_shift))) * scale;
  const int64_t s0 = flip_sin_to_cos ? half : 0, c0 = flip_sin_to_cos ? 0 : half;
  const at::Tensor e = embedding.to(at::kDouble), g = grad.to(at::kDouble);
  const at::Tensor per_freq = g.narrow(-1, s0, half) * e.narrow(-1, c0, half) -
                              g.narrow(-1, c0, half) * e.narrow(-1, s0, half);
  return (per_freq * w).sum(-1).to(timesteps.scalar_type());
}

}  // namespace

at::Tensor timestep_embedding_impl(TimestepRunner run, const at::Tensor& timesteps, int64_t embedding_dim,
                                   bool flip_sin_to_cos, double downscale_freq_shift, double scale,
                                   double max_period, std::optional<at::ScalarType> dtype) {
  const auto out_type = check_timestep(timesteps, embedding_dim, downscale_freq_shift, scale, max_period, dtype);
  at::Tensor out = at::empty_symint(out_shape(timesteps, embedding_dim), timesteps.options().dtype(out_type));
  if (out.numel() == 0) return out;
  // The contract: a timestep is the float32 it becomes (diffusers' .float()),
  // or the float64 it is.
  const bool fp64 = timesteps.scalar_type() == at::kDouble;
  const at::Tensor t = timesteps.to(fp64 ? at::kDouble : at::kFloat).contiguous();
  const int64_t half = embedding_dim / 2;
  const at::Tensor freqs =
      float_freq_table(half, max_period, static_cast<double>(half) - downscale_freq_shift, scale,
                       timesteps.device());
  TimestepParams p;
  p.timesteps = t.const_data_ptr();
  p.timesteps_fp64 = fp64;
  p.out = out.data_ptr();
  p.n = t.numel();
  p.dim = embedding_dim;
  p.flip_sin_to_cos = flip_sin_to_cos;
  p.freqs = reinterpret_cast<const FloatFreq*>(freqs.const_data_ptr<int64_t>());
  run(p, out);
  return out;
}

}  // namespace detail

at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t embedding_dim, bool flip_sin_to_cos,
                              double downscale_freq_shift, double scale, double max_period,
                              std::optional<at::ScalarType> dtype) {
  return detail::TimestepEmbeddingOp::handle().call(timesteps, embedding_dim, flip_sin_to_cos, downscale_freq_shift,
                                                    scale, max_period, dtype);
}

TORCH_LIBRARY_IMPL(posemb, Meta, m) {
  m.impl("timestep_embedding", &detail::timestep_embedding_meta);
}

TORCH_LIBRARY_IMPL(posemb, CompositeExplicitAutograd, m) {
  m.impl("timestep_embedding_backward", &detail::timestep_embedding_backward_composite);
}

}  // namespace posemb
