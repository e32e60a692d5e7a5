// Optimizer updates as IR. Given a loss and parameter groups, appends the backward graph
// (BuildGradients) and each parameter's update, written with the exact operation order of
// torch.optim's single-tensor implementations (SGD, Adam, AdamW, RMSprop) so that numbers
// match eager PyTorch; LAMB follows PopTorch's poptorch.optim.LAMB (tilegraph.optim.LAMB
// is its eager reference). Hyperparameters (lr, momentum, betas, weight decay, loss scale, ...)
// become f64 scalar hyperparam values: changing them never recompiles. Scalar arithmetic
// runs in f64 and is cast to the parameter dtype where torch casts its Python scalars.
// Structural choices (momentum on/off, nesterov, centered) are fixed at compile time.
#pragma once

#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "ops/builder.h"

namespace tg {

enum class OptimizerKind { kSGD, kAdam, kAdamW, kRMSprop, kLamb };

struct OptimizerHyperParams {
  double lr = 0.01;
  double momentum = 0.0;      // SGD, RMSprop
  double dampening = 0.0;     // SGD
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999;  // Adam, AdamW
  double eps = 1e-8;          // Adam, AdamW, RMSprop
  double alpha = 0.99;        // RMSprop
  double max_weight_norm = std::numeric_limits<double>::infinity();  // LAMB: clips ||p||
  // LAMB: 1 scales the step by the trust ratio; 0 takes Adam's step (PopTorch's constant
  // max_weight_norm of 0: PopART then builds no trust ratio for the group).
  double trust_ratio = 1.0;
};

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kSGD;
  bool use_momentum = false;  // SGD/RMSprop: momentum buffers exist (momentum != 0)
  bool nesterov = false;      // SGD
  bool centered = false;      // RMSprop
  bool bias_correction = true;  // LAMB, Adam, AdamW: m and v divided by (1 - beta^t)
  bool amsgrad = false;   // Adam, AdamW: the denominator takes the running max of v (state
                          // max_exp_avg_sq), torch's amsgrad
  bool maximize = false;  // SGD, Adam, AdamW, RMSprop: ascend (the gradient negated first)
  bool loss_scaling = false;  // adds hyperparam "loss_scale"; gradients are divided by it
  // Clipping by the global gradient norm (PopTorch's max_grad_norm), when finite: every
  // gradient is multiplied by min(1, max_grad_norm / ||all gradients||), the norm of the
  // unscaled gradients of every trainable parameter together, taken after accumulation and the
  // replicas' reduction. The value is the hyperparam "max_grad_norm" (setOptimizer changes it;
  // inf then stops clipping); inf here: no clipping is built.
  double max_grad_norm = std::numeric_limits<double>::infinity();
  // RMSprop, TensorFlow's variant (PopTorch's use_tf_variant): square_avg starts at ones, eps
  // is added inside the square root, and with momentum the buffer accumulates lr * update.
  bool rmsprop_tf_variant = false;
  // Automatic loss scaling (implies loss_scaling): the scale in use is loss_scale x
  // 2^optimizer.loss_scale_log2. A step whose gradients hold an inf or NaN changes nothing
  // (parameters, optimizer state, step counter), multiplies the scale by backoff_factor and
  // counts itself in optimizer.skipped_steps; after growth_interval finite steps in a row the
  // scale grows by growth_factor. All in the engine: no host round trip.
  bool automatic_loss_scaling = false;
  double loss_scale_growth_factor = 2.0;
  double loss_scale_backoff_factor = 0.5;
  int64_t loss_scale_growth_interval = 2000;
  // Gradient accumulation: gradients of `accumulation_steps` consecutive steps (micro-batches)
  // are summed (divided by the count when accumulation_mean) and the optimizer applies them
  // on the last one; on the other steps every parameter and optimizer state keeps its value.
  int accumulation_steps = 1;
  bool accumulation_mean = true;
  // Called with every parameter and its gradient (after accumulation) just before the
  // updates are built; returns the gradients the updates use. Data parallelism sets it to
  // the all-reduce across replicas (parallel/gradient_all_reduce.h). Empty: no hook.
  std::function<std::vector<Value*>(Builder&, const std::vector<Value*>& params,
                                    const std::vector<Value*>& grads)>
      reduce_gradients;
  // Replicated tensor sharding of the optimizer state (ZeRO stage 1) over this many replicas
  // (1: off): each replica keeps 1/group of every state tensor; gradients are
  // reduce-scattered (mean or sum, as the replicas' reduction), updated shards all-gathered.
  // reduce_gradients is not applied to sharded parameters (their reduce-scatter replaces it).
  int64_t shard_state_group = 1;
  bool shard_state_mean = true;
  // Half-precision parameters (f16 / bf16, PopTorch's model.half()): the update is computed in
  // f32 from the half parameter and gradient and rounded to the parameter's dtype once
  // (stochastically when stochastic_rounding: unbiased, so small updates are not lost). The
  // optimizer state of such parameters is kept in these dtypes (PopTorch's accum_type for
  // accumulated gradients, first_order_momentum_accum_type / velocity_accum_type and
  // second_order_momentum_accum_type); f32 parameters keep f32 state.
  DType half_grad_accum_dtype = DType::kF32;
  DType half_first_moment_dtype = DType::kF32;   // SGD momentum, Adam/LAMB m, RMSprop avgs
  DType half_second_moment_dtype = DType::kF32;  // Adam/LAMB v, RMSprop square_avg
  bool stochastic_rounding = false;
};

struct ParamGroup {
  std::vector<Value*> params;  // trainable variables
  OptimizerHyperParams hyper;  // initial values of this group's hyperparams
};

struct TrainingStepInfo {
  // Hyperparam name -> initial value (to SetHyperParam after compiling).
  std::map<std::string, double> hyperparams;
  std::vector<std::string> state_variables;  // created optimizer state (zero-initialized)
  std::map<std::string, std::string> grad_of;  // param name -> gradient value name
};

// Names of one group's hyperparam: "group0.lr", "group1.weight_decay", ...
std::string HyperParamName(size_t group, const std::string& field);

TrainingStepInfo AddTrainingStep(Builder& b, Value* loss, const std::vector<ParamGroup>& groups,
                                 const OptimizerConfig& config);

const char* OptimizerKindName(OptimizerKind kind);

}  // namespace tg
