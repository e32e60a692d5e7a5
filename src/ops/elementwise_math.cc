// Rounding (floor, ceil, round: half to even as torch.round, trunc), the rest of the
// trigonometric and hyperbolic family (tan, asin, acos, atan, sinh, cosh, asinh, acosh,
// atanh) and base-2 / base-10 logarithms. Rounding has a zero gradient (torch's), the
// others the usual derivatives as compositions of existing ops.
#include <cmath>

#include "ops/elementwise_common.h"

namespace tg::ew {
namespace {

#define TG_UNARY_MATH(Name, expr)                                                          \
  struct Name {                                                                            \
    template <typename T> TG_EW_INLINE static T Apply(T x, const double*) { return expr; } \
  };
TG_UNARY_MATH(Floor, std::floor(x))
TG_UNARY_MATH(Ceil, std::ceil(x))
TG_UNARY_MATH(Round, std::nearbyint(x))
TG_UNARY_MATH(Trunc, std::trunc(x))
TG_UNARY_MATH(Tan, std::tan(x))
TG_UNARY_MATH(Asin, std::asin(x))
TG_UNARY_MATH(Acos, std::acos(x))
TG_UNARY_MATH(Atan, std::atan(x))
TG_UNARY_MATH(Sinh, std::sinh(x))
TG_UNARY_MATH(Cosh, std::cosh(x))
TG_UNARY_MATH(Asinh, std::asinh(x))
TG_UNARY_MATH(Acosh, std::acosh(x))
TG_UNARY_MATH(Atanh, std::atanh(x))
TG_UNARY_MATH(Log2, std::log2(x))
TG_UNARY_MATH(Log10, std::log10(x))
#undef TG_UNARY_MATH

// go / f(x), for derivatives of the form 1 / f(x).
GradFn Over(std::function<Value*(Builder&, Value*)> f) {
  return [f](const GradContext& g) {
    return std::vector<Value*>{g.b().Div(g.GO(0), f(g.b(), g.I(0)))};
  };
}

Value* OneMinusSquare(Builder& b, Value* x) {  // 1 - x^2
  return b.Sub(ScalarLike(b, x, 1.0), b.Mul(x, x));
}

}  // namespace

void RegisterMathOps(OpRegistry& r) {
  GradFn zero = [](const GradContext& g) {
    return std::vector<Value*>{g.b().ZerosLike(g.I(0))};
  };
  // Samples away from the jumps (x + 0.25 on a grid of halves avoids integers and .5s).
  InputInit spread = InputInit::Uniform(-3.3, 3.3);
  r.Register(UnaryFloatOp<Floor>({"floor", "largest integer <= x", zero, spread}));
  r.Register(UnaryFloatOp<Ceil>({"ceil", "smallest integer >= x", zero, spread}));
  r.Register(UnaryFloatOp<Round>({"round", "nearest integer, halves to even", zero, spread}));
  r.Register(UnaryFloatOp<Trunc>({"trunc", "x rounded toward zero", zero, spread}));
  r.Register(UnaryFloatOp<Tan>({"tan", "tangent", [](const GradContext& g) {
    Builder& b = g.b();  // go * (1 + tan^2)
    return std::vector<Value*>{
        b.Mul(g.GO(0), b.Add(ScalarLike(b, g.O(0), 1.0), b.Mul(g.O(0), g.O(0))))};
  }, InputInit::Uniform(-1.2, 1.2)}));
  r.Register(UnaryFloatOp<Asin>({"asin", "arcsine", Over([](Builder& b, Value* x) {
    return b.Sqrt(OneMinusSquare(b, x));
  }), InputInit::Uniform(-0.9, 0.9)}));
  r.Register(UnaryFloatOp<Acos>({"acos", "arccosine", Over([](Builder& b, Value* x) {
    return b.Neg(b.Sqrt(OneMinusSquare(b, x)));
  }), InputInit::Uniform(-0.9, 0.9)}));
  r.Register(UnaryFloatOp<Atan>({"atan", "arctangent", Over([](Builder& b, Value* x) {
    return b.Add(ScalarLike(b, x, 1.0), b.Mul(x, x));
  })}));
  r.Register(UnaryFloatOp<Sinh>({"sinh", "hyperbolic sine", Scaled([](const GradContext& g) {
    return g.b().Op1("cosh", {g.I(0)});
  })}));
  r.Register(UnaryFloatOp<Cosh>({"cosh", "hyperbolic cosine", Scaled([](const GradContext& g) {
    return g.b().Op1("sinh", {g.I(0)});
  })}));
  r.Register(UnaryFloatOp<Asinh>({"asinh", "inverse hyperbolic sine",
                                  Over([](Builder& b, Value* x) {
    return b.Sqrt(b.Add(b.Mul(x, x), ScalarLike(b, x, 1.0)));
  })}));
  r.Register(UnaryFloatOp<Acosh>({"acosh", "inverse hyperbolic cosine",
                                  Over([](Builder& b, Value* x) {
    return b.Sqrt(b.Sub(b.Mul(x, x), ScalarLike(b, x, 1.0)));
  }), InputInit::Uniform(1.1, 3.0)}));
  r.Register(UnaryFloatOp<Atanh>({"atanh", "inverse hyperbolic tangent",
                                  Over(OneMinusSquare), InputInit::Uniform(-0.9, 0.9)}));
  r.Register(UnaryFloatOp<Log2>({"log2", "base-2 logarithm", Over([](Builder& b, Value* x) {
    return b.Mul(x, ScalarLike(b, x, std::log(2.0)));
  }), InputInit::Uniform(0.5, 2.0)}));
  r.Register(UnaryFloatOp<Log10>({"log10", "base-10 logarithm", Over([](Builder& b, Value* x) {
    return b.Mul(x, ScalarLike(b, x, std::log(10.0)));
  }), InputInit::Uniform(0.5, 2.0)}));
}

}  // namespace tg::ew
