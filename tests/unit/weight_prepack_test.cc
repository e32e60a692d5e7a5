// Weight prepacking in the oneDNN kernels: a matmul whose right operand is a weight keeps it
// in the layout oneDNN chose (a transposed Linear weight is at least transposed once), reused
// while the variables version is unchanged; a weight that changes between runs (training)
// is read as it is instead of being repacked every step.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/cpu/onednn_kernels.h"
#include "unit/random_values.h"

namespace tg::cpu {
namespace {

std::vector<float> Random(size_t n, unsigned seed) { return testing::RandomNormal(n, seed); }

TEST(WeightPrepack, MatmulPacksAWeightThatStaysAndNotOneThatChanges) {
  MatmulParams p;
  p.m = 5, p.k = 7, p.n = 6;
  p.trans_b = true;  // b is [n, k], as a Linear layer's weight
  const std::vector<float> a = Random(p.m * p.k, 1);
  std::vector<float> b = Random(p.n * p.k, 2);
  const std::vector<float> bias = Random(p.n, 3);
  const MatmulEpilogue epilogue{true, Activation::kRelu};
  // kAnyLayout: the transposed weight is at least transposed once, on every CPU (the
  // kernels' kIfBlocked keeps only blocked layouts, which AVX2's gemm:jit never picks).
  OnednnMatmul plain(p, epilogue), packed(p, epilogue, PrepackB::kAnyLayout);
  EXPECT_FALSE(plain.packs_b());
  EXPECT_TRUE(packed.packs_b());
  std::vector<float> want(p.m * p.n), got(p.m * p.n, -1.0f);
  auto expect_same = [&](const uint64_t* version) {
    plain.Run(a.data(), b.data(), want.data(), bias.data());
    packed.Run(a.data(), b.data(), got.data(), bias.data(), version);
    for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << i;
  };
  uint64_t version = 1;
  for (int run = 0; run < 3; ++run) expect_same(&version);  // inference: packed once, kept
  EXPECT_TRUE(packed.packs_b());

  b = Random(b.size(), 4);  // the weight changes (the runtime moves the version with it):
  ++version;                // trained every step, so packing each run would cost a reorder
  expect_same(&version);
  EXPECT_FALSE(packed.packs_b());
  b = Random(b.size(), 5);
  ++version;
  expect_same(&version);

  OnednnMatmul unversioned(p, epilogue, PrepackB::kAnyLayout);  // no version to key a copy on
  plain.Run(a.data(), b.data(), want.data(), bias.data());
  unversioned.Run(a.data(), b.data(), got.data(), bias.data(), nullptr);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << i;
  EXPECT_FALSE(unversioned.packs_b());
}

}  // namespace
}  // namespace tg::cpu
