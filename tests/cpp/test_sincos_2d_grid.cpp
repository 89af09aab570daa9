// Walks the CUDA kernel body of sincos_2d_add (kernels/sincos_2d.cuh) over
// its whole launch grid on the CPU (every block, every thread, every
// grid-stride step of the .cu's plan) and compares with the CPU op, for the
// 2-D grid and the 3-D grid of video patches (pos_t): the GPU's indexing of
// frames, rows, columns and channels is checked without a GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "grid_walk.h"
#include "posemb/sincos_2d.h"
#include "sincos_2d_op.h"

namespace {

using posemb::Sincos2dParams;

template <typename T>
void walk(const Sincos2dParams& p, int64_t num_sms) {
  const int64_t items = posemb::sincos_2d_items(p), blocks = posemb::sincos_2d_blocks(items, num_sms);
  grid_walk::each_thread_2d(blocks, 1, 256, [&](int64_t bx, int64_t, int64_t tx) {
    for (int64_t j = bx * 256 + tx; j < items; j += blocks * 256) posemb::sincos_2d_item<T>(p, j);
  });
}

struct Case {
  std::string name;
  std::function<torch::Tensor(torch::TensorOptions)> make_x;
  int64_t h, w;
  std::optional<int64_t> t;  // frames: the 3-D grid
};

std::vector<Case> cases() {
  auto randn = [](std::vector<int64_t> shape) {
    return [shape](torch::TensorOptions o) { return torch::randn(shape, o); };
  };
  std::vector<Case> c;
  c.push_back({"2d", randn({2, 3 * 5, 16}), 3, 5, {}});
  c.push_back({"2d-dit", randn({1, 8 * 8, 64}), 8, 8, {}});
  c.push_back({"3d", randn({2, 4 * 3 * 5, 16}), 3, 5, 4});
  c.push_back({"3d-wide", randn({1, 3 * 6 * 4, 96}), 6, 4, 3});
  c.push_back({"3d-one-frame", randn({3, 1 * 2 * 7, 48}), 2, 7, 1});
  c.push_back({"3d-channel-stride",
               [](torch::TensorOptions o) { return torch::randn({2, 2 * 3 * 2, 64}, o).slice(2, 0, 64, 2); }, 3, 2,
               2});
  c.push_back({"3d-batch-inner", [](torch::TensorOptions o) { return torch::randn({30, 2, 32}, o).transpose(0, 1); },
               3, 2, 5});
  return c;
}

template <typename T>
void check_case(const Case& c, torch::Dtype dtype, int64_t num_sms) {
  torch::manual_seed(11);
  const auto x = c.make_x(torch::dtype(dtype));
  const auto pos_h = torch::arange(c.h, torch::kFloat32) / 1.875;
  const auto pos_w = torch::arange(c.w, torch::kFloat32) * 0.75 + 3.0;
  std::optional<torch::Tensor> pos_t;
  if (c.t) pos_t = torch::arange(*c.t, torch::kFloat32) / 0.5 + 100.25;
  const auto expected = posemb::sincos_2d_add(x, pos_h, pos_w, 10000.0, pos_t);
  auto y = grid_walk::poisoned(x.sizes(), torch::dtype(dtype));
  std::vector<torch::Tensor> keep;
  const auto p = posemb::detail::make_sincos_2d_params(x, y, pos_h, pos_w, 10000.0, pos_t, keep);
  EXPECT_EQ(p.t_dim, c.t ? x.size(2) / 4 : 0) << c.name;
  walk<T>(p, num_sms);
  // The same formula in the same precision, so the same bits.
  EXPECT_TRUE(torch::equal(y, expected)) << c.name << " dtype " << dtype << " sms " << num_sms << " max diff "
                                         << (y.to(torch::kFloat64) - expected.to(torch::kFloat64)).abs().max();
}

TEST(sincos_2d_grid_walk, MatchesCpuOpIn2dAnd3d) {
  for (const auto& c : cases()) {
    for (int64_t sms : {1, 132}) {  // one SM forces grid-stride steps
      check_case<float>(c, torch::kFloat32, sms);
      check_case<double>(c, torch::kFloat64, sms);
      check_case<c10::Half>(c, torch::kFloat16, sms);
      check_case<c10::BFloat16>(c, torch::kBFloat16, sms);
    }
  }
}

TEST(sincos_2d_grid_walk, ThreeDChannelsAreFramesThenColumnsThenRows) {
  // One token per axis value: frame 1 of 2, row 0 of 1, column 1 of 2; zeros + PE3d is the encoding alone.
  const auto pos_h = torch::tensor({0.5f}), pos_w = torch::tensor({0.0f, 2.0f}), pos_t = torch::tensor({0.0f, 3.0f});
  const int64_t dim = 32, td = dim / 4, q = (dim - td) / 4;
  const auto x = torch::zeros({1, 4, dim});
  auto y = grid_walk::poisoned(x.sizes());
  std::vector<torch::Tensor> keep;
  walk<float>(posemb::detail::make_sincos_2d_params(x, y, pos_h, pos_w, 10000.0, pos_t, keep), 1);
  const auto row = y[0][3].to(torch::kFloat64);  // frame 1, column 1
  for (int64_t k = 0; k < td / 2; ++k) {
    const double nu = std::pow(10000.0, -double(k) / double(td / 2));
    EXPECT_NEAR(row[k].item<double>(), std::sin(3.0 * nu), 2.5e-7) << k;
    EXPECT_NEAR(row[td / 2 + k].item<double>(), std::cos(3.0 * nu), 2.5e-7) << k;
  }
  for (int64_t k = 0; k < q; ++k) {
    const double omega = std::pow(10000.0, -double(k) / double(q));
    EXPECT_NEAR(row[td + k].item<double>(), std::sin(2.0 * omega), 2.5e-7) << k;
    EXPECT_NEAR(row[td + q + k].item<double>(), std::cos(2.0 * omega), 2.5e-7) << k;
    EXPECT_NEAR(row[td + 2 * q + k].item<double>(), std::sin(0.5 * omega), 2.5e-7) << k;
    EXPECT_NEAR(row[td + 3 * q + k].item<double>(), std::cos(0.5 * omega), 2.5e-7) << k;
  }
}

}  // namespace
