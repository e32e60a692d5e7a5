// The direct depthwise backward-weight loops against the reference convolution loops, over
// strides, paddings (wider than the plane), dilations and plane sizes; and the choice: the
// conv2d_backward_weight kernel uses them exactly where oneDNN offers only its GEMM fallback.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/cpu/channel_blocking.h"
#include "kernels/cpu/conv_depthwise_kernels.h"
#include "kernels/cpu/onednn_kernels.h"
#include "kernels/cpu/reference_dense.h"

namespace tg::cpu {
namespace {

Conv2dParams Depthwise(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t stride,
                       int64_t pad, int64_t dil) {
  Conv2dParams p;
  p.n = n, p.c = c, p.h = h, p.w = w, p.o = c, p.kh = k, p.kw = k, p.groups = c;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  p.dil_h = p.dil_w = dil;
  p.oh = (h + 2 * pad - dil * (k - 1) - 1) / stride + 1;
  p.ow = (w + 2 * pad - dil * (k - 1) - 1) / stride + 1;
  return p;
}

// An NCHW [n, c, plane] tensor in the nChw<block>c layout.
std::vector<float> Blocked(const std::vector<float>& t, int64_t n, int64_t c, int64_t plane,
                           int64_t block) {
  std::vector<float> out(t.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j)
      for (int64_t s = 0; s < plane; ++s)
        out[BlockedIndex(c, plane, block, i, j, s)] = t[(i * c + j) * plane + s];
  return out;
}

TEST(ConvDepthwise, BackwardWeightMatchesTheReferenceLoops) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const Conv2dParams cases[] = {Depthwise(8, 48, 2, 2, 5, 1, 2, 1), Depthwise(2, 16, 7, 5, 3, 2, 1, 1),
                                Depthwise(3, 8, 9, 9, 3, 1, 2, 2), Depthwise(1, 4, 1, 1, 3, 1, 1, 1),
                                Depthwise(2, 24, 4, 4, 5, 2, 2, 1)};
  for (const Conv2dParams& p : cases) {
    std::vector<float> x(p.n * p.c * p.h * p.w), dy(p.n * p.o * p.oh * p.ow);
    for (float& v : x) v = normal(rng);
    for (float& v : dy) v = normal(rng);
    std::vector<float> ours(p.o * p.kh * p.kw), ref(ours.size());
    Conv2dBackwardWeightDepthwise(p).Run(dy.data(), x.data(), ours.data());
    Conv2dBackwardWeightRef<float>(p, dy.data(), x.data(), ref.data());
    for (size_t i = 0; i < ref.size(); ++i) {
      EXPECT_NEAR(ours[i], ref[i], 1e-4 * (1 + std::abs(ref[i]))) << "case c=" << p.c << " i=" << i;
    }
  }
}

// x and dy in the channel-blocked layouts (8 and 16 channels per block, each operand on its
// own) give the same sums, bit for bit, as NCHW operands: the order of every sum is fixed.
TEST(ConvDepthwise, BackwardWeightReadsBlockedOperandsInPlace) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  const Conv2dParams cases[] = {Depthwise(8, 48, 2, 2, 5, 1, 2, 1), Depthwise(2, 16, 7, 5, 3, 2, 1, 1),
                                Depthwise(3, 24, 9, 9, 3, 1, 2, 2), Depthwise(2, 32, 4, 4, 5, 2, 2, 1)};
  for (const Conv2dParams& p : cases) {
    std::vector<float> x(p.n * p.c * p.h * p.w), dy(p.n * p.o * p.oh * p.ow);
    for (float& v : x) v = normal(rng);
    for (float& v : dy) v = normal(rng);
    std::vector<float> plain(p.o * p.kh * p.kw);
    Conv2dBackwardWeightDepthwise(p).Run(dy.data(), x.data(), plain.data());
    const int64_t layouts[][2] = {{16, 16}, {8, 8}, {16, 0}, {0, 8}, {8, 16}};
    for (const auto& [x_block, dy_block] : layouts) {
      if ((x_block && p.c % x_block) || (dy_block && p.c % dy_block)) continue;
      std::vector<float> xb = x, dyb = dy;
      if (x_block) xb = Blocked(x, p.n, p.c, p.h * p.w, x_block);
      if (dy_block) dyb = Blocked(dy, p.n, p.c, p.oh * p.ow, dy_block);
      std::vector<float> ours(plain.size());
      Conv2dBackwardWeightDepthwise(p, x_block, dy_block).Run(dyb.data(), xb.data(), ours.data());
      EXPECT_EQ(ours, plain) << "c=" << p.c << " x_block=" << x_block << " dy_block=" << dy_block;
    }
  }
}

TEST(ConvDepthwise, OnlyDepthwiseConvolutionsQualify) {
  EXPECT_TRUE(IsDepthwise(Depthwise(2, 8, 4, 4, 3, 1, 1, 1)));
  Conv2dParams grouped = Depthwise(2, 8, 4, 4, 3, 1, 1, 1);
  grouped.groups = 4;  // two channels per group
  EXPECT_FALSE(IsDepthwise(grouped));
  Conv2dParams multiplier = Depthwise(2, 8, 4, 4, 3, 1, 1, 1);
  multiplier.o = 16;  // two filters per channel
  EXPECT_FALSE(IsDepthwise(multiplier));
}

}  // namespace
}  // namespace tg::cpu
