// Pipelined execution: the 1F1B order, the segments a program splits into and the programs
// that cannot be pipelined, and a pipelined Executable against the same program run
// sequentially (parallel/pipeline_order.h, runtime/pipeline.h).
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "autodiff/optimizer.h"
#include "ir/printer.h"
#include "ops/builder.h"
#include "parallel/pipeline_order.h"
#include "runtime/executable.h"
#include "support/error.h"

namespace tg {
namespace {

std::string Order(const std::vector<SegmentRun>& runs) {
  std::string s;
  for (const SegmentRun& r : runs) s += (r.backward ? "B" : "F") + std::to_string(r.micro) + " ";
  return s;
}

TEST(Pipeline, OneForwardOneBackwardOrder) {
  // 4 stages, 6 micro-batches: device d warms up with 3 - d forwards.
  EXPECT_EQ(Order(OneForwardOneBackward(0, 4, 6, true)), "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5 ");
  EXPECT_EQ(Order(OneForwardOneBackward(2, 4, 6, true)), "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 B5 ");
  EXPECT_EQ(Order(OneForwardOneBackward(3, 4, 6, true)), "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 ");
  EXPECT_EQ(Order(OneForwardOneBackward(0, 4, 2, true)), "F0 F1 B0 B1 ");  // fewer than S
  EXPECT_EQ(Order(OneForwardOneBackward(1, 3, 3, false)), "F0 F1 F2 ");   // inference
}

// Two layers on two devices, SGD with 3-step accumulation (momentum when asked).
std::unique_ptr<Graph> TwoStages(bool momentum, int accumulation = 3) {
  auto g = std::make_unique<Graph>("two");
  Builder b(*g);
  Value* x = g->AddInput("x", {DType::kF32, {4, 8}});
  Value* w0 = g->AddVariable("w0", {DType::kF32, {8, 8}});
  Value* w1 = g->AddVariable("w1", {DType::kF32, {8, 8}});
  Value* h = b.Op1("tanh", {b.Op1("matmul", {x, w0})});
  b.set_placement(1);
  Value* y = b.Op1("matmul", {h, w1});
  Value* loss = b.Op1("mean", {b.Mul(y, y)});
  g->AddOutput(loss);
  ParamGroup pg;
  pg.params = {w0, w1};
  pg.hyper.lr = 0.05;
  pg.hyper.momentum = momentum ? 0.9 : 0.0;
  OptimizerConfig config;
  config.use_momentum = momentum;
  config.accumulation_steps = accumulation;
  AddTrainingStep(b, loss, {pg}, config);
  return g;
}

TEST(Pipeline, SegmentsFollowTheDevicesForwardThenBack) {
  auto g = TwoStages(true);
  PipelineSegments s = FindPipelineSegments(*g, 2);
  ASSERT_TRUE(s.why_not.empty()) << s.why_not;
  std::vector<int> seen(4, 0);
  for (const auto& n : g->nodes()) {
    int k = s.segment.at(n.get());
    ++seen[k];
    // Forward segments are the device's own; backward ones run in reverse device order.
    EXPECT_EQ(k < 2 ? k : 3 - k, n->placement()) << n->Describe();
  }
  for (int k = 0; k < 4; ++k) EXPECT_GT(seen[k], 0) << "segment " << k;
  // Each device counts its own micro-batches; parameter updates are marked.
  EXPECT_NE(g->FindValue("optimizer.micro_step.device1"), nullptr);
  int marked = 0;
  for (const VariableUpdate& u : g->updates()) marked += u.on_optimizer_step;
  EXPECT_EQ(marked, 7);  // w0, w1, their momentum buffers and step counts, optimizer.step
}

TEST(Pipeline, RefusesAVariableUpdatedPerMicroBatchAndReadElsewhere) {
  // A counter updated on device 1 but read on device 0: a micro-batch in flight on device 0
  // would see another micro-batch's count.
  auto g = std::make_unique<Graph>("counter");
  Builder b(*g);
  Value* x = g->AddInput("x", {DType::kF32, {4}});
  Value* c = g->AddVariable("count", {DType::kF32, {}}, false);
  Value* h = b.Add(x, c);
  b.set_placement(1);
  Value* y = b.Op1("tanh", {h});
  g->AddOutput(y);
  g->SetUpdate(c, b.AddScalar(c, 1.0));
  PipelineSegments s = OrderForPipeline(*g, 2);
  EXPECT_NE(s.why_not.find("variable %count"), std::string::npos) << s.why_not;
  CompileOptions o;
  o.pipeline = PipelineKind::kInference;
  o.pipeline_micro_batches = 1;
  auto exe = Executable::Compile(*g, o);
  EXPECT_FALSE(exe->pipelined());
  EXPECT_NE(exe->pipeline_fallback_reason().find("count"), std::string::npos);
}

TEST(Pipeline, OptimizerStepMarkSurvivesTheIrText) {
  auto g = TwoStages(false);
  std::string text = PrintGraph(*g);
  EXPECT_NE(text.find(" on_optimizer_step\n"), std::string::npos);
  auto parsed = ParseGraph(text);
  EXPECT_EQ(PrintGraph(*parsed), text);
}

// Normal(0, scale) values.
HostTensor Random(const Shape& shape, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  HostTensor t({DType::kF32, shape});
  for (int64_t i = 0; i < t.type().numel(); ++i) t.as<float>()[i] = normal(rng);
  return t;
}

// Every element of every result of every run equals run 0's (fp32 rounding).
void ExpectSameResults(const std::vector<std::vector<HostTensor>>& results) {
  for (size_t run = 1; run < results.size(); ++run) {
    for (size_t k = 0; k < results[0].size(); ++k) {
      for (int64_t i = 0; i < results[0][k].type().numel(); ++i) {
        EXPECT_NEAR(results[0][k].GetAsDouble(i), results[run][k].GetAsDouble(i),
                    1e-6 * (1 + std::abs(results[0][k].GetAsDouble(i))))
            << "run " << run << " result " << k << " element " << i;
      }
    }
  }
}

TEST(Pipeline, PipelinedRunEqualsSequentialRun) {
  const int steps = 6;  // two optimizer steps of 3 micro-batches
  HostTensor x = Random({steps, 4, 8}, 3);
  HostTensor w = Random({8, 8}, 4, 0.3f);
  std::vector<std::vector<HostTensor>> results;
  for (int micro : {0, 3}) {
    CompileOptions o;
    o.pipeline_micro_batches = micro;
    auto exe = Executable::Compile(*TwoStages(true), o);
    ASSERT_EQ(exe->pipelined(), micro > 0) << exe->pipeline_fallback_reason();
    exe->SetHyperParam("group0.lr", 0.05);
    exe->SetHyperParam("group0.momentum", 0.9);
    exe->WriteVariable("w0", {w.data(), w.type()});
    exe->WriteVariable("w1", {w.data(), w.type()});
    std::vector<HostTensor> r = exe->Run({{x.data(), x.type()}}, steps, OutputMode::kAll);
    r.push_back(exe->ReadVariable("w0"));
    r.push_back(exe->ReadVariable("w1"));
    if (micro > 0) {
      PipelineStats stats = exe->pipeline_stats();
      EXPECT_EQ(stats.waves, 2);
      ASSERT_EQ(stats.busy_seconds.size(), 2u);
      // A call that is not whole optimizer steps is refused before anything runs.
      EXPECT_THROW(exe->Run({{x.data(), TensorType{DType::kF32, {4, 4, 8}}}}, 4), Error);
    }
    results.push_back(std::move(r));
  }
  ExpectSameResults(results);
}

TEST(Pipeline, OptimizerStepWorkRunsOnTheLastMicroBatchOnly) {
  const int steps = 6;  // two optimizer steps of 3 micro-batches
  HostTensor x = Random({steps, 4, 8}, 5);
  std::vector<std::vector<HostTensor>> results;
  for (int micro : {0, 3}) {  // pipelined
    for (int skip : {0, 3}) {  // accumulation_steps known: the step-only work is skipped
      CompileOptions o;
      o.pipeline_micro_batches = micro;
      o.accumulation_steps = skip;
      o.profile = true;
      auto exe = Executable::Compile(*TwoStages(true), o);
      exe->SetHyperParam("group0.lr", 0.05);
      exe->SetHyperParam("group0.momentum", 0.9);
      std::vector<HostTensor> r = exe->Run({{x.data(), x.type()}}, steps, OutputMode::kAll);
      r.push_back(exe->ReadVariable("w0"));
      r.push_back(exe->ReadVariable("w1"));
      results.push_back(std::move(r));
      int every = 0, step_only = 0;
      for (const OpProfile& p : exe->InstructionProfile()) {
        every += p.calls == steps;
        step_only += p.calls == steps / 3;
      }
      EXPECT_GT(every, 0);
      if (skip) {
        EXPECT_GT(step_only, 4) << "the optimizer arithmetic runs once per optimizer step";
      } else {
        EXPECT_EQ(step_only, 0);
      }
    }
  }
  ExpectSameResults(results);
}

}  // namespace
}  // namespace tg
