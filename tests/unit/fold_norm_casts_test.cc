// fold-norm-casts: batch norm reads its half input and writes its half input gradient itself
// (ops/norm.cc's half activation kernels), with the numbers of the casts it replaces, on the
// CPU (parallel) and reference (one thread) kernels; where dx has another reader, or the norm
// is blocked, nothing folds.
#include <gtest/gtest.h>

#include <cmath>

#include "pass_test_util.h"
#include "passes/passes.h"
#include "support/error.h"

namespace tg {
namespace {

// Forward and backward of one batch norm of a half activation %xh (as mixed precision leaves
// it): widened for the norm, the input gradient rounded back for the convolution's backward.
std::string MixedBatchNorm(const std::string& half, const std::string& backward_eps,
                           const std::string& shape = "[3, 8, 5, 7]") {
  const std::string f32 = "f32" + shape;
  return R"(graph g {
  input %xh : )" + half + shape + R"(
  input %dy : )" + f32 + R"(
  input %w : f32[8]
  input %b : f32[8]
  %x = cast(%xh) {dtype = f32} : )" + f32 + R"(
  %y, %mean, %invstd, %var = batch_norm_train(%x, %w, %b) {eps = 0.001} : )" + f32 +
         R"(, f32[8], f32[8], f32[8]
  %dx, %dw, %db = batch_norm_backward(%dy, %x, %w, %mean, %invstd) {eps = )" + backward_eps +
         R"(} : )" + f32 + R"(, f32[8], f32[8]
  %dxh = cast(%dx) {dtype = )" + half + R"(} : )" + half + shape + R"(
  output %y
  output %var
  output %dxh
  output %dw
  output %db
})";
}

std::unique_ptr<Graph> Folded(const std::string& text) {
  std::unique_ptr<Graph> g = ParseGraph(text);
  PassContext ctx;
  EXPECT_TRUE(CreateFoldNormCastsPass()->Run(*g, ctx));
  CreateDcePass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  return g;
}

// The folded graph computes what the casts did: its statistics are sums in float lanes
// (norm_kernels.cc: ChunkStatsFloatLanes) where the f32 kernel sums in double, so f32 results
// agree to ~1e-6 and a half dx is the cast's rounding except where that rounding is near a
// tie: at most one unit in the last place, and in few elements (a dx truncated instead of
// rounded differs in about half of them).
void ExpectSameNumbers(const std::string& text, const Graph& after) {
  std::unique_ptr<Graph> before = ParseGraph(text);
  std::map<std::string, HostTensor> feeds = RandomFeeds(*before, 3);
  for (DeviceKind kind : {DeviceKind::kCpu, DeviceKind::kReference}) {
    EvalResult a = EvaluateGraph(*before, feeds, kind);
    EvalResult b = EvaluateGraph(after, feeds, kind);
    ASSERT_EQ(a.outputs.size(), b.outputs.size());
    for (size_t o = 0; o < a.outputs.size(); ++o) {
      const TensorType& t = a.outputs[o].type();
      ASSERT_EQ(t, b.outputs[o].type());
      const double ulp = t.dtype == DType::kBF16 ? 1.0 / 128 : t.dtype == DType::kF16 ? 1.0 / 1024
                                                                                      : 0.0;
      int64_t differ = 0;
      for (int64_t i = 0; i < t.numel(); ++i) {
        const double want = a.outputs[o].GetAsDouble(i), got = b.outputs[o].GetAsDouble(i);
        differ += want != got;
        const double tolerance = ulp > 0 ? ulp * std::fabs(want) : 2e-6 * (1 + std::fabs(want));
        ASSERT_LE(std::fabs(got - want), tolerance)
            << DeviceKindName(kind) << " output " << o << " element " << i;
      }
      if (ulp > 0) EXPECT_LT(differ, t.numel() / 20) << DeviceKindName(kind) << " output " << o;
    }
  }
}

TEST(FoldNormCasts, BatchNormReadsAndWritesTheHalfActivationWithTheSameNumbers) {
  // 105 values per channel, and 324: from 256 a half x's backward reads the forward's saved
  // statistics (norm_kernels.cc) instead of recomputing them.
  for (const char* shape : {"[3, 8, 5, 7]", "[4, 8, 9, 9]"}) {
    for (const char* half : {"bf16", "f16"}) {
      for (const char* eps : {"-1.0", "0.001"}) {  // saved statistics, recomputed statistics
        SCOPED_TRACE(std::string(half) + " backward eps " + eps + " x " + shape);
        const std::string text = MixedBatchNorm(half, eps, shape);
        std::unique_ptr<Graph> g = Folded(text);
        EXPECT_EQ(Count(*g, "cast"), 0) << PrintGraph(*g);
        const Node* fwd = Only(*g, "batch_norm_train");
        const Node* bwd = Only(*g, "batch_norm_backward");
        EXPECT_EQ(fwd->input(0)->name(), "xh");
        EXPECT_EQ(fwd->output(0)->type().dtype, DType::kF32);
        EXPECT_EQ(bwd->input(1)->name(), "xh");
        EXPECT_EQ(bwd->output(0)->type().dtype, std::string(half) == "bf16" ? DType::kBF16
                                                                            : DType::kF16);
        ExpectSameNumbers(text, *g);
      }
    }
  }
}

TEST(FoldNormCasts, AnInputGradientWithAnF32ReaderStaysF32) {
  std::string text = MixedBatchNorm("bf16", "-1.0");
  text.replace(text.find("  output %y\n"), 0, "  %r = relu(%dx) : f32[3, 8, 5, 7]\n  output %r\n");
  std::unique_ptr<Graph> g = Folded(text);  // the forward still folds
  EXPECT_EQ(Only(*g, "batch_norm_train")->input(0)->name(), "xh");
  const Node* bwd = Only(*g, "batch_norm_backward");
  EXPECT_EQ(bwd->input(1)->name(), "x");
  EXPECT_EQ(bwd->output(0)->type().dtype, DType::kF32);
  ExpectSameNumbers(text, *g);
}

TEST(FoldNormCasts, BlockedAndAllF32NormsAreLeftAlone) {
  std::unique_ptr<Graph> blocked = ParseGraph(R"(graph g {
  input %xh : bf16[2, 16, 3, 3]
  input %w : f32[16]
  input %b : f32[16]
  %x = cast(%xh) {dtype = f32} : f32[2, 16, 3, 3]
  %y, %m, %s, %v = batch_norm_train(%x, %w, %b) {blocked = true} : f32[2, 16, 3, 3], f32[16], f32[16], f32[16]
  output %y
})");
  PassContext ctx;
  EXPECT_FALSE(CreateFoldNormCastsPass()->Run(*blocked, ctx));
  std::unique_ptr<Graph> g = ParseGraph(R"(graph g {
  input %x : f32[2, 4, 3]
  input %w : f32[4]
  input %b : f32[4]
  %y, %m, %s, %v = batch_norm_train(%x, %w, %b) : f32[2, 4, 3], f32[4], f32[4], f32[4]
  output %y
})");
  EXPECT_FALSE(CreateFoldNormCastsPass()->Run(*g, ctx));
  // A half x with f64 parameters, or blocked, is not a batch norm's half activation.
  EXPECT_THROW(Verify(*ParseGraph(R"(graph g {
  input %x : bf16[2, 4, 3]
  input %w : f64[4]
  input %b : f64[4]
  %y, %m, %s, %v = batch_norm_train(%x, %w, %b) : f64[2, 4, 3], f64[4], f64[4], f64[4]
  output %y
})"), &OpRegistry::Global()),
               Error);
  EXPECT_THROW(Verify(*ParseGraph(R"(graph g {
  input %x : bf16[2, 16, 3, 3]
  input %w : f32[16]
  input %b : f32[16]
  %y, %m, %s, %v = batch_norm_train(%x, %w, %b) {blocked = true} : f32[2, 16, 3, 3], f32[16], f32[16], f32[16]
  output %y
})"), &OpRegistry::Global()),
               Error);
}

}  // namespace
}  // namespace tg
