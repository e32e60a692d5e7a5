// Hand checks of ctc_loss / ctc_loss_backward on tiny cases (T = 4, C = 3, S = 2) against a
// brute force that enumerates all C^T frame labelings, collapses each (merge repeats, drop
// blanks) and sums the probabilities of those giving the target: the loss, and the gradient
// both from the enumeration and from float64 central differences of the forward. Also the
// infinite-loss conventions, the identity that makes the gradient agree with PyTorch after a
// log_softmax, and the Runtime / Shape errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "ops/builder.h"
#include "ops/evaluate.h"
#include "ops/op_test_util.h"
#include "support/error.h"

namespace tg {
namespace {

constexpr int64_t kT = 4, kB = 2, kC = 3, kS = 2;

HostTensor Tensor(DType dtype, Shape shape, const std::vector<double>& values) {
  HostTensor t(TensorType{dtype, std::move(shape)});
  EXPECT_EQ(static_cast<int64_t>(values.size()), t.type().numel());
  for (size_t i = 0; i < values.size(); ++i) t.SetFromDouble(static_cast<int64_t>(i), values[i]);
  return t;
}

std::string TypeString(DType dtype, Shape shape) {
  return TensorType{dtype, std::move(shape)}.ToString();
}

HostTensor RunWith(const std::string& op, const std::vector<HostTensor>& inputs,
                   const AttrMap& attrs, DeviceKind choice) {
  Graph g;
  Node* n = testing::BuildSingleOpGraph(g, op, inputs, attrs);
  std::vector<const HostTensor*> ptrs;
  for (const HostTensor& t : inputs) ptrs.push_back(&t);
  return EvaluateNode(*n, ptrs, choice)[0];
}

// One tiny batch: log_probs [kT, kB, kC] (unnormalized normal values unless given), targets
// [kB, kS], lengths [kB].
struct Case {
  std::vector<double> targets, input_lengths, target_lengths;
  int64_t blank = 0;
  bool zero_infinity = false;
  std::vector<double> log_probs;  // filled by Fill()

  AttrMap Attrs() const { return {{"blank", blank}, {"zero_infinity", zero_infinity}}; }
  void Fill(uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    log_probs.resize(kT * kB * kC);
    for (double& v : log_probs) v = normal(rng);
  }
  // ctc_loss's inputs with log_probs of `dtype` (and `lp` instead of log_probs if given).
  std::vector<HostTensor> Inputs(DType dtype, const std::vector<double>* lp = nullptr) const {
    return {Tensor(dtype, {kT, kB, kC}, lp ? *lp : log_probs),
            Tensor(DType::kI64, {kB, kS}, targets), Tensor(DType::kI64, {kB}, input_lengths),
            Tensor(DType::kI64, {kB}, target_lengths)};
  }
};

// Brute-force loss of sample i and its gradient d loss / d log_probs[t, i, c] ([kT * kC]).
struct Brute {
  double nll = 0;
  std::vector<double> grad;
};

Brute BruteForce(const Case& k, int64_t i) {
  int64_t il = static_cast<int64_t>(k.input_lengths[i]);
  std::vector<int64_t> target;
  for (int64_t j = 0; j < k.target_lengths[i]; ++j) {
    target.push_back(static_cast<int64_t>(k.targets[i * kS + j]));
  }
  double p = 0;
  std::vector<double> dp(kT * kC, 0.0);  // d p / d log_probs[t, i, c]
  int64_t paths = 1;
  for (int64_t t = 0; t < il; ++t) paths *= kC;
  for (int64_t code = 0; code < paths; ++code) {
    std::vector<int64_t> path;
    for (int64_t t = 0, rest = code; t < il; ++t, rest /= kC) path.push_back(rest % kC);
    std::vector<int64_t> collapsed;
    for (int64_t t = 0; t < il; ++t) {
      if (path[t] != k.blank && (t == 0 || path[t] != path[t - 1])) collapsed.push_back(path[t]);
    }
    if (collapsed != target) continue;
    double logw = 0;
    for (int64_t t = 0; t < il; ++t) logw += k.log_probs[(t * kB + i) * kC + path[t]];
    double w = std::exp(logw);
    p += w;
    for (int64_t t = 0; t < il; ++t) dp[t * kC + path[t]] += w;
  }
  Brute r;
  r.nll = -std::log(p);
  r.grad.resize(kT * kC, 0.0);
  for (int64_t j = 0; j < kT * kC; ++j) r.grad[j] = p > 0 ? -dp[j] / p : 0.0;
  return r;
}

Case MakeCase(std::vector<double> targets, std::vector<double> input_lengths,
              std::vector<double> target_lengths, int64_t blank = 0, bool zero_infinity = false) {
  Case k;
  k.targets = std::move(targets);
  k.input_lengths = std::move(input_lengths);
  k.target_lengths = std::move(target_lengths);
  k.blank = blank;
  k.zero_infinity = zero_infinity;
  return k;
}

std::vector<Case> Cases() {
  std::vector<Case> cases = {
      MakeCase({1, 2, 1, 1}, {4, 4}, {2, 2}),     // distinct labels; repeated [1, 1]
      MakeCase({2, 0, 1, 2}, {4, 3}, {1, 2}),     // shorter target (padding 0 unused), input
      MakeCase({0, 1, 1, 1}, {3, 4}, {2, 2}, 2),  // blank = C - 1
      MakeCase({1, 1, 2, 2}, {4, 0}, {0, 0}),     // empty target; empty input
      MakeCase({2, 2, 1, 2}, {3, 2}, {2, 1}),     // [2, 2] in exactly 3 frames
  };
  for (size_t i = 0; i < cases.size(); ++i) cases[i].Fill(100 + i);
  return cases;
}

TEST(CtcLoss, MatchesBruteForce) {
  for (const Case& k : Cases()) {
    for (DType dtype : {DType::kF64, DType::kF32}) {
      for (DeviceKind choice : {DeviceKind::kCpu, DeviceKind::kReference}) {
        SCOPED_TRACE(std::string(DTypeName(dtype)) +
                     (choice == DeviceKind::kCpu ? " cpu" : " reference") + " blank " +
                     std::to_string(k.blank) + " targets[0] " + std::to_string(k.targets[0]));
        HostTensor out = RunWith("ctc_loss", k.Inputs(dtype), k.Attrs(), choice);
        ASSERT_EQ(out.type().ToString(), TypeString(dtype, {kB}));
        double tol = dtype == DType::kF64 ? 1e-12 : 1e-5;
        for (int64_t i = 0; i < kB; ++i) {
          double want = BruteForce(k, i).nll;
          EXPECT_NEAR(out.GetAsDouble(i), want, tol * (1 + std::fabs(want))) << "sample " << i;
        }
      }
    }
  }
}

TEST(CtcLoss, GradientMatchesBruteForceAndFiniteDifferences) {
  const std::vector<double> go = {0.7, -1.3};
  for (const Case& k : Cases()) {
    // Central differences of sum_i go[i] * loss[i] (f64, CPU forward).
    std::vector<double> numeric(k.log_probs.size());
    for (size_t j = 0; j < k.log_probs.size(); ++j) {
      auto weighted = [&](double delta) {
        std::vector<double> lp = k.log_probs;
        lp[j] += delta;
        HostTensor out = RunWith("ctc_loss", k.Inputs(DType::kF64, &lp), k.Attrs(),
                                 DeviceKind::kCpu);
        return go[0] * out.GetAsDouble(0) + go[1] * out.GetAsDouble(1);
      };
      const double h = 1e-6;
      numeric[j] = (weighted(h) - weighted(-h)) / (2 * h);
    }
    std::vector<Brute> brute = {BruteForce(k, 0), BruteForce(k, 1)};
    for (DType dtype : {DType::kF64, DType::kF32}) {
      for (DeviceKind choice : {DeviceKind::kCpu, DeviceKind::kReference}) {
        SCOPED_TRACE(std::string(DTypeName(dtype)) +
                     (choice == DeviceKind::kCpu ? " cpu" : " reference") + " blank " +
                     std::to_string(k.blank) + " targets[0] " + std::to_string(k.targets[0]));
        std::vector<HostTensor> in = k.Inputs(dtype);
        in.insert(in.begin(), Tensor(dtype, {kB}, go));
        HostTensor grad = RunWith("ctc_loss_backward", in, k.Attrs(), choice);
        ASSERT_EQ(grad.type().ToString(), TypeString(dtype, {kT, kB, kC}));
        double tol = dtype == DType::kF64 ? 1e-12 : 1e-5;
        for (int64_t t = 0; t < kT; ++t) {
          for (int64_t i = 0; i < kB; ++i) {
            for (int64_t c = 0; c < kC; ++c) {
              int64_t j = (t * kB + i) * kC + c;
              double want = go[i] * brute[i].grad[t * kC + c];
              EXPECT_NEAR(grad.GetAsDouble(j), want, tol * (1 + std::fabs(want)))
                  << "brute force, [" << t << ", " << i << ", " << c << "]";
              EXPECT_NEAR(grad.GetAsDouble(j), numeric[j], 1e-5 * (1 + std::fabs(numeric[j])))
                  << "finite differences, [" << t << ", " << i << ", " << c << "]";
            }
          }
        }
      }
    }
  }
}

// After a log_softmax, PyTorch's gradient go * (exp(lp) - exp(lcab + nll - lp)) and ours
// -go * exp(lcab + nll - lp) differ by go * exp(lp), which log_softmax's backward removes
// exactly when ours sums to -go over classes in every frame t < input_length (and torch's to 0).
TEST(CtcLoss, GradientSumsToMinusGoPerFrameForNormalizedLogProbs) {
  for (Case k : Cases()) {
    for (int64_t r = 0; r < kT * kB; ++r) {  // log_softmax over classes
      double* row = k.log_probs.data() + r * kC;
      double m = std::max({row[0], row[1], row[2]});
      double lse = m + std::log(std::exp(row[0] - m) + std::exp(row[1] - m) + std::exp(row[2] - m));
      for (int64_t c = 0; c < kC; ++c) row[c] -= lse;
    }
    std::vector<HostTensor> in = k.Inputs(DType::kF64);
    in.insert(in.begin(), Tensor(DType::kF64, {kB}, {0.7, -1.3}));
    for (DeviceKind choice : {DeviceKind::kCpu, DeviceKind::kReference}) {
      HostTensor grad = RunWith("ctc_loss_backward", in, k.Attrs(), choice);
      for (int64_t t = 0; t < kT; ++t) {
        for (int64_t i = 0; i < kB; ++i) {
          double sum = 0;
          for (int64_t c = 0; c < kC; ++c) sum += grad.GetAsDouble((t * kB + i) * kC + c);
          double want = t < k.input_lengths[i] ? -in[0].GetAsDouble(i) : 0.0;
          EXPECT_NEAR(sum, want, 1e-12) << "frame " << t << ", sample " << i;
        }
      }
    }
  }
}

// Row 1's target [1, 1, 1] needs 5 frames but has 4: its loss is +inf (0 with
// zero_infinity) and its gradient is 0 either way (never NaN); row 0 is unaffected.
TEST(CtcLoss, InfeasibleRow) {
  for (bool zero_infinity : {false, true}) {
    Case k = MakeCase({1, 2, 1, 1}, {4, 4}, {2, 2}, 0, zero_infinity);
    k.Fill(7);
    double row0 = BruteForce(k, 0).nll;
    std::vector<HostTensor> in = k.Inputs(DType::kF64);
    in[1] = Tensor(DType::kI64, {kB, 3}, {1, 2, 0, 1, 1, 1});
    in[3] = Tensor(DType::kI64, {kB}, {2, 3});
    std::vector<HostTensor> bin = in;
    bin.insert(bin.begin(), Tensor(DType::kF64, {kB}, {1.0, 1.0}));
    for (DeviceKind choice : {DeviceKind::kCpu, DeviceKind::kReference}) {
      SCOPED_TRACE(zero_infinity ? "zero_infinity" : "inf");
      HostTensor out = RunWith("ctc_loss", in, k.Attrs(), choice);
      EXPECT_NEAR(out.GetAsDouble(0), row0, 1e-12);
      if (zero_infinity) EXPECT_EQ(out.GetAsDouble(1), 0.0);
      else EXPECT_EQ(out.GetAsDouble(1), std::numeric_limits<double>::infinity());
      HostTensor grad = RunWith("ctc_loss_backward", bin, k.Attrs(), choice);
      for (int64_t t = 0; t < kT; ++t) {
        for (int64_t c = 0; c < kC; ++c) {
          EXPECT_EQ(grad.GetAsDouble((t * kB + 1) * kC + c), 0.0) << t << ", " << c;
          EXPECT_TRUE(std::isfinite(grad.GetAsDouble((t * kB + 0) * kC + c)));
        }
      }
    }
  }
}

void ExpectRuntimeError(const std::vector<HostTensor>& in, const AttrMap& attrs,
                        const std::string& message) {
  for (DeviceKind choice : {DeviceKind::kCpu, DeviceKind::kReference}) {
    try {
      RunWith("ctc_loss", in, attrs, choice);
      ADD_FAILURE() << "no error; expected " << message;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kRuntime) << e.what();
      EXPECT_NE(e.message().find(message), std::string::npos) << e.message();
    }
  }
}

TEST(CtcLoss, BadLengthsAndLabelsRaiseRuntimeErrors) {
  Case k = Cases()[0];
  AttrMap attrs = k.Attrs();
  auto with = [&](size_t input, Shape shape, std::vector<double> v) {
    std::vector<HostTensor> in = k.Inputs(DType::kF32);
    in[input] = Tensor(DType::kI64, std::move(shape), v);
    return in;
  };
  ExpectRuntimeError(with(1, {kB, kS}, {1, 3, 1, 1}), attrs,
                     "ctc_loss: target label 3 (targets[0, 1]) out of range [0, 3)");
  ExpectRuntimeError(with(1, {kB, kS}, {1, 2, -1, 1}), attrs, "target label -1");
  // (a target equal to the blank label is not an error: torch's kernels run it; the e2e
  // tests compare it with eager)
  ExpectRuntimeError(with(2, {kB}, {4, 5}), attrs,
                     "ctc_loss: input_lengths[1] = 5 out of range [0, 4]");
  ExpectRuntimeError(with(2, {kB}, {-1, 4}), attrs, "input_lengths[0] = -1");
  ExpectRuntimeError(with(3, {kB}, {3, 1}), attrs,
                     "ctc_loss: target_lengths[0] = 3 out of range [0, 2]");
}

TEST(CtcLoss, InferChecksShapesAndBlank) {
  Case k = Cases()[0];
  Graph g;
  std::vector<Value*> in;
  for (const HostTensor& t : k.Inputs(DType::kF32)) {
    in.push_back(g.AddInput("in" + std::to_string(in.size()), t.type()));
  }
  Value* wrong_batch = g.AddInput("wb", {DType::kI64, {3}});
  Value* float_targets = g.AddInput("ft", {DType::kF32, {kB, kS}});
  Builder b(g);
  auto kind_of = [&](std::vector<Value*> ins, AttrMap attrs) {
    try {
      b.Op1("ctc_loss", ins, attrs);
    } catch (const Error& e) {
      return e.kind();
    }
    return ErrorKind::kInternal;  // no error
  };
  EXPECT_EQ(kind_of({in[0], in[1], wrong_batch, in[3]}, {}), ErrorKind::kShape);
  EXPECT_EQ(kind_of({in[0], float_targets, in[2], in[3]}, {}), ErrorKind::kShape);
  EXPECT_EQ(kind_of(in, {{"blank", int64_t{3}}}), ErrorKind::kInvalidInput);
  EXPECT_EQ(b.Op1("ctc_loss", in, {})->type().ToString(),
            TypeString(DType::kF32, {kB}));
}

}  // namespace
}  // namespace tg
