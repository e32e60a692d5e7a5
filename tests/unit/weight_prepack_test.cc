// Weight prepacking in the oneDNN kernels: a matmul whose right operand is a weight keeps it
// in the layout oneDNN chose (a transposed Linear weight is at least transposed once), reused
// while the variables version is unchanged and repacked when it moves.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/cpu/onednn_kernels.h"

namespace tg::cpu {
namespace {

std::vector<float> Random(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

TEST(WeightPrepack, MatmulRepacksWhenTheVersionMoves) {
  MatmulParams p;
  p.m = 5, p.k = 7, p.n = 6;
  p.trans_b = true;  // b is [n, k], as a Linear layer's weight
  const std::vector<float> a = Random(p.m * p.k, 1);
  std::vector<float> b = Random(p.n * p.k, 2);
  const std::vector<float> bias = Random(p.n, 3);
  const MatmulEpilogue epilogue{true, Activation::kRelu};
  OnednnMatmul plain(p, epilogue), packed(p, epilogue, /*prepack_b=*/true);
  EXPECT_TRUE(packed.packs_b());
  EXPECT_FALSE(plain.packs_b());
  std::vector<float> want(p.m * p.n), got(p.m * p.n, -1.0f);
  uint64_t version = 1;
  plain.Run(a.data(), b.data(), want.data(), bias.data());
  packed.Run(a.data(), b.data(), got.data(), bias.data(), &version);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << i;

  b = Random(b.size(), 4);  // the weight changes: the runtime moves the version with it
  ++version;
  plain.Run(a.data(), b.data(), want.data(), bias.data());
  packed.Run(a.data(), b.data(), got.data(), bias.data(), &version);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << i;

  // Without a version (the weight is not a variable), it packs on every run.
  b = Random(b.size(), 5);
  plain.Run(a.data(), b.data(), want.data(), bias.data());
  packed.Run(a.data(), b.data(), got.data(), bias.data(), nullptr);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << i;
}

}  // namespace
}  // namespace tg::cpu
