// OnednnConv2d's three passes against the reference loops, over weight shapes where oneDNN
// picks blocked weight layouts (whole 16- or 8-channel blocks; the weight gradient then
// leaves through UnblockWeights instead of oneDNN's reorder) and shapes that keep oneDNN's
// reorders (channels not whole blocks, groups, 3 input channels).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/cpu/onednn_kernels.h"
#include "kernels/cpu/reference_dense.h"

namespace tg::cpu {
namespace {

Conv2dParams Conv(int64_t n, int64_t c, int64_t o, int64_t hw, int64_t k, int64_t stride,
                  int64_t pad, int64_t groups = 1) {
  Conv2dParams p;
  p.n = n, p.c = c, p.h = p.w = hw, p.o = o, p.kh = p.kw = k, p.groups = groups;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  p.dil_h = p.dil_w = 1;
  p.oh = p.ow = (hw + 2 * pad - k) / stride + 1;
  return p;
}

void ExpectNear(const std::vector<float>& ours, const std::vector<float>& ref,
                const Conv2dParams& p, const char* pass) {
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_NEAR(ours[i], ref[i], 1e-4 * (1 + std::abs(ref[i])))
        << pass << " c=" << p.c << " o=" << p.o << " k=" << p.kh << " i=" << i;
  }
}

TEST(ConvWeights, EveryPassMatchesTheReferenceInEveryWeightLayout) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  const Conv2dParams cases[] = {Conv(2, 32, 48, 6, 3, 1, 1), Conv(8, 64, 32, 4, 1, 2, 0),
                                Conv(3, 16, 16, 5, 5, 1, 2), Conv(2, 3, 16, 9, 7, 2, 3),
                                Conv(2, 32, 32, 4, 3, 1, 1, /*groups=*/2),
                                Conv(2, 48, 64, 5, 1, 1, 0)};
  int unblocked = 0;
  for (const Conv2dParams& p : cases) {
    std::vector<float> x(p.n * p.c * p.h * p.w), dy(p.n * p.o * p.oh * p.ow);
    std::vector<float> w(p.o * (p.c / p.groups) * p.kh * p.kw);
    for (float& v : x) v = normal(rng);
    for (float& v : dy) v = normal(rng);
    for (float& v : w) v = normal(rng);

    std::vector<float> dw(w.size()), dw_ref(w.size());
    OnednnConv2d backward_weight(p, ConvPass::kBackwardWeight, {}, {}, DenseType::kF32);
    backward_weight.Run(dy.data(), x.data(), dw.data(), nullptr, nullptr);
    unblocked += backward_weight.unblocks_weights();
    Conv2dBackwardWeightRef<float>(p, dy.data(), x.data(), dw_ref.data());
    ExpectNear(dw, dw_ref, p, "backward weight");

    std::vector<float> y(dy.size()), y_ref(dy.size());
    OnednnConv2d forward(p, ConvPass::kForward, {}, {}, DenseType::kF32);
    forward.Run(x.data(), w.data(), y.data(), nullptr, nullptr);
    Conv2dForwardRef<float>(p, x.data(), w.data(), y_ref.data());
    ExpectNear(y, y_ref, p, "forward");

    std::vector<float> dx(x.size()), dx_ref(x.size());
    OnednnConv2d backward_input(p, ConvPass::kBackwardInput, {}, {}, DenseType::kF32);
    backward_input.Run(dy.data(), w.data(), dx.data(), nullptr, nullptr);
    Conv2dBackwardInputRef<float>(p, dy.data(), w.data(), dx_ref.data());
    ExpectNear(dx, dx_ref, p, "backward input");
  }
  // oneDNN's AVX-512 kernels compute whole-block weight gradients in ABcd16b16a.
  if (ActivationBlock() == 16) EXPECT_GE(unblocked, 3);
}

}  // namespace
}  // namespace tg::cpu
