// Generated over the op registry, for every op and every one of its samples:
//   Kernel:   the CPU kernel against the reference kernel (f32, the sample's tolerance);
//   GradCheck: the op's grad rule (through BuildGradients) against float64 central
//             differences of the reference kernel, for every floating input element.
// An op with no samples fails the registry test, so nothing escapes these checks.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "autodiff/autodiff.h"
#include "ops/builder.h"
#include "ops/evaluate.h"
#include "ops/op_test_util.h"

namespace tg {
namespace {

using testing::BuildSingleOpGraph;
using testing::MakeSampleInputs;
using testing::MaxRelativeError;

struct Case {
  const OpDef* def;
  size_t sample;
};

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const OpDef* def : OpRegistry::Global().All()) {
    for (size_t i = 0; i < def->samples.size(); ++i) cases.push_back({def, i});
  }
  return cases;
}

// Differentiable ops' samples, less those that opt out (documented in the op's samples).
std::vector<Case> GradCases() {
  std::vector<Case> cases;
  for (const Case& c : AllCases()) {
    if (!c.def->not_differentiable && !c.def->samples[c.sample].skip_grad_check) cases.push_back(c);
  }
  return cases;
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return info.param.def->name + "_" + std::to_string(info.param.sample);
}

uint64_t SeedFor(const Case& c) { return std::hash<std::string>{}(c.def->name) + c.sample; }

class OpKernel : public ::testing::TestWithParam<Case> {};
class OpGradient : public ::testing::TestWithParam<Case> {};

TEST_P(OpKernel, MatchesReference) {
  const Case& c = GetParam();
  const OpSample& sample = c.def->samples[c.sample];
  std::mt19937_64 rng(SeedFor(c));
  std::vector<HostTensor> inputs = MakeSampleInputs(sample, DType::kF32, rng);
  Graph g;
  Node* n = BuildSingleOpGraph(g, c.def->name, inputs, sample.attrs);
  std::vector<const HostTensor*> ptrs;
  for (const HostTensor& t : inputs) ptrs.push_back(&t);
  RunContext ctx{1234, 7};
  std::vector<HostTensor> ref = EvaluateNode(*n, ptrs, DeviceKind::kReference, ctx);
  // Every device kind the op has a kernel for, against the reference kernel.
  for (const auto& [kind, factory] : c.def->kernels) {
    if (kind == DeviceKind::kReference) continue;
    SCOPED_TRACE(DeviceKindName(kind));
    std::vector<HostTensor> fast = EvaluateNode(*n, ptrs, kind, ctx);
    ASSERT_EQ(fast.size(), ref.size());
    for (size_t i = 0; i < fast.size(); ++i) {
      EXPECT_LE(MaxRelativeError(fast[i], ref[i]), sample.tolerance) << "output " << i;
    }
  }
}

// loss = sum_i sum(out_i * weight_i) over floating outputs, weights fixed random.
Value* WeightedLoss(Builder& b, Node* n, std::mt19937_64& rng) {
  Value* loss = nullptr;
  std::normal_distribution<double> normal(0.0, 1.0);
  for (Value* out : n->outputs()) {
    if (!IsFloating(out->type().dtype)) continue;
    HostTensor w(out->type());
    for (int64_t k = 0; k < w.type().numel(); ++k) w.SetFromDouble(k, normal(rng));
    Value* term = b.Sum(b.Mul(out, b.graph().AddConstant(std::move(w))), {});
    loss = loss ? b.Add(loss, term) : term;
  }
  return loss;
}

TEST_P(OpGradient, MatchesFiniteDifferences) {
  const Case& c = GetParam();
  const OpSample& sample = c.def->samples[c.sample];
  std::mt19937_64 rng(SeedFor(c));
  std::vector<HostTensor> inputs = MakeSampleInputs(sample, DType::kF64, rng);
  Graph g;
  Builder b(g);
  Node* n = BuildSingleOpGraph(g, c.def->name, inputs, sample.attrs);
  Value* loss = WeightedLoss(b, n, rng);
  ASSERT_NE(loss, nullptr) << "op has no floating output";
  std::vector<Value*> wrt;
  for (Value* in : g.inputs()) {
    if (IsFloating(in->type().dtype)) wrt.push_back(in);
  }
  g.mutable_outputs().clear();
  g.AddOutput(loss);
  std::unique_ptr<Graph> loss_only = g.Clone();  // for the finite differences
  std::vector<Value*> grads = BuildGradients(b, loss, wrt);
  g.mutable_outputs().clear();
  g.AddOutput(loss);
  for (Value* gv : grads) g.AddOutput(gv);

  std::map<std::string, HostTensor> feeds;
  for (size_t i = 0; i < inputs.size(); ++i) feeds["in" + std::to_string(i)] = inputs[i];
  RunContext ctx{99, 3};
  EvalResult analytic = EvaluateGraph(g, feeds, DeviceKind::kReference, ctx);

  auto loss_at = [&](const std::map<std::string, HostTensor>& f) {
    return EvaluateGraph(*loss_only, f, DeviceKind::kReference, ctx).outputs[0].GetAsDouble(0);
  };
  for (size_t w = 0; w < wrt.size(); ++w) {
    const std::string& name = wrt[w]->name();
    const HostTensor& grad = analytic.outputs[1 + w];
    for (int64_t k = 0; k < grad.type().numel(); ++k) {
      std::map<std::string, HostTensor> plus = feeds, minus = feeds;
      double x = feeds[name].GetAsDouble(k);
      double h = 1e-6 * std::max(1.0, std::fabs(x));
      plus[name].SetFromDouble(k, x + h);
      minus[name].SetFromDouble(k, x - h);
      double numeric = (loss_at(plus) - loss_at(minus)) / (2 * h);
      double got = grad.GetAsDouble(k);
      EXPECT_NEAR(got, numeric, 1e-5 * (1.0 + std::fabs(numeric)))
          << "d loss / d " << name << "[" << k << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Registry, OpKernel, ::testing::ValuesIn(AllCases()), CaseName);
INSTANTIATE_TEST_SUITE_P(Registry, OpGradient, ::testing::ValuesIn(GradCases()), CaseName);

}  // namespace
}  // namespace tg
