// remat-elementwise: SiLU's sigmoid(x), read by the backward far from the forward, is
// recomputed next to its backward readers when x is read there anyway; the graph computes
// the same values; nothing is cloned when x is not read near the far readers, or when the
// far reader is not elementwise.
#include <gtest/gtest.h>

#include <string>

#include "passes/passes.h"
#include "unit/pass_test_util.h"

namespace tg {
namespace {

// x * sigmoid(x) in the forward; `filler` nodes of other work; then the backward's
// dy * s (the far reader of s) and, when `x_near`, a node that reads x next to it.
std::string SiluGraph(int filler, bool x_near, const std::string& far_op = "mul") {
  std::string text = R"(graph g {
  input %x : f32[4, 8]
  input %dy : f32[4, 8]
  input %z : f32[2, 2]
  %s = sigmoid(%x) : f32[4, 8]
  %y = mul(%x, %s) : f32[4, 8]
)";
  std::string prev = "%z";
  for (int i = 0; i < filler; ++i) {
    std::string v = "%f" + std::to_string(i);
    text += "  " + v + " = neg(" + prev + ") : f32[2, 2]\n";
    prev = v;
  }
  if (far_op == "mul") {
    text += "  %t = mul(%dy, %s) : f32[4, 8]\n";
  } else {
    text += "  %t = matmul(%dy, %s) {transpose_a = false, transpose_b = true} : f32[4, 4]\n";
  }
  text += x_near ? "  %u = mul(%dy, %x) : f32[4, 8]\n" : "  %u = mul(%dy, %dy) : f32[4, 8]\n";
  text += "  output %y\n  output %t\n  output %u\n  output " + prev + "\n}";
  return text;
}

bool Remat(Graph& g) {
  PassContext ctx;
  bool changed = CreateRematElementwisePass()->Run(g, ctx);
  Verify(g, &OpRegistry::Global());
  return changed;
}

TEST(RematElementwise, FarSigmoidIsRecomputedNextToItsBackwardReader) {
  const std::string text = SiluGraph(40, true);
  auto g = ParseGraph(text);
  ASSERT_TRUE(Remat(*g));
  EXPECT_EQ(Count(*g, "sigmoid"), 2);
  const Value* s = g->FindValue("s");
  const Value* t = g->FindValue("t");
  ASSERT_NE(t, nullptr);
  EXPECT_NE(t->producer()->input(1), s) << PrintGraph(*g);
  EXPECT_EQ(t->producer()->input(1)->producer()->op(), "sigmoid");
  EXPECT_EQ(t->producer()->input(1)->producer()->input(0), g->FindValue("x"));
  ExpectSameOutputs(text, *g);
}

TEST(RematElementwise, NearReadersAndReadersWithoutXNearbyKeepTheValue) {
  for (const std::string& text : {SiluGraph(4, true), SiluGraph(40, false),
                                  SiluGraph(40, true, "matmul")}) {
    auto g = ParseGraph(text);
    EXPECT_FALSE(Remat(*g)) << text;
    EXPECT_EQ(Count(*g, "sigmoid"), 1);
  }
}

}  // namespace
}  // namespace tg
