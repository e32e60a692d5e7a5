// The vectorizable float exp / erf / tanh against the C library in double, over dense grids
// across each function's whole range, plus the special values (inf, NaN, signed zero).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu/vector_math.h"

namespace tg {
namespace {

// Max relative error of f (float) vs ref (double) over n points in [lo, hi]; relative to
// max(|ref|, floor) so that values near zero are judged on an absolute scale.
template <typename F, typename R>
double MaxError(F f, R ref, double lo, double hi, double floor, int n = 200001) {
  double worst = 0;
  for (int i = 0; i < n; ++i) {
    float x = static_cast<float>(lo + (hi - lo) * i / (n - 1));
    double want = ref(static_cast<double>(x));
    double got = f(x);
    worst = std::max(worst, std::abs(got - want) / std::max(std::abs(want), floor));
  }
  return worst;
}

TEST(VectorMath, ExpIsWithinTwoUlp) {
  auto f = [](float x) { return vmath::Exp(x); };
  auto ref = [](double x) { return std::exp(x); };
  EXPECT_LT(MaxError(f, ref, -87.0, 88.5, 0.0), 2.5e-7);
  EXPECT_LT(MaxError(f, ref, -1.0, 1.0, 0.0), 2.5e-7);
  EXPECT_EQ(vmath::Exp(0.0f), 1.0f);
  EXPECT_EQ(vmath::Exp(100.0f), std::numeric_limits<float>::infinity());
  EXPECT_EQ(vmath::Exp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(vmath::Exp(-120.0f), 0.0f);
  EXPECT_TRUE(std::isnan(vmath::Exp(std::nanf(""))));
}

// Sigmoid (through ExpNonPositive on -|x|): against the double formula over both signs.
TEST(VectorMath, SigmoidIsWithinTwoUlp) {
  auto f = [](float x) { return vmath::Sigmoid(x); };
  auto ref = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  EXPECT_LT(MaxError(f, ref, -87.0, 87.0, 0.0), 2.5e-7);
  EXPECT_LT(MaxError(f, ref, -2.0, 2.0, 0.0), 2.5e-7);
  EXPECT_EQ(vmath::Sigmoid(0.0f), 0.5f);
  EXPECT_EQ(vmath::Sigmoid(100.0f), 1.0f);
  EXPECT_EQ(vmath::Sigmoid(-100.0f), 0.0f);
  EXPECT_EQ(vmath::Sigmoid(std::numeric_limits<float>::infinity()), 1.0f);
  EXPECT_EQ(vmath::Sigmoid(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_TRUE(std::isnan(vmath::Sigmoid(std::nanf(""))));
}

// ExpNonPositive: Exp's accuracy over x <= 0 (and up to 88, where 2^n still fits one
// exponent field), and Exp's special values there.
TEST(VectorMath, ExpNonPositiveMatchesExp) {
  auto f = [](float x) { return vmath::ExpNonPositive(x); };
  auto ref = [](double x) { return std::exp(x); };
  EXPECT_LT(MaxError(f, ref, -87.0, 0.0, 0.0), 2.5e-7);
  EXPECT_LT(MaxError(f, ref, -1.0, 1.0, 0.0), 2.5e-7);
  EXPECT_LT(MaxError(f, ref, 0.0, 88.0, 0.0), 2.5e-7);
  for (float x = -90.0f; x <= 0.0f; x += 0.001f) {
    const float a = vmath::ExpNonPositive(x), b = vmath::Exp(x);
    ASSERT_LE(std::abs(a - b), std::abs(b) * 1.2e-7f + 1e-45f) << "x = " << x;
  }
  EXPECT_EQ(vmath::ExpNonPositive(0.0f), 1.0f);
  EXPECT_EQ(vmath::ExpNonPositive(-0.0f), 1.0f);
  EXPECT_EQ(vmath::ExpNonPositive(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(vmath::ExpNonPositive(-120.0f), 0.0f);
  EXPECT_TRUE(std::isnan(vmath::ExpNonPositive(std::nanf(""))));
  EXPECT_TRUE(std::isnan(vmath::ExpNonPositive(-std::nanf(""))));
}

TEST(VectorMath, ErfMatchesTheLibrary) {
  auto f = [](float x) { return vmath::Erf(x); };
  auto ref = [](double x) { return std::erf(x); };
  EXPECT_LT(MaxError(f, ref, -6.0, 6.0, 0.0), 3e-7);
  EXPECT_LT(MaxError(f, ref, -1e-3, 1e-3, 0.0), 3e-7);  // relative, near zero too
  EXPECT_EQ(vmath::Erf(10.0f), 1.0f);
  EXPECT_EQ(vmath::Erf(-std::numeric_limits<float>::infinity()), -1.0f);
  EXPECT_TRUE(std::signbit(vmath::Erf(-0.0f)));
  EXPECT_TRUE(std::isnan(vmath::Erf(std::nanf(""))));
  // 1 + erf(x) for negative x (GELU's left tail) is erfc(|x|) up to the float cancellation
  // in the sum, as with the C library's erff: within about an ulp of 1, absolute.
  auto tail = [](float x) { return 1.0f + vmath::Erf(x); };
  auto tail_ref = [](double x) { return std::erfc(-x); };
  EXPECT_LT(MaxError(tail, tail_ref, -6.0, -1.0, 1.0), 1.5e-7);
}

TEST(VectorMath, GelusRationalErfIsWithinItsStatedBounds) {
  auto f = [](float x) { return vmath::ErfFast(x); };
  auto ref = [](double x) { return std::erf(x); };
  EXPECT_LT(MaxError(f, ref, -6.0, 6.0, 0.0), 3.5e-7);
  EXPECT_LT(MaxError(f, ref, -1e-3, 1e-3, 0.0), 3.5e-7);  // relative near zero
  EXPECT_LT(MaxError(f, ref, -6.0, 6.0, 1.0), 3.5e-7);    // absolute: GELU's tails
  EXPECT_GT(MaxError(f, ref, -6.0, 6.0, 0.0), 1e-8) << "not the library's erf";
  EXPECT_EQ(vmath::ErfFast(0.0f), 0.0f);
  EXPECT_LE(vmath::ErfFast(3.92f), 1.0f) << "never past 1";
  EXPECT_NEAR(vmath::ErfFast(10.0f), 1.0f, 1e-7f);
  EXPECT_NEAR(vmath::ErfFast(-std::numeric_limits<float>::infinity()), -1.0f, 1e-7f);
  EXPECT_TRUE(std::isnan(vmath::ErfFast(std::nanf(""))));
  // GELU built on it: x/2 (1 + erf(x / sqrt 2)) within 1.8e-7 |x| (+ float rounding).
  double worst = 0;
  for (int i = 0; i <= 200000; ++i) {
    const float x = -8.0f + 16.0f * static_cast<float>(i) / 200000;
    const double want = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    const double got = 0.5f * x * (1.0f + vmath::ErfFast(x * 0.70710678f));
    worst = std::max(worst, std::abs(got - want) / std::max(1.0, std::abs(static_cast<double>(x))));
  }
  EXPECT_LT(worst, 3e-7);
}

TEST(VectorMath, TanhMatchesTheLibrary) {
  auto f = [](float x) { return vmath::Tanh(x); };
  auto ref = [](double x) { return std::tanh(x); };
  EXPECT_LT(MaxError(f, ref, -12.0, 12.0, 0.0), 3e-7);
  EXPECT_LT(MaxError(f, ref, -1e-3, 1e-3, 0.0), 3e-7);
  EXPECT_EQ(vmath::Tanh(50.0f), 1.0f);
  EXPECT_EQ(vmath::Tanh(-std::numeric_limits<float>::infinity()), -1.0f);
  EXPECT_TRUE(std::isnan(vmath::Tanh(std::nanf(""))));
}

// The blocked float sums: every length (full blocks, partial blocks, the scalar tail, empty),
// within a 16-term float sum's error of the exact sum: |error| <= 16 eps sum |x|. A plain
// float sum of 100,000 terms errs ~100x more on the same data; the test checks that too, so
// it would notice the blocking being lost.
TEST(VectorMath, BlockedFloatSumsAreAsAccurateAsSixteenTermFloatSums) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(3.0f, 1.0f);
  for (int64_t n : {0, 1, 15, 16, 17, 255, 256, 257, 1000, 4097, 100000}) {
    std::vector<float> x(n);
    for (float& v : x) v = normal(rng);
    double exact = 0, exact_sq = 0, abs_sum = 0;
    for (float v : x) {
      exact += v;
      exact_sq += static_cast<double>(v) * v;
      abs_sum += std::abs(v);
    }
    const float* p = x.data();
    const double bound = 16 * std::numeric_limits<float>::epsilon() * (abs_sum + 1e-30);
    EXPECT_LE(std::abs(vmath::BlockedFloatSum(n, [=](auto at) { return at(p); }) - exact),
              bound) << "n=" << n;
    double sums[2];
    vmath::BlockedFloatSums(n, sums, [=](auto at) { return at(p); },
                            [=](auto at) { return at(p) * at(p); });
    const double s1 = sums[0], s2 = sums[1];
    EXPECT_LE(std::abs(s1 - exact), bound) << "n=" << n;
    EXPECT_LE(std::abs(s2 - exact_sq),
              16 * std::numeric_limits<float>::epsilon() * (exact_sq + 1e-30)) << "n=" << n;
    if (n == 100000) {
      float naive = 0;
      for (float v : x) naive += v;
      EXPECT_GT(std::abs(naive - exact), 20 * std::abs(s1 - exact));
    }
  }
}


// MaxOf over every length around the 16-lane boundaries, with the largest value at every
// position (the vector body, the lanes' reduction and the scalar tail each must see it).
TEST(VectorMath, MaxOfFindsTheLargestAtEveryPosition) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  EXPECT_EQ(vmath::MaxOf(nullptr, 0), -std::numeric_limits<float>::infinity());
  for (int n : {1, 5, 15, 16, 17, 31, 32, 33, 70, 257}) {
    std::vector<float> x(n);
    for (float& v : x) v = normal(rng) - 100.0f;  // every value negative
    for (int at = 0; at < n; ++at) {
      std::vector<float> y = x;
      y[at] = 3.5f;
      EXPECT_EQ(vmath::MaxOf(y.data(), n), 3.5f) << "n=" << n << " at=" << at;
    }
    std::vector<float> inf(n, -std::numeric_limits<float>::infinity());
    EXPECT_EQ(vmath::MaxOf(inf.data(), n), -std::numeric_limits<float>::infinity());
  }
}

}  // namespace
}  // namespace tg
