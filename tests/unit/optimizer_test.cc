// Optimizer updates built as IR, run by the executable, against closed-form values. The
// loss is sum(c * p), so the gradient is the constant c and every optimizer has a known
// trajectory. (Parity with torch.optim itself is checked by the Python e2e tests.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "autodiff/optimizer.h"
#include "runtime/executable.h"

namespace tg {
namespace {

const float kC[3] = {0.5f, -2.0f, 1.5f};
const float kP0[3] = {1.0f, 2.0f, -3.0f};

struct Trained {
  std::vector<double> p;
  TrainingStepInfo info;
};

Trained Train(const OptimizerConfig& config, const OptimizerHyperParams& hp, int steps,
              std::map<std::string, double> overrides = {}) {
  Graph g;
  Builder b(g);
  Value* p = g.AddVariable("p", {DType::kF32, {3}});
  Value* x = g.AddInput("x", {DType::kF32, {3}});  // x = c, streamed
  Value* loss = b.Sum(b.Mul(x, p), {});
  g.AddOutput(loss);
  Trained t;
  t.info = AddTrainingStep(b, loss, {{{p}, hp}}, config);
  auto exe = Executable::Compile(g, {});
  for (auto& [name, v] : t.info.hyperparams) exe->SetHyperParam(name, v);
  for (auto& [name, v] : overrides) exe->SetHyperParam(name, v);
  HostTensor p0({DType::kF32, {3}}, kP0);
  exe->WriteVariable("p", {p0.data(), p0.type()});
  HostTensor xs({DType::kF32, {steps, 3}});
  for (int s = 0; s < steps; ++s) std::copy(kC, kC + 3, xs.as<float>() + 3 * s);
  exe->Run({{xs.data(), xs.type()}}, steps);
  HostTensor out = exe->ReadVariable("p");
  for (int i = 0; i < 3; ++i) t.p.push_back(out.as<float>()[i]);
  return t;
}

void ExpectClose(const std::vector<double>& got, const std::vector<double>& want) {
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i])));
}

TEST(Optimizer, PlainSgd) {
  OptimizerHyperParams hp;
  hp.lr = 0.1;
  Trained t = Train({OptimizerKind::kSGD}, hp, 10);
  std::vector<double> want;
  for (int i = 0; i < 3; ++i) want.push_back(kP0[i] - 10 * 0.1 * kC[i]);
  ExpectClose(t.p, want);
}

TEST(Optimizer, SgdMomentumDampeningNesterovWeightDecay) {
  for (bool nesterov : {false, true}) {
    OptimizerHyperParams hp;
    hp.lr = 0.05, hp.momentum = 0.9, hp.dampening = nesterov ? 0.0 : 0.3, hp.weight_decay = 0.01;
    OptimizerConfig config{OptimizerKind::kSGD, true, nesterov};
    Trained t = Train(config, hp, 7);
    std::vector<double> want;
    for (int i = 0; i < 3; ++i) {
      double p = kP0[i], buf = 0;
      for (int s = 0; s < 7; ++s) {
        double g = kC[i] + hp.weight_decay * p;
        buf = s == 0 ? g : hp.momentum * buf + (1 - hp.dampening) * g;
        p -= hp.lr * (nesterov ? g + hp.momentum * buf : buf);
      }
      want.push_back(p);
    }
    ExpectClose(t.p, want);
  }
}

TEST(Optimizer, AdamWithConstantGradientMovesLrPerStep) {
  OptimizerHyperParams hp;
  hp.lr = 0.01;
  Trained t = Train({OptimizerKind::kAdam}, hp, 20);
  std::vector<double> want;
  // m_t/(1-b1^t) = c and v_t/(1-b2^t) = c^2 exactly: each step moves lr * c/(|c|+eps).
  for (int i = 0; i < 3; ++i) want.push_back(kP0[i] - 20 * hp.lr * kC[i] / (std::fabs(kC[i]) + hp.eps));
  ExpectClose(t.p, want);
}

TEST(Optimizer, AdamWDecouplesWeightDecay) {
  OptimizerHyperParams hp;
  hp.lr = 0.01, hp.weight_decay = 0.1;
  Trained t = Train({OptimizerKind::kAdamW}, hp, 15);
  std::vector<double> want;
  for (int i = 0; i < 3; ++i) {
    double p = kP0[i];
    for (int s = 0; s < 15; ++s) p = p * (1 - hp.lr * hp.weight_decay) - hp.lr * kC[i] / (std::fabs(kC[i]) + hp.eps);
    want.push_back(p);
  }
  ExpectClose(t.p, want);
}

TEST(Optimizer, RmsPropCenteredWithMomentum) {
  for (bool centered : {false, true}) {
    OptimizerHyperParams hp;
    hp.lr = 0.01, hp.alpha = 0.9, hp.momentum = 0.5, hp.eps = 1e-8;
    OptimizerConfig config{OptimizerKind::kRMSprop, true, false, centered};
    Trained t = Train(config, hp, 12);
    std::vector<double> want;
    for (int i = 0; i < 3; ++i) {
      double p = kP0[i], sq = 0, ga = 0, buf = 0, g = kC[i];
      for (int s = 0; s < 12; ++s) {
        sq = hp.alpha * sq + (1 - hp.alpha) * g * g;
        ga = hp.alpha * ga + (1 - hp.alpha) * g;
        double avg = std::sqrt(centered ? sq - ga * ga : sq) + hp.eps;
        buf = hp.momentum * buf + g / avg;
        p -= hp.lr * buf;
      }
      want.push_back(p);
    }
    ExpectClose(t.p, want);
  }
}

TEST(Optimizer, LearningRateIsARuntimeValueAndLossScaleCancels) {
  OptimizerHyperParams hp;
  hp.lr = 0.1;
  OptimizerConfig config{OptimizerKind::kSGD};
  config.loss_scaling = true;
  Trained t = Train(config, hp, 4, {{"group0.lr", 0.2}, {"loss_scale", 1024.0}});
  EXPECT_TRUE(t.info.hyperparams.count("group0.lr"));
  std::vector<double> want;
  for (int i = 0; i < 3; ++i) want.push_back(kP0[i] - 4 * 0.2 * kC[i]);
  ExpectClose(t.p, want);
}

TEST(Optimizer, RmsPropTensorFlowVariant) {
  for (bool momentum : {false, true}) {
    OptimizerHyperParams hp;
    hp.lr = 0.01, hp.alpha = 0.9, hp.momentum = momentum ? 0.5 : 0.0, hp.eps = 1e-2;
    OptimizerConfig config{OptimizerKind::kRMSprop, momentum};
    config.rmsprop_tf_variant = true;
    Trained t = Train(config, hp, 12);
    std::vector<double> want;
    for (int i = 0; i < 3; ++i) {
      double p = kP0[i], sq = 1, buf = 0, g = kC[i];  // square_avg starts at ones
      for (int s = 0; s < 12; ++s) {
        sq = hp.alpha * sq + (1 - hp.alpha) * g * g;
        double update = g / std::sqrt(sq + hp.eps);  // eps inside the root
        if (momentum) {
          buf = hp.momentum * buf + hp.lr * update;  // lr accumulated in the buffer
          p -= buf;
        } else {
          p -= hp.lr * update;
        }
      }
      want.push_back(p);
    }
    ExpectClose(t.p, want);
  }
}

// ||c|| = sqrt(0.25 + 4 + 2.25) = 2.55: a clip of 1 scales every step's gradient by 1/2.55;
// a clip of 10 leaves it; under loss scaling the clip applies to the unscaled gradient.
TEST(Optimizer, MaxGradNormClipsTheGlobalNormAtRuntime) {
  const double norm = std::sqrt(0.25 + 4.0 + 2.25);
  for (double clip : {1.0, 10.0}) {
    for (bool scaled : {false, true}) {
      OptimizerHyperParams hp;
      hp.lr = 0.1;
      OptimizerConfig config{OptimizerKind::kSGD};
      config.max_grad_norm = 1.0;
      config.loss_scaling = scaled;
      std::map<std::string, double> set = {{"max_grad_norm", clip}};
      if (scaled) set["loss_scale"] = 512.0;
      Trained t = Train(config, hp, 5, set);
      EXPECT_EQ(t.info.hyperparams.at("max_grad_norm"), 1.0);
      std::vector<double> want;
      const double factor = std::min(1.0, clip / norm);
      for (int i = 0; i < 3; ++i) want.push_back(kP0[i] - 5 * 0.1 * factor * kC[i]);
      ExpectClose(t.p, want);
    }
  }
}

}  // namespace
}  // namespace tg
