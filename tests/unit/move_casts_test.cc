// move-casts (passes/move_casts.cc): widening casts sink below reshapes / permutes / slices,
// rounding casts rise above reshapes / permutes / expands, and a widening cast rounded back to
// its half dtype is the half value itself. Each case is evaluated before and after the pass:
// outputs must be bit-identical.
#include <gtest/gtest.h>

#include "passes/passes.h"
#include "passes/verifier.h"
#include "unit/pass_test_util.h"

namespace tg {
namespace {

std::unique_ptr<Graph> Moved(const std::string& text) {
  std::unique_ptr<Graph> g = ParseGraph(text);
  PassContext ctx;
  CreateMoveCastsPass()->Run(*g, ctx);
  CreateDcePass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  ExpectSameOutputs(text, *g, 0.0);
  return g;
}

TEST(MoveCasts, AHalfResultsRoundTripThroughAttentionHeadsDisappears) {
  // A bf16 projection widened, split into heads, broadcast over a batch and rounded back to
  // bf16 for the next matmul: the data moves in bf16 and no cast is left.
  std::unique_ptr<Graph> g = Moved(R"(graph g {
  input %q : bf16[8,6]
  %q32 = cast(%q) {dtype = f32} : f32[8,6]
  %heads = reshape(%q32) {shape = [2, 4, 2, 3]} : f32[2,4,2,3]
  %perm = permute(%heads) {perm = [0, 2, 1, 3]} : f32[2,2,4,3]
  %wide = expand(%perm) {shape = [2, 2, 4, 3]} : f32[2,2,4,3]
  %flat = reshape(%wide) {shape = [4, 4, 3]} : f32[4,4,3]
  %h = cast(%flat) {dtype = bf16} : bf16[4,4,3]
  output %h
})");
  EXPECT_EQ(Count(*g, "cast"), 0);
  for (const auto& n : g->nodes()) {
    EXPECT_EQ(n->output()->type().dtype, DType::kBF16) << n->Describe();
  }
}

TEST(MoveCasts, CastsEndNextToTheElementwiseOpsTheyFuseInto) {
  // A widened matmul result reshaped for the residual add: the widening now reads the
  // reshape and feeds the add. A GELU's result reshaped (and also summed, for a bias
  // gradient) before its rounding: the rounding reads the GELU (the reshape is copied).
  std::unique_ptr<Graph> g = Moved(R"(graph g {
  input %mm : bf16[6,4]
  input %res : f32[2,3,4]
  input %x : f32[2,3,4]
  %mm32 = cast(%mm) {dtype = f32} : f32[6,4]
  %r = reshape(%mm32) {shape = [2, 3, 4]} : f32[2,3,4]
  %sum = add(%res, %r) : f32[2,3,4]
  %g = gelu(%x) {approximate = "none"} : f32[2,3,4]
  %g2 = reshape(%g) {shape = [6, 4]} : f32[6,4]
  %gh = cast(%g2) {dtype = bf16} : bf16[6,4]
  %bias_grad = sum(%g2) {axes = [0], keepdim = false} : f32[4]
  output %sum
  output %gh
  output %bias_grad
})");
  const Node* add = Only(*g, "add");
  ASSERT_NE(add, nullptr);
  const Node* widen = add->input(1)->producer();
  ASSERT_NE(widen, nullptr);
  EXPECT_EQ(widen->op(), "cast");
  EXPECT_EQ(widen->input(0)->type().dtype, DType::kBF16);
  EXPECT_EQ(widen->input(0)->producer()->op(), "reshape");
  const Node* gelu = Only(*g, "gelu");
  ASSERT_NE(gelu, nullptr);
  const Node* round = nullptr;
  for (const auto& n : g->nodes()) {
    if (n->op() == "cast" && n->input(0) == gelu->output()) round = n.get();
  }
  ASSERT_NE(round, nullptr) << PrintGraph(*g);
  EXPECT_EQ(round->output()->type().dtype, DType::kBF16);
}

TEST(MoveCasts, NoMoveThatWouldCostMore) {
  // A rounding cast stays below a slice (above it, it would round the whole input), a
  // widening cast above an expand (below it, it would widen every copy); a permute read by
  // something else keeps its rounding cast below it (moving it would copy the permute).
  std::unique_ptr<Graph> g = Moved(R"(graph g {
  input %x : f32[8,4]
  input %h : bf16[1,4]
  %s = slice(%x) {axis = 0, start = 0, end = 2, step = 1} : f32[2,4]
  %sh = cast(%s) {dtype = bf16} : bf16[2,4]
  %h32 = cast(%h) {dtype = f32} : f32[1,4]
  %e = expand(%h32) {shape = [8, 4]} : f32[8,4]
  %p = permute(%x) {perm = [1, 0]} : f32[4,8]
  %ph = cast(%p) {dtype = bf16} : bf16[4,8]
  %n = neg(%p) : f32[4,8]
  output %sh
  output %e
  output %ph
  output %n
})");
  EXPECT_EQ(Only(*g, "slice")->output()->type().dtype, DType::kF32);
  EXPECT_EQ(Only(*g, "expand")->output()->type().dtype, DType::kF32);
  EXPECT_EQ(Only(*g, "permute")->output()->type().dtype, DType::kF32);
  EXPECT_EQ(Count(*g, "cast"), 3);
}

}  // namespace
}  // namespace tg
