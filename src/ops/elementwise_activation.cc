// More unary ops PopTorch users reach for: log1p, expm1, leaky_relu, elu (which selu and
// celu decompose to), sin, cos, fmod and remainder by a scalar, following PyTorch's CPU
// kernels (expm1 / log1p keep their precision near 0). Gradients are compositions of
// existing ops.
#include <cmath>

#include "ops/elementwise_common.h"

namespace tg::ew {
namespace {

struct Log1p {
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return std::log1p(x); }
};
struct Expm1 {
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return std::expm1(x); }
};
// params[0]: negative_slope. NaN propagates (x > 0 is false: NaN * slope).
struct LeakyRelu {
  template <typename T> TG_EW_INLINE static T Apply(T x, const double* p) {
    return x > T(0) ? x : x * static_cast<T>(p[0]);
  }
};
// params: {alpha, scale, input_scale}.
struct Elu {
  template <typename T> TG_EW_INLINE static T Apply(T x, const double* p) {
    return x <= T(0) ? std::expm1(x * static_cast<T>(p[2])) * static_cast<T>(p[0] * p[1])
                     : x * static_cast<T>(p[1]);
  }
};

struct Sin {
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return std::sin(x); }
};
struct Cos {
  template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return std::cos(x); }
};
// params[0]: the divisor. fmod truncates (C's %, torch.fmod); remainder floors (Python's %,
// torch.remainder: the result has the divisor's sign). Integers: a zero divisor gives 0
// (torch raises); floats follow IEEE (NaN).
struct FmodScalar {
  template <typename T> TG_EW_INLINE static T Apply(T x, const double* p) {
    if constexpr (std::is_integral_v<T>) {
      T d = static_cast<T>(p[0]);
      return d == 0 ? T{0} : static_cast<T>(x % d);
    } else {
      return std::fmod(x, static_cast<T>(p[0]));
    }
  }
};
struct RemainderScalar {  // fmod, moved into the divisor's sign
  template <typename T> TG_EW_INLINE static T Apply(T x, const double* p) {
    T d = static_cast<T>(p[0]), r = FmodScalar::Apply(x, p);
    return (r != T(0) && ((r < T(0)) != (d < T(0)))) ? static_cast<T>(r + d) : r;
  }
};

ParamsFn Floats(std::vector<std::string> names) {
  return [names](const AttrMap& a) {
    std::vector<double> v;
    for (const std::string& n : names) v.push_back(GetFloat(a, n));
    return v;
  };
}

}  // namespace

void RegisterActivationOps(OpRegistry& r) {
  r.Register(UnaryFloatOp<Log1p>({"log1p", "log(1 + x), accurate near 0",
                                  [](const GradContext& g) {
    Builder& b = g.b();
    return std::vector<Value*>{b.Div(g.GO(0), b.AddScalar(g.I(0), 1.0))};
  }, InputInit::Uniform(-0.5, 2)}));
  r.Register(UnaryFloatOp<Expm1>({"expm1", "e^x - 1, accurate near 0",
                                  Scaled([](const GradContext& g) {
    return g.b().AddScalar(g.O(0), 1.0);  // torch: grad * (result + 1)
  })}));
  r.Register(UnaryFloatOp<LeakyRelu>(
      {"leaky_relu", "x if x > 0 else x * negative_slope",
       [](const GradContext& g) {  // torch: go if x > 0 else go * negative_slope
         Builder& b = g.b();
         Value* x = g.I(0);
         double slope = GetFloat(g.attrs(), "negative_slope");
         return std::vector<Value*>{b.Where(b.Op1("gt", {x, ScalarLike(b, x, 0)}), g.GO(0),
                                            b.MulScalar(g.GO(0), slope))};
       },
       InputInit::Normal(), Floats({"negative_slope"}), {{"negative_slope", 0.01}},
       {{{"negative_slope", 0.01}}, {{"negative_slope", 0.2}}, {{"negative_slope", -0.5}}}}));
  r.Register(UnaryFloatOp<Elu>(
      {"elu", "x * scale if x > 0 else expm1(x * input_scale) * alpha * scale",
       [](const GradContext& g) {  // torch (is_result false): x <= 0: go * k * e^(x * i)
         Builder& b = g.b();
         Value* x = g.I(0);
         double alpha = GetFloat(g.attrs(), "alpha"), scale = GetFloat(g.attrs(), "scale");
         double input_scale = GetFloat(g.attrs(), "input_scale");
         Value* negative = b.Mul(b.MulScalar(g.GO(0), input_scale * alpha * scale),
                                 b.Exp(b.MulScalar(x, input_scale)));
         return std::vector<Value*>{b.Where(b.Op1("le", {x, ScalarLike(b, x, 0)}), negative,
                                            b.MulScalar(g.GO(0), scale))};
       },
       InputInit::Normal(), Floats({"alpha", "scale", "input_scale"}),
       {{"alpha", 1.0}, {"scale", 1.0}, {"input_scale", 1.0}},
       {{{"alpha", 1.0}, {"scale", 1.0}, {"input_scale", 1.0}},
        {{"alpha", 1.6732632423543772}, {"scale", 1.0507009873554805}, {"input_scale", 1.0}},
        {{"alpha", 1.3}, {"scale", 1.0}, {"input_scale", 1.0 / 1.3}}}}));
  r.Register(UnaryFloatOp<Sin>({"sin", "sine", Scaled([](const GradContext& g) {
    return g.b().Op1("cos", {g.I(0)});
  })}));
  r.Register(UnaryFloatOp<Cos>({"cos", "cosine", Scaled([](const GradContext& g) {
    Builder& b = g.b();
    return b.Neg(b.Op1("sin", {g.I(0)}));
  })}));
  // d/dx of x - trunc(x / d) * d (or floor) is 1 between the jumps: go passes through.
  GradFn pass = [](const GradContext& g) { return std::vector<Value*>{g.GO(0)}; };
  r.Register(UnaryFloatOp<FmodScalar, kFloats | kInts>(
      {"fmod_scalar", "x - trunc(x / divisor) * divisor (torch.fmod)", pass,
       InputInit::Uniform(-5, 5), Floats({"divisor"}), {{"divisor", std::nullopt}},
       {{{"divisor", 1.5}}, {{"divisor", -2.0}}}}));
  r.Register(UnaryFloatOp<RemainderScalar, kFloats | kInts>(
      {"remainder_scalar", "x - floor(x / divisor) * divisor (torch.remainder, Python's %)",
       pass, InputInit::Uniform(-5, 5), Floats({"divisor"}), {{"divisor", std::nullopt}},
       {{{"divisor", 1.5}}, {{"divisor", -2.0}}}}));
}

}  // namespace tg::ew
