// ApplyMixedPrecision (passes/mixed_precision.h): which nodes turn half, where the casts go.
#include <gtest/gtest.h>

#include "ops/builder.h"
#include "passes/mixed_precision.h"
#include "passes/verifier.h"
#include "support/error.h"

namespace tg {
namespace {

// The default policy without its size rules: these graphs are small.
MixedPrecisionPolicy EveryOpInHalf() {
  MixedPrecisionPolicy policy;
  policy.min_rows = 0;
  policy.min_depth = 0;
  return policy;
}

int CountCasts(const Graph& g, DType to) {
  int n = 0;
  for (const auto& node : g.nodes()) {
    if (node->op() == "cast" && node->output()->type().dtype == to) ++n;
  }
  return n;
}

TEST(MixedPrecision, HalfOpsReadHalfAndHandBackF32) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {4, 8}});
  Value* w1 = g.AddVariable("w1", {DType::kF32, {8, 8}});
  Value* w2 = g.AddVariable("w2", {DType::kF32, {8, 3}});
  Value* h = b.Op1("matmul", {x, w1});
  Value* y = b.Op1("matmul", {h, w2});         // back to back with the first
  Value* out = b.Op1("relu", {y});             // not in the policy: f32
  g.AddOutput(out);
  g.AddOutput(h);                              // a graph output stays f32
  EXPECT_EQ(ApplyMixedPrecision(g, EveryOpInHalf()), 2);
  Verify(g);
  const Node* first = nullptr;
  const Node* second = nullptr;
  for (const auto& n : g.nodes()) {
    if (n->op() != "matmul") continue;
    (first ? second : first) = n.get();
  }
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(first->output()->type().dtype, DType::kBF16);
  EXPECT_EQ(second->input(0), first->output());  // no f32 round trip between the two
  EXPECT_EQ(CountCasts(g, DType::kBF16), 3);     // x, w1, w2
  EXPECT_EQ(g.outputs()[0]->producer()->op(), "relu");
  EXPECT_EQ(g.outputs()[0]->producer()->input(0)->type().dtype, DType::kF32);
  EXPECT_EQ(g.outputs()[1]->type().dtype, DType::kF32);
  EXPECT_EQ(w1->type().dtype, DType::kF32);  // master weights
}

TEST(MixedPrecision, LeavesOpsOutsideThePolicyAndF64Alone) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF64, {2, 2}});
  g.AddOutput(b.Op1("matmul", {x, x}));
  Value* f = g.AddInput("f", {DType::kF32, {2, 2}});
  g.AddOutput(b.Op1("matmul", {f, f}));
  MixedPrecisionPolicy conv_only = EveryOpInHalf();
  conv_only.half = DType::kF16;
  conv_only.half_ops = {"conv2d"};
  EXPECT_EQ(ApplyMixedPrecision(g, conv_only), 0);
  EXPECT_EQ(ApplyMixedPrecision(g, EveryOpInHalf()), 1);  // only the f32 one
  Verify(g);
  MixedPrecisionPolicy bad;
  bad.half = DType::kF32;
  EXPECT_THROW(ApplyMixedPrecision(g, bad), Error);
}

TEST(MixedPrecision, DepthwiseConvolutionsStayF32UnlessAsked) {
  auto build = [](Graph& g) {
    Builder b(g);
    Value* x = g.AddInput("x", {DType::kF32, {2, 8, 6, 6}});
    Value* dw = g.AddVariable("dw", {DType::kF32, {8, 1, 3, 3}});
    Value* grouped = g.AddVariable("gw", {DType::kF32, {8, 4, 3, 3}});
    const AttrMap depthwise = {{"stride", std::vector<int64_t>{1, 1}},
                               {"padding", std::vector<int64_t>{1, 1}},
                               {"dilation", std::vector<int64_t>{1, 1}},
                               {"groups", int64_t{8}}};
    AttrMap two_groups = depthwise;
    two_groups["groups"] = int64_t{2};
    g.AddOutput(b.Op1("conv2d", {x, dw}, depthwise));
    g.AddOutput(b.Op1("conv2d", {x, grouped}, two_groups));
  };
  Graph g;
  build(g);
  EXPECT_EQ(ApplyMixedPrecision(g, EveryOpInHalf()), 1);  // the grouped one only
  Verify(g);
  for (const auto& n : g.nodes()) {
    if (n->op() != "conv2d") continue;
    const bool is_depthwise = GetInt(n->attrs(), "groups") == 8;
    EXPECT_EQ(n->output()->type().dtype, is_depthwise ? DType::kF32 : DType::kBF16);
  }
  Graph all;
  build(all);
  MixedPrecisionPolicy policy = EveryOpInHalf();
  policy.depthwise_in_half = true;
  EXPECT_EQ(ApplyMixedPrecision(all, policy), 2);
}

TEST(MixedPrecision, ProductsWithFewResultRowsStayF32) {
  // A squeeze-excite convolution on [8, 64, 1, 1] (8 rows) and a classifier at batch 8 stay
  // f32 under the default policy (min_rows 32); a [32, 64] x [64, 64] matmul turns half.
  Graph g;
  Builder b(g);
  Value* pooled = g.AddInput("pooled", {DType::kF32, {8, 64, 1, 1}});
  Value* se = g.AddVariable("se", {DType::kF32, {16, 64, 1, 1}});
  const AttrMap one_by_one = {{"stride", std::vector<int64_t>{1, 1}},
                              {"padding", std::vector<int64_t>{0, 0}},
                              {"dilation", std::vector<int64_t>{1, 1}},
                              {"groups", int64_t{1}}};
  g.AddOutput(b.Op1("conv2d", {pooled, se}, one_by_one));
  Value* features = g.AddInput("features", {DType::kF32, {8, 64}});
  Value* rows = g.AddInput("rows", {DType::kF32, {32, 64}});
  Value* w = g.AddVariable("w", {DType::kF32, {64, 64}});
  g.AddOutput(b.Op1("matmul", {features, w}));
  g.AddOutput(b.Op1("matmul", {rows, w}));
  EXPECT_EQ(ApplyMixedPrecision(g, MixedPrecisionPolicy{}), 1);
  Verify(g);
  for (const auto& n : g.nodes()) {
    if (n->op() != "matmul" && n->op() != "conv2d") continue;
    const bool large = n->input(0)->type().shape[0] == 32;
    EXPECT_EQ(n->output(0)->type().dtype, large ? DType::kBF16 : DType::kF32) << n->op();
  }
}


TEST(MixedPrecision, ProductsOfFewTermsStayF32) {
  // A stem convolution on 3 channels (27 products per result) and a 1 x 1 convolution on 32
  // channels stay f32 under the default policy (min_depth 64); a 3 x 3 convolution on 8
  // channels (72) turns half. Matmuls: a contraction of 32 stays f32, of 64 turns half (a
  // transposed left operand contracts its rows).
  Graph g;
  Builder b(g);
  auto conv = [&](const char* x_name, Shape x_shape, const char* w_name, Shape w_shape) {
    Value* x = g.AddInput(x_name, {DType::kF32, std::move(x_shape)});
    Value* w = g.AddVariable(w_name, {DType::kF32, std::move(w_shape)});
    const int64_t pad = w->type().shape[2] / 2;
    g.AddOutput(b.Op1("conv2d", {x, w}, {{"stride", std::vector<int64_t>{1, 1}},
                                         {"padding", std::vector<int64_t>{pad, pad}},
                                         {"dilation", std::vector<int64_t>{1, 1}},
                                         {"groups", int64_t{1}}}));
  };
  conv("image", {2, 3, 16, 16}, "stem", {16, 3, 3, 3});
  conv("narrow", {2, 32, 16, 16}, "pointwise", {64, 32, 1, 1});
  conv("eight", {2, 8, 16, 16}, "three", {16, 8, 3, 3});
  Value* a32 = g.AddInput("a32", {DType::kF32, {64, 32}});
  Value* w32 = g.AddVariable("w32", {DType::kF32, {32, 64}});
  g.AddOutput(b.Op1("matmul", {a32, w32}));
  Value* at = g.AddInput("at", {DType::kF32, {64, 64}});
  g.AddOutput(b.Op1("matmul", {at, w32}, {{"transpose_a", true}, {"transpose_b", true}}));
  EXPECT_EQ(ApplyMixedPrecision(g, MixedPrecisionPolicy{}), 2);
  Verify(g);
  for (const auto& n : g.nodes()) {
    if (n->op() != "matmul" && n->op() != "conv2d") continue;
    const Shape& x = n->input(0)->type().shape;
    const bool half = x == Shape{2, 8, 16, 16} || x == Shape{64, 64};
    EXPECT_EQ(n->output(0)->type().dtype, half ? DType::kBF16 : DType::kF32)
        << n->op() << " " << ShapeToString(x);
  }
}

}  // namespace
}  // namespace tg
