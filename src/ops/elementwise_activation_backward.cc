// Activation backward helpers: threshold_backward (relu), gelu_backward, silu_backward,
// hardswish_backward, sigmoid_backward, tanh_backward. Each takes (grad_output, x or y) and is
// one elementwise op with block functions, so an activation's backward fuses into one kernel.
// Formulas follow PyTorch's CPU backward kernels. Not differentiable (no double backward).
#include <cmath>

#include "ops/elementwise_common.h"

namespace tg::ew {
namespace {

constexpr double kSqrt1_2 = 0.70710678118654752440;
constexpr double kSqrt2 = 1.41421356237309504880;
constexpr double k2_SqrtPi = 1.12837916709551257390;

// params[0]: threshold. go where x > threshold, else 0.
struct ThresholdBackward {
  template <typename T> TG_EW_INLINE static T Apply(T go, T x, const double* p) {
    return x <= static_cast<T>(p[0]) ? T(0) : go;
  }
};
// params[0]: 0 = exact, 1 = tanh approximation (a modal op: see WithMode).
struct GeluBackward {
  static constexpr bool kModal = true;
  template <typename T> TG_EW_INLINE static T Apply(T go, T x, const double* p) {
    return p[0] != 0 ? Eval<true>(go, x, p) : Eval<false>(go, x, p);
  }
  template <bool kTanh, typename T> TG_EW_INLINE static T Eval(T go, T x, const double*) {
    if constexpr (kTanh) {
      const T beta = T(kSqrt2 * k2_SqrtPi * 0.5), kappa = T(0.044715);
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
      const T alpha = T(kSqrt1_2), beta = T(k2_SqrtPi * kSqrt1_2 * 0.5);
      T cdf = T(0.5) * (T(1) + vmath::ErfFast(x * alpha));  // as the forward; one exp, not two
      T pdf = beta * vmath::ExpNonPositive(x * x * T(-0.5));
      return go * (cdf + x * pdf);
    }
  }
};
struct SiluBackward {
  template <typename T> TG_EW_INLINE static T Apply(T go, T x, const double*) {
    T s = vmath::Sigmoid(x);
    return go * s * (T(1) + x * (T(1) - s));
  }
};
struct HardswishBackward {
  template <typename T> TG_EW_INLINE static T Apply(T go, T x, const double*) {
    if (x < T(-3)) return T(0);
    if (x <= T(3)) return go * (x / T(3) + T(0.5));
    return go;
  }
};
struct SigmoidBackward {  // (go, y)
  template <typename T> TG_EW_INLINE static T Apply(T go, T y, const double*) {
    return go * (T(1) - y) * y;
  }
};
struct TanhBackward {  // (go, y)
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
