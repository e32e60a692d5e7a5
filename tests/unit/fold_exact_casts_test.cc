// fold-exact-casts: a round trip f32 -> half -> f32 of a value that is exact in that half
// dtype (a half value widened, then only moved, selected or negated) is the value itself;
// round trips after arithmetic, or through the other half dtype, are rounding and stay.
// Every case is also evaluated before and after the pass: outputs must be bit-identical.
#include <gtest/gtest.h>

#include "passes/passes.h"
#include "passes/verifier.h"
#include "unit/pass_test_util.h"

namespace tg {
namespace {

std::unique_ptr<Graph> Folded(const std::string& text) {
  std::unique_ptr<Graph> g = ParseGraph(text);
  PassContext ctx;
  CreateFoldExactCastsPass()->Run(*g, ctx);
  CreateDcePass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  ExpectSameOutputs(text, *g, 0.0);
  return g;
}

TEST(FoldExactCasts, AWidenedHalfWeightsTransposeReachesTheMatmul) {
  // A half Linear layer as capture writes it: the weight widened, transposed in f32, rounded
  // back to f16 (torch's result dtype for t()) and widened again for the matmul.
  std::unique_ptr<Graph> g = Folded(R"(graph g {
  input %x : f32[4,3]
  input %w : f16[5,3]
  %w32 = cast(%w) {dtype = f32} : f32[5,3]
  %wt32 = permute(%w32) {perm = [1, 0]} : f32[3,5]
  %wt = cast(%wt32) {dtype = f16} : f16[3,5]
  %wt_again = cast(%wt) {dtype = f32} : f32[3,5]
  %y = matmul(%x, %wt_again) {transpose_a = false, transpose_b = false} : f32[4,5]
  output %y
})");
  EXPECT_EQ(Count(*g, "cast"), 1);  // the widening of w
  const Node* mm = Only(*g, "matmul");
  ASSERT_NE(mm, nullptr);
  ASSERT_NE(mm->input(1)->producer(), nullptr);
  EXPECT_EQ(mm->input(1)->producer()->op(), "permute");
}

TEST(FoldExactCasts, SelectionsKeepExactnessAndArithmeticEndsIt) {
  // relu, maximum, neg and where of exact values are exact; x + x is not (it can overflow
  // f16 and, in general, sums need rounding), so its round trip stays.
  std::unique_ptr<Graph> g = Folded(R"(graph g {
  input %a : f16[6]
  input %b : f16[6]
  input %m : bool[6]
  %a32 = cast(%a) {dtype = f32} : f32[6]
  %b32 = cast(%b) {dtype = f32} : f32[6]
  %r = relu(%a32) : f32[6]
  %n = neg(%b32) : f32[6]
  %mx = maximum(%r, %n) : f32[6]
  %sel = where(%m, %mx, %a32) : f32[6]
  %h1 = cast(%sel) {dtype = f16} : f16[6]
  %k1 = cast(%h1) {dtype = f32} : f32[6]
  %sum = add(%a32, %a32) : f32[6]
  %h2 = cast(%sum) {dtype = f16} : f16[6]
  %k2 = cast(%h2) {dtype = f32} : f32[6]
  output %k1
  output %k2
})");
  ASSERT_EQ(g->outputs().size(), 2u);
  ASSERT_NE(g->outputs()[0]->producer(), nullptr);
  EXPECT_EQ(g->outputs()[0]->producer()->op(), "where");  // the round trip is gone
  ASSERT_NE(g->outputs()[1]->producer(), nullptr);
  EXPECT_EQ(g->outputs()[1]->producer()->op(), "cast");   // rounding of a sum: kept
}

TEST(FoldExactCasts, ExactnessIsPerHalfDtype) {
  // An f16 value is not exact in bf16 (fewer mantissa bits): its bf16 round trip rounds.
  // The f16 round trip of the same value folds; so does a bf16 value's bf16 round trip.
  std::unique_ptr<Graph> g = Folded(R"(graph g {
  input %a : f16[8]
  input %c : bf16[8]
  %a32 = cast(%a) {dtype = f32} : f32[8]
  %to_bf = cast(%a32) {dtype = bf16} : bf16[8]
  %back_bf = cast(%to_bf) {dtype = f32} : f32[8]
  %to_f16 = cast(%a32) {dtype = f16} : f16[8]
  %back_f16 = cast(%to_f16) {dtype = f32} : f32[8]
  %c32 = cast(%c) {dtype = f32} : f32[8]
  %c_to = cast(%c32) {dtype = bf16} : bf16[8]
  %c_back = cast(%c_to) {dtype = f32} : f32[8]
  output %back_bf
  output %back_f16
  output %c_back
})");
  ASSERT_EQ(g->outputs().size(), 3u);
  EXPECT_EQ(g->outputs()[0]->producer()->op(), "cast");
  EXPECT_EQ(g->outputs()[0]->producer()->input(0)->type().dtype, DType::kBF16);
  EXPECT_EQ(g->outputs()[1]->name(), "a32");
  EXPECT_EQ(g->outputs()[2]->name(), "c32");
}

TEST(FoldExactCasts, AHalfResultOthersReadStays) {
  // The rounded value is also an output of its own: only the widening after it goes.
  std::unique_ptr<Graph> g = Folded(R"(graph g {
  input %a : f16[2,3]
  %a32 = cast(%a) {dtype = f32} : f32[2,3]
  %r = reshape(%a32) {shape = [3, 2]} : f32[3,2]
  %h = cast(%r) {dtype = f16} : f16[3,2]
  %w = cast(%h) {dtype = f32} : f32[3,2]
  %e = exp(%w) : f32[3,2]
  output %h
  output %e
})");
  EXPECT_EQ(Count(*g, "cast"), 2);  // a's widening and the rounding that is an output
  const Node* e = Only(*g, "exp");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->input(0)->name(), "r");
}

}  // namespace
}  // namespace tg
