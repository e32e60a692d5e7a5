// Builder::CrossEntropy and Builder::MseLoss against values computed here in double, with
// torch's semantics (ignore_index, label smoothing, each reduction), and their gradients
// through autodiff against finite differences.
#include <gtest/gtest.h>

#include <cmath>

#include "autodiff/autodiff.h"
#include "ops/builder.h"
#include "ops/evaluate.h"
#include "support/error.h"

namespace tg {
namespace {

constexpr int64_t kN = 4, kC = 3;
double kLogits[kN * kC] = {0.2, -1.0, 0.5, 1.5, 0.1, -0.3, -0.7, 0.9, 0.0, 0.3, 0.3, -2.0};
const int64_t kTarget[kN] = {2, 0, 1, 1};

// The loss torch.nn.functional.cross_entropy computes, in double.
double ExpectedCrossEntropy(const std::string& reduction, int64_t ignore, double eps, int64_t row) {
  double total = 0, count = 0;
  for (int64_t i = 0; i < kN; ++i) {
    if (row >= 0 && i != row) continue;
    const double* z = kLogits + i * kC;
    double m = std::max({z[0], z[1], z[2]}), s = 0;
    for (int c = 0; c < kC; ++c) s += std::exp(z[c] - m);
    double lse = m + std::log(s), nll = 0, smooth = 0;
    if (kTarget[i] != ignore) {
      nll = lse - z[kTarget[i]];
      for (int c = 0; c < kC; ++c) smooth += lse - z[c];
      count += 1;
    }
    total += (1 - eps) * nll + eps / kC * smooth;
  }
  return reduction == "mean" ? total / count : total;
}

struct Fixture {
  Graph g;
  Builder b{g};
  Value* logits = g.AddInput("logits", {DType::kF64, {kN, kC}});
  Value* target = g.AddInput("target", {DType::kI64, {kN}});
  std::map<std::string, HostTensor> feeds() const {
    return {{"logits", HostTensor({DType::kF64, {kN, kC}}, kLogits)},
            {"target", HostTensor({DType::kI64, {kN}}, kTarget)}};
  }
};

TEST(LossHelpers, CrossEntropyMatchesTorchSemantics) {
  for (std::string reduction : {"mean", "sum", "none"}) {
    for (int64_t ignore : {int64_t{-100}, int64_t{1}}) {
      for (double eps : {0.0, 0.1}) {
        Fixture f;
        f.g.AddOutput(f.b.CrossEntropy(f.logits, f.target, reduction, ignore, eps));
        HostTensor out = EvaluateGraph(f.g, f.feeds(), DeviceKind::kReference).outputs[0];
        SCOPED_TRACE(reduction + " ignore=" + std::to_string(ignore) + " eps=" + std::to_string(eps));
        if (reduction == "none") {
          for (int64_t i = 0; i < kN; ++i) {
            EXPECT_NEAR(out.GetAsDouble(i), ExpectedCrossEntropy("sum", ignore, eps, i), 1e-12);
          }
        } else {
          EXPECT_NEAR(out.GetAsDouble(0), ExpectedCrossEntropy(reduction, ignore, eps, -1), 1e-12);
        }
      }
    }
  }
}

TEST(LossHelpers, CrossEntropyGradientMatchesFiniteDifferences) {
  Fixture f;
  Value* loss = f.b.CrossEntropy(f.logits, f.target, "mean", 1, 0.2);
  Value* grad = BuildGradients(f.b, loss, {f.logits})[0];
  f.g.AddOutput(grad);
  HostTensor g = EvaluateGraph(f.g, f.feeds(), DeviceKind::kReference).outputs[0];
  for (int64_t k = 0; k < kN * kC; ++k) {
    double saved = kLogits[k];
    auto at = [&](double v) {
      kLogits[k] = v;
      double r = ExpectedCrossEntropy("mean", 1, 0.2, -1);
      kLogits[k] = saved;
      return r;
    };
    double numeric = (at(saved + 1e-6) - at(saved - 1e-6)) / 2e-6;
    EXPECT_NEAR(g.GetAsDouble(k), numeric, 1e-7) << "element " << k;
  }
}

TEST(LossHelpers, MseLossReductions) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF64, {3}});
  Value* y = g.AddInput("y", {DType::kF64, {3}});
  g.AddOutput(b.MseLoss(x, y, "mean"));
  g.AddOutput(b.MseLoss(x, y, "sum"));
  g.AddOutput(b.MseLoss(x, y, "none"));
  const double xs[3] = {1, 2, 3}, ys[3] = {1.5, 0, 3};
  auto r = EvaluateGraph(g, {{"x", HostTensor({DType::kF64, {3}}, xs)},
                             {"y", HostTensor({DType::kF64, {3}}, ys)}},
                         DeviceKind::kReference);
  EXPECT_DOUBLE_EQ(r.outputs[0].GetAsDouble(0), (0.25 + 4) / 3);
  EXPECT_DOUBLE_EQ(r.outputs[1].GetAsDouble(0), 4.25);
  EXPECT_DOUBLE_EQ(r.outputs[2].GetAsDouble(1), 4);
  EXPECT_THROW(b.MseLoss(x, y, "avg"), Error);
}

}  // namespace
}  // namespace tg
