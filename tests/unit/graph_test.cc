// Graph construction, renaming and use counting.
#include <gtest/gtest.h>

#include "ir/graph.h"

namespace tg {
namespace {

TEST(Graph, NamesAreUnique) {
  Graph g;
  Value* a = g.AddInput("x", {DType::kF32, {2}});
  Value* b = g.AddInput("x", {DType::kF32, {2}});
  EXPECT_EQ(a->name(), "x");
  EXPECT_EQ(b->name(), "x_1");
  EXPECT_EQ(g.FindValue("x_1"), b);
}

TEST(Graph, ReplaceAllUsesAndCount) {
  Graph g;
  Value* x = g.AddInput("x", {DType::kF32, {2}});
  Value* w = g.AddVariable("w", {DType::kF32, {2}});
  Node* n = g.AddNode("add", {x, w}, {{DType::kF32, {2}}});
  g.AddOutput(n->output());
  g.SetUpdate(w, n->output());
  std::vector<int> uses = g.CountUses();
  EXPECT_EQ(uses[n->output()->id()], 2);
  g.ReplaceAllUsesWith(n->output(), x);
  uses = g.CountUses();
  EXPECT_EQ(uses[n->output()->id()], 0);
  EXPECT_EQ(uses[x->id()], 3);
}

TEST(Graph, CloneKeepsNamesAndStructure) {
  Graph g("m");
  Value* x = g.AddInput("x", {DType::kF32, {2}});
  Node* n = g.AddNode("neg", {x}, {{DType::kF32, {2}}});
  g.RenameValue(n->output(), "y");
  g.AddOutput(n->output());
  auto c = g.Clone();
  ASSERT_EQ(c->nodes().size(), 1u);
  EXPECT_EQ(c->nodes()[0]->output()->name(), "y");
  EXPECT_EQ(c->outputs()[0]->name(), "y");
  EXPECT_EQ(c->nodes()[0]->input(0), c->inputs()[0]);
}

}  // namespace
}  // namespace tg
