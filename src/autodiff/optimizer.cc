#include "autodiff/optimizer.h"

#include <cmath>
#include <map>

#include "autodiff/autodiff.h"
#include "support/error.h"

namespace tg {

const char* OptimizerKindName(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSGD: return "SGD";
    case OptimizerKind::kAdam: return "Adam";
    case OptimizerKind::kAdamW: return "AdamW";
    case OptimizerKind::kRMSprop: return "RMSprop";
    case OptimizerKind::kLamb: return "LAMB";
  }
  return "?";
}

std::string HyperParamName(size_t group, const std::string& field) {
  return "group" + std::to_string(group) + "." + field;
}

namespace {

// Builds one parameter's update. `h(field)` returns the group's f64 scalar hyperparam,
// `t(x)` casts an f64 scalar to the parameter dtype.
class UpdateBuilder {
 public:
  UpdateBuilder(Builder& b, const OptimizerConfig& config, TrainingStepInfo& info)
      : b_(b), config_(config), info_(info) {}

  Value* Hyper(size_t group, const std::string& field, double initial) {
    std::string name = HyperParamName(group, field);
    if (Value* v = b_.graph().FindValue(name)) return v;
    info_.hyperparams[name] = initial;
    return b_.graph().AddHyperParam(name, TensorType{DType::kF64, {}});
  }

  // Optimizer state of the parameter being updated: its shape, or its shard's when the
  // state is sharded across replicas; of the parameter's dtype, or for a half parameter of
  // the configured state dtype, read in the compute dtype. `second`: a second-moment state.
  Value* State(Value*, const std::string& what, bool second = false) {
    TensorType type = state_type_;
    if (IsHalf(param_->type().dtype)) {
      type.dtype = second ? config_.half_second_moment_dtype : config_.half_first_moment_dtype;
    }
    Value* v = b_.graph().AddVariable(param_->name() + "." + what, type, false);
    info_.state_variables.push_back(v->name());
    Value* read = b_.Cast(v, state_type_.dtype);
    state_of_[read] = v;
    return read;
  }
  // The state's new value (computed in the compute dtype), stored in the state's dtype.
  void SetState(Value* read, Value* value) {
    Value* v = state_of_.at(read);
    b_.graph().SetUpdate(v, b_.Cast(value, v->type().dtype));
  }
  // The parameter's new value (of the shape its arithmetic ran in: the shard when sharded).
  void SetParam(Value* value);

  void Update(Value* p, Value* grad, size_t group, const OptimizerHyperParams& hp, Value* step,
              Value* loss_scale);

  // Sharded state: each parameter's reduce-scattered gradient shard, unscaled, as the
  // updates read it (what automatic loss scaling checks for inf / NaN).
  const std::vector<Value*>& sharded_grads() const { return sharded_grads_; }

  // Clipping by the global norm: every unscaled gradient is multiplied by this f64 scalar.
  void set_clip_factor(Value* factor) { clip_factor_ = factor; }

 private:
  Value* T(Value* scalar, Value* p) { return b_.Cast(scalar, p->type().dtype); }
  Value* One() { return b_.Scalar(1.0, DType::kF64); }
  void Sgd(Value* p, Value* g, size_t group, const OptimizerHyperParams& hp, Value* step);
  void Adam(Value* p, Value* g, size_t group, const OptimizerHyperParams& hp, Value* step,
            bool decoupled);
  void RmsProp(Value* p, Value* g, size_t group, const OptimizerHyperParams& hp, Value* step);
  void Lamb(Value* p, Value* g, size_t group, const OptimizerHyperParams& hp, Value* step);
  Value* Norm(Value* x) {  // the 2-norm of all of x's elements, a rank-0 value
    std::vector<int64_t> axes(x->type().shape.size());
    for (size_t i = 0; i < axes.size(); ++i) axes[i] = static_cast<int64_t>(i);
    return b_.Sqrt(b_.Sum(b_.Mul(x, x), axes));
  }

  Builder& b_;
  const OptimizerConfig& config_;
  TrainingStepInfo& info_;
  // The parameter's new value rounded to its dtype (stochastically when configured).
  Value* RoundToParam(Value* value);

  Value* param_ = nullptr;   // the parameter variable being updated
  TensorType state_type_;    // its state's shape, in the dtype the update computes in
  std::map<Value*, Value*> state_of_;  // State()'s value read -> the state variable
  int64_t shard_ = 0;        // sharded: elements of one replica's shard (0: not sharded)
  std::vector<Value*> sharded_grads_;
  Value* clip_factor_ = nullptr;
};

Value* UpdateBuilder::RoundToParam(Value* value) {
  DType to = param_->type().dtype;
  if (value->type().dtype == to) return value;
  if (config_.stochastic_rounding && IsHalf(to)) {
    return b_.Op1("stochastic_round", {value}, {{"dtype", to}});
  }
  return b_.Cast(value, to);
}

void UpdateBuilder::SetParam(Value* value) {
  value = RoundToParam(value);
  if (shard_ == 0) {
    b_.graph().SetUpdate(param_, value);
    return;
  }
  // Every replica's updated shard, gathered; the padding dropped; the parameter's shape.
  const TensorType& t = param_->type();
  Value* all = b_.Op1("all_gather", {value}, {{"group_size", config_.shard_state_group}});
  Value* used = b_.Op1("slice", {all}, {{"axis", int64_t{0}}, {"start", int64_t{0}},
                                        {"end", t.numel()}, {"step", int64_t{1}}});
  b_.graph().SetUpdate(param_, b_.Reshape(used, t.shape));
}

void UpdateBuilder::Update(Value* p, Value* grad, size_t group, const OptimizerHyperParams& hp,
                           Value* step, Value* loss_scale) {
  param_ = p;
  state_type_ = p->type();
  shard_ = 0;
  // Half parameters update in f32, rounded once (SetParam).
  state_type_.dtype = ArithmeticDType(p->type().dtype);
  p = b_.Cast(p, state_type_.dtype);
  grad = b_.Cast(grad, state_type_.dtype);
  Value* g = grad;
  if (loss_scale != nullptr) g = b_.Div(g, T(loss_scale, p));
  if (clip_factor_ != nullptr) g = b_.Mul(g, T(clip_factor_, p));
  if (config_.maximize) g = b_.Neg(g);  // torch: before weight decay and the state
  if (config_.shard_state_group > 1) {
    // Replicated tensor sharding (ZeRO stage 1): flatten and pad to a multiple of the group;
    // the gradient is reduce-scattered (each replica gets the reduced rows of its shard), the
    // parameter's shard is this replica's rows, and the state has the shard's shape.
    int64_t n = p->type().numel(), G = config_.shard_state_group;
    shard_ = (n + G - 1) / G;
    auto flat_padded = [&](Value* v) {
      Value* flat = b_.Reshape(v, {n});
      if (shard_ * G == n) return flat;
      Value* pad = b_.Full({shard_ * G - n}, 0.0, v->type().dtype);
      return b_.Op1("cat", {flat, pad}, {{"axis", int64_t{0}}});
    };
    if (config_.kind == OptimizerKind::kLamb) {
      Fail(ErrorKind::kUnsupported, "LAMB with replicated tensor sharding: its trust ratio "
           "needs norms of whole parameters, and the state is sharded; turn sharding off");
    }
    g = b_.Op1("reduce_scatter", {flat_padded(g)},
               {{"group_size", G},
                {"reduction", std::string(config_.shard_state_mean ? "mean" : "sum")}});
    p = b_.Op1("replica_shard", {flat_padded(p)}, {{"group_size", G}});
    state_type_ = TensorType{state_type_.dtype, {shard_}};
    sharded_grads_.push_back(g);
  }
  // The parameter's own step count, as eager keeps one per parameter (its state's "step",
  // or the momentum buffer's first use): a parameter without a gradient in some steps (frozen
  // for a while, or on a branch another program took) counts only the steps that updated it.
  if (config_.kind != OptimizerKind::kSGD || config_.use_momentum) {
    Value* own = b_.graph().AddVariable(param_->name() + ".step", step->type(), false);
    info_.state_variables.push_back(own->name());
    b_.graph().SetUpdate(own, b_.AddScalar(own, 1.0));
    step = own;
  }
  switch (config_.kind) {
    case OptimizerKind::kSGD: Sgd(p, g, group, hp, step); break;
    case OptimizerKind::kAdam: Adam(p, g, group, hp, step, false); break;
    case OptimizerKind::kAdamW: Adam(p, g, group, hp, step, true); break;
    case OptimizerKind::kRMSprop: RmsProp(p, g, group, hp, step); break;
    case OptimizerKind::kLamb: Lamb(p, g, group, hp, step); break;
  }
}

// torch.optim.SGD: g += wd*p; buf = g (first step) | momentum*buf + (1-dampening)*g;
// g = g + momentum*buf (nesterov) | buf; p += -lr*g.
void UpdateBuilder::Sgd(Value* p, Value* g, size_t group, const OptimizerHyperParams& hp,
                        Value* step) {
  Value* lr = Hyper(group, "lr", hp.lr);
  Value* wd = Hyper(group, "weight_decay", hp.weight_decay);
  g = b_.Add(g, b_.Mul(p, T(wd, p)));
  if (config_.use_momentum) {
    Value* momentum = Hyper(group, "momentum", hp.momentum);
    Value* dampening = Hyper(group, "dampening", hp.dampening);
    Value* buf = State(p, "momentum_buffer");
    Value* later = b_.Add(b_.Mul(buf, T(momentum, p)), b_.Mul(g, T(b_.Sub(One(), dampening), p)));
    Value* first = b_.Op1("eq", {step, b_.Scalar(0.0, step->type().dtype)});
    Value* buf_new = b_.Where(first, g, later);
    SetState(buf, buf_new);
    g = config_.nesterov ? b_.Add(g, b_.Mul(buf_new, T(momentum, p))) : buf_new;
  }
  SetParam(b_.Add(p, b_.Mul(g, T(b_.Neg(lr), p))));
}

// torch.optim.Adam/AdamW (single tensor): t = step+1; (AdamW: p *= 1-lr*wd | Adam: g += wd*p);
// m = lerp(m, g, 1-b1); v = v*b2 + (1-b2)*g*g; denom = sqrt(v)/sqrt(1-b2^t) + eps;
// p += -(lr/(1-b1^t)) * m/denom; amsgrad: vmax = max(vmax, v) replaces v in denom. Without bias correction (PopTorch's
// AdamW(bias_correction=False)): denom = sqrt(v) + eps, p += -lr * m/denom.
void UpdateBuilder::Adam(Value* p, Value* g, size_t group, const OptimizerHyperParams& hp,
                         Value* step, bool decoupled) {
  Value* lr = Hyper(group, "lr", hp.lr);
  Value* wd = Hyper(group, "weight_decay", hp.weight_decay);
  Value* beta1 = Hyper(group, "beta1", hp.beta1);
  Value* beta2 = Hyper(group, "beta2", hp.beta2);
  Value* eps = Hyper(group, "eps", hp.eps);
  Value* m = State(p, "exp_avg");
  Value* v = State(p, "exp_avg_sq", true);
  Value* t = b_.Add(b_.Cast(step, DType::kF64), One());
  Value* param = p;
  if (decoupled) {
    param = b_.Mul(p, T(b_.Sub(One(), b_.Mul(lr, wd)), p));
  } else {
    g = b_.Add(g, b_.Mul(p, T(wd, p)));
  }
  // lerp(m, g, w) = m + w*(g-m) for w < 0.5, as torch computes it.
  Value* m_new = b_.Add(m, b_.Mul(T(b_.Sub(One(), beta1), p), b_.Sub(g, m)));
  // addcmul/addcdiv evaluate left to right: self + (value*t1)*t2, self + (value*t1)/t2.
  Value* v_new = b_.Add(b_.Mul(v, T(beta2, p)), b_.Mul(b_.Mul(T(b_.Sub(One(), beta2), p), g), g));
  Value* second = v_new;  // amsgrad: the largest v so far (torch.maximum, then the root)
  if (config_.amsgrad) {
    Value* v_max = State(p, "max_exp_avg_sq", true);
    second = b_.Op1("maximum", {v_max, v_new});
    SetState(v_max, second);
  }
  Value* neg_step_size = b_.Neg(lr);
  Value* denom = b_.Add(b_.Sqrt(second), T(eps, p));
  if (config_.bias_correction) {
    Value* bc1 = b_.Sub(One(), b_.Op1("pow", {beta1, t}));
    Value* bc2_sqrt = b_.Sqrt(b_.Sub(One(), b_.Op1("pow", {beta2, t})));
    neg_step_size = b_.Neg(b_.Div(lr, bc1));
    denom = b_.Add(b_.Div(b_.Sqrt(second), T(bc2_sqrt, p)), T(eps, p));
  }
  SetState(m, m_new);
  SetState(v, v_new);
  SetParam(b_.Add(param, b_.Div(b_.Mul(T(neg_step_size, p), m_new), denom)));
}

// torch.optim.RMSprop (single tensor): g += wd*p; sq = sq*alpha + (1-alpha)*g*g;
// centered: ga = lerp(ga, g, 1-alpha), avg = sqrt(sq - ga*ga) + eps | avg = sqrt(sq) + eps;
// momentum: buf = buf*momentum + g/avg, p += -lr*buf | p += -lr * g/avg.
// TensorFlow's variant (PopART's): sq starts at ones (read as ones on the first step, when
// the zero-initialized state has never been written), avg = sqrt(sq [- ga*ga] + eps), and
// with momentum buf = buf*momentum + lr*(g/avg), p -= buf.
void UpdateBuilder::RmsProp(Value* p, Value* g, size_t group, const OptimizerHyperParams& hp,
                            Value* step) {
  const bool tf = config_.rmsprop_tf_variant;
  Value* lr = Hyper(group, "lr", hp.lr);
  Value* wd = Hyper(group, "weight_decay", hp.weight_decay);
  Value* alpha = Hyper(group, "alpha", hp.alpha);
  Value* eps = Hyper(group, "eps", hp.eps);
  g = b_.Add(g, b_.Mul(p, T(wd, p)));
  Value* sq = State(p, "square_avg", true);
  Value* sq_old = sq;
  if (tf) {
    Value* first = b_.Op1("eq", {step, b_.Scalar(0.0, step->type().dtype)});
    sq_old = b_.Where(first, b_.Full({}, 1.0, sq->type().dtype), sq);
  }
  Value* sq_new =
      b_.Add(b_.Mul(sq_old, T(alpha, p)), b_.Mul(b_.Mul(T(b_.Sub(One(), alpha), p), g), g));
  SetState(sq, sq_new);
  Value* avg_sq = sq_new;
  if (config_.centered) {
    Value* ga = State(p, "grad_avg");
    Value* ga_new = b_.Add(ga, b_.Mul(T(b_.Sub(One(), alpha), p), b_.Sub(g, ga)));
    SetState(ga, ga_new);
    avg_sq = b_.Sub(sq_new, b_.Mul(ga_new, ga_new));
  }
  Value* avg = tf ? b_.Sqrt(b_.Add(avg_sq, T(eps, p))) : b_.Add(b_.Sqrt(avg_sq), T(eps, p));
  Value* neg_lr = T(b_.Neg(lr), p);
  if (config_.use_momentum) {
    Value* momentum = Hyper(group, "momentum", hp.momentum);
    Value* buf = State(p, "momentum_buffer");
    Value* update = b_.Div(g, avg);
    if (tf) update = b_.Mul(T(lr, p), update);
    Value* buf_new = b_.Add(b_.Mul(buf, T(momentum, p)), update);
    SetState(buf, buf_new);
    SetParam(tf ? b_.Sub(p, buf_new) : b_.Add(p, b_.Mul(buf_new, neg_lr)));
  } else {
    SetParam(b_.Add(p, b_.Div(b_.Mul(neg_lr, g), avg)));
  }
}

// LAMB, as poptorch.optim.LAMB: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; with bias
// correction m /= 1-b1^t, v /= 1-b2^t (t = step+1); r = m/(sqrt(v)+eps) + wd*p;
// r1 = min(||p||, max_weight_norm), r2 = ||r||; trust = r1/r2 where ||p|| and r2 are > 0,
// else 1 (a zero-initialized parameter moves at lr; a variable max_weight_norm of 0 freezes
// the others, as PopART's); trust = 1 in groups whose trust_ratio is 0 (PopTorch's constant
// max_weight_norm of 0: Adam's step); p -= lr*trust*r. The norms are over the whole
// parameter.
void UpdateBuilder::Lamb(Value* p, Value* g, size_t group, const OptimizerHyperParams& hp,
                         Value* step) {
  Value* lr = Hyper(group, "lr", hp.lr);
  Value* wd = Hyper(group, "weight_decay", hp.weight_decay);
  Value* beta1 = Hyper(group, "beta1", hp.beta1);
  Value* beta2 = Hyper(group, "beta2", hp.beta2);
  Value* eps = Hyper(group, "eps", hp.eps);
  Value* max_norm = Hyper(group, "max_weight_norm", hp.max_weight_norm);
  Value* use_trust = Hyper(group, "trust_ratio", hp.trust_ratio);
  Value* m = State(p, "exp_avg");
  Value* v = State(p, "exp_avg_sq", true);
  Value* m_new = b_.Add(b_.Mul(m, T(beta1, p)), b_.Mul(g, T(b_.Sub(One(), beta1), p)));
  Value* v_new = b_.Add(b_.Mul(v, T(beta2, p)), b_.Mul(b_.Mul(g, g), T(b_.Sub(One(), beta2), p)));
  SetState(m, m_new);
  SetState(v, v_new);
  Value* m_hat = m_new;
  Value* v_hat = v_new;
  if (config_.bias_correction) {
    Value* t = b_.Add(b_.Cast(step, DType::kF64), One());
    m_hat = b_.Div(m_new, T(b_.Sub(One(), b_.Op1("pow", {beta1, t})), p));
    v_hat = b_.Div(v_new, T(b_.Sub(One(), b_.Op1("pow", {beta2, t})), p));
  }
  Value* r = b_.Add(b_.Div(m_hat, b_.Add(b_.Sqrt(v_hat), T(eps, p))), b_.Mul(p, T(wd, p)));
  Value* p_norm = Norm(p);
  Value* r1 = b_.Op1("minimum", {p_norm, T(max_norm, p)});
  Value* r2 = Norm(r);
  Value* zero = b_.Scalar(0.0, p->type().dtype);
  Value* both = b_.Op1("logical_and", {b_.Op1("gt", {p_norm, zero}), b_.Op1("gt", {r2, zero})});
  both = b_.Op1("logical_and", {both, b_.Op1("gt", {T(use_trust, p), zero})});
  Value* trust = b_.Where(both, b_.Div(r1, r2), b_.Scalar(1.0, p->type().dtype));
  SetParam(b_.Sub(p, b_.Mul(b_.Mul(T(lr, p), trust), r)));
}

}  // namespace

namespace {
// The device of the node producing v (model parallelism); 0 for graph inputs and variables.
int PlacementOf(const Value* v) { return v->producer() ? v->producer()->placement() : 0; }

// A bool scalar on device 0: every element of every gradient is finite. x * 0 is 0 for
// finite x and NaN for inf / NaN, so one sum per gradient says it (a plain sum could
// overflow). Model parallelism: each device sums its own gradients; only the scalars cross.
// (Every device's updates then wait for every device's gradients: a pipelined program runs
// sharded, parallel/pipeline_order.h says why.)
Value* AllFinite(Builder& b, const std::vector<Value*>& grads) {
  Value* total = nullptr;
  for (Value* grad : grads) {
    b.set_placement(PlacementOf(grad));
    Value* zero = b.Cast(b.Sum(b.MulScalar(grad, 0.0), {}), DType::kF32);
    b.set_placement(0);
    total = total ? b.Add(total, zero) : zero;
  }
  TG_CHECK(total != nullptr, kInvalidInput, "automatic loss scaling: no gradients");
  return b.Op1("eq", {total, b.Scalar(0.0, DType::kF32)});
}

// Clipping by the global norm: min(1, max_norm / ||grads / loss_scale||), an f64 scalar on
// device 0. Each gradient's squares are summed on its device (in f32; half gradients cast
// up), the sums added in f64 on device 0. A zero or NaN norm gives 1 (NaN gradients stay
// NaN; automatic loss scaling skips such a step), an inf max_norm gives 1.
Value* GlobalNormClipFactor(Builder& b, const std::vector<Value*>& grads, Value* max_norm,
                            Value* loss_scale) {
  Value* total = nullptr;
  for (Value* grad : grads) {
    b.set_placement(PlacementOf(grad));
    Value* x = b.Cast(grad, ArithmeticDType(grad->type().dtype));
    Value* squares = b.Cast(b.Sum(b.Mul(x, x), {}), DType::kF64);
    b.set_placement(0);
    total = total ? b.Add(total, squares) : squares;
  }
  TG_CHECK(total != nullptr, kInvalidInput, "max_grad_norm: no gradients to clip");
  Value* limit = loss_scale ? b.Mul(max_norm, loss_scale) : max_norm;
  Value* ratio = b.Div(limit, b.Sqrt(total));
  Value* one = b.Scalar(1.0, DType::kF64);
  return b.Where(b.Op1("lt", {ratio, one}), ratio, one);
}

// Every update from `first` on keeps the variable's value unless the step is finite (each
// choice on the device computing the update).
void SkipUnlessFinite(Builder& b, Value* finite, size_t first) {
  Graph& g = b.graph();
  const size_t end = g.updates().size();
  for (size_t i = first; i < end; ++i) {
    VariableUpdate u = g.updates()[i];
    b.set_placement(PlacementOf(u.value));
    g.SetUpdate(u.variable, b.Where(finite, u.value, u.variable), u.on_optimizer_step);
  }
  b.set_placement(0);
}

// Back off on an overflow, grow after growth_interval finite steps; count skipped steps.
void AdjustLossScale(Builder& b, const OptimizerConfig& config, Value* finite, Value* scale_log2,
                     TrainingStepInfo& info) {
  Graph& g = b.graph();
  TensorType scalar{DType::kF32, {}};
  Value* good = g.AddVariable("optimizer.loss_scale_good_steps", scalar, false);
  Value* skipped = g.AddVariable("optimizer.skipped_steps", scalar, false);
  info.state_variables.push_back(good->name());
  info.state_variables.push_back(skipped->name());
  Value* good_next = b.AddScalar(good, 1.0);
  Value* grow = b.Op1("ge", {good_next, b.Scalar(double(config.loss_scale_growth_interval))});
  Value* grown = b.AddScalar(scale_log2, std::log2(config.loss_scale_growth_factor));
  Value* backed_off = b.AddScalar(scale_log2, std::log2(config.loss_scale_backoff_factor));
  g.SetUpdate(scale_log2, b.Where(finite, b.Where(grow, grown, scale_log2), backed_off));
  Value* zero = b.Scalar(0.0);
  g.SetUpdate(good, b.Where(finite, b.Where(grow, zero, good_next), zero));
  g.SetUpdate(skipped, b.Where(finite, skipped, b.AddScalar(skipped, 1.0)));
}
}  // namespace

TrainingStepInfo AddTrainingStep(Builder& b, Value* loss, const std::vector<ParamGroup>& groups,
                                 const OptimizerConfig& config) {
  TrainingStepInfo info;
  Graph& g = b.graph();
  std::vector<Value*> params;
  for (const ParamGroup& group : groups) {
    for (Value* p : group.params) {
      TG_CHECK(p->kind() == ValueKind::kVariable && p->trainable(), kInvalidInput, "%",
               p->name(), " is not a trainable variable");
      params.push_back(p);
    }
  }
  Value* loss_scale = nullptr;
  Value* scale_log2 = nullptr;  // automatic loss scaling's exponent (a state variable)
  if (config.loss_scaling || config.automatic_loss_scaling) {
    loss_scale = g.AddHyperParam("loss_scale", TensorType{DType::kF64, {}});
    info.hyperparams["loss_scale"] = 1.0;
  }
  if (config.automatic_loss_scaling) {
    scale_log2 = g.AddVariable("optimizer.loss_scale_log2", TensorType{DType::kF32, {}}, false);
    info.state_variables.push_back(scale_log2->name());
    // loss_scale x 2^e, exact in f64 for whole e (the default factors are powers of two).
    loss_scale = b.Mul(loss_scale, b.Op1("pow", {b.Scalar(2.0, DType::kF64),
                                                 b.Cast(scale_log2, DType::kF64)}));
  }
  Value* seed = loss_scale ? b.Cast(loss_scale, loss->type().dtype) : nullptr;
  // A parameter without a differentiable path to the loss (unused by the forward, or only
  // through integer or detached values) has no gradient in eager PyTorch (grad None), and
  // eager's optimizers leave it alone: no weight decay, momentum or step. Its gradient here
  // is zeros (an anchor may read it); it gets no update.
  std::vector<bool> has_path;
  std::vector<Value*> grads = BuildGradients(b, loss, params, seed, &has_path);
  Value* step = g.AddVariable("optimizer.step", TensorType{DType::kF32, {}}, false);
  info.state_variables.push_back(step->name());
  TG_CHECK(config.accumulation_steps >= 1, kInvalidInput, "accumulation_steps must be >= 1, got ",
           config.accumulation_steps);
  // Gradient accumulation: each device counts the micro-batches of the step itself, so that
  // a pipelined schedule (runtime/pipeline.h), where devices are at different micro-batches
  // at a time, never reads another device's counter.
  const bool accumulating = config.accumulation_steps > 1;
  std::map<int, Value*> apply_on;  // device -> bool scalar: this micro-batch applies the step
  auto apply_flag = [&](int device) -> Value* {
    auto it = apply_on.find(device);
    if (it != apply_on.end()) return it->second;
    std::string name = "optimizer.micro_step";
    if (device != 0) name += ".device" + std::to_string(device);
    Value* micro = g.AddVariable(name, TensorType{DType::kF32, {}}, false);
    info.state_variables.push_back(micro->name());
    b.set_placement(device);
    Value* apply = b.Op1("eq", {micro, b.Scalar(config.accumulation_steps - 1.0)});
    g.SetUpdate(micro, b.Where(apply, b.Scalar(0.0), b.AddScalar(micro, 1.0)));
    return apply_on[device] = apply;
  };
  if (accumulating) {
    apply_flag(0);
    for (size_t i = 0; i < grads.size(); ++i) {
      int device = PlacementOf(grads[i]);  // a parameter's state lives on its device
      Value* apply = apply_flag(device);
      b.set_placement(device);
      TensorType acc_type = params[i]->type();
      if (IsHalf(acc_type.dtype)) {
        acc_type.dtype = config.half_grad_accum_dtype;  // half gradients summed in f32
      }
      Value* acc = g.AddVariable(params[i]->name() + ".grad_accum", acc_type, false);
      info.state_variables.push_back(acc->name());
      Value* total = b.Add(acc, b.Cast(grads[i], acc_type.dtype));
      g.SetUpdate(acc, b.Where(apply, b.ZerosLike(acc), total));
      grads[i] = config.accumulation_mean ? b.MulScalar(total, 1.0 / config.accumulation_steps)
                                          : total;
    }
    b.set_placement(0);
  }
  if (config.reduce_gradients && config.shard_state_group <= 1) {
    grads = config.reduce_gradients(b, params, grads);
  }
  // Whether every gradient is finite: of the reduced gradients, or with sharded state of
  // this replica's reduced shards (known once the updates exist), then agreed by all
  // replicas of the group (an inf / NaN anywhere makes the sum NaN), so that they all skip.
  const bool sharded = config.shard_state_group > 1;
  Value* finite = scale_log2 && !sharded ? AllFinite(b, grads) : nullptr;
  size_t first_update = g.updates().size();
  UpdateBuilder ub(b, config, info);
  if (config.max_grad_norm != std::numeric_limits<double>::infinity()) {
    TG_CHECK(config.max_grad_norm > 0, kInvalidInput, "max_grad_norm must be > 0, got ",
             config.max_grad_norm);
    if (sharded) {
      Fail(ErrorKind::kUnsupported, "max_grad_norm with replicated tensor sharding of the "
           "optimizer state: the global norm needs every gradient, and each replica holds a "
           "shard; turn sharding off or leave max_grad_norm unset");
    }
    Value* max_norm = g.AddHyperParam("max_grad_norm", TensorType{DType::kF64, {}});
    info.hyperparams["max_grad_norm"] = config.max_grad_norm;
    ub.set_clip_factor(GlobalNormClipFactor(b, grads, max_norm, loss_scale));
  }
  size_t k = 0;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    for (Value* p : groups[gi].params) {
      info.grad_of[p->name()] = grads[k]->name();
      if (!has_path[k]) {
        ++k;
        continue;
      }
      b.set_placement(PlacementOf(grads[k]));
      ub.Update(p, grads[k++], gi, groups[gi].hyper, step, loss_scale);
    }
  }
  b.set_placement(0);
  if (scale_log2 && sharded) {
    Value* local = b.Op1("logical_not", {AllFinite(b, ub.sharded_grads())});
    Value* nonfinite = b.Op1("all_reduce", {b.Cast(local, DType::kF32)},
                             {{"group_size", config.shard_state_group},
                              {"reduction", std::string("sum")}});
    finite = b.Op1("eq", {nonfinite, b.Scalar(0.0, DType::kF32)});
  }
  g.SetUpdate(step, b.AddScalar(step, 1.0));
  if (finite != nullptr) {
    SkipUnlessFinite(b, finite, first_update);
    AdjustLossScale(b, config, finite, scale_log2, info);
  }
  if (accumulating) {
    // Between optimizer steps, parameters and optimizer state keep their values. (A new
    // device's counter appends its own update after `end`: it is not wrapped.)
    const size_t end = g.updates().size();
    for (size_t i = first_update; i < end; ++i) {
      VariableUpdate u = g.updates()[i];
      int device = PlacementOf(u.value);
      Value* apply = apply_flag(device);
      b.set_placement(device);
      g.SetUpdate(u.variable, b.Where(apply, u.value, u.variable), /*on_optimizer_step=*/true);
    }
    b.set_placement(0);
  }
  return info;
}

}  // namespace tg
