// The C++ sessions over an ONNX model, in the spirit of PopART: an InferenceSession runs the
// model, a TrainingSession adds the backward pass (tilegraph's C++ autodiff) and an optimizer
// update to it, both compiled once into an Executable that runs `batches_per_step` steps per
// Run. What comes back of each returned tensor (the anchors) is said by a DataFlow: every
// step's value, the final one, the sum, or every N-th.
//
//   auto model = tg::LoadOnnxModel("mlp.onnx");
//   tg::DataFlow flow{.batches_per_step = 50, .mode = tg::OutputMode::kSum, .anchors = {"loss"}};
//   tg::TrainingSession s(model, "loss", tg::Sgd(0.05, 0.9), flow);
//   auto out = s.Run({x.view(), y.view()});  // x: [50, batch, ...]
//   s.SaveModel("trained.onnx");             // the model with the trained weights
#pragma once

#include <onnx/onnx_pb.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "autodiff/optimizer.h"
#include "onnx/import.h"
#include "passes/mixed_precision.h"
#include "runtime/executable.h"

namespace tg {

struct DataFlow {
  int64_t batches_per_step = 1;          // steps per Run (PopTorch's deviceIterations)
  OutputMode mode = OutputMode::kAll;    // what of each anchor returns
  int64_t every_n = 1;                   // kEveryN only
  std::vector<std::string> anchors;      // value names returned; empty: the model's outputs
};

struct SessionOptions {
  OnnxImportOptions import;  // input shapes (symbolic dims), weights as constants
  int replicas = 1;          // data-parallel replicas in this process
  int num_threads = 0;       // 0: the CPU device's default
  uint64_t seed = 0;         // the random stream (dropout)
  // TrainingSession: the initializers to train (empty: every floating-point initializer, as
  // PopART does; ONNX itself does not say which initializers are weights).
  std::vector<std::string> trainable;
  // Automatic mixed precision (passes/mixed_precision.h): the policy's ops compute in half,
  // weights and optimizer state stay f32. Unset: the model's own precision. (Loss scaling
  // and stochastic rounding are the optimizer's: OptimizerSpec::config.)
  std::optional<MixedPrecisionPolicy> mixed_precision;
};

struct OptimizerSpec {
  OptimizerConfig config;
  OptimizerHyperParams hyper;
};
// SGD with optional momentum / weight decay, as torch.optim.SGD.
OptimizerSpec Sgd(double lr, double momentum = 0.0, double weight_decay = 0.0);
// Adam (decoupled weight decay: AdamW when weight_decay > 0 and decoupled).
OptimizerSpec Adam(double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
                   double weight_decay = 0.0, bool decoupled = false);

class OnnxSession {
 public:
  virtual ~OnnxSession() = default;

  // Fed per step, in the model's order; each Run takes [batches_per_step, (replicas,) ...type].
  const std::vector<std::string>& input_names() const { return input_names_; }
  TensorType input_type(const std::string& name) const;
  const std::vector<std::string>& anchor_names() const { return anchors_; }
  const DataFlow& data_flow() const { return flow_; }

  // Runs batches_per_step steps; returns the anchors as the DataFlow says.
  std::vector<HostTensor> Run(const std::vector<TensorView>& inputs);

  // The model's weights (floating-point initializers), by initializer name.
  std::vector<std::string> weight_names() const { return weights_; }
  HostTensor ReadWeight(const std::string& name) const;
  void WriteWeight(const std::string& name, const TensorView& value);
  // The model as loaded with its initializers replaced by the current weights (PopART's
  // modelToHost); SaveModel writes it.
  onnx::ModelProto ModelWithWeights() const;
  void SaveModel(const std::string& path) const;

  const Executable& executable() const { return *exe_; }
  Executable& executable() { return *exe_; }

 protected:
  OnnxSession(const onnx::ModelProto& model, const DataFlow& flow, const SessionOptions& options,
              bool training);
  // Compiles graph_ (after a subclass has added to it) and writes the initial weights.
  void Compile(PipelineKind kind, const std::map<std::string, double>& hyperparams);
  Value* Anchor(const std::string& name) const;

  onnx::ModelProto model_;
  DataFlow flow_;
  SessionOptions options_;
  OnnxImport import_;
  std::vector<std::string> input_names_, anchors_, weights_;
  std::unique_ptr<Executable> exe_;
};

class InferenceSession : public OnnxSession {
 public:
  InferenceSession(const onnx::ModelProto& model, const DataFlow& flow = {},
                   const SessionOptions& options = {});
};

// Trains the model to minimize `loss` (the name of a scalar value of the model, e.g. the
// output of a SoftmaxCrossEntropyLoss node). BatchNormalization uses batch statistics and
// Dropout drops, as PyTorch's train mode.
class TrainingSession : public OnnxSession {
 public:
  TrainingSession(const onnx::ModelProto& model, const std::string& loss,
                  const OptimizerSpec& optimizer, const DataFlow& flow = {},
                  const SessionOptions& options = {});
  // Every parameter group's learning rate, without recompiling.
  void SetLearningRate(double lr);

 private:
  std::map<std::string, double> hyperparams_;
};

}  // namespace tg
