// fuse-matmul-epilogue: matmul -> add(bias) [-> relu / gelu] becomes one matmul_epilogue node
// when nothing else reads the intermediate values; shared values, full-shape addends, half
// matmuls and outputs stay unfused. Each case is evaluated before and after (f32 kernels:
// oneDNN with its bias and post-op against the unfused kernels).
#include <gtest/gtest.h>

#include "passes/passes.h"
#include "unit/pass_test_util.h"

namespace tg {
namespace {

std::unique_ptr<Graph> Fused(const std::string& text) {
  std::unique_ptr<Graph> g = ParseGraph(text);
  PassContext ctx;
  CreateFuseMatmulEpiloguePass()->Run(*g, ctx);
  CreateDcePass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  return g;
}

TEST(FuseMatmulEpilogue, LinearReluBecomesOneNode) {
  std::string text = R"(graph g {
  input %x : f32[6,8]
  input %w : f32[5,8]
  input %b : f32[5]
  %m = matmul(%x, %w) {transpose_a = false, transpose_b = true} : f32[6,5]
  %s = add(%m, %b) : f32[6,5]
  %y = relu(%s) : f32[6,5]
  output %y
})";
  std::unique_ptr<Graph> g = Fused(text);
  EXPECT_EQ(g->nodes().size(), 1u);
  const Node* f = Only(*g, "matmul_epilogue");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(GetString(f->attrs(), "activation"), "relu");
  EXPECT_TRUE(GetBool(f->attrs(), "transpose_b"));
  ExpectSameOutputs(text, *g, 1e-5);
}

TEST(FuseMatmulEpilogue, GeluAndBatchedBiasOfRankTwo) {
  // bias [1, 5] (a broadcast row) is flattened by a reshape view; gelu's exact and tanh forms.
  for (const char* mode : {"none", "tanh"}) {
    std::string text = std::string(R"(graph g {
  input %x : f32[2,3,8]
  input %w : f32[8,5]
  input %b : f32[1,5]
  %m = matmul(%x, %w) {transpose_a = false, transpose_b = false} : f32[2,3,5]
  %s = add(%b, %m) : f32[2,3,5]
  %y = gelu(%s) {approximate = ")") + mode + R"("} : f32[2,3,5]
  output %y
})";
    std::unique_ptr<Graph> g = Fused(text);
    const Node* f = Only(*g, "matmul_epilogue");
    ASSERT_NE(f, nullptr) << mode;
    EXPECT_EQ(GetString(f->attrs(), "activation"), std::string(mode) == "tanh" ? "gelu_tanh" : "gelu");
    EXPECT_EQ(Count(*g, "gelu") + Count(*g, "add") + Count(*g, "matmul"), 0);
    ExpectSameOutputs(text, *g, 1e-5);
  }
}

TEST(FuseMatmulEpilogue, TheActivationFusesThroughTheReshapeBackToThreeDimensions) {
  // A Linear layer on [B, S, K] as captured (Hugging Face's feed-forward): the biased 2-D
  // result is reshaped to [B, S, N] and then activated. The activation joins the epilogue and
  // the reshape moves after it; a reshape read twice keeps its activation apart.
  std::string text = R"(graph g {
  input %x : f32[6,8]
  input %w : f32[5,8]
  input %b : f32[5]
  %m = matmul(%x, %w) {transpose_a = false, transpose_b = true} : f32[6,5]
  %s = add(%m, %b) : f32[6,5]
  %r = reshape(%s) {shape = [2, 3, 5]} : f32[2,3,5]
  %y = gelu(%r) {approximate = "none"} : f32[2,3,5]
  output %y
})";
  std::unique_ptr<Graph> g = Fused(text);
  const Node* f = Only(*g, "matmul_epilogue");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(GetString(f->attrs(), "activation"), "gelu");
  const Node* r = Only(*g, "reshape");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->input(0), f->output());
  EXPECT_EQ(r->output()->type().shape, (Shape{2, 3, 5}));
  EXPECT_EQ(g->nodes().size(), 2u);
  ExpectSameOutputs(text, *g, 1e-5);

  std::string shared = R"(graph g {
  input %x : f32[6,8]
  input %w : f32[5,8]
  input %b : f32[5]
  %m = matmul(%x, %w) {transpose_a = false, transpose_b = true} : f32[6,5]
  %s = add(%m, %b) : f32[6,5]
  %r = reshape(%s) {shape = [2, 3, 5]} : f32[2,3,5]
  %y = relu(%r) : f32[2,3,5]
  output %y
  output %r
})";
  g = Fused(shared);
  f = Only(*g, "matmul_epilogue");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(GetString(f->attrs(), "activation"), "none");
  EXPECT_EQ(Count(*g, "relu"), 1);
  ExpectSameOutputs(shared, *g, 1e-5);
}

TEST(FuseMatmulEpilogue, SharedValuesStayAsTheyAre) {
  // The pre-activation is also an output (GELU's backward reads it in training): only the bias
  // is fused. A matmul result read twice, and an addend of the full shape, are not fused.
  std::string text = R"(graph g {
  input %x : f32[4,8]
  input %w : f32[8,5]
  input %b : f32[5]
  input %r : f32[4,5]
  %m = matmul(%x, %w) {transpose_a = false, transpose_b = false} : f32[4,5]
  %s = add(%m, %b) : f32[4,5]
  %y = gelu(%s) {approximate = "none"} : f32[4,5]
  %m2 = matmul(%x, %w) {transpose_a = false, transpose_b = false} : f32[4,5]
  %t = add(%m2, %b) : f32[4,5]
  %u = mul(%m2, %t) : f32[4,5]
  %m3 = matmul(%x, %w) {transpose_a = false, transpose_b = false} : f32[4,5]
  %v = add(%m3, %r) : f32[4,5]
  output %y
  output %s
  output %u
  output %v
})";
  std::unique_ptr<Graph> g = Fused(text);
  const Node* f = Only(*g, "matmul_epilogue");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(GetString(f->attrs(), "activation"), "none");
  EXPECT_EQ(Count(*g, "gelu"), 1);
  EXPECT_EQ(Count(*g, "matmul"), 2);  // m2 (read twice) and m3 (a residual, not a bias)
  ExpectSameOutputs(text, *g, 1e-5);
}

TEST(FuseMatmulEpilogue, HalfMatmulsAreLeftAlone) {
  std::string text = R"(graph g {
  input %x : bf16[4,8]
  input %w : bf16[8,5]
  input %b : bf16[5]
  %m = matmul(%x, %w) {transpose_a = false, transpose_b = false} : bf16[4,5]
  %s = add(%m, %b) : bf16[4,5]
  output %s
})";
  EXPECT_EQ(Count(*Fused(text), "matmul_epilogue"), 0);
}

}  // namespace
}  // namespace tg
