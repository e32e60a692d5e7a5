// Half shadows of mixed-precision weights (passes/half_weight_shadows.cc, ir/graph.h's
// VariableShadow, Executable's recast on host writes): the weight is no longer cast every
// step, and the numbers are bit for bit those of casting it every step.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "autodiff/optimizer.h"
#include "ir/printer.h"
#include "kernels/cpu/onednn_kernels.h"
#include "passes/mixed_precision.h"
#include "passes/verifier.h"
#include "runtime/executable.h"
#include "support/error.h"

namespace tg {
namespace {

// An MLP step in mixed precision: w1, w2 trained with SGD + momentum, `frozen` not trained.
std::unique_ptr<Graph> MixedMlpStep() {
  auto g = std::make_unique<Graph>("mlp");
  Builder b(*g);
  Value* x = g->AddInput("x", {DType::kF32, {4, 6}});
  Value* y = g->AddInput("y", {DType::kI64, {4}});
  Value* frozen = g->AddVariable("frozen", {DType::kF32, {6, 6}}, /*trainable=*/false);
  Value* w1 = g->AddVariable("w1", {DType::kF32, {6, 8}});
  Value* w2 = g->AddVariable("w2", {DType::kF32, {8, 3}});
  Value* x2 = b.Op1("matmul", {x, frozen});
  Value* h = b.Op1("relu", {b.Op1("matmul", {x2, w1})});
  Value* loss = b.Op1("nll_loss", {b.Op1("log_softmax", {b.Op1("matmul", {h, w2})}), y});
  g->AddOutput(loss);
  EXPECT_EQ(ApplyMixedPrecision(*g, MixedPrecisionPolicy{.min_rows = 0, .min_depth = 0}), 3);
  ParamGroup group;
  group.params = {w1, w2};
  OptimizerConfig config;
  config.use_momentum = true;
  AddTrainingStep(b, loss, {group}, config);
  return g;
}

HostTensor Random(const TensorType& t, std::mt19937_64& rng, double scale) {
  std::normal_distribution<double> normal(0.0, scale);
  HostTensor h(t);
  for (int64_t i = 0; i < t.numel(); ++i) {
    h.SetFromDouble(i, t.dtype == DType::kI64 ? static_cast<double>(rng() % 3) : normal(rng));
  }
  return h;
}

const VariableShadow* ShadowOf(const Graph& g, const std::string& source) {
  for (const VariableShadow& s : g.shadows()) {
    if (s.source->name() == source) return &s;
  }
  return nullptr;
}

TEST(HalfWeightShadows, WeightsReadInHalfAreNotCastEveryStep) {
  std::unique_ptr<Graph> g = MixedMlpStep();
  auto exe = Executable::Compile(*g, {});
  const Graph& opt = exe->optimized_graph();
  for (const char* name : {"frozen", "w1", "w2"}) {
    const VariableShadow* s = ShadowOf(opt, name);
    ASSERT_NE(s, nullptr) << name;
    EXPECT_EQ(s->shadow->type().dtype, DType::kBF16);
    EXPECT_EQ(s->shadow->type().shape, s->source->type().shape);
  }
  std::map<const Value*, const Value*> update_of;
  for (const VariableUpdate& u : opt.updates()) update_of[u.variable] = u.value;
  for (const auto& n : opt.nodes()) {  // no cast of a master weight is left
    if (n->op() != "cast" || n->input(0)->kind() != ValueKind::kVariable) continue;
    // Without native bf16 kernels widen-half-dense has the matmuls read the shadows widened.
    EXPECT_FALSE(cpu::NativeBf16Dense()) << n->Describe();
    EXPECT_EQ(n->input(0)->type().dtype, DType::kBF16) << n->Describe();
  }
  for (const char* name : {"w1", "w2"}) {
    // The new weight and its half copy come out of one fused update kernel.
    const VariableShadow* s = ShadowOf(opt, name);
    ASSERT_TRUE(update_of.count(s->source) && update_of.count(s->shadow)) << name;
    EXPECT_EQ(update_of[s->source]->producer(), update_of[s->shadow]->producer()) << name;
    EXPECT_EQ(update_of[s->shadow]->producer()->op(), "fused_elementwise") << name;
  }
  EXPECT_EQ(update_of.count(ShadowOf(opt, "frozen")->shadow), 0u);  // never written by a step
  // In the order the weights are first read (not in pointer order: processes of one
  // distributed run must build the same variables in the same order).
  ASSERT_EQ(opt.shadows().size(), 3u);
  EXPECT_EQ(opt.shadows()[0].source->name(), "frozen");
  EXPECT_EQ(opt.shadows()[1].source->name(), "w1");
  EXPECT_EQ(opt.shadows()[2].source->name(), "w2");
  // The user's state does not list them.
  for (const std::string& name : exe->VariableNames()) {
    EXPECT_EQ(name.find(".bf16"), std::string::npos) << name;
  }
  for (const std::string& name : exe->WrittenVariableNames()) {
    EXPECT_EQ(name.find(".bf16"), std::string::npos) << name;
  }
  const std::string shadow_name = ShadowOf(opt, "w1")->shadow->name();
  HostTensor half({DType::kBF16, {6, 8}});
  EXPECT_THROW(exe->WriteVariable(shadow_name, {half.data(), half.type()}), Error);
}

// Runs `steps` steps, then writes new weights and runs `steps` more: the losses of both calls
// and the weights at the end.
std::vector<HostTensor> TrainTwice(const Graph& g, int steps) {
  auto exe = Executable::Compile(g, {});
  exe->SetHyperParam("group0.lr", 0.5);
  exe->SetHyperParam("group0.momentum", 0.9);
  std::mt19937_64 rng(11);
  HostTensor x = Random({DType::kF32, {steps, 4, 6}}, rng, 1.0);
  HostTensor y = Random({DType::kI64, {steps, 4}}, rng, 1.0);
  std::vector<HostTensor> out;
  for (int call = 0; call < 2; ++call) {
    // New values on every call: the second call's shadows must be recast from them.
    for (const char* name : {"frozen", "w1", "w2"}) {
      HostTensor w = Random(exe->VariableType(name), rng, 0.7);
      exe->WriteVariable(name, {w.data(), w.type()});
    }
    out.push_back(exe->Run({{x.data(), x.type()}, {y.data(), y.type()}}, steps,
                           OutputMode::kAll)[0]);
  }
  for (const char* name : {"w1", "w2"}) out.push_back(exe->ReadVariable(name));
  return out;
}

TEST(HalfWeightShadows, SameNumbersAsCastingEveryStepAcrossHostWrites) {
  std::unique_ptr<Graph> g = MixedMlpStep();
  std::vector<HostTensor> with = TrainTwice(*g, 5);
  setenv("TILEGRAPH_DISABLE_PASSES", "half-weight-shadows", 1);
  std::vector<HostTensor> without = TrainTwice(*g, 5);
  unsetenv("TILEGRAPH_DISABLE_PASSES");
  ASSERT_EQ(with.size(), without.size());
  for (size_t k = 0; k < with.size(); ++k) {
    ASSERT_EQ(with[k].type(), without[k].type());
    for (int64_t i = 0; i < with[k].type().numel(); ++i) {
      ASSERT_EQ(with[k].GetAsDouble(i), without[k].GetAsDouble(i)) << "result " << k << " [" << i
                                                                   << "]";
    }
  }
  // The run trained: the losses moved (a shadow stuck at its first value would still match
  // only if nothing changed).
  EXPECT_NE(with[0].GetAsDouble(0), with[0].GetAsDouble(4));
}

TEST(HalfWeightShadows, TextRoundTripAndVerifierRules) {
  const char* text = R"(graph g {
  variable %w : f32[2,3]
  variable(frozen) %w.bf16 : bf16[2,3]
  input %x : f32[2,3]
  %n = add(%w, %x) : f32[2,3]
  %h = cast(%n) {dtype = bf16} : bf16[2,3]
  output %n
  update %w = %n
  update %w.bf16 = %h
  shadow %w.bf16 = %w
})";
  std::unique_ptr<Graph> g = ParseGraph(text);
  Verify(*g);
  ASSERT_EQ(g->shadows().size(), 1u);
  EXPECT_EQ(g->shadows()[0].source->name(), "w");
  std::unique_ptr<Graph> again = ParseGraph(PrintGraph(*g));
  EXPECT_EQ(PrintGraph(*again), PrintGraph(*g));
  EXPECT_EQ(PrintGraph(*g->Clone()), PrintGraph(*g));

  std::string no_shadow_update = text;
  no_shadow_update.replace(no_shadow_update.find("  update %w.bf16 = %h\n"), 22, "");
  EXPECT_THROW(Verify(*ParseGraph(no_shadow_update)), Error);
  const char* wrong_shape = R"(graph g {
  variable %w : f32[2,3]
  variable(frozen) %s : bf16[3,2]
  input %x : f32[2,3]
  %n = add(%w, %x) : f32[2,3]
  output %n
  shadow %s = %w
})";
  try {
    Verify(*ParseGraph(wrong_shape));
    FAIL() << "a shadow of another shape verified";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("cannot hold a cast of %w"), std::string::npos) << e.message();
  }
  std::string of_an_input = text;
  of_an_input.replace(of_an_input.find("shadow %w.bf16 = %w"), 19, "shadow %w.bf16 = %x");
  EXPECT_THROW(ParseGraph(of_an_input), Error);
}

}  // namespace
}  // namespace tg
