// Replicated programs in one process (issue 11): collectives across replicas, the gradient
// all-reduce of data parallelism, and failures that stop every replica instead of hanging.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "autodiff/optimizer.h"
#include "ops/builder.h"
#include "parallel/gradient_all_reduce.h"
#include "runtime/executable.h"
#include "support/error.h"

namespace tg {
namespace {

HostTensor Iota(TensorType t, float scale, float offset) {
  HostTensor h(t);
  for (int64_t i = 0; i < t.numel(); ++i) h.as<float>()[i] = scale * static_cast<float>(i) + offset;
  return h;
}

// Each replica r feeds x_r = [r*10 + 0, r*10 + 1, ..., r*10 + 5] (shape [6]).
TEST(Replication, CollectivesCombineTheReplicas) {
  const int R = 3;
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {6}});
  AttrMap sum = {{"group_size", int64_t{R}}, {"reduction", std::string("sum")}};
  AttrMap mean = {{"group_size", int64_t{R}}, {"reduction", std::string("mean")}};
  g.AddOutput(b.Op1("all_reduce", {x}, sum));
  g.AddOutput(b.Op1("all_reduce", {x}, mean));
  g.AddOutput(b.Op1("reduce_scatter", {x}, sum));
  g.AddOutput(b.Op1("all_gather", {x}, {{"group_size", int64_t{R}}}));
  g.AddOutput(b.Op1("broadcast", {x}, {{"group_size", int64_t{R}}, {"root", int64_t{2}}}));
  CompileOptions options;
  options.pipeline = PipelineKind::kInference;
  options.replicas = R;
  auto exe = Executable::Compile(g, options);
  HostTensor feed({DType::kF32, {1, R, 6}});
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < 6; ++i) feed.as<float>()[r * 6 + i] = static_cast<float>(r * 10 + i);
  }
  auto out = exe->Run({{feed.data(), feed.type()}}, 1, OutputMode::kFinal);
  ASSERT_EQ(out[0].type().shape, (Shape{R, 6}));
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < 6; ++i) {
      float total = 30.0f + 3.0f * i;  // 0 + 10 + 20 + 3i
      EXPECT_FLOAT_EQ(out[0].as<float>()[r * 6 + i], total);
      EXPECT_FLOAT_EQ(out[1].as<float>()[r * 6 + i], total / R);
      EXPECT_FLOAT_EQ(out[4].as<float>()[r * 6 + i], 20.0f + i);  // replica 2's x
    }
    ASSERT_EQ(out[2].type().shape, (Shape{R, 2}));
    for (int i = 0; i < 2; ++i) {  // replica r keeps rows [2r, 2r + 2) of the sum
      EXPECT_FLOAT_EQ(out[2].as<float>()[r * 2 + i], 30.0f + 3.0f * (2 * r + i));
    }
    ASSERT_EQ(out[3].type().shape, (Shape{R, 18}));
    for (int k = 0; k < 18; ++k) {
      EXPECT_FLOAT_EQ(out[3].as<float>()[r * 18 + k], static_cast<float>((k / 6) * 10 + k % 6));
    }
  }
}

// A linear + softmax classifier, mean loss over its micro-batch, trained with SGD momentum;
// with `group` > 1 its gradients are all-reduced (mean) across replicas.
std::unique_ptr<Graph> Classifier(int64_t batch, int64_t group, int accumulation = 1,
                                  OptimizerKind kind = OptimizerKind::kSGD, bool shard = false) {
  auto g = std::make_unique<Graph>("classifier");
  Builder b(*g);
  Value* x = g->AddInput("x", {DType::kF32, {batch, 5}});
  Value* y = g->AddInput("y", {DType::kI64, {batch}});
  Value* w = g->AddVariable("w", {DType::kF32, {5, 4}});
  Value* bias = g->AddVariable("b", {DType::kF32, {4}});
  Value* logits = b.Add(b.Op1("matmul", {x, w}), bias);
  Value* loss = b.Op1("nll_loss", {b.Op1("log_softmax", {logits}), y});
  g->AddOutput(loss);
  ParamGroup pg;
  pg.params = {w, bias};
  pg.hyper.lr = 0.2;
  pg.hyper.momentum = 0.9;
  OptimizerConfig config;
  config.kind = kind;
  config.use_momentum = kind == OptimizerKind::kSGD;
  config.accumulation_steps = accumulation;
  if (shard) config.shard_state_group = group;
  GradientReduction reduction;
  reduction.group_size = group;
  config.reduce_gradients = GradientAllReduce(reduction);
  AddTrainingStep(b, loss, {pg}, config);
  return g;
}

struct Data {
  HostTensor x, y;
};

// `steps` micro-batches of `batch` samples.
Data MakeData(int64_t steps, int64_t batch) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Data d{HostTensor({DType::kF32, {steps, batch, 5}}), HostTensor({DType::kI64, {steps, batch}})};
  for (int64_t i = 0; i < d.x.type().numel(); ++i) d.x.as<float>()[i] = normal(rng);
  for (int64_t i = 0; i < d.y.type().numel(); ++i) d.y.as<int64_t>()[i] = rng() % 4;
  return d;
}

std::unique_ptr<Executable> Start(const Graph& g, int replicas) {
  CompileOptions options;
  options.replicas = replicas;
  auto exe = Executable::Compile(g, options);
  for (const std::string& name : exe->HyperParamNames()) {
    if (name == "group0.lr") exe->SetHyperParam(name, 0.2);
    if (name == "group0.momentum") exe->SetHyperParam(name, 0.9);
    if (name == "group0.beta1") exe->SetHyperParam(name, 0.9);
    if (name == "group0.beta2") exe->SetHyperParam(name, 0.999);
    if (name == "group0.eps") exe->SetHyperParam(name, 1e-8);
  }
  HostTensor w = Iota({DType::kF32, {5, 4}}, 0.01f, -0.1f), bias({DType::kF32, {4}});
  exe->WriteVariable("w", {w.data(), w.type()});
  exe->WriteVariable("b", {bias.data(), bias.type()});
  return exe;
}

void ExpectClose(const HostTensor& a, const HostTensor& b, double tol) {
  ASSERT_EQ(a.type(), b.type());
  for (int64_t i = 0; i < a.type().numel(); ++i) {
    EXPECT_NEAR(a.GetAsDouble(i), b.GetAsDouble(i), tol * (1 + std::abs(b.GetAsDouble(i))))
        << "element " << i;
  }
}

// R replicas of micro-batch b give the weights of one replica of batch R*b (the loss is a
// mean, the gradients are averaged): the defining property of data parallelism.
TEST(Replication, ReplicasOfMicroBatchEqualOneReplicaOfTheCombinedBatch) {
  const int64_t b = 3, steps = 10;
  for (int R : {2, 4}) {
    for (int accumulation : {1, 2}) {
      SCOPED_TRACE("R=" + std::to_string(R) + " accumulation=" + std::to_string(accumulation));
      Data big = MakeData(steps, R * b);  // step s: rows [s, r*b .. r*b+b) go to replica r
      auto single = Start(*Classifier(R * b, 1, accumulation), 1);
      auto replicated = Start(*Classifier(b, R, accumulation), R);
      auto s_out = single->Run({{big.x.data(), big.x.type()}, {big.y.data(), big.y.type()}},
                               steps, OutputMode::kAll);
      // The same memory viewed as [steps, R, b, ...]: replica r gets the r-th block.
      TensorView xr{big.x.data(), {DType::kF32, {steps, R, b, 5}}};
      TensorView yr{big.y.data(), {DType::kI64, {steps, R, b}}};
      auto r_out = replicated->Run({xr, yr}, steps, OutputMode::kAll);
      ASSERT_EQ(r_out[0].type().shape, (Shape{steps, R}));
      for (int64_t s = 0; s < steps; ++s) {  // mean of the replicas' losses = the big loss
        double mean = 0;
        for (int r = 0; r < R; ++r) mean += r_out[0].as<float>()[s * R + r] / R;
        EXPECT_NEAR(mean, s_out[0].as<float>()[s], 1e-5) << "step " << s;
      }
      ExpectClose(replicated->ReadVariable("w"), single->ReadVariable("w"), 1e-5);
      ExpectClose(replicated->ReadVariable("b"), single->ReadVariable("b"), 1e-5);
    }
  }
}

// Replicated tensor sharding of the optimizer state: each of R replicas keeps 1/R of Adam's
// moments (w has 20 elements: shards of 5 for R = 4, of 7 with padding for R = 3), with the
// weights of the unsharded run.
TEST(Replication, ShardedOptimizerStateGivesTheWeightsOfUnsharded) {
  const int64_t b = 2, steps = 6;
  for (int R : {3, 4}) {
    for (OptimizerKind kind : {OptimizerKind::kAdam, OptimizerKind::kSGD}) {
      SCOPED_TRACE("R=" + std::to_string(R));
      Data d = MakeData(steps, R * b);
      TensorView xr{d.x.data(), {DType::kF32, {steps, R, b, 5}}};
      TensorView yr{d.y.data(), {DType::kI64, {steps, R, b}}};
      auto plain = Start(*Classifier(b, R, 1, kind, false), R);
      auto sharded = Start(*Classifier(b, R, 1, kind, true), R);
      plain->Run({xr, yr}, steps, OutputMode::kFinal);
      sharded->Run({xr, yr}, steps, OutputMode::kFinal);
      ExpectClose(sharded->ReadVariable("w"), plain->ReadVariable("w"), 1e-5);
      ExpectClose(sharded->ReadVariable("b"), plain->ReadVariable("b"), 1e-5);
      std::string state = kind == OptimizerKind::kAdam ? "w.exp_avg" : "w.momentum_buffer";
      EXPECT_EQ(plain->VariableType(state).numel(), 20);
      EXPECT_EQ(sharded->VariableType(state).numel(), (20 + R - 1) / R);
      EXPECT_LT(sharded->memory_stats().variable_bytes, plain->memory_stats().variable_bytes);
    }
  }
}

TEST(Replication, AFailingReplicaStopsTheOthersWithItsError) {
  const int R = 2;
  const int64_t b = 3, steps = 4;
  auto exe = Start(*Classifier(b, R), R);
  Data d = MakeData(steps, R * b);
  d.y.as<int64_t>()[(2 * R + 1) * b + 1] = 9;  // step 2, replica 1: a label out of range
  TensorView xr{d.x.data(), {DType::kF32, {steps, R, b, 5}}};
  TensorView yr{d.y.data(), {DType::kI64, {steps, R, b}}};
  HostTensor w_before = exe->ReadVariable("w");
  try {
    exe->Run({xr, yr}, steps, OutputMode::kFinal);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("out of range"), std::string::npos) << what;
    EXPECT_NE(what.find("in replica 1"), std::string::npos) << what;
  }
  EXPECT_EQ(exe->steps_completed_in_last_run(), 2);
  d.y.as<int64_t>()[(2 * R + 1) * b + 1] = 1;
  exe->Run({xr, yr}, steps, OutputMode::kFinal);  // still usable
}

}  // namespace
}  // namespace tg

namespace tg {
namespace {

// The gradient exchange overlaps the backward pass: each bucket starts right after its last
// gradient is produced (the last layer's gradients come first) and is waited for only after
// the whole backward pass, just before the updates.
TEST(Replication, GradientBucketsStartEarlyAndFinishAfterTheBackwardPass) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {4, 8}});
  Value* w1 = g.AddVariable("w1", {DType::kF32, {8, 8}});
  Value* w2 = g.AddVariable("w2", {DType::kF32, {8, 8}});
  Value* loss = b.Op1("mean", {b.Op1("matmul", {b.Op1("relu", {b.Op1("matmul", {x, w1})}), w2})});
  g.AddOutput(loss);
  ParamGroup pg;
  pg.params = {w1, w2};
  OptimizerConfig config;
  GradientReduction reduction;
  reduction.group_size = 2;
  reduction.bucket_bytes = 8 * 8 * 4;  // one gradient per bucket
  config.reduce_gradients = GradientAllReduce(reduction);
  AddTrainingStep(b, loss, {pg}, config);
  std::vector<std::string> ops;
  size_t first_start = SIZE_MAX, last_done = 0;
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    const Node& n = *g.nodes()[i];
    if (n.op() == "all_reduce_start" && first_start == SIZE_MAX) first_start = i;
    if (n.op() == "all_reduce_done") last_done = i;
    ops.push_back(n.op());
  }
  int starts = static_cast<int>(std::count(ops.begin(), ops.end(), "all_reduce_start"));
  EXPECT_EQ(starts, 2);
  // w2's bucket starts before w1's gradient (the rest of the backward pass) is computed.
  size_t w1_grad_matmul = 0;
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    if (g.nodes()[i]->op() == "matmul" && i < last_done) w1_grad_matmul = i;
  }
  EXPECT_LT(first_start, w1_grad_matmul);
  EXPECT_GT(last_done, w1_grad_matmul);
}

}  // namespace
}  // namespace tg
