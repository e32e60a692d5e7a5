// torch.special's unary functions: lgamma, digamma, polygamma (n >= 1), erfinv, ndtri, the
// modified Bessel functions i0, i0e, i1, i1e, and erfcx. Computed in double by
// kernels/cpu/special_functions.h (a float input rounds the double result once); gradients
// as PyTorch's derivatives.yaml writes them, each one more op of this family.
#include <cmath>

#include "kernels/cpu/special_functions.h"
#include "ops/elementwise_common.h"

namespace tg::ew {
namespace {

namespace sf = cpu::special;

template <double (*F)(double)>
struct InDouble {
  template <typename T> static T Apply(T x, const double*) {
    return static_cast<T>(F(static_cast<double>(x)));
  }
};
double LogGamma(double x) { return std::lgamma(x); }

// params[0]: n, the derivative's order (0 is digamma).
struct Polygamma {
  template <typename T> static T Apply(T x, const double* p) {
    return static_cast<T>(sf::Polygamma(static_cast<int>(p[0]), static_cast<double>(x)));
  }
};

Value* Unary(const GradContext& g, const char* op, Value* x) { return g.b().Op1(op, {x}); }

// x == 0 ? 0.5 : value (the limit of I1's derivatives' 1/x terms at 0).
Value* HalfAtZero(Builder& b, Value* x, Value* value) {
  return b.Where(b.Op1("eq", {x, ScalarLike(b, x, 0)}), ScalarLike(b, x, 0.5), value);
}

constexpr double kSqrtPi_2 = 0.88622692545275801365;    // sqrt(pi) / 2
constexpr double kSqrt2Pi = 2.50662827463100050242;     // sqrt(2 pi)
constexpr double k2_SqrtPi = 1.12837916709551257390;    // 2 / sqrt(pi)

}  // namespace

void RegisterSpecialOps(OpRegistry& r) {
  const InputInit positive = InputInit::Uniform(0.5, 4);
  r.Register(UnaryFloatOp<InDouble<LogGamma>>(
      {"lgamma", "log |Gamma(x)|", Scaled([](const GradContext& g) {
         return Unary(g, "digamma", g.I(0));
       }), positive}));
  r.Register(UnaryFloatOp<InDouble<sf::Digamma>>(
      {"digamma", "d/dx lgamma(x) (-inf at +0, NaN at the negative integers)",
       Scaled([](const GradContext& g) {
         return g.b().Op1("polygamma", {g.I(0)}, {{"n", 1.0}});
       }),
       positive}));
  r.Register(UnaryFloatOp<Polygamma>(
      {"polygamma", "the n-th derivative of digamma, n >= 1",
       Scaled([](const GradContext& g) {
         return g.b().Op1("polygamma", {g.I(0)}, {{"n", GetFloat(g.attrs(), "n") + 1}});
       }),
       positive, [](const AttrMap& a) { return std::vector<double>{GetFloat(a, "n")}; },
       {{"n", std::nullopt}}, {{{"n", 1.0}}, {{"n", 2.0}}, {{"n", 3.0}}}}));
  r.Register(UnaryFloatOp<InDouble<sf::ErfInv>>(
      {"erfinv", "the inverse of erf on (-1, 1)", Scaled([](const GradContext& g) {
         Builder& b = g.b();  // sqrt(pi) / 2 * e^(erfinv(x)^2)
         return b.MulScalar(b.Exp(b.Mul(g.O(0), g.O(0))), kSqrtPi_2);
       }),
       InputInit::Uniform(-0.9, 0.9)}));
  r.Register(UnaryFloatOp<InDouble<sf::Ndtri>>(
      {"ndtri", "the inverse of the standard normal distribution function",
       Scaled([](const GradContext& g) {
         Builder& b = g.b();  // sqrt(2 pi) * e^(ndtri(p)^2 / 2)
         return b.MulScalar(b.Exp(b.MulScalar(b.Mul(g.O(0), g.O(0)), 0.5)), kSqrt2Pi);
       }),
       InputInit::Uniform(0.05, 0.95)}));
  r.Register(UnaryFloatOp<InDouble<sf::BesselI0>>(
      {"i0", "the modified Bessel function of the first kind, order 0",
       Scaled([](const GradContext& g) { return Unary(g, "i1", g.I(0)); })}));
  r.Register(UnaryFloatOp<InDouble<sf::BesselI0e>>(
      {"i0e", "exp(-|x|) * i0(x)", Scaled([](const GradContext& g) {
         Builder& b = g.b();  // i1e(x) - sign(x) * i0e(x)
         Value* x = g.I(0);
         return b.Sub(Unary(g, "i1e", x), b.Mul(Unary(g, "sign", x), g.O(0)));
       })}));
  r.Register(UnaryFloatOp<InDouble<sf::BesselI1>>(
      {"i1", "the modified Bessel function of the first kind, order 1",
       Scaled([](const GradContext& g) {
         Builder& b = g.b();  // i0(x) - i1(x) / x, 0.5 at 0
         Value* x = g.I(0);
         return HalfAtZero(b, x, b.Sub(Unary(g, "i0", x), b.Div(g.O(0), x)));
       })}));
  r.Register(UnaryFloatOp<InDouble<sf::BesselI1e>>(
      {"i1e", "exp(-|x|) * i1(x)", Scaled([](const GradContext& g) {
         Builder& b = g.b();  // i0e(x) - i1e(x) * (sign(x) + 1 / x), 0.5 at 0
         Value* x = g.I(0);
         Value* factor = b.Add(Unary(g, "sign", x), b.Op1("reciprocal", {x}));
         return HalfAtZero(b, x, b.Sub(Unary(g, "i0e", x), b.Mul(g.O(0), factor)));
       })}));
  r.Register(UnaryFloatOp<InDouble<sf::Erfcx>>(
      {"erfcx", "exp(x^2) * erfc(x), the scaled complementary error function",
       Scaled([](const GradContext& g) {
         Builder& b = g.b();  // 2 x erfcx(x) - 2 / sqrt(pi)
         return b.AddScalar(b.MulScalar(b.Mul(g.I(0), g.O(0)), 2.0), -k2_SqrtPi);
       }),
       InputInit::Uniform(-2, 4)}));  // (erfcx(-3.4) is past f16's range)
}

}  // namespace tg::ew
