// posemb::nn::Timesteps, SinCos2dPositionalEmbedding and SinCos3dPositionalEmbedding from C++:
// the modules against an fp64 reference of diffusers' formulas, and their errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <sstream>
#include <string>

#include "posemb/posemb.h"

namespace {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Timesteps, ModuleMatchesDiffusersFormula) {
  // DiT's embedder: cos first, frequencies exp(-ln(max_period) i / half).
  posemb::nn::Timesteps embed(posemb::nn::TimestepsOptions(256).flip_sin_to_cos(true).downscale_freq_shift(0));
  const auto t = torch::tensor({0.0f, 1.5f, 999.0f, 123.25f});
  const auto out = embed->forward(t);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{4, 256}));
  EXPECT_EQ(out.scalar_type(), torch::kFloat32);
  const auto i = torch::arange(128, torch::kFloat64);
  const auto w = torch::exp(-std::log(10000.0) * i / 128.0);
  const auto angle = t.to(torch::kFloat64).unsqueeze(-1) * w;
  const auto expected = torch::cat({torch::cos(angle), torch::sin(angle)}, -1);
  EXPECT_LE((out.to(torch::kFloat64) - expected).abs().max().item<double>(), 2.5e-7);
  std::ostringstream s;
  embed->pretty_print(s);
  EXPECT_EQ(s.str(), "posemb::nn::Timesteps(256, flip_sin_to_cos=true, downscale_freq_shift=0, scale=1)");
  EXPECT_NE(error_of([] { posemb::nn::Timesteps(0); }).find("num_channels must be >= 1"), std::string::npos);
  EXPECT_NE(error_of([] { posemb::nn::Timesteps(posemb::nn::TimestepsOptions(8).max_period(-1)); })
                .find("max_period must be a finite number > 0"),
            std::string::npos);
}

TEST(SinCos2dPositionalEmbedding, ModuleAddsDiffusersGrid) {
  // SD3-style: base_size 4 on a 2 x 3 grid, interpolation_scale 2.
  posemb::nn::SinCos2dPositionalEmbedding pe(
      posemb::nn::SinCos2dPositionalEmbeddingOptions(16).base_size(4.0).interpolation_scale(2.0));
  torch::manual_seed(2);
  const auto x = torch::randn({2, 6, 16});
  const auto out = pe->forward(x, 2, 3);
  // Token t sits at row t / 3, column t % 3; channels [0, 8) encode the column, [8, 16) the row.
  const auto omega = torch::pow(10000.0, -torch::arange(4, torch::kFloat64) / 4.0);
  auto axis = [&](const torch::Tensor& pos) {
    const auto a = pos.to(torch::kFloat64).unsqueeze(-1) * omega;
    return torch::cat({torch::sin(a), torch::cos(a)}, -1);
  };
  const auto pos_h = torch::arange(2, torch::kFloat32) / (2.0 / 4.0) / 2.0;
  const auto pos_w = torch::arange(3, torch::kFloat32) / (3.0 / 4.0) / 2.0;
  const auto grid = torch::cat({axis(pos_w).repeat({2, 1}), axis(pos_h).repeat_interleave(3, 0)}, -1);
  EXPECT_LE((out.to(torch::kFloat64) - x.to(torch::kFloat64) - grid).abs().max().item<double>(), 5e-7);
  EXPECT_TRUE(torch::equal(pe->positions(3, torch::kCPU), pos_w));
  EXPECT_NE(error_of([] { posemb::nn::SinCos2dPositionalEmbedding(18); }).find("embed_dim must be a positive multiple of 4"),
            std::string::npos);
  EXPECT_NE(error_of([&] { pe->forward(x, 2, 2); }), "");  // 4 patches for 6 tokens: the op refuses
}

TEST(SinCos3dPositionalEmbedding, ModuleAddsDiffusersVideoGrid) {
  // CogVideoX-style: 2 frames of a 2 x 3 grid, spatial_interpolation_scale 1.875, temporal 0.5, dim 32.
  posemb::nn::SinCos3dPositionalEmbedding pe(posemb::nn::SinCos3dPositionalEmbeddingOptions(32)
                                                 .spatial_interpolation_scale(1.875)
                                                 .temporal_interpolation_scale(0.5));
  torch::manual_seed(3);
  const auto x = torch::randn({2, 12, 32});
  const auto out = pe->forward(x, 2, 2, 3);
  // get_3d_sincos_pos_embed: [frames: 8 channels, 4 frequencies | columns: 12 | rows: 12, 6 frequencies each].
  auto axis = [](const torch::Tensor& pos, int64_t q) {
    const auto omega = torch::pow(10000.0, -torch::arange(q, torch::kFloat64) / double(q));
    const auto a = pos.to(torch::kFloat64).unsqueeze(-1) * omega;
    return torch::cat({torch::sin(a), torch::cos(a)}, -1);
  };
  const auto pos_t = torch::arange(2, torch::kFloat32) / 0.5;
  const auto pos_h = torch::arange(2, torch::kFloat32) / 1.875;
  const auto pos_w = torch::arange(3, torch::kFloat32) / 1.875;
  const auto spatial = torch::cat({axis(pos_w, 6).repeat({2, 1}), axis(pos_h, 6).repeat_interleave(3, 0)}, -1);
  const auto grid = torch::cat({axis(pos_t, 4).repeat_interleave(6, 0), spatial.repeat({2, 1})}, -1);
  EXPECT_LE((out.to(torch::kFloat64) - x.to(torch::kFloat64) - grid).abs().max().item<double>(), 5e-7);
  std::ostringstream s;
  pe->pretty_print(s);
  EXPECT_EQ(s.str(), "posemb::nn::SinCos3dPositionalEmbedding(32, spatial_interpolation_scale=1.875, "
                     "temporal_interpolation_scale=0.5, base=10000)");
  EXPECT_NE(error_of([] { posemb::nn::SinCos3dPositionalEmbedding(40); })
                .find("embed_dim must be a positive multiple of 16"),
            std::string::npos);
  EXPECT_NE(error_of([&] { pe->forward(x, 3, 2, 3); }).find("x must have T*H*W = 18 tokens"), std::string::npos);
}

}  // namespace
