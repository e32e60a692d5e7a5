// fold-transpose: permutes that swap the last two axes disappear into matmul's transpose
// flags (operands, and results via (A B)^T = B^T A^T); other permutes and shared results stay.
// Each case is also evaluated before and after the pass on random inputs (f64).
#include <gtest/gtest.h>

#include "ir/printer.h"
#include "unit/pass_test_util.h"
#include "passes/passes.h"
#include "passes/verifier.h"

namespace tg {
namespace {

std::unique_ptr<Graph> Folded(const std::string& text) {
  std::unique_ptr<Graph> g = ParseGraph(text);
  PassContext ctx;
  CreateFoldTransposePass()->Run(*g, ctx);
  CreateDcePass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  return g;
}

TEST(FoldTranspose, LinearWeightTransposeBecomesFlag) {
  std::string text = R"(graph g {
  input %x : f64[4,3]
  input %w : f64[5,3]
  %wt = permute(%w) {perm = [1, 0]} : f64[3,5]
  %y = matmul(%x, %wt) {transpose_a = false, transpose_b = false} : f64[4,5]
  output %y
})";
  std::unique_ptr<Graph> g = Folded(text);
  EXPECT_EQ(Count(*g, "permute"), 0);
  ASSERT_EQ(Count(*g, "matmul"), 1);
  EXPECT_TRUE(GetBool(g->nodes()[0]->attrs(), "transpose_b"));
  ExpectSameOutputs(text, *g);
}

TEST(FoldTranspose, AHalfCastOfATransposedWeightCastsTheWeightItself) {
  // Mixed precision: a bf16 matmul reads the bf16 cast of the transposed f32 master weight,
  // forward (x @ w^T) and backward (g @ w, through the same cast). One cast of w remains,
  // read with transpose flags; no permute.
  std::string text = R"(graph g {
  input %x : bf16[4,3]
  input %g : bf16[4,5]
  input %w : f32[5,3]
  %wt = permute(%w) {perm = [1, 0]} : f32[3,5]
  %wt16 = cast(%wt) {dtype = bf16} : bf16[3,5]
  %y = matmul(%x, %wt16) {transpose_a = false, transpose_b = false} : bf16[4,5]
  %dx = matmul(%g, %wt16) {transpose_a = false, transpose_b = true} : bf16[4,3]
  output %y
  output %dx
})";
  std::unique_ptr<Graph> g = Folded(text);
  EXPECT_EQ(Count(*g, "permute"), 0);
  EXPECT_EQ(Count(*g, "cast"), 1);
  for (const auto& n : g->nodes()) {
    if (n->op() != "matmul") continue;
    ASSERT_NE(n->input(1)->producer(), nullptr);
    EXPECT_EQ(n->input(1)->producer()->op(), "cast");
    EXPECT_EQ(n->input(1)->type().shape, (Shape{5, 3}));
  }
  ExpectSameOutputs(text, *g, 0.0);
}

TEST(FoldTranspose, BatchedOperandAndDoubleTranspose) {
  // a is permuted [0, 2, 1] (batch axis kept); b's permute undoes a transpose flag.
  std::string text = R"(graph g {
  input %a : f64[2,3,4]
  input %b : f64[2,3,5]
  %at = permute(%a) {perm = [0, 2, 1]} : f64[2,4,3]
  %bt = permute(%b) {perm = [0, 2, 1]} : f64[2,5,3]
  %y = matmul(%at, %bt) {transpose_a = false, transpose_b = true} : f64[2,4,5]
  output %y
})";
  std::unique_ptr<Graph> g = Folded(text);
  EXPECT_EQ(Count(*g, "permute"), 0);
  const Node& mm = *g->nodes()[0];
  EXPECT_TRUE(GetBool(mm.attrs(), "transpose_a"));
  EXPECT_FALSE(GetBool(mm.attrs(), "transpose_b"));
  ExpectSameOutputs(text, *g);
}

TEST(FoldTranspose, TransposedResultSwapsOperands) {
  // The weight gradient of a linear layer: (x^T @ g)^T becomes g^T @ x.
  std::string text = R"(graph g {
  input %x : f64[4,3]
  input %gy : f64[4,5]
  %gw = matmul(%x, %gy) {transpose_a = true, transpose_b = false} : f64[3,5]
  %gwt = permute(%gw) {perm = [1, 0]} : f64[5,3]
  output %gwt
})";
  std::unique_ptr<Graph> g = Folded(text);
  EXPECT_EQ(Count(*g, "permute"), 0);
  ASSERT_EQ(Count(*g, "matmul"), 1);
  const Node& mm = *g->nodes()[0];
  EXPECT_EQ(mm.input(0)->name(), "gy");
  EXPECT_TRUE(GetBool(mm.attrs(), "transpose_a"));
  EXPECT_FALSE(GetBool(mm.attrs(), "transpose_b"));
  ExpectSameOutputs(text, *g);
}

TEST(FoldTranspose, KeepsOtherPermutesAndSharedResults) {
  // perm [1, 0, 2] is not a last-two swap; %m has a second user, so its transpose stays.
  std::string text = R"(graph g {
  input %a : f64[2,3,4]
  input %b : f64[3,4,4]
  %ap = permute(%a) {perm = [1, 0, 2]} : f64[3,2,4]
  %m = matmul(%ap, %b) {transpose_a = false, transpose_b = false} : f64[3,2,4]
  %mt = permute(%m) {perm = [0, 2, 1]} : f64[3,4,2]
  output %m
  output %mt
})";
  std::unique_ptr<Graph> g = Folded(text);
  EXPECT_EQ(Count(*g, "permute"), 2);
  ExpectSameOutputs(text, *g);
}

// A half model's weight gradient: the f32 product rounded to f16, widened, transposed; with
// `rounded_is_output` the rounded product is also returned.
std::string HalfWeightGradient(bool rounded_is_output) {
  return std::string(R"(graph g {
  input %x : f32[4,3]
  input %gy : f32[4,5]
  %gw = matmul(%x, %gy) {transpose_a = true, transpose_b = false} : f32[3,5]
  %h = cast(%gw) {dtype = f16} : f16[3,5]
  %w = cast(%h) {dtype = f32} : f32[3,5]
  %gwt = permute(%w) {perm = [1, 0]} : f32[5,3]
  output %gwt
)") + (rounded_is_output ? "  output %h\n" : "") + "}";
}

TEST(FoldTranspose, TransposedResultThroughAHalfModelsCasts) {
  // The casts commute with the transpose: the matmul swaps its operands and the casts follow.
  const std::string text = HalfWeightGradient(false);
  std::unique_ptr<Graph> g = Folded(text);
  EXPECT_EQ(Count(*g, "permute"), 0) << PrintGraph(*g);
  EXPECT_EQ(Count(*g, "cast"), 2);
  const Node* mm = Only(*g, "matmul");
  ASSERT_NE(mm, nullptr);
  EXPECT_EQ(mm->input(0)->name(), "gy");
  EXPECT_EQ(mm->output()->type().shape, (Shape{5, 3}));
  EXPECT_EQ(g->outputs()[0]->producer()->op(), "cast");
  EXPECT_EQ(g->outputs()[0]->type(), (TensorType{DType::kF32, {5, 3}}));
  ExpectSameOutputs(text, *g, 0.0);
}

TEST(FoldTranspose, ACastOthersReadKeepsThePermute) {
  const std::string text = HalfWeightGradient(true);
  std::unique_ptr<Graph> g = Folded(text);
  EXPECT_EQ(Count(*g, "permute"), 1);
  ExpectSameOutputs(text, *g, 0.0);
}

}  // namespace
}  // namespace tg
