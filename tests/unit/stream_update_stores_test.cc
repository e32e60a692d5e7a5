// stream-update-stores (passes/stream_update_stores.cc): in a mixed-precision training step
// whose variables outgrow the caches, the fused update writes each weight's bf16 shadow with
// streaming stores and its in-place outputs (weight, momentum) with plain ones; small models
// are left alone; and the step computes the same numbers as without the pass.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "autodiff/optimizer.h"
#include "passes/mixed_precision.h"
#include "runtime/executable.h"

namespace tg {
namespace {

// x[4, k] -> matmul w1[k, n] -> relu -> matmul w2[n, 3] -> cross entropy, in mixed precision
// (every matmul in bf16), SGD with momentum.
std::unique_ptr<Graph> MixedStep(int64_t k, int64_t n) {
  auto g = std::make_unique<Graph>("mlp");
  Builder b(*g);
  Value* x = g->AddInput("x", {DType::kF32, {4, k}});
  Value* y = g->AddInput("y", {DType::kI64, {4}});
  Value* w1 = g->AddVariable("w1", {DType::kF32, {k, n}});
  Value* w2 = g->AddVariable("w2", {DType::kF32, {n, 3}});
  Value* h = b.Op1("relu", {b.Op1("matmul", {x, w1})});
  Value* loss = b.Op1("nll_loss", {b.Op1("log_softmax", {b.Op1("matmul", {h, w2})}), y});
  g->AddOutput(loss);
  ApplyMixedPrecision(*g, MixedPrecisionPolicy{.min_rows = 0, .min_depth = 0});
  ParamGroup group;
  group.params = {w1, w2};
  OptimizerConfig config;
  config.use_momentum = true;
  AddTrainingStep(b, loss, {group}, config);
  return g;
}

// The streamed outputs of the fused node producing variable `name`'s update, by variable.
std::vector<std::string> StreamedVariables(const Graph& opt, const std::string& name) {
  const Node* update = nullptr;
  for (const VariableUpdate& u : opt.updates()) {
    if (u.variable->name() == name) update = u.value->producer();
  }
  EXPECT_NE(update, nullptr) << name;
  std::vector<std::string> streamed;
  if (update == nullptr || !HasAttr(update->attrs(), "streaming_stores")) return streamed;
  for (int64_t o : GetInts(update->attrs(), "streaming_stores")) {
    for (const VariableUpdate& u : opt.updates()) {
      if (u.value == update->output(o)) streamed.push_back(u.variable->name());
    }
  }
  return streamed;
}

TEST(StreamUpdateStores, OnlyTheShadowsOfLargeModelsStream) {
  // w1: 1024 x 8192 f32 (32 MiB), its momentum and bf16 shadow: 80 MiB of variables.
  std::unique_ptr<Graph> big = MixedStep(1024, 8192);
  auto exe = Executable::Compile(*big, {});
  const Graph& opt = exe->optimized_graph();
  const std::string w1_shadow = [&] {
    for (const VariableShadow& s : opt.shadows()) {
      if (s.source->name() == "w1") return s.shadow->name();
    }
    return std::string();
  }();
  ASSERT_FALSE(w1_shadow.empty());
  // w1's update kernel streams its shadow only (w1 and its momentum are written in place);
  // w2's shadow (8192 x 3 bf16, 48 KiB) is below the bulk size.
  EXPECT_EQ(StreamedVariables(opt, "w1"), std::vector<std::string>{w1_shadow});
  EXPECT_TRUE(StreamedVariables(opt, "w2").empty());

  std::unique_ptr<Graph> small = MixedStep(64, 128);  // well under any cache
  auto small_exe = Executable::Compile(*small, {});
  EXPECT_TRUE(StreamedVariables(small_exe->optimized_graph(), "w1").empty());
}

// Two calls (3 and 2 steps): the losses of each, then the weights.
std::vector<HostTensor> Train(const Graph& g) {
  auto exe = Executable::Compile(g, {});
  exe->SetHyperParam("group0.lr", 0.1);
  exe->SetHyperParam("group0.momentum", 0.9);
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal;
  for (const char* name : {"w1", "w2"}) {
    HostTensor w(exe->VariableType(name));
    for (int64_t i = 0; i < w.type().numel(); ++i) w.SetFromDouble(i, 0.05 * normal(rng));
    exe->WriteVariable(name, {w.data(), w.type()});
  }
  const int64_t k = exe->VariableType("w1").shape[0];
  std::vector<HostTensor> out;
  // Three steps, then two more: the second call reads the shadows the first one wrote.
  for (int64_t steps : {3, 2}) {
    HostTensor x({DType::kF32, {steps, 4, k}}), y({DType::kI64, {steps, 4}});
    for (int64_t i = 0; i < x.type().numel(); ++i) x.SetFromDouble(i, normal(rng));
    for (int64_t i = 0; i < y.type().numel(); ++i) y.SetFromDouble(i, double(i % 3));
    out.push_back(
        exe->Run({{x.data(), x.type()}, {y.data(), y.type()}}, steps, OutputMode::kAll)[0]);
  }
  for (const char* name : {"w1", "w2"}) out.push_back(exe->ReadVariable(name));
  return out;
}

TEST(StreamUpdateStores, SameNumbersAsPlainStores) {
  std::unique_ptr<Graph> g = MixedStep(1024, 8192);
  std::vector<HostTensor> streamed = Train(*g);
  setenv("TILEGRAPH_DISABLE_PASSES", "stream-update-stores", 1);
  std::vector<HostTensor> plain = Train(*g);
  unsetenv("TILEGRAPH_DISABLE_PASSES");
  ASSERT_EQ(streamed.size(), plain.size());
  for (size_t r = 0; r < streamed.size(); ++r) {
    ASSERT_EQ(streamed[r].type(), plain[r].type());
    for (int64_t i = 0; i < streamed[r].type().numel(); ++i) {
      ASSERT_EQ(streamed[r].GetAsDouble(i), plain[r].GetAsDouble(i)) << "result " << r << " ["
                                                                     << i << "]";
    }
  }
  EXPECT_NE(streamed[0].GetAsDouble(0), streamed[0].GetAsDouble(2));  // it trained
}

}  // namespace
}  // namespace tg
