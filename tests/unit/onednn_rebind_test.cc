// The oneDNN kernels bind their arguments once (BoundPrimitive) and point them at each run's
// buffers: a kernel run on one set of buffers and then on another must read and write the
// second set only, with every argument (operands, bias, residual, reordered operands)
// following the pointers of the run, and a copy of the kernel (kernels are copied into
// replica 0's list) must do the same.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/cpu/onednn_kernels.h"
#include "unit/random_values.h"
#include "kernels/cpu/reference_dense.h"

namespace tg::cpu {
namespace {

std::vector<float> Random(size_t n, unsigned seed) { return testing::RandomNormal(n, seed); }

// y = conv(x, w) + bias[o] + residual (the reference convolution, then the epilogue).
std::vector<float> ConvBiasResidualRef(const Conv2dParams& p, const std::vector<float>& x,
                                       const std::vector<float>& w,
                                       const std::vector<float>& bias,
                                       const std::vector<float>& residual) {
  std::vector<float> y(p.n * p.o * p.oh * p.ow);
  Conv2dForwardRef<float>(p, x.data(), w.data(), y.data());
  const int64_t plane = p.oh * p.ow;
  for (size_t i = 0; i < y.size(); ++i) y[i] += bias[(i / plane) % p.o] + residual[i];
  return y;
}

// Runs `conv` (built for p, a forward pass with a bias and a residual) six times on six sets
// of buffers, alternately as itself and as a copy, each against the reference.
void ExpectEachRunOnItsBuffers(const Conv2dParams& p, const OnednnConv2d& conv) {
  const size_t xs = p.n * p.c * p.h * p.w, ws = p.o * p.c * p.kh * p.kw;
  const size_t ys = p.n * p.o * p.oh * p.ow;
  // Every run's buffers live to the end: a freed buffer's address would come back for the
  // next run's, and a kernel still pointing at the old one would pass.
  struct Buffers {
    std::vector<float> x, w, bias, residual, y;
  };
  std::vector<Buffers> runs;
  for (unsigned run = 0; run < 6; ++run) {
    runs.push_back({Random(xs, 10 * run + 1), Random(ws, 10 * run + 2), Random(p.o, 10 * run + 3),
                    Random(ys, 10 * run + 4), std::vector<float>(ys, -7.0f)});
  }
  for (size_t run = 0; run < runs.size(); ++run) {
    Buffers& b = runs[run];
    const OnednnConv2d copy = conv;  // a copy shares the bound objects; it rebinds them too
    const OnednnConv2d& kernel = run % 2 == 0 ? conv : copy;
    // No version: the weight is reordered every run (a new w each run).
    kernel.Run(b.x.data(), b.w.data(), b.y.data(), nullptr, b.bias.data(), b.residual.data());
    const std::vector<float> want = ConvBiasResidualRef(p, b.x, b.w, b.bias, b.residual);
    for (size_t i = 0; i < ys; ++i) {
      ASSERT_NEAR(b.y[i], want[i], 1e-4 * (1 + std::abs(want[i]))) << "run " << run << " i=" << i;
    }
  }
}

Conv2dParams Conv(int64_t n, int64_t c, int64_t o, int64_t hw, int64_t k) {
  Conv2dParams p;
  p.n = n, p.c = c, p.h = p.w = hw, p.o = o, p.kh = p.kw = k, p.pad_h = p.pad_w = k / 2;
  p.oh = p.ow = hw;
  return p;
}

TEST(OnednnRebind, AConvolutionReadsAndWritesEachRunsBuffers) {
  ConvEpilogue epilogue;
  epilogue.bias = epilogue.residual = true;
  // 3x3 on 6x6: x, w and y reordered into oneDNN's blocked layouts and back (the residual
  // in NCHW makes oneDNN leave the epilogue to our pass).
  const Conv2dParams spatial = Conv(2, 16, 32, 6, 3);
  ExpectEachRunOnItsBuffers(spatial, OnednnConv2d(spatial, ConvPass::kForward, epilogue));
  // 1x1 on 1x1 (squeeze-excite's shape): NCHW is the blocked layout, so the bias and the
  // residual are the primitive's own arguments, rebound every run.
  const Conv2dParams point = Conv(4, 32, 48, 1, 1);
  const OnednnConv2d fused(point, ConvPass::kForward, epilogue);
  EXPECT_TRUE(fused.fused_in_primitive());
  ExpectEachRunOnItsBuffers(point, fused);
}

TEST(OnednnRebind, AMatmulReadsAndWritesEachRunsBuffers) {
  MatmulParams p;
  p.m = 9, p.k = 20, p.n = 12;
  const OnednnMatmul mm(p, MatmulEpilogue{true, Activation::kNone});
  std::vector<std::vector<float>> a, b, bias, out;  // every run's, alive to the end
  for (unsigned run = 0; run < 3; ++run) {
    a.push_back(Random(p.m * p.k, run + 1));
    b.push_back(Random(p.k * p.n, run + 11));
    bias.push_back(Random(p.n, run + 21));
    out.emplace_back(p.m * p.n, -7.0f);
  }
  for (unsigned run = 0; run < 3; ++run) {
    mm.Run(a[run].data(), b[run].data(), out[run].data(), bias[run].data());
    std::vector<float> want(p.m * p.n);
    MatmulRef<float>(p, a[run].data(), b[run].data(), want.data());
    for (int64_t i = 0; i < p.m * p.n; ++i) {
      const float expected = want[i] + bias[run][i % p.n];
      ASSERT_NEAR(out[run][i], expected, 1e-4 * (1 + std::abs(expected)))
          << "run " << run << " i=" << i;
    }
  }
}

}  // namespace
}  // namespace tg::cpu
