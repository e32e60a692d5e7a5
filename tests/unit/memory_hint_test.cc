// set_available_memory as IR (ops/memory_hint.h): the hint lands on the dense op producing
// a value, through its bias add and casts; the verifier accepts it on dense ops only; the
// passes that rebuild a matmul keep it; the IPU Model's planner honours it.
#include <gtest/gtest.h>

#include "ir/printer.h"
#include "lowering/program.h"
#include "ops/builder.h"
#include "ops/memory_hint.h"
#include "passes/passes.h"
#include "passes/verifier.h"
#include "support/error.h"
#include "tiles/tile_estimate.h"

namespace tg {
namespace {

TEST(MemoryHint, LandsOnTheMatmulBehindItsBiasAndCasts) {
  Graph g("linear");
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {4, 16}});
  Value* w = g.AddVariable("w", {DType::kF32, {16, 8}});
  Value* bias = g.AddVariable("b", {DType::kF32, {8}});
  Value* mm = b.Op1("matmul", {x, w});
  Value* y = b.Op1("cast", {b.Add(mm, bias)}, {{"dtype", DType::kF16}});
  Node* hinted = HintAvailableMemory(y, 0.2);
  ASSERT_EQ(hinted, mm->producer());
  EXPECT_DOUBLE_EQ(GetFloat(hinted->attrs(), kAvailableMemoryAttr), 0.2);
  g.AddOutput(y);
  Verify(g, &OpRegistry::Global());  // the hint is in a dense op's schema
  // No dense op behind a value: no hint, nothing changed.
  EXPECT_EQ(HintAvailableMemory(b.Add(x, x), 0.2), nullptr);
  EXPECT_EQ(HintAvailableMemory(x, 0.2), nullptr);
  try {
    HintAvailableMemory(y, 1.5);
    FAIL() << "a proportion above 1 is invalid";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
  }
}

TEST(MemoryHint, TheVerifierRejectsItOnOtherOps) {
  Graph g("g");
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {4}});
  Value* y = b.Add(x, x);
  y->producer()->mutable_attrs()[kAvailableMemoryAttr] = 0.5;
  g.AddOutput(y);
  EXPECT_THROW(Verify(g, &OpRegistry::Global()), Error);
}

TEST(MemoryHint, FoldTransposeKeepsItOnTheSwappedMatmul) {
  std::unique_ptr<Graph> g = ParseGraph(R"(graph g {
  input %x : f32[4,3]
  input %gy : f32[4,5]
  %gw = matmul(%x, %gy) {available_memory_proportion = 0.25, transpose_a = true,
                         transpose_b = false} : f32[3,5]
  %gwt = permute(%gw) {perm = [1, 0]} : f32[5,3]
  output %gwt
})");
  PassContext ctx;
  CreateFoldTransposePass()->Run(*g, ctx);
  CreateDcePass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  ASSERT_EQ(g->nodes().size(), 1u);
  EXPECT_DOUBLE_EQ(GetFloat(g->nodes()[0]->attrs(), kAvailableMemoryAttr), 0.25);
}

TEST(MemoryHint, TheIpuPlannerTradesCyclesForMemoryAsHinted) {
  // a [1024, 1024] @ b [1024, 1024], both streamed: the product's temporaries are bounded
  // by the hint instead of the IPU's 0.6.
  auto estimate = [](double hint) {
    auto g = std::make_unique<Graph>("mm");
    Builder b(*g);
    Value* a = g->AddInput("a", {DType::kF32, {1024, 1024}});
    Value* c = g->AddInput("c", {DType::kF32, {1024, 1024}});
    Value* y = b.Op1("matmul", {a, c});
    if (hint > 0) HintAvailableMemory(y, hint);
    g->AddOutput(y);
    return tiles::EstimateOnTiles(Lower(std::move(g)));
  };
  const tiles::TileEstimate roomy = estimate(0), tight = estimate(0.05);
  const double tile = roomy.target.bytes_per_tile;
  EXPECT_LT(tight.ipus[0].max_tile_bytes, roomy.ipus[0].max_tile_bytes);
  EXPECT_LE(tight.ipus[0].exchange[tight.ipus[0].max_tile], 0.05 * tile);
  EXPECT_GT(roomy.ipus[0].exchange[roomy.ipus[0].max_tile], 0.05 * tile);
  EXPECT_GT(tight.step_cycles, roomy.step_cycles);
}

}  // namespace
}  // namespace tg
