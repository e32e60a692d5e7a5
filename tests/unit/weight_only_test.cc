// Weight-only nodes (lowering/weight_only.h): what counts as computed from weights alone, and
// the runtime's use of it in inference programs: such instructions run once per variables
// version, their results survive in pinned arena buffers between calls (never overwritten by
// a buffer planned before their producer), and writing a variable makes them run again.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "lowering/weight_only.h"
#include "ops/builder.h"
#include "ops/weight_derived.h"
#include "runtime/executable.h"

namespace tg {
namespace {

constexpr int64_t kN = 16;

TEST(WeightOnly, ChainsOfWeightsAndConstantsOnlyAndWhatTheyHandOn) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {kN}});
  Value* w = g.AddVariable("w", {DType::kF32, {kN}});
  Value* w2 = b.Mul(w, w);                         // weight-only
  Value* half = b.Cast(w2, DType::kBF16);          // weight-only, read only by the next
  Value* back = b.Cast(half, DType::kF32);         // weight-only, handed on
  Value* y = b.Add(x, back);                       // reads an input
  Value* z = b.Mul(y, w);                          // reads an input (through y)
  g.AddOutput(z);
  g.AddOutput(w2);                                 // returned: handed on as well
  WeightOnlyNodes found = FindWeightOnlyNodes(g);
  EXPECT_EQ(found.nodes.size(), 3u);
  EXPECT_TRUE(found.nodes.count(w2->producer()));
  EXPECT_TRUE(found.nodes.count(back->producer()));
  EXPECT_FALSE(found.nodes.count(y->producer()));
  EXPECT_FALSE(found.nodes.count(z->producer()));
  EXPECT_EQ(found.handed_on, (std::unordered_set<const Value*>{back, w2}));
  // The kernels' per-value answer (ops/weight_derived.h) is the same rule.
  for (const auto& n : g.nodes()) {
    EXPECT_EQ(found.nodes.count(n.get()) != 0, IsWeightDerived(n->output())) << n->op();
  }

  g.SetUpdate(w, back);  // a program that updates a variable: its weights change every step
  EXPECT_TRUE(FindWeightOnlyNodes(g).nodes.empty());
}

// y = (x * x + x) + w * w. Without in-place reuse, x * x dies before w * w is computed, so an
// unpinned w * w would be planned over it and the next call (which skips w * w) would read
// x * x instead.
std::unique_ptr<Executable> Compile(bool inplace) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {kN}});
  Value* w = g.AddVariable("w", {DType::kF32, {kN}});
  Value* a = b.Add(b.Mul(x, x), x);
  g.AddOutput(b.Add(a, b.Mul(w, w)));
  CompileOptions opts;
  opts.pipeline = PipelineKind::kInference;
  opts.optimize = false;  // the graph as built (no fusion of the chain)
  opts.inplace = inplace;
  opts.profile = true;
  return Executable::Compile(g, opts);
}

std::vector<float> Values(float scale) {
  std::vector<float> v(kN);
  for (int64_t i = 0; i < kN; ++i) v[i] = scale * static_cast<float>(i + 1) / kN;
  return v;
}

// Calls of the weight-only instruction (w * w) and of the others.
std::pair<int64_t, std::vector<int64_t>> Calls(const Executable& exe) {
  int64_t weight = -1;
  std::vector<int64_t> others;
  for (const OpProfile& p : exe.InstructionProfile()) {
    if (p.op.find("mul(%w, %w)") != std::string::npos) {
      weight = p.calls;
    } else {
      others.push_back(p.calls);
    }
  }
  return {weight, others};
}

TEST(WeightOnly, InferenceRunsThemOncePerVariablesVersionAndKeepsTheirResults) {
  for (bool inplace : {false, true}) {
    SCOPED_TRACE(inplace ? "in-place reuse" : "no in-place reuse");
    auto exe = Compile(inplace);
    EXPECT_EQ(exe->memory_stats().kept_weight_only_bytes, kN * sizeof(float));
    std::vector<float> w = Values(3.0f);
    exe->WriteVariable("w", {w.data(), {DType::kF32, {kN}}});
    int64_t calls = 0;
    auto check = [&](float x_scale, int64_t steps) {
      std::vector<float> x;
      for (int64_t s = 0; s < steps; ++s) {
        std::vector<float> step = Values(x_scale + static_cast<float>(s));
        x.insert(x.end(), step.begin(), step.end());
      }
      auto out = exe->Run({{x.data(), {DType::kF32, {steps, kN}}}}, steps, OutputMode::kAll);
      calls += steps;
      for (int64_t i = 0; i < steps * kN; ++i) {
        const float xi = x[i], wi = w[i % kN];
        EXPECT_FLOAT_EQ(out[0].as<float>()[i], xi * xi + xi + wi * wi) << i;
      }
    };
    check(1.0f, 1);
    check(-2.0f, 1);  // w * w is not recomputed: its buffer must still hold it
    check(5.0f, 3);
    auto [weight_calls, others] = Calls(*exe);
    EXPECT_EQ(weight_calls, 1);
    for (int64_t c : others) EXPECT_EQ(c, calls);

    w = Values(-7.0f);  // new weights: the next call recomputes w * w
    exe->WriteVariable("w", {w.data(), {DType::kF32, {kN}}});
    check(0.5f, 2);
    check(0.25f, 1);
    EXPECT_EQ(Calls(*exe).first, 2);
  }
}

TEST(WeightOnly, TrainingProgramsRunEveryInstructionEveryStep) {
  Graph g;
  Builder b(g);
  Value* in = g.AddInput("x", {DType::kF32, {kN}});
  Value* w = g.AddVariable("w", {DType::kF32, {kN}});
  g.AddOutput(b.Add(in, b.Mul(w, w)));
  g.SetUpdate(w, b.AddScalar(w, 1.0));  // w changes every step
  CompileOptions opts;
  opts.optimize = false;
  opts.profile = true;
  auto train = Executable::Compile(g, opts);
  EXPECT_EQ(train->memory_stats().kept_weight_only_bytes, 0u);
  std::vector<float> w0 = Values(1.0f), x = Values(2.0f);
  train->WriteVariable("w", {w0.data(), {DType::kF32, {kN}}});
  for (int call = 0; call < 3; ++call) {
    auto out = train->Run({{x.data(), {DType::kF32, {1, kN}}}}, 1);
    for (int64_t i = 0; i < kN; ++i) {
      const float wi = w0[i] + static_cast<float>(call);
      EXPECT_FLOAT_EQ(out[0].as<float>()[i], x[i] + wi * wi) << i;
    }
  }
  for (const OpProfile& p : train->InstructionProfile()) EXPECT_EQ(p.calls, 3) << p.op;
}

}  // namespace
}  // namespace tg
