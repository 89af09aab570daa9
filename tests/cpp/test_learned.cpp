// posemb::nn::LearnedPositionalEmbedding and learned_add from C++. (Their
// CUDA launches walked on the CPU: test_learned_grid.cpp, test_table_grad_grid.cpp.)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>
#include <tuple>

#include "dtype_device.h"
#include "posemb/posemb.h"

namespace {

using LearnedTest = DtypeDeviceTest;

TEST_P(LearnedTest, ModuleMatchesGatherAndTrains) {
  torch::manual_seed(0);
  posemb::nn::LearnedPositionalEmbedding pe(
      posemb::nn::LearnedPositionalEmbeddingOptions(16, 8).padding_idx(1));
  pe->to(torch::Device(device()), dtype());
  const auto ids = torch::tensor({{1, 1, 5, 6}, {5, 6, 7, 1}}, torch::dtype(torch::kLong).device(device()));
  const auto x = torch::randn({2, 4, 8}, options().requires_grad(true));
  const auto y = pe->forward_ids(x, ids);
  const auto positions = posemb::make_positions(ids, 1);
  const auto expected = (x.to(torch::kFloat64) + pe->weight.to(torch::kFloat64).index({positions})).to(dtype());
  EXPECT_TRUE(torch::equal(y, expected)) << dtype();

  y.sum().backward();
  const auto grad = pe->weight.grad().cpu().to(torch::kFloat64);
  EXPECT_EQ(grad[1].abs().sum().item<double>(), 0.0);  // the padding row learns nothing
  EXPECT_EQ(grad[2][0].item<double>(), 2.0);           // position 2: two tokens
  EXPECT_EQ(grad[5][0].item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(x.grad(), torch::ones_like(x)));
}

TEST_P(LearnedTest, OffsetsAndSeqFirst) {
  const auto w = torch::randn({32, 8}, options());
  const auto x = torch::randn({6, 3, 8}, options());  // (seq, batch, dim)
  const auto offsets = torch::tensor({0, 10, 20}, torch::dtype(torch::kInt32).device(device()));
  const auto y = posemb::learned_add(x, w, std::nullopt, offsets, 0, /*seq_dim=*/0);
  for (int64_t b = 0; b < 3; ++b) {
    EXPECT_TRUE(torch::equal(y.select(1, b), (x.select(1, b).to(torch::kFloat64) +
                                              w.narrow(0, 10 * b, 6).to(torch::kFloat64)).to(dtype())));
  }
}

POSEMB_TEST_ALL_DTYPES_AND_DEVICES(LearnedTest);

TEST(LearnedErrors, OutOfRangePositionsAreAnError) {
  const auto x = torch::randn({2, 3, 4});
  const auto w = torch::randn({5, 4});
  try {
    posemb::learned_add(x, w, torch::tensor({0, 7, 1}));
    ADD_FAILURE() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("posemb.learned_add: positions must be in [0, num_embeddings=5)"),
              std::string::npos)
        << e.what();
  }
  posemb::nn::LearnedPositionalEmbedding pe(5, 4);
  std::ostringstream s;
  s << *pe;
  EXPECT_EQ(s.str(), "posemb::nn::LearnedPositionalEmbedding(5, 4)");
}

}  // namespace

TEST(LearnedInit, SinusoidalInitIsTheEncodingAndTrains) {
  // The article's module: a trainable table that starts as the sinusoid.
  posemb::nn::LearnedPositionalEmbedding pe(posemb::nn::LearnedPositionalEmbeddingOptions(40, 16)
                                                .sinusoidal_init(true)
                                                .layout("half")
                                                .padding_idx(1));
  auto expected = posemb::sinusoidal_table(40, 16, 0, "half", "vaswani", 10000.0, std::nullopt,
                                           torch::kFloat64)
                      .to(torch::kFloat32);
  expected[1].zero_();
  EXPECT_TRUE(torch::equal(pe->weight, expected));
  EXPECT_TRUE(pe->weight.requires_grad());
  const auto x = torch::zeros({2, 5, 16});
  pe->forward(x, {}, 3).sum().backward();
  EXPECT_EQ(pe->weight.grad().slice(0, 3, 8).min().item<float>(), 2.0f);  // rows 3..7, batch of 2
  EXPECT_EQ(pe->weight.grad().slice(0, 3, 8).max().item<float>(), 2.0f);

  posemb::nn::LearnedPositionalEmbedding noisy(
      posemb::nn::LearnedPositionalEmbeddingOptions(40, 16).sinusoidal_init(true).noise_std(0.1));
  const double spread = (noisy->weight.to(torch::kFloat64) -
                         posemb::sinusoidal_table(40, 16, 0, "interleaved", "vaswani", 10000.0,
                                                  std::nullopt, torch::kFloat64))
                            .std()
                            .item<double>();
  EXPECT_NEAR(spread, 0.1, 0.02);
  EXPECT_THROW(posemb::nn::LearnedPositionalEmbedding(
                   posemb::nn::LearnedPositionalEmbeddingOptions(4, 4).sinusoidal_init(true).noise_std(-1)),
               c10::Error);
}

TEST(FourierModule, StartsAsTheSinusoidAndTrainsItsFrequencies) {
  posemb::nn::FourierPositionalEmbedding pe(posemb::nn::FourierPositionalEmbeddingOptions(16).bias(true));
  ASSERT_EQ(pe->frequencies.scalar_type(), torch::kFloat32);
  const auto x = torch::zeros({2, 5, 16});
  const auto table = posemb::sinusoidal_table(5, 16, 7, "half");
  EXPECT_TRUE(torch::allclose(pe->forward(x, {}, 7), table.expand({2, 5, 16}), 0, 1e-6));
  const auto offsets = torch::tensor({0, 1000});
  const auto y = pe->forward_offsets(x, offsets);
  EXPECT_TRUE(torch::allclose(y[1], posemb::sinusoidal_table(5, 16, 1000, "half"), 0, 2e-4));
  // d/dα of sum(E) from the exact formula: Σ p (W_sin·1 cos(αp) - W_cos·1 sin(αp)).
  y.sum().backward();
  const auto pos = (offsets.reshape({-1, 1}) + torch::arange(5)).to(torch::kFloat64).unsqueeze(-1);
  const auto angle = pe->frequencies.detach().to(torch::kFloat64) * pos;
  const auto w = pe->weight.detach().to(torch::kFloat64).sum(1);  // the incoming gradient is ones
  const auto expected = (pos * (w.slice(0, 0, 8) * angle.cos() - w.slice(0, 8) * angle.sin())).sum({0, 1});
  EXPECT_TRUE(torch::allclose(pe->frequencies.grad().to(torch::kFloat64), expected, 1e-5, 1e-5));
  ASSERT_TRUE(pe->bias.grad().defined());
  EXPECT_THROW(pe->forward(torch::zeros({2, 5, 9})), c10::Error);
}

// A cast casts the weight and leaves the frequencies float32 and exact, the
// same tensor (an optimizer made before it still holds them).
TEST(FourierModule, CastsKeepTheFrequenciesFloat32) {
  posemb::nn::FourierPositionalEmbedding pe(posemb::nn::FourierPositionalEmbeddingOptions(16).bias(true));
  torch::NoGradGuard no_grad;
  pe->frequencies.add_(1e-3);  // not a bf16 value
  const auto exact = pe->frequencies.clone();
  const auto* impl = pe->frequencies.unsafeGetTensorImpl();
  pe->to(torch::kBFloat16);
  EXPECT_EQ(pe->weight.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(pe->bias.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(pe->frequencies, exact));
  EXPECT_EQ(pe->frequencies.unsafeGetTensorImpl(), impl);
  EXPECT_EQ(pe->named_parameters()["frequencies"].scalar_type(), torch::kFloat32);
  pe->to(torch::kCPU, torch::kFloat64);
  EXPECT_EQ(pe->weight.scalar_type(), torch::kFloat64);
  EXPECT_TRUE(torch::equal(pe->frequencies, exact));
  EXPECT_EQ(pe->forward(torch::zeros({2, 5, 16}, torch::kFloat64)).scalar_type(), torch::kFloat64);
}
