// Unary floating-point elementwise ops: neg, exp, log, sqrt, rsqrt, abs, reciprocal, relu,
// sigmoid, tanh, silu, hardswish, hardsigmoid, erf, erfc, gelu, pow_scalar, clamp, copy,
// sign.
// Formulas follow PyTorch's CPU kernels; gradients use the activation backward helpers
// (elementwise_activation_backward.cc) so that each backward is one fusable elementwise op.
#include <cmath>
#include <limits>

#include "ops/elementwise_common.h"

namespace tg::ew {
namespace {

constexpr double k2_SqrtPi = 1.12837916709551257390;

struct Neg {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kNeg;
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return -x; }
};
struct Exp {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kExp;
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return vmath::Exp(x); }
};
struct Log {
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return std::log(x); }
};
struct Sqrt {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kSqrt;
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return std::sqrt(x); }
};
struct Rsqrt {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kRsqrt;
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) {
    return T(1) / std::sqrt(x);
  }
};
struct Abs {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kAbs;
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) {
    if constexpr (std::is_integral_v<T>) return x < T{0} ? -x : x;  // std::abs(INT_MIN) is UB
    else return std::abs(x);
  }
};
struct Reciprocal {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kReciprocal;
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return T(1) / x; }
};
struct Relu {  // NaN propagates, as clamp_min(x, 0) in PyTorch
  static constexpr cpu::JitOp kJit = cpu::JitOp::kRelu;
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) {
    return x < T(0) ? T(0) : x;
  }
};
struct Sigmoid {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kSigmoid;
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) {
    return vmath::Sigmoid(x);
  }
};
struct Tanh {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kTanh;
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return vmath::Tanh(x); }
};
struct Silu {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kSilu;
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) {
    return x * vmath::Sigmoid(x);
  }
};
struct Hardswish {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kHardswish;
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) {
    return x * std::min(std::max(x + T(3), T(0)), T(6)) / T(6);
  }
};
struct Hardsigmoid {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kHardsigmoid;
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) {
    return std::min(std::max(x + T(3), T(0)), T(6)) / T(6);
  }
};
struct Erf {
  static constexpr cpu::JitOp kJit = cpu::JitOp::kErf;
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return vmath::Erf(x); }
};
struct Erfc {  // 1 - erf(x) without its cancellation for large x (erfc(5) = 1.5e-12)
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return std::erfc(x); }
};
// params[0]: 0 = exact (erf), 1 = tanh approximation (a modal op: see WithMode).
struct Gelu {
  static constexpr bool kModal = true;
  static constexpr cpu::JitOp kJit = cpu::JitOp::kGelu;
  template <bool kTanh, typename T> TG_EW_INLINE static T Eval(T x, const double*) {
    if constexpr (kTanh) {
      const T beta = T(vmath::kGeluTanhBeta), kappa = T(vmath::kGeluTanhKappa);
      T inner = beta * (x + kappa * x * x * x);
      return T(0.5) * x * (T(1) + vmath::Tanh(inner));
    } else {
      return x * T(0.5) * (T(1) + vmath::ErfFast(x * T(vmath::kSqrt1_2)));
    }
  }
  template <typename T> TG_EW_INLINE static T Apply(T x, const double* p) {
    return p[0] != 0 ? Eval<true>(x, p) : Eval<false>(x, p);
  }
};
// params[0]: the exponent; the special cases follow PyTorch's pow(Tensor, Scalar).
struct PowScalar {
  template <typename T> TG_EW_INLINE static T Apply(T x, const double* p) {
    const double e = p[0];
    if constexpr (std::is_integral_v<T>) {  // torch: integer ** integer, exact and wrapping
      // (a negative or fractional exponent is refused by torch; it gives 0 here, not UB)
      bool valid = e >= 0 && e < 9.2e18 && e == std::floor(e);
      T result = valid ? T{1} : T{0}, base = x;
      for (uint64_t n = valid ? static_cast<uint64_t>(e) : 0; n; n >>= 1) {
        if (n & 1) result *= base;
        base *= base;
      }
      return result;
    } else {
      if (e == 2) return x * x;
      if (e == 3) return x * x * x;
      if (e == 0.5) return std::sqrt(x);
      if (e == -0.5) return T(1) / std::sqrt(x);
      if (e == -1) return T(1) / x;
      if (e == -2) return T(1) / (x * x);
      return std::pow(x, static_cast<T>(e));
    }
  }
};
// params: {min, max}; NaN propagates. Integer inputs clamp in double (bounds may be inf).
struct Clamp {
  template <typename T> TG_EW_INLINE static T Apply(T x, const double* p) {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(std::min(std::max(static_cast<double>(x), p[0]), p[1]));
    } else {
      if (std::isnan(x)) return x;
      return std::min(std::max(x, static_cast<T>(p[0])), static_cast<T>(p[1]));
    }
  }
};
struct Copy { template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return x; } };
struct Sign {
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) {
    return static_cast<T>((T(0) < x) - (x < T(0)));
  }
};

ParamsFn GeluParams() {
  return [](const AttrMap& a) {
    const std::string& mode = GetString(a, "approximate");
    TG_CHECK(mode == "none" || mode == "tanh", kInvalidInput,
             "gelu: expected approximate = \"none\" or \"tanh\", got \"", mode, "\"");
    return std::vector<double>{mode == "tanh" ? 1.0 : 0.0};
  };
}

GradFn Helper(const char* op, bool use_output, AttrMap attrs = {}) {
  return [op, use_output, attrs](const GradContext& g) {
    AttrMap a = attrs;
    for (const auto& [k, v] : g.attrs()) {
      if (k == "approximate") a[k] = v;
    }
    return std::vector<Value*>{g.b().Op1(op, {g.GO(0), use_output ? g.O(0) : g.I(0)}, a)};
  };
}

}  // namespace

void RegisterUnaryOps(OpRegistry& r) {
  const InputInit positive = InputInit::Uniform(0.5, 2);
  r.Register(UnaryFloatOp<Neg, kFloats | kInts>({"neg", "-x", [](const GradContext& g) {
    return std::vector<Value*>{g.b().Neg(g.GO(0))};
  }}));
  r.Register(
      UnaryFloatOp<Exp>({"exp", "e^x", Scaled([](const GradContext& g) { return g.O(0); })}));
  r.Register(UnaryFloatOp<Log>({"log", "natural logarithm", [](const GradContext& g) {
    return std::vector<Value*>{g.b().Div(g.GO(0), g.I(0))};
  }, positive}));
  r.Register(UnaryFloatOp<Sqrt>({"sqrt", "square root", [](const GradContext& g) {
    Builder& b = g.b();
    return std::vector<Value*>{b.Div(g.GO(0), b.MulScalar(g.O(0), 2.0))};
  }, positive}));
  r.Register(UnaryFloatOp<Rsqrt>({"rsqrt", "1 / sqrt(x)", [](const GradContext& g) {
    Builder& b = g.b();  // d/dx x^-1/2 = -0.5 * y^3
    Value* y = g.O(0);
    return std::vector<Value*>{b.Mul(b.MulScalar(g.GO(0), -0.5), b.Mul(y, b.Mul(y, y)))};
  }, positive}));
  r.Register(UnaryFloatOp<Abs, kFloats | kInts>({"abs", "|x|", Scaled([](const GradContext& g) {
    return g.b().Op1("sign", {g.I(0)});
  })}));
  r.Register(UnaryFloatOp<Reciprocal>({"reciprocal", "1 / x", [](const GradContext& g) {
    Builder& b = g.b();
    return std::vector<Value*>{b.Mul(b.Neg(g.GO(0)), b.Mul(g.O(0), g.O(0)))};
  }, positive}));
  r.Register(UnaryFloatOp<Relu, kFloats | kInts>(
      {"relu", "max(x, 0)", Helper("threshold_backward", true)}));
  r.Register(
      UnaryFloatOp<Sigmoid>({"sigmoid", "1 / (1 + e^-x)", Helper("sigmoid_backward", true)}));
  r.Register(UnaryFloatOp<Tanh>({"tanh", "hyperbolic tangent", Helper("tanh_backward", true)}));
  r.Register(UnaryFloatOp<Silu>({"silu", "x * sigmoid(x)", Helper("silu_backward", false)}));
  r.Register(UnaryFloatOp<Hardswish>(
      {"hardswish", "x * relu6(x + 3) / 6", Helper("hardswish_backward", false),
       InputInit::Uniform(-5, 5)}));
  r.Register(UnaryFloatOp<Hardsigmoid>(
      {"hardsigmoid", "relu6(x + 3) / 6",
       [](const GradContext& g) {
         Builder& b = g.b();  // go / 6 where -3 < x < 3, else 0
         Value* x = g.I(0);
         Value* inside = b.Op1("logical_and", {b.Op1("gt", {x, ScalarLike(b, x, -3)}),
                                               b.Op1("lt", {x, ScalarLike(b, x, 3)})});
         return std::vector<Value*>{
             b.Where(inside, b.MulScalar(g.GO(0), 1.0 / 6.0), ScalarLike(b, x, 0))};
       },
       InputInit::Uniform(-5, 5)}));
  r.Register(UnaryFloatOp<Erf>({"erf", "the error function", Scaled([](const GradContext& g) {
    Builder& b = g.b();  // 2/sqrt(pi) * e^(-x^2)
    Value* x = g.I(0);
    return b.MulScalar(b.Exp(b.Neg(b.Mul(x, x))), k2_SqrtPi);
  })}));
  r.Register(UnaryFloatOp<Erfc>({"erfc", "1 - erf(x), accurate where erf(x) is near 1",
                                 Scaled([](const GradContext& g) {
    Builder& b = g.b();  // -2/sqrt(pi) * e^(-x^2)
    Value* x = g.I(0);
    return b.MulScalar(b.Exp(b.Neg(b.Mul(x, x))), -k2_SqrtPi);
  })}));
  r.Register(UnaryFloatOp<Gelu>(
      {"gelu", "x * Phi(x) (approximate = \"none\"), or its tanh approximation",
       Helper("gelu_backward", false), InputInit::Normal(), GeluParams(),
       {{"approximate", std::string("none")}},
       {{{"approximate", std::string("none")}}, {{"approximate", std::string("tanh")}}}}));
  r.Register(UnaryFloatOp<PowScalar, kFloats | kInts>(
      {"pow_scalar", "x ^ exponent",
       [](const GradContext& g) {
         Builder& b = g.b();
         double e = GetFloat(g.attrs(), "exponent");
         Value* d = e == 2 ? b.MulScalar(g.I(0), 2.0)
                           : b.MulScalar(b.Op1("pow_scalar", {g.I(0)}, {{"exponent", e - 1}}), e);
         return std::vector<Value*>{b.Mul(g.GO(0), d)};
       },
       positive, [](const AttrMap& a) { return std::vector<double>{GetFloat(a, "exponent")}; },
       {{"exponent", std::nullopt}},
       {{{"exponent", 2.5}}, {{"exponent", 2.0}}, {{"exponent", -0.5}}, {{"exponent", -1.7}}}}));
  constexpr double kInf = std::numeric_limits<double>::infinity();
  r.Register(UnaryFloatOp<Clamp, kFloats | kInts>(
      {"clamp", "min(max(x, min), max)",
       [](const GradContext& g) {
         // go where min < x < max: PyTorch's measured behaviour (2.14: clamp(0., min=0.)
         // and clamp(1., min=-1., max=1.) both have gradient 0 at the bound).
         Builder& b = g.b();
         Value* x = g.I(0);
         Value* inside = b.Op1(
             "logical_and", {b.Op1("gt", {x, ScalarLike(b, x, GetFloat(g.attrs(), "min"))}),
                             b.Op1("lt", {x, ScalarLike(b, x, GetFloat(g.attrs(), "max"))})});
         return std::vector<Value*>{b.Where(inside, g.GO(0), ScalarLike(b, x, 0))};
       },
       InputInit::Normal(),
       [](const AttrMap& a) {
         return std::vector<double>{GetFloat(a, "min"), GetFloat(a, "max")};
       },
       {{"min", -kInf}, {"max", kInf}},
       {{{"min", -0.5}, {"max", 0.5}},
        {{"min", -0.3}, {"max", kInf}},
        {{"min", -kInf}, {"max", 0.2}}}}));
  r.Register(UnaryFloatOp<Copy>({"copy", "x (a new buffer)", [](const GradContext& g) {
    return std::vector<Value*>{g.GO(0)};
  }}));
  // Piecewise constant: zero gradient, as torch's (softshrink and other losses reach it).
  // Samples away from the jump at 0 (a grid of halves shifted by 0.25, as floor's).
  GradFn zero = [](const GradContext& g) {
    return std::vector<Value*>{g.b().ZerosLike(g.I(0))};
  };
  r.Register(UnaryFloatOp<Sign, kFloats | kInts>(
      {"sign", "-1, 0 or 1 by the sign of x", zero, InputInit::Uniform(-3.3, 3.3)}));
}

}  // namespace tg::ew
