// hoist-scalars: one-element computations from hyperparameters / variables move to the front
// of the schedule (relative order kept), so that an SGD-style update interleaved with them
// fuses into a single elementwise pass; tensor nodes and nodes reading tensors stay put.
#include <gtest/gtest.h>

#include "ir/printer.h"
#include "passes/passes.h"
#include "passes/verifier.h"

namespace tg {
namespace {

// w -= lr * (g + wd * w), with the casts of lr and wd emitted between the tensor ops.
constexpr const char* kUpdate = R"(graph g {
  input %g : f32[64]
  hyperparam %wd : f64[]
  hyperparam %lr : f64[]
  variable %w : f32[64]
  %wd32 = cast(%wd) {dtype = f32} : f32[]
  %decay = mul(%w, %wd32) : f32[64]
  %d = add(%g, %decay) : f32[64]
  %lr32 = cast(%lr) {dtype = f32} : f32[]
  %step = mul(%d, %lr32) : f32[64]
  %nw = sub(%w, %step) : f32[64]
  update %w = %nw
})";

std::vector<std::string> Ops(const Graph& g) {
  std::vector<std::string> ops;
  for (const auto& n : g.nodes()) ops.push_back(n->op());
  return ops;
}

TEST(HoistScalars, MovesHyperparameterCastsFirst) {
  std::unique_ptr<Graph> g = ParseGraph(kUpdate);
  Verify(*g, &OpRegistry::Global());
  PassContext ctx;
  EXPECT_TRUE(CreateHoistScalarsPass()->Run(*g, ctx));
  Verify(*g, &OpRegistry::Global());
  EXPECT_EQ(Ops(*g), (std::vector<std::string>{"cast", "cast", "mul", "add", "mul", "sub"}));
  EXPECT_EQ(g->nodes()[0]->output()->name(), "wd32");  // relative order kept
  EXPECT_FALSE(CreateHoistScalarsPass()->Run(*g, ctx)) << "a second run changes nothing";
}

TEST(HoistScalars, LetsTheUpdateFuseIntoOnePass) {
  auto fused_nodes = [](bool hoist) {
    std::unique_ptr<Graph> g = ParseGraph(kUpdate);
    PassContext ctx;
    if (hoist) CreateHoistScalarsPass()->Run(*g, ctx);
    CreateFuseElementwisePass()->Run(*g, ctx);
    CreateDcePass()->Run(*g, ctx);
    Verify(*g, &OpRegistry::Global());
    int tensor_nodes = 0;
    for (const auto& n : g->nodes()) tensor_nodes += n->output()->type().numel() > 1;
    return tensor_nodes;
  };
  EXPECT_GT(fused_nodes(false), 1) << "without hoisting the late cast splits the chain";
  EXPECT_EQ(fused_nodes(true), 1);
}

TEST(HoistScalars, LeavesTensorDependentScalarsInPlace) {
  // A reduction result is one element but depends on a tensor computed in the step.
  std::unique_ptr<Graph> g = ParseGraph(R"(graph g {
  input %x : f32[8]
  %y = exp(%x) : f32[8]
  %s = sum(%y) {axes = [0], keepdim = false} : f32[]
  %t = neg(%s) : f32[]
  output %t
})");
  Verify(*g, &OpRegistry::Global());
  PassContext ctx;
  EXPECT_FALSE(CreateHoistScalarsPass()->Run(*g, ctx));
  EXPECT_EQ(Ops(*g), (std::vector<std::string>{"exp", "sum", "neg"}));
}

}  // namespace
}  // namespace tg
