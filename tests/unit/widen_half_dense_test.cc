// widen-half-dense: on a target without native kernels for a half dtype, a half matmul /
// convolution becomes the f32 op between casts (what its widened kernel computes inside).
// Each case is evaluated before and after the pass on the reference device: bit-identical.
// Native targets keep bf16 nodes; f16 has no native kernels anywhere; a mixed-precision
// conv2d_epilogue (f32 master weight) is left as it is.
#include <gtest/gtest.h>

#include "passes/passes.h"
#include "passes/verifier.h"
#include "unit/pass_test_util.h"

namespace tg {
namespace {

std::unique_ptr<Graph> Widened(const std::string& text, bool native_bf16) {
  std::unique_ptr<Graph> g = ParseGraph(text);
  PassContext ctx;
  ctx.native_bf16_convolutions = native_bf16;
  CreateWidenHalfDensePass()->Run(*g, ctx);
  CreateDcePass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  std::unique_ptr<Graph> before = ParseGraph(text);
  std::map<std::string, HostTensor> feeds = RandomFeeds(*before, 5);
  EvalResult a = EvaluateGraph(*before, feeds, DeviceKind::kReference);
  EvalResult b = EvaluateGraph(*g, feeds, DeviceKind::kReference);
  EXPECT_EQ(a.outputs.size(), b.outputs.size());
  for (size_t o = 0; o < a.outputs.size() && o < b.outputs.size(); ++o) {
    EXPECT_EQ(a.outputs[o].type(), b.outputs[o].type());
    for (int64_t i = 0; i < a.outputs[o].type().numel(); ++i) {
      EXPECT_EQ(a.outputs[o].GetAsDouble(i), b.outputs[o].GetAsDouble(i))
          << "output " << o << " element " << i;
    }
  }
  return g;
}

const char* kConvolutions = R"(graph g {
  input %x : bf16[2,16,9,9]
  input %w : bf16[32,16,3,3]
  input %dy : bf16[2,32,9,9]
  %y = conv2d(%x, %w) {stride = [1, 1], padding = [1, 1], dilation = [1, 1], groups = 1} : bf16[2,32,9,9]
  %dx = conv2d_backward_input(%dy, %w) {stride = [1, 1], padding = [1, 1], dilation = [1, 1], groups = 1, input_shape = [2, 16, 9, 9]} : bf16[2,16,9,9]
  %dw = conv2d_backward_weight(%dy, %x) {stride = [1, 1], padding = [1, 1], dilation = [1, 1], groups = 1, weight_shape = [32, 16, 3, 3]} : bf16[32,16,3,3]
  output %y
  output %dx
  output %dw
})";

TEST(WidenHalfDense, Bf16ConvolutionsBecomeF32BetweenCastsWithoutNativeKernels) {
  std::unique_ptr<Graph> g = Widened(kConvolutions, /*native_bf16=*/false);
  for (const char* op : {"conv2d", "conv2d_backward_input", "conv2d_backward_weight"}) {
    const Node* n = Only(*g, op);
    ASSERT_NE(n, nullptr) << op;
    EXPECT_EQ(n->output()->type().dtype, DType::kF32) << op;
    for (const Value* in : n->inputs()) EXPECT_EQ(in->type().dtype, DType::kF32) << op;
  }
  EXPECT_EQ(Count(*g, "cast"), 3 + 3);  // x, w, dy widened once each; three results rounded
}

TEST(WidenHalfDense, NativeTargetsKeepBf16AndWidenF16) {
  std::unique_ptr<Graph> g = Widened(kConvolutions, /*native_bf16=*/true);
  EXPECT_EQ(Count(*g, "cast"), 0);
  EXPECT_EQ(Only(*g, "conv2d")->output()->type().dtype, DType::kBF16);

  std::unique_ptr<Graph> f16 = Widened(R"(graph g {
  input %x : f16[8,48]
  input %w : f16[40,48]
  input %b : f16[40]
  %y = matmul_epilogue(%x, %w, %b) {transpose_a = false, transpose_b = true, activation = "gelu"} : f16[8,40]
  output %y
})", /*native_bf16=*/true);
  const Node* mm = Only(*f16, "matmul_epilogue");
  ASSERT_NE(mm, nullptr);
  EXPECT_EQ(mm->output()->type().dtype, DType::kF32);
  EXPECT_EQ(Count(*f16, "cast"), 4);
}

TEST(WidenHalfDense, MixedPrecisionConvEpilogueIsLeftAlone) {
  std::unique_ptr<Graph> g = Widened(R"(graph g {
  input %x : bf16[2,8,7,7]
  input %w : f32[16,8,3,3]
  input %b : f32[16]
  %y = conv2d_epilogue(%x, %w, %b) {stride = [1, 1], padding = [1, 1], dilation = [1, 1], groups = 1, bias = true, batch_norm = false, eps = 1e-05, activation = "relu", residual = false, src_blocked = false, dst_blocked = false} : f32[2,16,7,7]
  output %y
})", /*native_bf16=*/false);
  EXPECT_EQ(Count(*g, "cast"), 0);
  EXPECT_EQ(Only(*g, "conv2d_epilogue")->input(0)->type().dtype, DType::kBF16);
}

}  // namespace
}  // namespace tg
