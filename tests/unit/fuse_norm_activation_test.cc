// fuse-norm-activation: layer_norm -> activation becomes one layer_norm with the activation
// as its epilogue when nothing else reads the norm's results (inference); the fused graph
// computes what the original did, and a training-shaped graph (mean / rstd read) keeps both.
#include <gtest/gtest.h>

#include "passes/passes.h"
#include "passes/verifier.h"
#include "unit/pass_test_util.h"

namespace tg {
namespace {

std::unique_ptr<Graph> Fuse(const std::string& text, bool expect_change) {
  std::unique_ptr<Graph> g = ParseGraph(text);
  Verify(*g, &OpRegistry::Global());
  PassContext ctx;
  ctx.registry = &OpRegistry::Global();
  EXPECT_EQ(CreateFuseNormActivationPass()->Run(*g, ctx), expect_change);
  CreateDcePass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  return g;
}

TEST(FuseNormActivation, LayerNormThenGeluIsOneNode) {
  const char* text = R"(graph g {
  input %x : f32[6,64]
  input %w : f32[64]
  input %b : f32[64]
  %y, %mean, %rstd = layer_norm(%x, %w, %b) {normalized_ndim = 1, eps = 0.00001} : f32[6,64], f32[6], f32[6]
  %g = gelu(%y) {approximate = "none"} : f32[6,64]
  output %g
})";
  std::unique_ptr<Graph> g = Fuse(text, true);
  EXPECT_EQ(Count(*g, "gelu"), 0);
  const Node* norm = Only(*g, "layer_norm");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(GetString(norm->attrs(), "activation"), "gelu");
  ExpectSameOutputs(text, *g, 1e-6);
}

TEST(FuseNormActivation, TanhGeluAndSiluAreTakenToo) {
  for (const char* act : {R"(gelu(%y) {approximate = "tanh"})", "silu(%y)", "relu(%y)"}) {
    const std::string text = std::string(R"(graph g {
  input %x : f32[3,2,16]
  input %w : f32[2,16]
  input %b : f32[2,16]
  %y, %mean, %rstd = layer_norm(%x, %w, %b) {normalized_ndim = 2, eps = 0.00001} : f32[3,2,16], f32[3], f32[3]
  %a = )") + act + R"( : f32[3,2,16]
  output %a
})";
    std::unique_ptr<Graph> g = Fuse(text, true);
    EXPECT_EQ(g->nodes().size(), 1u) << act;
    ExpectSameOutputs(text, *g, 1e-6);
  }
}

TEST(FuseNormActivation, NormsWhoseResultsAreReadElsewhereStay) {
  // Training: the backward reads y (the activation's gradient) and mean / rstd.
  Fuse(R"(graph g {
  input %x : f32[6,64]
  input %w : f32[64]
  input %b : f32[64]
  %y, %mean, %rstd = layer_norm(%x, %w, %b) {normalized_ndim = 1, eps = 0.00001} : f32[6,64], f32[6], f32[6]
  %g = gelu(%y) {approximate = "none"} : f32[6,64]
  output %g
  output %mean
})", false);
  Fuse(R"(graph g {
  input %x : f32[6,64]
  input %w : f32[64]
  input %b : f32[64]
  %y, %mean, %rstd = layer_norm(%x, %w, %b) {normalized_ndim = 1, eps = 0.00001} : f32[6,64], f32[6], f32[6]
  %g = gelu(%y) {approximate = "none"} : f32[6,64]
  %s = add(%g, %y) : f32[6,64]
  output %s
})", false);
}

}  // namespace
}  // namespace tg
