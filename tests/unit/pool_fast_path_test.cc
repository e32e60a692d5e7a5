// Max pooling's fast paths (windows inside the input: no bounds checks) against the general
// loops the reference kernel runs, on inputs with ties and NaNs: the same values, and the
// backward routes each gradient to the same element (the first maximum; the first NaN wins).
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/pool_kernels.h"

namespace tg::cpu {
namespace {

// Sizes: odd (a last row and column no window covers) and the row widths of the f32
// non-overlapping 2x2 kernels' groups of 8 windows: fewer than 8 windows (w 4, 11: only the
// masked partial group), exactly 8 (w 16), 13 (w 26, the main job's first pool: one group and
// a partial one), 18 (w 37); and of the 3x3 / 2 backward's groups of 8.
TEST(MaxPoolFastPath, MatchesTheGeneralLoopsWithTiesAndNaNs) {
  // {window, stride, padding, h, w}; with padding the windows touching it take the general
  // loops and the interior the fast ones (ResNet's 3x3 / 2, pad 1 stem is the first padded).
  for (auto [k, s, pad, h, w] :
       {std::array<int64_t, 5>{2, 2, 0, 9, 11}, {2, 2, 0, 8, 37}, {2, 2, 0, 5, 4},
        {2, 2, 0, 6, 16}, {2, 2, 0, 26, 26}, {3, 2, 0, 9, 11},
        {3, 1, 0, 9, 11}, {2, 1, 0, 9, 11}, {3, 2, 1, 9, 11}, {3, 2, 1, 16, 16},
        {2, 2, 1, 8, 37}, {3, 1, 1, 7, 10}, {5, 2, 2, 12, 13},
        // 3x3 / 2 rows of 8 windows at a time (f32 backward): 8 interior windows (one
        // scalar tail), 18, 27 and ResNet's stem at a small size
        {3, 2, 0, 5, 17}, {3, 2, 1, 9, 40}, {3, 2, 0, 7, 55}, {3, 2, 1, 32, 32}}) {
    Pool2dParams p;
    p.planes = 6, p.h = h, p.w = w, p.kh = k, p.kw = k, p.stride_h = s, p.stride_w = s;
    p.pad_h = pad, p.pad_w = pad;
    p.oh = (p.h + 2 * pad - k) / s + 1, p.ow = (p.w + 2 * pad - k) / s + 1;
    std::mt19937 rng(k * 10 + s);
    std::vector<float> x(p.planes * p.h * p.w), dy(p.planes * p.oh * p.ow);
    for (float& v : x) v = static_cast<float>(rng() % 5);  // many ties
    for (size_t i = 0; i < x.size() / 20; ++i) x[rng() % x.size()] = NAN;  // some windows: 2
    for (size_t i = 0; i < x.size() / 20; ++i) x[rng() % x.size()] = -0.0f;  // ties with +0
    for (float& v : dy) v = static_cast<float>(rng() % 100) / 7.0f;
    std::vector<float> fast(dy.size()), ref(dy.size());
    MaxPool2dForward(p, x.data(), fast.data(), /*parallel=*/true);
    MaxPool2dForward(p, x.data(), ref.data(), /*parallel=*/false);
    for (size_t i = 0; i < ref.size(); ++i) {
      if (std::isnan(ref[i])) {
        EXPECT_TRUE(std::isnan(fast[i])) << i;
      } else {
        EXPECT_EQ(fast[i], ref[i]) << i;
      }
    }
    // Garbage first: the backward must write every element of dx, zeros included.
    std::vector<float> dfast(x.size(), 777.0f), dref(x.size(), -555.0f);
    MaxPool2dBackward(p, dy.data(), x.data(), dfast.data(), true);
    MaxPool2dBackward(p, dy.data(), x.data(), dref.data(), false);
    EXPECT_EQ(dfast, dref) << "k " << k << " s " << s << " pad " << pad;
  }
}

}  // namespace
}  // namespace tg::cpu
