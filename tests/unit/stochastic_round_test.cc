// Stochastic rounding (kernels/cpu/random_kernels.h): unbiased in expectation, reproducible
// for one (seed, key, step), and different across steps.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/float16.h"
#include "kernels/cpu/random_kernels.h"

namespace tg::cpu {
namespace {

std::vector<uint16_t> Round(float x, int64_t n, bool bf16, uint64_t step) {
  std::vector<float> in(n, x);
  std::vector<uint16_t> out(n);
  StochasticRound(in.data(), out.data(), n, bf16, RngParams{42, 7, step}, true);
  return out;
}

double Mean(const std::vector<uint16_t>& bits, bool bf16) {
  double sum = 0;
  for (uint16_t b : bits) sum += bf16 ? BFloat16BitsToFloat(b) : HalfBitsToFloat(b);
  return sum / static_cast<double>(bits.size());
}

TEST(StochasticRound, IsUnbiasedWhereNearestRoundingIsNot) {
  const int64_t n = 400000;
  for (bool bf16 : {true, false}) {
    // Values between two neighbours of the format, at several fractions of the spacing, and
    // negative, small (f16 subnormal) and large.
    for (float x : {1.0f + 0x1p-13f * 3, 1.0f + 0x1p-14f * 5, -3.3f, 1e-6f, 1234.567f, 0.1f}) {
      SCOPED_TRACE(std::string(bf16 ? "bf16 " : "f16 ") + std::to_string(x));
      std::vector<uint16_t> bits = Round(x, n, bf16, 0);
      uint16_t nearest = bf16 ? FloatToBFloat16Bits(x) : FloatToHalfBits(x);
      float v = bf16 ? BFloat16BitsToFloat(nearest) : HalfBitsToFloat(nearest);
      ASSERT_NE(v, x) << "the value must not be representable";
      // Outcomes are the two neighbours only; their spacing bounds the standard error.
      double spacing = 0;
      for (uint16_t b : bits) {
        float f = bf16 ? BFloat16BitsToFloat(b) : HalfBitsToFloat(b);
        spacing = std::max(spacing, std::fabs(static_cast<double>(f) - v));
      }
      ASSERT_GT(spacing, 0) << "never rounded to the other neighbour";
      double stderr_bound = spacing * 0.5 / std::sqrt(static_cast<double>(n));
      EXPECT_NEAR(Mean(bits, bf16), x, 5 * stderr_bound);
      // The check has power: nearest rounding's bias is far outside the band.
      EXPECT_GT(std::fabs(static_cast<double>(v) - x), 20 * stderr_bound);
    }
  }
}

TEST(StochasticRound, ReproducibleForAStepAndFreshAcrossSteps) {
  EXPECT_EQ(Round(0.1f, 1000, true, 3), Round(0.1f, 1000, true, 3));
  EXPECT_NE(Round(0.1f, 1000, true, 3), Round(0.1f, 1000, true, 4));
}

TEST(StochasticRound, KeepsRepresentableAndNonFiniteValues) {
  std::vector<float> in = {1.0f, -2.5f, 0.0f, INFINITY, -INFINITY, NAN, 1e30f};
  std::vector<uint16_t> out(in.size());
  StochasticRound(in.data(), out.data(), in.size(), false, RngParams{1, 2, 3}, false);
  EXPECT_EQ(HalfBitsToFloat(out[0]), 1.0f);
  EXPECT_EQ(HalfBitsToFloat(out[1]), -2.5f);
  EXPECT_EQ(HalfBitsToFloat(out[2]), 0.0f);
  EXPECT_EQ(HalfBitsToFloat(out[3]), INFINITY);
  EXPECT_EQ(HalfBitsToFloat(out[4]), -INFINITY);
  EXPECT_TRUE(std::isnan(HalfBitsToFloat(out[5])));
  EXPECT_EQ(HalfBitsToFloat(out[6]), INFINITY);  // overflows as nearest rounding does
}

}  // namespace
}  // namespace tg::cpu
