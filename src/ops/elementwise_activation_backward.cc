// Activation backward helpers: threshold_backward (relu), gelu_backward, silu_backward,
// hardswish_backward, sigmoid_backward, tanh_backward. Each takes (grad_output, x or y) and is
// one elementwise op with block functions, so an activation's backward fuses into one kernel.
// Formulas follow PyTorch's CPU backward kernels. Not differentiable (no double backward).
#include <cmath>

#include "ops/elementwise_common.h"

namespace tg::ew {
namespace {


// params[0]: threshold. go where x > threshold, else 0.
struct ThresholdBackward {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kThresholdBackward;
  template <typename T> TG_EW_INLINE static T Apply(T go, T x, const double* p) {
    return x <= static_cast<T>(p[0]) ? T(0) : go;
  }
};
// params[0]: 0 = exact, 1 = tanh approximation (a modal op: see WithMode).
struct GeluBackward {
  static constexpr bool kModal = true;
  static constexpr cpu::JitOp kJit = cpu::JitOp::kGeluBackward;
  template <typename T> TG_EW_INLINE static T Apply(T go, T x, const double* p) {
    return p[0] != 0 ? Eval<true>(go, x, p) : Eval<false>(go, x, p);
  }
  template <bool kTanh, typename T> TG_EW_INLINE static T Eval(T go, T x, const double*) {
    if constexpr (kTanh) {
      const T beta = T(vmath::kGeluTanhBeta), kappa = T(vmath::kGeluTanhKappa);
      T x_sq = x * x;
      T inner = beta * (x + kappa * x_sq * x);
      T t = vmath::Tanh(inner);
      T left = T(0.5) * x;
      T right = T(1) + t;
      T left_derivative = T(0.5) * right;
      T inner_derivative = beta * (T(1) + T(3) * kappa * x_sq);
      T right_derivative = left * (T(1) - t * t) * inner_derivative;
      return go * (left_derivative + right_derivative);
    } else {
      const T alpha = T(vmath::kSqrt1_2), beta = T(vmath::kGeluPdfScale);
      T cdf = T(0.5) * (T(1) + vmath::ErfFast(x * alpha));  // as the forward; one exp, not two
      T pdf = beta * vmath::ExpNonPositive(x * x * T(-0.5));
      return go * (cdf + x * pdf);
    }
  }
};
struct SiluBackward {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kSiluBackward;
  template <typename T> TG_EW_INLINE static T Apply(T go, T x, const double*) {
    T s = vmath::Sigmoid(x);
    return go * s * (T(1) + x * (T(1) - s));
  }
};
struct HardswishBackward {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kHardswishBackward;
  template <typename T> TG_EW_INLINE static T Apply(T go, T x, const double*) {
    if (x < T(-3)) return T(0);
    if (x <= T(3)) return go * (x / T(3) + T(0.5));
    return go;
  }
};
struct SigmoidBackward {  // (go, y)
  static constexpr cpu::JitOp kJit = cpu::JitOp::kSigmoidBackward;
  template <typename T> TG_EW_INLINE static T Apply(T go, T y, const double*) {
    return go * (T(1) - y) * y;
  }
};
struct TanhBackward {  // (go, y)
  static constexpr cpu::JitOp kJit = cpu::JitOp::kTanhBackward;
  template <typename T> TG_EW_INLINE static T Apply(T go, T y, const double*) {
    return go * (T(1) - y * y);
  }
};

template <typename Op>
OpDef BackwardOp(std::string name, std::string doc, ParamsFn params = {},
                 std::vector<AttrSpec> attrs = {}, std::vector<AttrMap> sample_attrs = {{}},
                 InputInit second = InputInit::Normal()) {
  OpDef def;
  def.name = name;
  def.num_inputs = 2;
  def.attrs = attrs;
  def.infer = BroadcastInfer(name, kFloats);
  def.not_differentiable = true;
  def.traits.elementwise = true;
  def.traits.inplace_input = 0;
  def.elementwise = BinaryElementwise<Op>(params);
  def.kernels[DeviceKind::kCpu] = BinaryCpuKernel<Op, kFloats>(params);
  def.kernels[DeviceKind::kReference] = BinaryReferenceKernel<Op, kFloats>(params);
  for (const AttrMap& a : sample_attrs) {
    for (Shape shape : {Shape{3, 4}, Shape{}, Shape{300, 256}}) {
      def.samples.push_back(OpSample{{{DType::kF32, shape}, {DType::kF32, shape}}, a,
                                     {InputInit::Normal(), second}});
    }
  }
  def.doc = doc;
  return def;
}

}  // namespace

void RegisterActivationBackwardOps(OpRegistry& r) {
  r.Register(BackwardOp<ThresholdBackward>(
      "threshold_backward", "relu backward: grad_output where x > threshold, else 0",
      [](const AttrMap& a) { return std::vector<double>{GetFloat(a, "threshold")}; },
      {{"threshold", 0.0}}, {{{"threshold", 0.0}}, {{"threshold", 0.5}}}));
  r.Register(BackwardOp<GeluBackward>(
      "gelu_backward", "gelu backward: grad_output * d gelu(x) / dx",
      [](const AttrMap& a) {
        return std::vector<double>{GetString(a, "approximate") == "tanh" ? 1.0 : 0.0};
      },
      {{"approximate", std::string("none")}},
      {{{"approximate", std::string("none")}}, {{"approximate", std::string("tanh")}}}));
  r.Register(BackwardOp<SiluBackward>("silu_backward",
                                      "silu backward: grad_output * d silu(x) / dx"));
  r.Register(BackwardOp<HardswishBackward>(
      "hardswish_backward", "hardswish backward: grad_output * d hardswish(x) / dx", {}, {}, {{}},
      InputInit::Uniform(-5, 5)));
  r.Register(BackwardOp<SigmoidBackward>(
      "sigmoid_backward", "sigmoid backward from the output y: grad_output * y * (1 - y)", {}, {},
      {{}}, InputInit::Uniform(0.05, 0.95)));
  r.Register(BackwardOp<TanhBackward>(
      "tanh_backward", "tanh backward from the output y: grad_output * (1 - y^2)", {}, {}, {{}},
      InputInit::Uniform(-0.95, 0.95)));
}

}  // namespace tg::ew
