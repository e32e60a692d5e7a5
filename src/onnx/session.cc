#include "onnx/session.h"

#include <algorithm>

#include "onnx/model_file.h"
#include "ops/builder.h"
#include "parallel/gradient_all_reduce.h"
#include "support/error.h"

namespace tg {

OptimizerSpec Sgd(double lr, double momentum, double weight_decay) {
  OptimizerSpec s;
  s.config.kind = OptimizerKind::kSGD;
  s.config.use_momentum = momentum != 0.0;
  s.hyper.lr = lr;
  s.hyper.momentum = momentum;
  s.hyper.weight_decay = weight_decay;
  return s;
}

OptimizerSpec Adam(double lr, double beta1, double beta2, double eps, double weight_decay,
                   bool decoupled) {
  OptimizerSpec s;
  s.config.kind = decoupled ? OptimizerKind::kAdamW : OptimizerKind::kAdam;
  s.hyper.lr = lr;
  s.hyper.beta1 = beta1;
  s.hyper.beta2 = beta2;
  s.hyper.eps = eps;
  s.hyper.weight_decay = weight_decay;
  return s;
}

namespace {
OnnxImportOptions WithTraining(OnnxImportOptions o, bool training) {
  o.training = training;
  return o;
}
}  // namespace

OnnxSession::OnnxSession(const onnx::ModelProto& model, const DataFlow& flow,
                         const SessionOptions& options, bool training)
    : model_(model), flow_(flow), options_(options),
      import_(ImportOnnx(model, WithTraining(options.import, training))) {
  TG_CHECK(flow_.batches_per_step >= 1, kInvalidInput, "DataFlow: batches_per_step must be >= 1");
  TG_CHECK(options_.replicas >= 1, kInvalidInput, "SessionOptions: replicas must be >= 1");
  if (options_.mixed_precision) ApplyMixedPrecision(*import_.graph, *options_.mixed_precision);
  input_names_ = import_.inputs;
  weights_ = import_.weights;
  anchors_ = flow_.anchors.empty() ? import_.outputs : flow_.anchors;
}

TensorType OnnxSession::input_type(const std::string& name) const {
  Value* v = import_.graph->FindValue(name);
  TG_CHECK(v != nullptr && v->kind() == ValueKind::kInput, kInvalidInput, "'", name,
           "' is not an input of the ONNX model");
  return v->type();
}

Value* OnnxSession::Anchor(const std::string& name) const {
  auto it = import_.values.find(name);
  TG_CHECK(it != import_.values.end(), kInvalidInput, "anchor '", name,
           "' is not a value of the ONNX model");
  return it->second;
}

void OnnxSession::Compile(PipelineKind kind, const std::map<std::string, double>& hyperparams) {
  Graph& g = *import_.graph;
  Builder b(g);
  // The graph's outputs become the anchors, in the DataFlow's order.
  std::vector<Value*> outs;
  for (const auto& name : anchors_) {
    Value* v = Anchor(name);
    if (v->kind() != ValueKind::kNodeOutput) v = b.Op1("reshape", {v}, {{"shape", v->type().shape}});
    outs.push_back(v);
  }
  g.mutable_outputs() = outs;
  CompileOptions co;
  co.pipeline = kind;
  co.replicas = options_.replicas;
  co.num_threads = options_.num_threads;
  exe_ = Executable::Compile(g, co);
  exe_->SetSeed(options_.seed);
  for (const auto& [name, v] : hyperparams) exe_->SetHyperParam(name, v);
  for (const auto& [name, value] : import_.initial_values)
    exe_->WriteVariable(name, {value.data(), value.type()});
}

std::vector<HostTensor> OnnxSession::Run(const std::vector<TensorView>& inputs) {
  return exe_->Run(inputs, flow_.batches_per_step, flow_.mode, flow_.every_n);
}

HostTensor OnnxSession::ReadWeight(const std::string& name) const {
  TG_CHECK(std::count(weights_.begin(), weights_.end(), name), kInvalidInput, "'", name,
           "' is not a weight of the ONNX model");
  return exe_->ReadVariable(name);
}

void OnnxSession::WriteWeight(const std::string& name, const TensorView& value) {
  TG_CHECK(std::count(weights_.begin(), weights_.end(), name), kInvalidInput, "'", name,
           "' is not a weight of the ONNX model");
  exe_->WriteVariable(name, value);
}

onnx::ModelProto OnnxSession::ModelWithWeights() const {
  onnx::ModelProto m = model_;
  for (auto& init : *m.mutable_graph()->mutable_initializer()) {
    if (!std::count(weights_.begin(), weights_.end(), init.name())) continue;
    HostTensor value = exe_->ReadVariable(init.name());
    init = TensorToProto(value, init.name());
  }
  return m;
}

void OnnxSession::SaveModel(const std::string& path) const { SaveOnnxModel(ModelWithWeights(), path); }

InferenceSession::InferenceSession(const onnx::ModelProto& model, const DataFlow& flow,
                                   const SessionOptions& options)
    : OnnxSession(model, flow, options, /*training=*/false) {
  Compile(PipelineKind::kInference, {});
}

TrainingSession::TrainingSession(const onnx::ModelProto& model, const std::string& loss,
                                 const OptimizerSpec& optimizer, const DataFlow& flow,
                                 const SessionOptions& options)
    : OnnxSession(model, flow, options, /*training=*/true) {
  Graph& g = *import_.graph;
  Builder b(g);
  Value* loss_value = Anchor(loss);
  TG_CHECK(loss_value->type().numel() == 1 && IsFloating(loss_value->type().dtype), kInvalidInput,
           "the loss '", loss, "' must be a floating-point scalar, it is ",
           loss_value->type().ToString());
  ParamGroup group;
  group.hyper = optimizer.hyper;
  for (const auto& name : options.trainable)
    TG_CHECK(std::count(weights_.begin(), weights_.end(), name), kInvalidInput, "trainable names '",
             name, "', which is not a floating-point initializer of the ONNX model");
  for (const auto& name : weights_) {
    Value* w = g.FindValue(name);
    if (w == nullptr || !w->trainable()) continue;
    if (!options.trainable.empty() &&
        !std::count(options.trainable.begin(), options.trainable.end(), name)) {
      w->set_trainable(false);  // kept as it is
      continue;
    }
    group.params.push_back(w);
  }
  TG_CHECK(!group.params.empty(), kInvalidInput, "the ONNX model has no trainable weights "
           "(floating-point initializers)");
  OptimizerConfig config = optimizer.config;
  if (options.replicas > 1) {
    GradientReduction reduction;
    reduction.group_size = options.replicas;
    config.reduce_gradients = GradientAllReduce(reduction);
  }
  TrainingStepInfo info = AddTrainingStep(b, loss_value, {group}, config);
  hyperparams_ = info.hyperparams;
  Compile(PipelineKind::kTraining, hyperparams_);
}

void TrainingSession::SetLearningRate(double lr) {
  for (const auto& [name, v] : hyperparams_) {
    (void)v;
    if (name.size() >= 3 && name.compare(name.size() - 3, 3, ".lr") == 0)
      exe_->SetHyperParam(name, lr);
  }
}

}  // namespace tg
