// Reverse-mode autodiff: fan-out sums gradients, integer values and frozen variables get no
// gradient, an unreachable parameter gets zeros, not-differentiable ops are reported.
#include <gtest/gtest.h>

#include "autodiff/autodiff.h"
#include "ops/builder.h"
#include "ops/evaluate.h"
#include "support/error.h"

namespace tg {
namespace {

double Eval(Graph& g, Value* v, const std::map<std::string, HostTensor>& feeds, int64_t k = 0) {
  g.mutable_outputs() = {v};
  return EvaluateGraph(g, feeds, DeviceKind::kReference).outputs[0].GetAsDouble(k);
}

TEST(Autodiff, FanOutGradientsAreSummed) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF64, {}});
  Value* y = b.Add(b.Mul(x, x), b.Mul(x, b.Scalar(3.0, DType::kF64)));  // x^2 + 3x
  Value* dx = BuildGradients(b, y, {x})[0];
  EXPECT_DOUBLE_EQ(Eval(g, dx, {{"x", HostTensor::Scalar(DType::kF64, 2.0)}}), 7.0);
}

TEST(Autodiff, UnreachableParameterGetsZeros) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {3}});
  Value* w = g.AddVariable("w", {DType::kF32, {3}});
  Value* loss = b.Sum(b.Exp(x), {});
  Value* dw = BuildGradients(b, loss, {w})[0];
  EXPECT_EQ(dw->type(), w->type());
  EXPECT_EQ(Eval(g, dw, {{"x", HostTensor({DType::kF32, {3}})}}, 2), 0.0);
}

TEST(Autodiff, IntegerPathsCarryNoGradient) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {3}});
  Value* as_int = b.Cast(x, DType::kI64);
  Value* back = b.Cast(as_int, DType::kF32);
  Value* loss = b.Sum(b.Add(b.Mul(back, x), x), {});  // d/dx = back + 1 (no grad via cast)
  Value* dx = BuildGradients(b, loss, {x})[0];
  HostTensor in = HostTensor::Full({DType::kF32, {3}}, 2.5);
  EXPECT_DOUBLE_EQ(Eval(g, dx, {{"x", in}}), 3.0);
}

TEST(Autodiff, StopGradientBlocksTheGradient) {
  // y = x * stop_gradient(x * x): dy/dx = x^2 (the detached factor is a constant), not 3x^2.
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF64, {}});
  Value* y = b.Mul(x, b.Op1("stop_gradient", {b.Mul(x, x)}));
  Value* dx = BuildGradients(b, y, {x})[0];
  EXPECT_DOUBLE_EQ(Eval(g, dx, {{"x", HostTensor::Scalar(DType::kF64, 2.0)}}), 4.0);
}

TEST(Autodiff, SeedScalesGradients) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {}});
  Value* seed = g.AddHyperParam("scale", {DType::kF32, {}});
  Value* dx = BuildGradients(b, b.Mul(x, b.Scalar(5.0)), {x}, seed)[0];
  EXPECT_DOUBLE_EQ(Eval(g, dx, {{"x", HostTensor::Scalar(DType::kF32, 1)},
                                {"scale", HostTensor::Scalar(DType::kF32, 128)}}),
                   640.0);
}

TEST(Autodiff, NotDifferentiableOpOnThePathIsReported) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {3}});
  Value* y = g.AddInput("y", {DType::kF32, {3}});
  // A backward op has no gradient of its own (no double backward).
  Value* s = b.Op1("tanh_backward", {x, y});
  try {
    BuildGradients(b, b.Sum(s, {}), {x});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("tanh_backward"), std::string::npos);
  }
}

}  // namespace
}  // namespace tg
