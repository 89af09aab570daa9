// The angle core (turns.cuh): exact turns of fp32 frequencies, checked
// against values computed with mpmath at 300 bits, and sin/cos of angles
// whose value is known exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "kernels/turns.cuh"

namespace {

using namespace posemb::turns;

TEST(Turns, FromFloatIsExactlyRounded) {
  // round(frac(w / 2π) · 2^64) for the fp32 value w, from mpmath.
  struct Case {
    float w;
    uint64_t F;
  };
  const Case cases[] = {
      {1.0f, 0x28be60db9391054aull},          {0.5f, 0x145f306dc9c882a5ull},
      {1e-4f, 0x10b04869cd91dull},             {3.0e38f, 0x5499266febd46e29ull},
      {1.401298464324817e-45f, 0x0ull},         {-0.25f, 0xf5d067c91b1bbeadull},
      {6.2831855f, 0x7784b2cf1full},            {100.0f, 0xea5dd5c5a4a6111aull},
  };
  for (const auto& c : cases) EXPECT_EQ(from_float(c.w), c.F) << c.w;
}

TEST(Turns, FromLongDoubleAgreesWithFromFloat) {
  for (float w : {1.0f, 0.125f, 3e-3f, 1e-4f, 2.5e-7f, 5.0f}) {
    const uint64_t a = from_long_double(static_cast<long double>(w)), b = from_float(w);
    EXPECT_LE(a > b ? a - b : b - a, 1u) << w;  // within one unit of 2^-64 turn
  }
}

TEST(Turns, QuartersAndEighthsOfATurnAreExact) {
  // F = 2^64 / 8: position p is p eighths of a turn.
  const uint64_t eighth = uint64_t(1) << 61;
  const double expected_sin[8] = {0, M_SQRT1_2, 1, M_SQRT1_2, 0, -M_SQRT1_2, -1, -M_SQRT1_2};
  for (int64_t p = -16; p <= 16; ++p) {
    float s, c;
    double sd, cd;
    position_sincos(p, eighth, &s, &c);
    position_sincos(p, eighth, &sd, &cd);
    const double es = expected_sin[((p % 8) + 8) % 8], ec = expected_sin[(((p + 2) % 8) + 8) % 8];
    EXPECT_NEAR(s, es, 6e-8) << p;
    EXPECT_NEAR(c, ec, 6e-8) << p;
    EXPECT_NEAR(sd, es, 2e-16) << p;
    EXPECT_NEAR(cd, ec, 2e-16) << p;
  }
}

TEST(Turns, NonFiniteFrequenciesGiveNaN) {
  float s, c;
  position_sincos(int64_t{3}, std::nanf(""), &s, &c);
  EXPECT_TRUE(std::isnan(s) && std::isnan(c));
  position_sincos(int64_t{3}, INFINITY, &s, &c);
  EXPECT_TRUE(std::isnan(s) && std::isnan(c));
}

}  // namespace
