// The C++ API: posemb::nn::SinusoidalPositionalEmbedding and the functional
// ops against a reference built from ATen in fp64, on every dtype and device.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <sstream>
#include <tuple>

#include "dtype_device.h"
#include "posemb/posemb.h"

namespace {

// PE(positions) in fp64 straight from the Vaswani formula, interleaved layout.
torch::Tensor reference_encoding(const torch::Tensor& positions, int64_t dim, double base = 10000.0) {
  const auto opts = torch::dtype(torch::kFloat64);
  const auto i = torch::arange(dim / 2, opts);
  const auto w = torch::pow(torch::tensor(base, opts), -2.0 * i / static_cast<double>(dim));
  const auto theta = positions.to(torch::kFloat64).unsqueeze(-1) * w;
  auto pe = torch::stack({torch::sin(theta), torch::cos(theta)}, -1).flatten(-2);
  if (dim % 2) pe = torch::cat({pe, torch::zeros_like(pe.narrow(-1, 0, 1))}, -1);
  return pe;
}

class SinusoidalTest : public DtypeDeviceTest {
 protected:
  // |out - ref| <= atol + rtol * |ref|: fp32 keeps the 2e-6 contract; fp64
  // frequencies carry ~1e-16 relative error, ~1e-10 in the angle at 2^20;
  // half types may be one ulp (2^-8 / 2^-11 relative) from the rounded value.
  std::pair<double, double> tolerance() const {
    switch (dtype()) {
      case torch::kFloat32: return {2e-6, 1.3e-6};
      case torch::kFloat64: return {1e-9, 1e-12};
      case torch::kFloat16: return {1e-5, 1.0 / 1024};
      default: return {1e-5, 1.0 / 128};
    }
  }
  void expect_close(const torch::Tensor& out, const torch::Tensor& ref) const {
    ASSERT_EQ(out.sizes(), ref.sizes());
    const auto [atol, rtol] = tolerance();
    const auto excess = (out.cpu().to(torch::kFloat64) - ref).abs() - (atol + rtol * ref.abs());
    EXPECT_LE(excess.max().item<double>(), 0.0) << "dtype " << dtype();
  }
};

TEST_P(SinusoidalTest, ModuleMatchesReference) {
  torch::manual_seed(0);
  posemb::nn::SinusoidalPositionalEmbedding pe(
      posemb::nn::SinusoidalPositionalEmbeddingOptions(9).scale(2.0));
  const auto x = torch::randn({3, 7, 9}, options());
  const auto ref = x.cpu().to(torch::kFloat64) * 2.0 + reference_encoding(torch::arange(7), 9);
  expect_close(pe(x), ref);
}

TEST_P(SinusoidalTest, OffsetsPositionsAndSeqFirst) {
  torch::manual_seed(1);
  const auto x = torch::randn({4, 5, 16}, options());
  const auto offsets = torch::tensor({0, 3, 100, 1 << 20}, torch::dtype(torch::kInt32).device(device()));
  auto out = posemb::sinusoidal_add(x, std::nullopt, offsets);
  auto positions = offsets.cpu().to(torch::kLong).unsqueeze(1) + torch::arange(5).unsqueeze(0);
  expect_close(out, x.cpu().to(torch::kFloat64) + reference_encoding(positions, 16));

  const auto explicit_pos = torch::tensor({9, 2, 7, 7, 0}, torch::dtype(torch::kLong).device(device()));
  const auto seq_first = x.transpose(0, 1);  // (seq, batch, dim) view, no copy
  out = posemb::sinusoidal_add(seq_first, explicit_pos, std::nullopt, 0, /*seq_dim=*/0);
  expect_close(out, seq_first.cpu().to(torch::kFloat64) +
                        reference_encoding(explicit_pos.cpu(), 16).unsqueeze(1));
}

TEST_P(SinusoidalTest, InPlaceAndTable) {
  const auto table = posemb::sinusoidal_table(6, 8, 10, "interleaved", "vaswani", 10000.0,
                                              std::nullopt, options());
  expect_close(table, reference_encoding(torch::arange(10, 16), 8));
  auto x = torch::zeros({1, 6, 8}, options());
  posemb::sinusoidal_add_(x, std::nullopt, std::nullopt, 10);
  expect_close(x[0], reference_encoding(torch::arange(10, 16), 8));
}

TEST_P(SinusoidalTest, PaddingAwarePositions) {
  posemb::nn::SinusoidalPositionalEmbedding pe(
      posemb::nn::SinusoidalPositionalEmbeddingOptions(8).layout("half").freqs("fairseq").padding_idx(1));
  const auto ids = torch::tensor({{1, 1, 7, 8}, {7, 8, 9, 1}}, torch::dtype(torch::kLong).device(device()));
  const auto positions = posemb::make_positions(ids, 1);
  EXPECT_TRUE(torch::equal(positions.cpu(), torch::tensor({{1, 1, 2, 3}, {2, 3, 4, 1}})));
  const auto out = pe->forward_ids(torch::zeros({2, 4, 8}, options()), ids).cpu();
  EXPECT_EQ(out[0][0].abs().sum().item<double>(), 0.0);  // pads get a zero encoding
  EXPECT_EQ(out[1][3].abs().sum().item<double>(), 0.0);
  EXPECT_NE(out[0][2].abs().sum().item<double>(), 0.0);
}

TEST_P(SinusoidalTest, TrainsThroughCppAutograd) {
  posemb::nn::SinusoidalPositionalEmbedding pe(
      posemb::nn::SinusoidalPositionalEmbeddingOptions(4).scale(3.0));
  const auto x = torch::randn({2, 3, 4}, options().requires_grad(true));
  (pe(x) * 2).sum().backward();
  expect_close(x.grad(), torch::full({2, 3, 4}, 6.0, torch::kFloat64));
}

POSEMB_TEST_ALL_DTYPES_AND_DEVICES(SinusoidalTest);

TEST(SinusoidalModule, PrettyPrintAndClone) {
  posemb::nn::SinusoidalPositionalEmbedding pe(
      posemb::nn::SinusoidalPositionalEmbeddingOptions(512).layout("half").padding_idx(1));
  std::ostringstream s;
  s << *pe;
  EXPECT_EQ(s.str(), "posemb::nn::SinusoidalPositionalEmbedding(512, layout=half, freqs=vaswani, base=10000, padding_idx=1)");
  auto copy = std::dynamic_pointer_cast<posemb::nn::SinusoidalPositionalEmbeddingImpl>(pe->clone());
  ASSERT_TRUE(copy);
  EXPECT_EQ(copy->options.layout(), "half");
  EXPECT_TRUE(pe->parameters().empty() && pe->buffers().empty());
}

TEST(SinusoidalErrors, NameTheOpAndTheArgument) {
  const auto x = torch::randn({2, 3, 4});
  auto expect_error = [](auto&& call, const std::string& message) {
    try {
      call();
      ADD_FAILURE() << "expected an error containing: " << message;
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  };
  expect_error([&] { posemb::sinusoidal_add(x, std::nullopt, std::nullopt, 0, -2, "rows"); },
               "posemb.sinusoidal_add: layout must be 'interleaved' or 'half'");
  expect_error([&] { posemb::sinusoidal_add(x.to(torch::kInt)); },
               "posemb.sinusoidal_add: x must be float32");
  expect_error([&] { posemb::sinusoidal_add(x, torch::randn({3})); },
               "posemb.sinusoidal_add: positions must be an integer tensor");
  expect_error([&] { posemb::sinusoidal_add(x, torch::arange(5)); },
               "posemb.sinusoidal_add: positions must be (seq,) or broadcastable");
  expect_error([&] { posemb::nn::SinusoidalPositionalEmbedding(
                         posemb::nn::SinusoidalPositionalEmbeddingOptions(4).freqs("t5")); },
               "posemb::nn::SinusoidalPositionalEmbedding: freqs must be");
  posemb::nn::SinusoidalPositionalEmbedding pe(4);
  expect_error([&] { pe(torch::randn({2, 3, 5})); }, "x must end in embedding_dim=4");
}

}  // namespace
