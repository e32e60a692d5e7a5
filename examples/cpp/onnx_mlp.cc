// An ONNX model built and trained from C++ alone (PopART's workflow): OnnxBuilder makes the
// model (a 2-layer MLP ending in SoftmaxCrossEntropyLoss), TrainingSession adds the backward
// pass (tilegraph's autodiff) and SGD with momentum and compiles it; each Run trains 50 steps
// in the engine. The data: Gaussian points labelled by a random linear teacher (4 classes).
//
//   onnx_mlp [--save trained.onnx] [--check]
//   --check: exit 1 unless the final loss is below 0.15 and the accuracy above 95% (a test).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "onnx/model_file.h"
#include "onnx/onnx_builder.h"
#include "onnx/session.h"
#include "teacher_data.h"

using namespace tg;
using tg::examples::MakeBatches;

namespace {

constexpr int64_t kBatch = 32, kIn = 16, kHidden = 64, kClasses = 4;
constexpr int kStepsPerCall = 50, kCalls = 12;

// The model and the name of its loss value.
onnx::ModelProto BuildMlp(std::mt19937& rng, std::string& loss) {
  OnnxBuilder ob(17, "mlp");
  std::string x = ob.AddInput("x", {DType::kF32, {kBatch, kIn}});
  std::string y = ob.AddInput("labels", {DType::kI64, {kBatch}});
  auto init = [&](const Shape& shape, int64_t fan_in) {  // uniform in +-1/sqrt(fan_in)
    return examples::RandomTensor({DType::kF32, shape}, 1 / std::sqrt(fan_in), rng);
  };
  std::string w1 = ob.AddInitializer("fc1.weight", init({kIn, kHidden}, kIn));
  std::string b1 = ob.AddInitializer("fc1.bias", init({kHidden}, kIn));
  std::string w2 = ob.AddInitializer("fc2.weight", init({kHidden, kClasses}, kHidden));
  std::string b2 = ob.AddInitializer("fc2.bias", init({kClasses}, kHidden));
  std::string h = ob.Op("Relu", {ob.Op("Add", {ob.Op("MatMul", {x, w1}), b1})});
  std::string logits = ob.Op("Add", {ob.Op("MatMul", {h, w2}), b2});
  loss = ob.Op("SoftmaxCrossEntropyLoss", {logits, y}, {{"reduction", std::string("mean")}});
  std::string predicted = ob.Op("ArgMax", {logits}, {{"axis", int64_t{1}}, {"keepdims", int64_t{0}}});
  std::string correct = ob.Op("ReduceSum", {ob.Op("Cast", {ob.Op("Equal", {predicted, y})},
                                                  {{"to", int64_t{onnx::TensorProto::FLOAT}}})},
                              {{"keepdims", int64_t{0}}});
  ob.AddOutput(loss);
  ob.AddOutput(correct);
  return ob.Build();
}

}  // namespace

int main(int argc, char** argv) {
  bool check = false;
  std::string save;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--check") == 0) check = true;
    else if (std::strcmp(argv[i], "--save") == 0 && i + 1 < argc) save = argv[++i];
  }
  try {
    std::mt19937 rng(0);
    std::string loss_name;
    onnx::ModelProto model = BuildMlp(rng, loss_name);
    DataFlow flow;
    flow.batches_per_step = kStepsPerCall;
    flow.mode = OutputMode::kSum;
    TrainingSession session(model, loss_name, Sgd(0.05, 0.9), flow);
    HostTensor teacher = examples::RandomTensor({DType::kF32, {kIn, kClasses}}, 1.0, rng);
    double loss = 0, accuracy = 0;
    for (int call = 0; call < kCalls; ++call) {
      HostTensor xs, ys;
      MakeBatches(kStepsPerCall, kBatch, kIn, kClasses, teacher, rng, xs, ys);
      auto out = session.Run({{xs.data(), xs.type()}, {ys.data(), ys.type()}});
      loss = out[0].as<float>()[0] / kStepsPerCall;
      accuracy = out[1].as<float>()[0] / (kStepsPerCall * kBatch);
      std::printf("step %4d  loss %.4f  accuracy %.3f\n", (call + 1) * kStepsPerCall, loss, accuracy);
    }
    if (!save.empty()) session.SaveModel(save);
    if (check && !(loss < 0.15 && accuracy > 0.95)) {
      std::printf("FAILED: expected loss < 0.15 and accuracy > 0.95\n");
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
