// Loss op family: nll_loss over log-probabilities [N, C] and integer targets [N] with
// reduction none / mean / sum and an ignore_index, and its backward nll_loss_backward.
// (cross_entropy is log_softmax followed by nll_loss.) Kernels: kernels/cpu/loss_kernels.h.
#include "kernels/cpu/loss_kernels.h"
#include "ops/builder.h"
#include "ops/dispatch.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

cpu::LossReduction ReductionOf(const AttrMap& attrs, const std::string& op) {
  const std::string& r = GetString(attrs, "reduction");
  if (r == "none") return cpu::LossReduction::kNone;
  if (r == "mean") return cpu::LossReduction::kMean;
  if (r == "sum") return cpu::LossReduction::kSum;
  Fail(ErrorKind::kInvalidInput, op, ": expected reduction \"none\", \"mean\" or \"sum\", got \"",
       r, "\"");
}

void CheckTarget(const TensorType& target, int64_t n, const std::string& op) {
  TG_CHECK((target.dtype == DType::kI64 || target.dtype == DType::kI32) &&
               target.shape == Shape{n},
           kShape, op, ": expected an integer target of shape [", n, "], got ",
           target.ToString());
}

// Loss shape: [N] for reduction none, a scalar otherwise.
Shape LossShape(cpu::LossReduction r, int64_t n) {
  return r == cpu::LossReduction::kNone ? Shape{n} : Shape{};
}

template <typename Fn>
void DispatchTyped(DType dtype, DType idx, std::string_view op, Fn&& fn) {
  DispatchFloat(dtype, op, [&](auto t) {
    if (idx == DType::kI32) fn(t, int32_t{});
    else fn(t, int64_t{});
  });
}

// Kernel parameters from the [N, C] shape of logp (or of the gradient it receives).
cpu::NllLossParams ParamsOf(const Shape& logp_shape, const AttrMap& attrs, const std::string& op) {
  return {logp_shape[0], logp_shape[1], ReductionOf(attrs, op), GetInt(attrs, "ignore_index")};
}

KernelFactory ForwardFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    cpu::NllLossParams p = ParamsOf(n.input(0)->type().shape, n.attrs(), "nll_loss");
    DType dtype = n.input(0)->type().dtype, idx = n.input(1)->type().dtype;
    return [=](const KernelArgs& a) {
      DispatchTyped(dtype, idx, "nll_loss", [&](auto t, auto i) {
        using T = decltype(t);
        auto* logp = static_cast<const T*>(a.inputs[0]);
        auto* target = static_cast<const decltype(i)*>(a.inputs[1]);
        auto* out = static_cast<T*>(a.outputs[0]);
        if (reference) cpu::NllLossRef(logp, target, out, p);
        else cpu::NllLoss(logp, target, out, p);
      });
    };
  };
}

KernelFactory BackwardFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    cpu::NllLossParams p = ParamsOf(n.output(0)->type().shape, n.attrs(), "nll_loss_backward");
    DType dtype = n.input(0)->type().dtype, idx = n.input(1)->type().dtype;
    return [=](const KernelArgs& a) {
      DispatchTyped(dtype, idx, "nll_loss_backward", [&](auto t, auto i) {
        using T = decltype(t);
        auto* go = static_cast<const T*>(a.inputs[0]);
        auto* target = static_cast<const decltype(i)*>(a.inputs[1]);
        auto* grad = static_cast<T*>(a.outputs[0]);
        if (reference) cpu::NllLossBackwardRef(go, target, grad, p);
        else cpu::NllLossBackward(go, target, grad, p);
      });
    };
  };
}

OpSample Sample(std::vector<TensorType> inputs, InputInit target_init, AttrMap attrs,
                bool skip_grad = false) {
  OpSample s;
  s.inputs = std::move(inputs);
  s.init = {InputInit::Normal(), target_init};
  s.attrs = std::move(attrs);
  s.skip_grad_check = skip_grad;
  return s;
}

AttrMap LossAttrs(const char* reduction, int64_t ignore_index) {
  return {{"reduction", std::string(reduction)}, {"ignore_index", ignore_index}};
}

void RegisterNllLoss(OpRegistry& r) {
  OpDef d;
  d.name = "nll_loss";
  d.num_inputs = 2;
  d.attrs = {{"reduction", Attr(std::string("mean"))}, {"ignore_index", Attr(int64_t{-100})}};
  d.doc = "Negative log-likelihood -logp[i, target[i]] reduced by none / mean (over "
          "non-ignored targets) / sum.";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& logp = c.in(0);
    TG_CHECK(logp.rank() == 2 && IsFloating(logp.dtype), kShape,
             "nll_loss: expected floating log-probabilities [N, C], got ", logp.ToString());
    CheckTarget(c.in(1), logp.shape[0], "nll_loss");
    return {{logp.dtype, LossShape(ReductionOf(c.attrs, "nll_loss"), logp.shape[0])}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    AttrMap a = g.attrs();
    a["num_classes"] = g.I(0)->type().shape[1];
    return {g.b().Op1("nll_loss_backward", {g.GO(0), g.I(1)}, a), nullptr};
  };
  d.kernels[DeviceKind::kCpu] = ForwardFactory(false);
  d.kernels[DeviceKind::kReference] = ForwardFactory(true);
  auto f32 = [](Shape s) { return TensorType{DType::kF32, std::move(s)}; };
  auto i64 = [](Shape s) { return TensorType{DType::kI64, std::move(s)}; };
  auto i32 = [](Shape s) { return TensorType{DType::kI32, std::move(s)}; };
  d.samples = {Sample({f32({4, 5}), i64({4})}, InputInit::Ints(0, 5), LossAttrs("mean", -100)),
               Sample({f32({4, 5}), i64({4})}, InputInit::Ints(0, 5), LossAttrs("sum", -100)),
               Sample({f32({4, 5}), i64({4})}, InputInit::Ints(0, 5), LossAttrs("none", -100)),
               Sample({f32({8, 3}), i64({8})}, InputInit::Ints(0, 3), LossAttrs("mean", 0)),
               Sample({f32({8, 3}), i64({8})}, InputInit::Ints(0, 3), LossAttrs("sum", 0)),
               Sample({f32({8, 3}), i32({8})}, InputInit::Ints(0, 3), LossAttrs("none", 0)),
               Sample({f32({512, 100}), i64({512})}, InputInit::Ints(0, 100),
                      LossAttrs("mean", 1), true)};
  r.Register(std::move(d));
}

void RegisterNllLossBackward(OpRegistry& r) {
  OpDef d;
  d.name = "nll_loss_backward";
  d.num_inputs = 2;
  d.attrs = {{"num_classes", std::nullopt},
             {"reduction", Attr(std::string("mean"))},
             {"ignore_index", Attr(int64_t{-100})}};
  d.doc = "Gradient of nll_loss w.r.t. logp [N, num_classes] from GO and the targets; the "
          "output has GO's dtype.";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& go = c.in(0);
    const TensorType& target = c.in(1);
    TG_CHECK(target.rank() == 1, kShape, "nll_loss_backward: expected a target of rank 1, got ",
             target.ToString());
    int64_t n = target.shape[0];
    CheckTarget(target, n, "nll_loss_backward");
    Shape want = LossShape(ReductionOf(c.attrs, "nll_loss_backward"), n);
    TG_CHECK(IsFloating(go.dtype) && go.shape == want, kShape,
             "nll_loss_backward: expected a floating gradient of shape ", ShapeToString(want),
             ", got ", go.ToString());
    return {{go.dtype, {n, GetInt(c.attrs, "num_classes")}}};
  };
  d.not_differentiable = true;
  d.kernels[DeviceKind::kCpu] = BackwardFactory(false);
  d.kernels[DeviceKind::kReference] = BackwardFactory(true);
  auto sample = [](Shape go, int64_t n, int64_t c, const char* red, int64_t ignore) {
    AttrMap a = LossAttrs(red, ignore);
    a["num_classes"] = c;
    return Sample({{DType::kF32, go}, {DType::kI64, {n}}}, InputInit::Ints(0, c), a);
  };
  d.samples = {sample({}, 4, 5, "mean", -100), sample({}, 8, 3, "sum", 0),
               sample({8}, 8, 3, "none", 0), sample({}, 8, 3, "mean", 1)};
  r.Register(std::move(d));
}

}  // namespace

void RegisterLossOps(OpRegistry& r) {
  RegisterNllLoss(r);
  RegisterNllLossBackward(r);
}

}  // namespace tg
