// tilegraph's AMX bf16 GEMM (kernels/cpu/amx_gemm.h) against a float64 reference over the
// shapes its tiling has edges at (m, n, k around the 16 / 32-element tiles, the 256-column
// chunk), both transposes, broadcast batches, bias + activation epilogues, bf16 and f32
// results, and a left operand it must copy (misaligned, k % 32 != 0) instead of reading in
// place. Runs where the CPU has AMX; elsewhere the tests say why they skip.
#include "kernels/cpu/amx_gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/dense_matmul.h"
#include "kernels/cpu/float16.h"
#include "kernels/cpu/onednn_kernels.h"

namespace tg::cpu {
namespace {

std::vector<uint16_t> RandomBf16(int64_t count, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<uint16_t> v(static_cast<size_t>(count));
  for (auto& x : v) x = FloatToBFloat16Bits(dist(rng));
  return v;
}

double At(const std::vector<uint16_t>& v, int64_t i) { return BFloat16BitsToFloat(v[i]); }

struct Case {
  std::vector<int64_t> batch, a_batch, b_batch;
  int64_t m, n, k;
  bool trans_a = false, trans_b = false;
  bool bias = false;
  Activation act = Activation::kNone;
  bool bf16_result = true;
  int64_t a_shift = 0;  // elements a's data starts past a 64-byte boundary
};

int64_t Count(const std::vector<int64_t>& dims) {
  int64_t c = 1;
  for (int64_t d : dims) c *= d;
  return c;
}

// Runs one case through AmxBf16Gemm and checks every element against float64 sums of the
// same bf16 values: within 2e-6 of the sum of |products| (f32 sums in another order), plus
// half a bf16 ulp of the value for a bf16 result (one rounding).
void Check(const Case& c) {
  SCOPED_TRACE(::testing::Message() << "m=" << c.m << " n=" << c.n << " k=" << c.k
                                    << " ta=" << c.trans_a << " tb=" << c.trans_b
                                    << " batches=" << Count(c.batch) << " bias=" << c.bias
                                    << " bf16=" << c.bf16_result << " shift=" << c.a_shift);
  std::mt19937 rng(static_cast<unsigned>(c.m * 131 + c.n * 17 + c.k));
  const int64_t a_mats = Count(c.a_batch), b_mats = Count(c.b_batch), out_mats = Count(c.batch);
  std::vector<uint16_t> a_store = RandomBf16(a_mats * c.m * c.k + 64, rng);
  std::vector<uint16_t> b = RandomBf16(b_mats * c.k * c.n, rng);
  std::vector<uint16_t> bias = RandomBf16(c.n, rng);
  // a at a chosen distance past a 64-byte boundary.
  uint16_t* base = a_store.data();
  while (reinterpret_cast<uintptr_t>(base) % 64 != 0) ++base;
  uint16_t* a = base + c.a_shift;
  std::vector<uint16_t> a_vals(a, a + a_mats * c.m * c.k);

  MatmulParams p;
  p.batch = c.batch;
  p.a_batch = c.a_batch;
  p.b_batch = c.b_batch;
  p.m = c.m;
  p.n = c.n;
  p.k = c.k;
  p.trans_a = c.trans_a;
  p.trans_b = c.trans_b;
  AmxBf16Gemm gemm(p, c.bias, c.act, c.bf16_result);
  std::vector<uint16_t> out16(static_cast<size_t>(out_mats * c.m * c.n), 0xFFFF);
  std::vector<float> out32(static_cast<size_t>(out_mats * c.m * c.n), NAN);
  gemm.Run(a, b.data(), c.bf16_result ? static_cast<void*>(out16.data()) : out32.data(),
           c.bias ? bias.data() : nullptr);

  int64_t bad = 0;
  for (int64_t bi = 0; bi < out_mats; ++bi) {
    // Broadcast: each operand's batch index skips the dims it has as 1.
    int64_t rest = bi, ai = 0, bj = 0, as = 1, bs = 1;
    for (int64_t d = static_cast<int64_t>(c.batch.size()) - 1; d >= 0; --d) {
      const int64_t idx = rest % c.batch[d];
      rest /= c.batch[d];
      if (c.a_batch[d] != 1) ai += idx * as;
      if (c.b_batch[d] != 1) bj += idx * bs;
      as *= c.a_batch[d];
      bs *= c.b_batch[d];
    }
    for (int64_t i = 0; i < c.m; ++i) {
      for (int64_t j = 0; j < c.n; ++j) {
        double sum = 0, mag = 0;
        for (int64_t kk = 0; kk < c.k; ++kk) {
          const double x = At(a_vals, ai * c.m * c.k + (c.trans_a ? kk * c.m + i : i * c.k + kk));
          const double y = At(b, bj * c.k * c.n + (c.trans_b ? j * c.k + kk : kk * c.n + j));
          sum += x * y;
          mag += std::fabs(x * y);
        }
        double want = sum + (c.bias ? At(bias, j) : 0.0);
        want = ApplyActivation(c.act, want);
        const int64_t at = bi * c.m * c.n + i * c.n + j;
        const double got = c.bf16_result ? BFloat16BitsToFloat(out16[at]) : out32[at];
        double tol = 2e-6 * (mag + 1.0);
        if (c.bf16_result) tol += std::fabs(want) * (1.0 / 256) + 1e-30;
        if (!(std::fabs(got - want) <= tol) && bad++ < 5) {
          ADD_FAILURE() << "batch " << bi << " [" << i << ", " << j << "]: got " << got
                        << ", want " << want;
        }
      }
    }
  }
  EXPECT_EQ(bad, 0);
}

class AmxGemm : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!AmxBf16GemmUsable()) {
      GTEST_SKIP() << "this CPU has no AMX-BF16 (or TILEGRAPH_AMX_GEMM=0 / "
                      "TILEGRAPH_NATIVE_HALF=0): the AMX GEMM cannot run here";
    }
  }
};

TEST_F(AmxGemm, MatchesFloat64AcrossTileEdges) {
  for (int64_t m : {1, 15, 16, 17, 32, 33, 70}) {
    for (int64_t n : {1, 16, 31, 32, 48, 257}) {
      for (int64_t k : {1, 31, 32, 33, 96}) {
        Check({{}, {}, {}, m, n, k});
      }
    }
  }
}

TEST_F(AmxGemm, TransposesReadTheRightElements) {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      Check({{}, {}, {}, 70, 45, 67, ta, tb});
      Check({{}, {}, {}, 64, 64, 64, ta, tb});
      Check({{}, {}, {}, 17, 300, 40, ta, tb, false, Activation::kNone, false});
    }
  }
}

// k beyond one pass (kMaxDepth): the sums of each block wait in f32 between passes.
TEST_F(AmxGemm, LongContractionsAddPassesInF32) {
  Check({{}, {}, {}, 40, 70, 1500});
  Check({{}, {}, {}, 33, 40, 2100, true, true, true, Activation::kGeluErf});
  Check({{}, {}, {}, 64, 64, 3072, false, false, false, Activation::kNone, false});
  Check({{2}, {2}, {2}, 17, 33, 1100, false, true});
}

// A wide k against few rows and columns (a language model head's backward: k is the
// vocabulary) runs k as the outer loop, each thread's sums for all rows kept between passes:
// short strips, k not a multiple of 32 (a copied), either transpose, epilogues, batches.
TEST_F(AmxGemm, WideContractionsRunKAsTheOuterLoop) {
  Check({{}, {}, {}, 70, 200, 9000});
  Check({{}, {}, {}, 64, 256, 8192, false, false, false, Activation::kNone, false});
  Check({{}, {}, {}, 33, 130, 8200, true, true, true, Activation::kGeluErf});
  Check({{2}, {2}, {2}, 40, 160, 7000, false, true});
  // the schedule taken (the checks above read only the numbers)
  MatmulParams p;
  p.m = 64, p.n = 256, p.k = 8192;
  std::mt19937 rng(3);
  std::vector<uint16_t> a = RandomBf16(p.m * p.k, rng), b = RandomBf16(p.k * p.n, rng);
  std::vector<uint16_t> out(p.m * p.n);
  AmxBf16Gemm wide(p, false, Activation::kNone, true);
  wide.Run(a.data(), b.data(), out.data(), nullptr);
  EXPECT_TRUE(wide.used_k_outer());
  p.k = 512;
  AmxBf16Gemm narrow(p, false, Activation::kNone, true);
  narrow.Run(a.data(), b.data(), out.data(), nullptr);
  EXPECT_FALSE(narrow.used_k_outer());
}

TEST_F(AmxGemm, BatchesBroadcastEitherOperand) {
  Check({{3, 2}, {3, 2}, {3, 2}, 20, 24, 40});
  Check({{3, 2}, {1, 2}, {3, 1}, 33, 17, 64, false, true});
  Check({{4}, {4}, {1}, 16, 32, 32, true, false});  // a transposed: not folded into m
  Check({{5}, {5}, {1}, 7, 40, 64});                // a shared b: folded into one GEMM
}

TEST_F(AmxGemm, EpiloguesAddBiasAndActivate) {
  for (Activation act : {Activation::kNone, Activation::kRelu, Activation::kGeluErf,
                         Activation::kGeluTanh}) {
    Check({{}, {}, {}, 40, 70, 64, false, true, true, act});
  }
  Check({{}, {}, {}, 64, 64, 64, false, false, false, Activation::kNone, false});  // f32 out
}

TEST_F(AmxGemm, CopiesALeftOperandItCannotReadInPlace) {
  Check({{}, {}, {}, 64, 64, 64, false, false, false, Activation::kNone, true, 1});
  Check({{}, {}, {}, 64, 64, 64, false, false, false, Activation::kNone, true, 16});
  Check({{}, {}, {}, 96, 40, 64, false, false, false, Activation::kNone, true, 32});  // aligned
}

// A weight's packed panels are kept while its version stands, repacked when it changes, and
// given up for per-run packing once it has changed (trained every step); every run's result
// is the unkept kernel's, bit for bit.
TEST_F(AmxGemm, KeepsAWeightsPanelsWhileItsVersionStands) {
  std::mt19937 rng(7);
  MatmulParams p;
  p.m = 40;
  p.n = 300;
  p.k = 1500;  // two passes over k
  p.trans_b = true;
  std::vector<uint16_t> a = RandomBf16(p.m * p.k, rng), b = RandomBf16(p.n * p.k, rng);
  AmxBf16Gemm kept(p, false, Activation::kNone, true), fresh(p, false, Activation::kNone, true);
  std::vector<uint16_t> want(p.m * p.n), got(p.m * p.n);
  uint64_t version = 1;
  auto run = [&](bool expect_kept) {
    kept.Run(a.data(), b.data(), got.data(), nullptr, &version);
    fresh.Run(a.data(), b.data(), want.data(), nullptr);
    EXPECT_EQ(kept.used_kept_b(), expect_kept);
    EXPECT_EQ(got, want);
  };
  run(true);   // packs
  run(true);   // reuses
  b = RandomBf16(p.n * p.k, rng);
  ++version;
  run(false);  // changed once: packed per run from now on
  run(false);
  EXPECT_FALSE(fresh.used_kept_b());
}

// The kernel matmuls pick for bf16 where the CPU has AMX, and what it reports.
TEST_F(AmxGemm, DenseMatmulChoosesItForBf16Only) {
  MatmulParams p;
  p.m = 8;
  p.n = 8;
  p.k = 8;
  EXPECT_EQ(DenseMatmul(p, {}, PrepackB::kNo, DenseType::kBF16).implementation(),
            "amx_bf16:tilegraph");
  EXPECT_NE(DenseMatmul(p, {}, PrepackB::kNo, DenseType::kF32).implementation(),
            "amx_bf16:tilegraph");
}

}  // namespace
}  // namespace tg::cpu
