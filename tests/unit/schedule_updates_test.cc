// schedule-updates: a node that only produces variable updates moves to just after its
// inputs and the variable's other readers, so its gradient dies early; nothing moves past a
// reader of the variable (the update stays writable in place), and a second run is a no-op.
#include <gtest/gtest.h>

#include "ir/printer.h"
#include "lowering/program.h"
#include "passes/passes.h"
#include "passes/verifier.h"

namespace tg {
namespace {

// Two layers' backward: the gradient of w1 is ready before w2's backward runs, but the
// optimizer appended both updates at the end, keeping %g1 alive across the second backward.
constexpr const char* kTwoLayers = R"(graph g {
  input %x : f32[8, 16]
  input %dy : f32[8, 16]
  hyperparam %lr : f32[]
  variable %w1 : f32[16, 16]
  variable %w2 : f32[16, 16]
  %g1 = matmul(%x, %dy) {transpose_a = true, transpose_b = false} : f32[16, 16]
  %dx = matmul(%dy, %w1) {transpose_a = false, transpose_b = true} : f32[8, 16]
  %g2 = matmul(%dx, %dy) {transpose_a = true, transpose_b = false} : f32[16, 16]
  %s1 = mul(%g1, %lr) : f32[16, 16]
  %n1 = sub(%w1, %s1) : f32[16, 16]
  %s2 = mul(%g2, %lr) : f32[16, 16]
  %n2 = sub(%w2, %s2) : f32[16, 16]
  update %w1 = %n1
  update %w2 = %n2
  output %dx
})";

std::vector<std::string> Names(const Graph& g) {
  std::vector<std::string> names;
  for (const auto& n : g.nodes()) names.push_back(n->output()->name());
  return names;
}

TEST(ScheduleUpdates, MovesEachUpdateAfterItsLastDependency) {
  std::unique_ptr<Graph> g = ParseGraph(kTwoLayers);
  Verify(*g, &OpRegistry::Global());
  PassContext ctx;
  EXPECT_TRUE(CreateScheduleUpdatesPass()->Run(*g, ctx));
  Verify(*g, &OpRegistry::Global());
  // n1 waits for %dx (the other reader of w1), not for the second layer's gradient, and its
  // chain (s1) waits with it; the gradients (matmuls) keep their places.
  EXPECT_EQ(Names(*g), (std::vector<std::string>{"g1", "dx", "s1", "n1", "g2", "s2", "n2"}));
  EXPECT_FALSE(CreateScheduleUpdatesPass()->Run(*g, ctx)) << "a second run changes nothing";
}

TEST(ScheduleUpdates, NeverMovesAnUpdateBeforeAReaderOfItsVariable) {
  std::unique_ptr<Graph> g = ParseGraph(kTwoLayers);
  PassContext ctx;
  CreateScheduleUpdatesPass()->Run(*g, ctx);
  size_t n1 = 0, dx = 0;
  for (size_t i = 0; i < g->nodes().size(); ++i) {
    if (g->nodes()[i]->output()->name() == "n1") n1 = i;
    if (g->nodes()[i]->output()->name() == "dx") dx = i;
  }
  EXPECT_GT(n1, dx);
  // The update is still written into the variable (no copy at the end of the step).
  Program p = Lower(std::move(g));
  EXPECT_EQ(p.stats.inplace_variable_updates, 2);
}

TEST(ScheduleUpdates, NodesWithOtherReadersStay) {
  auto g = ParseGraph(R"(graph g {
  input %x : f32[4]
  variable %w : f32[4]
  %a = mul(%x, %x) : f32[4]
  %b = add(%a, %x) : f32[4]
  %n = sub(%w, %x) : f32[4]
  update %w = %n
  output %n
})");
  PassContext ctx;
  EXPECT_FALSE(CreateScheduleUpdatesPass()->Run(*g, ctx)) << "%n is also an output";
}

TEST(ScheduleUpdates, AnAccumulatorsResetMovesWithItsZeros) {
  // Gradient accumulation: acc' = acc + g, reset to zeros on the optimizer step. The zeros
  // (`full`) were appended at the end; the reset waits with them no longer, so the new
  // accumulator value does not stay alive across the rest of the backward.
  auto g = ParseGraph(R"(graph g {
  input %x : f32[8, 16]
  input %dy : f32[8, 16]
  input %apply : bool[]
  variable %w1 : f32[16, 16]
  variable %acc : f32[16, 16]
  %g1 = matmul(%x, %dy) {transpose_a = true, transpose_b = false} : f32[16, 16]
  %sum = add(%acc, %g1) : f32[16, 16]
  %dx = matmul(%dy, %w1) {transpose_a = false, transpose_b = true} : f32[8, 16]
  %later = matmul(%dx, %dy) {transpose_a = true, transpose_b = false} : f32[16, 16]
  %zeros = full() {dtype = f32, shape = [16, 16], value = 0.0} : f32[16, 16]
  %reset = where(%apply, %zeros, %sum) : f32[16, 16]
  update %acc = %reset
  output %later
})");
  Verify(*g, &OpRegistry::Global());
  PassContext ctx;
  EXPECT_TRUE(CreateScheduleUpdatesPass()->Run(*g, ctx));
  Verify(*g, &OpRegistry::Global());
  EXPECT_EQ(Names(*g),
            (std::vector<std::string>{"g1", "sum", "zeros", "reset", "dx", "later"}));
}

TEST(ScheduleUpdates, AnUpdateValueReadByAnotherUpdateMovesWithIt) {
  // SGD with momentum: the new buffer %b1 is the momentum's update and is read by the weight's
  // update, and the weight's new value by the cast that updates its half shadow
  // (passes/half_weight_shadows.cc). All of layer 1's update moves up before layer 2's
  // gradient, the cast after the shadow's reader (%dx).
  auto g = ParseGraph(R"(graph g {
  input %x : f32[8, 16]
  input %dy : f32[8, 16]
  hyperparam %lr : f32[]
  variable %w1 : f32[16, 16]
  variable %m1 : f32[16, 16]
  variable(frozen) %h1 : bf16[16, 16]
  variable %w2 : f32[16, 16]
  %g1 = matmul(%x, %dy) {transpose_a = true, transpose_b = false} : f32[16, 16]
  %dyh = cast(%dy) {dtype = bf16} : bf16[8, 16]
  %dx = matmul(%dyh, %h1) {transpose_a = false, transpose_b = true} : bf16[8, 16]
  %dxf = cast(%dx) {dtype = f32} : f32[8, 16]
  %g2 = matmul(%dxf, %dy) {transpose_a = true, transpose_b = false} : f32[16, 16]
  %b1 = add(%m1, %g1) : f32[16, 16]
  %s1 = mul(%b1, %lr) : f32[16, 16]
  %n1 = sub(%w1, %s1) : f32[16, 16]
  %c1 = cast(%n1) {dtype = bf16} : bf16[16, 16]
  %s2 = mul(%g2, %lr) : f32[16, 16]
  %n2 = sub(%w2, %s2) : f32[16, 16]
  update %m1 = %b1
  update %w1 = %n1
  update %h1 = %c1
  update %w2 = %n2
  shadow %h1 = %w1
  output %dxf
})");
  Verify(*g, &OpRegistry::Global());
  PassContext ctx;
  EXPECT_TRUE(CreateScheduleUpdatesPass()->Run(*g, ctx));
  Verify(*g, &OpRegistry::Global());
  EXPECT_EQ(Names(*g), (std::vector<std::string>{"g1", "dyh", "dx", "b1", "s1", "n1", "c1", "dxf",
                                                 "g2", "s2", "n2"}));
}

TEST(ScheduleUpdates, ScalarArithmeticStaysPut) {
  // -lr (hoisted to the top, as hoist-scalars leaves it) serves both updates; it stays there:
  // moved into w1's chain, it split that chain's fused kernel in two.
  std::unique_ptr<Graph> g = ParseGraph(R"(graph g {
  input %x : f32[8, 16]
  input %dy : f32[8, 16]
  hyperparam %lr : f32[]
  variable %w1 : f32[16, 16]
  variable %w2 : f32[16, 16]
  %nlr = neg(%lr) : f32[]
  %g1 = matmul(%x, %dy) {transpose_a = true, transpose_b = false} : f32[16, 16]
  %dx = matmul(%dy, %w1) {transpose_a = false, transpose_b = true} : f32[8, 16]
  %g2 = matmul(%dx, %dy) {transpose_a = true, transpose_b = false} : f32[16, 16]
  %s1 = mul(%g1, %nlr) : f32[16, 16]
  %n1 = add(%w1, %s1) : f32[16, 16]
  %s2 = mul(%g2, %nlr) : f32[16, 16]
  %n2 = add(%w2, %s2) : f32[16, 16]
  update %w1 = %n1
  update %w2 = %n2
  output %dx
})");
  PassContext ctx;
  EXPECT_TRUE(CreateScheduleUpdatesPass()->Run(*g, ctx));
  EXPECT_EQ(Names(*g),
            (std::vector<std::string>{"nlr", "g1", "dx", "s1", "n1", "g2", "s2", "n2"}));
}

}  // namespace
}  // namespace tg
