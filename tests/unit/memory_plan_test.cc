// Memory planning: the planner never overlaps live buffers (a property test over random
// interval sets and over random graphs lowered end to end), reuse beats the naive sum, and
// in-place reuse happens where it is legal.
#include <gtest/gtest.h>

#include <random>

#include "lowering/check_memory.h"
#include "lowering/memory_plan.h"
#include "lowering/program.h"
#include "ops/builder.h"
#include "runtime/executable.h"

namespace tg {
namespace {

TEST(MemoryPlan, RandomIntervalsNeverOverlap) {
  std::mt19937 rng(1);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<BufferRequest> reqs;
    int n = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      int64_t first = rng() % 50;
      reqs.push_back({1 + rng() % 5000, first, first + static_cast<int64_t>(rng() % 10)});
    }
    MemoryPlan plan = PlanMemory(reqs);
    EXPECT_EQ(CheckMemoryPlan(reqs, plan), "") << "trial " << trial;
    EXPECT_LE(plan.arena_bytes, plan.naive_bytes);
  }
}

TEST(MemoryPlan, DisjointLifetimesShareMemory) {
  std::vector<BufferRequest> reqs = {{1024, 0, 1}, {1024, 2, 3}, {1024, 4, 5}};
  MemoryPlan plan = PlanMemory(reqs);
  EXPECT_EQ(plan.arena_bytes, 1024u);
  EXPECT_EQ(plan.naive_bytes, 3072u);
}

// A random DAG of elementwise, matmul, reduction and reshape nodes over a few shapes.
std::unique_ptr<Graph> RandomGraph(std::mt19937& rng) {
  auto g = std::make_unique<Graph>();
  Builder b(*g);
  std::vector<Value*> pool = {g->AddInput("x", {DType::kF32, {8, 8}}),
                              g->AddVariable("w", {DType::kF32, {8, 8}})};
  int n = 5 + static_cast<int>(rng() % 25);
  for (int i = 0; i < n; ++i) {
    Value* a = pool[rng() % pool.size()];
    Value* c = pool[rng() % pool.size()];
    Value* v = nullptr;
    switch (rng() % 6) {
      case 0: v = b.Add(a, c); break;
      case 1: v = b.Mul(a, c); break;
      case 2: v = b.Exp(b.MulScalar(a, 0.01)); break;
      case 3: v = b.MatMul(a, c); break;
      case 4: v = b.Reshape(b.Reshape(a, {64}), {8, 8}); break;
      case 5: v = b.Expand(b.Sum(a, {0}, true), {8, 8}); break;
    }
    pool.push_back(v);
  }
  for (int k = 0; k < 3; ++k) g->AddOutput(pool[rng() % pool.size()]);
  g->SetUpdate(g->FindValue("w"), pool.back());
  return g;
}

TEST(MemoryPlan, RandomGraphsHaveSoundPlans) {
  std::mt19937 rng(7);
  int inplace = 0;
  for (int trial = 0; trial < 100; ++trial) {
    Program p = Lower(RandomGraph(rng));
    EXPECT_EQ(CheckProgramMemory(p), "") << "trial " << trial;
    EXPECT_LE(p.stats.arena_bytes, p.stats.naive_bytes);
    inplace += p.stats.inplace_reuses;
  }
  EXPECT_GT(inplace, 0) << "in-place reuse never happened on 100 random graphs";
}

TEST(MemoryPlan, ElementwiseChainRunsInPlace) {
  auto g = std::make_unique<Graph>();
  Builder b(*g);
  Value* x = g->AddInput("x", {DType::kF32, {1024}});
  Value* v = b.Exp(x);  // inputs are not arena buffers: a fresh buffer
  for (int i = 0; i < 5; ++i) v = b.Op1("neg", {v});
  g->AddOutput(v);
  Program p = Lower(std::move(g));
  EXPECT_EQ(p.stats.inplace_reuses, 5);
  EXPECT_EQ(p.stats.arena_bytes, 4096u);
  EXPECT_EQ(CheckProgramMemory(p), "");
}

TEST(MemoryPlan, VariableUpdateWrittenInPlace) {
  auto g = std::make_unique<Graph>();
  Builder b(*g);
  Value* w = g->AddVariable("w", {DType::kF32, {16}});
  g->SetUpdate(w, b.Mul(w, b.Scalar(0.5)));
  Program p = Lower(std::move(g));
  EXPECT_EQ(p.stats.inplace_variable_updates, 1);
  EXPECT_TRUE(p.update_copies.empty());
}

TEST(MemoryPlan, ScatterAddWritesIntoItsDeadBase) {
  // A cross entropy's gradient: zeros with -1 scattered at each row's label. The scatter
  // writes into the zeros' buffer (no copy of the base) and computes the same values. (A
  // training step: a program that updates no variable keeps the zeros between calls, a
  // weight-only result, and the scatter then writes a buffer of its own.)
  auto g = std::make_unique<Graph>();
  Value* steps = g->AddVariable("steps", {DType::kF32, {}}, /*trainable=*/false);
  Builder b(*g);
  Value* index = g->AddInput("index", {DType::kI64, {4, 1}});
  Value* src = g->AddInput("src", {DType::kF32, {4, 1}});
  Value* zeros = b.Op1("full", {}, {{"shape", Shape{4, 1000}}, {"value", 0.0}});
  Value* grad = b.Op1("scatter_add", {zeros, index, src}, {{"axis", int64_t{1}}});
  g->AddOutput(b.Op1("neg", {grad}));
  g->SetUpdate(steps, b.Add(steps, b.Scalar(1.0)));
  std::unique_ptr<Graph> copy = g->Clone();
  Program p = Lower(std::move(g));
  EXPECT_EQ(p.stats.inplace_reuses, 2);  // the scatter into the zeros, the neg into that
  EXPECT_EQ(p.stats.arena_bytes, 4u * 1000 * 4);
  EXPECT_EQ(CheckProgramMemory(p), "");
  auto exe = Executable::Compile(*copy, {});
  const int64_t labels[] = {3, 999, 0, 3};
  const float values[] = {-1.0f, -2.0f, -3.0f, -4.0f};
  HostTensor out = exe->Run({{labels, {DType::kI64, {1, 4, 1}}}, {values, {DType::kF32, {1, 4, 1}}}},
                            1, OutputMode::kAll)[0];
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t c = 0; c < 1000; ++c) {
      const float want = c == labels[r] ? -values[r] : 0.0f;
      ASSERT_EQ(out.GetAsDouble(r * 1000 + c), -0.0 + want) << r << ", " << c;
    }
  }
}

}  // namespace
}  // namespace tg
