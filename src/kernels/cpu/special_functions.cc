#include "kernels/cpu/special_functions.h"

#include <cmath>
#include <limits>
#include <vector>

namespace tg::cpu::special {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kEps = 1.1102230246251565e-16;  // 2^-53
constexpr double kPi = 3.14159265358979323846;
constexpr double k2_SqrtPi = 1.12837916709551257390;

// B_2j / (2j)!, j = 1..12: the Euler-Maclaurin correction coefficients.
constexpr double kBernoulliOverFactorial[] = {
    1.0 / 12.0,
    -1.0 / 720.0,
    1.0 / 30240.0,
    -1.0 / 1209600.0,
    1.0 / 47900160.0,
    -691.0 / 1307674368000.0,
    1.0 / 74724249600.0,
    -3617.0 / 510.0 / 20922789888000.0,
    43867.0 / 798.0 / 6402373705728000.0,
    -174611.0 / 330.0 / 2432902008176640000.0,
    854513.0 / 138.0 / 1.1240007277776077e21,
    -236364091.0 / 2730.0 / 6.204484017332394e23,
};

// x with erf(x) = y for |y| <= 0.5, or with erfc(x) = q for 0 < q <= 0.5 (`tail`): Halley
// steps on f = erf(x) - y (f = erfc(x) - q), whose f'' / f' is -2x for both, from
// Winitzki's closed form (~2e-3 relative); `log_1my2` is log(1 - y^2) = log(q (2 - q)).
double SolveErf(double target, double log_1my2, bool tail) {
  const double a = 0.147, t = 2.0 / (kPi * a) + 0.5 * log_1my2;
  double x = std::sqrt(std::sqrt(t * t - log_1my2 / a) - t);
  if (!tail) x = std::copysign(x, target);
  for (int i = 0; i < 8; ++i) {
    const double slope = k2_SqrtPi * std::exp(-x * x);
    const double u = tail ? (target - std::erfc(x)) / slope : (std::erf(x) - target) / slope;
    const double step = u / (1.0 + x * u);
    x -= step;
    if (std::abs(step) <= kEps * std::abs(x)) break;
  }
  return x;
}

double InverseErf(double y) {  // |y| <= 0.5
  if (y == 0) return y;  // keeps -0.0
  return SolveErf(y, std::log1p(-y * y), false);
}
// x with erfc(x) = q for 0 < q <= 0.5. Below 1e-280 (f64 subnormals and their neighbours,
// where erfc(x) has few significant bits) Newton steps on log erfc(x) = log erfcx(x) - x^2,
// whose derivative is -2 / (sqrt(pi) erfcx(x)), from the Halley result.
double InverseErfcTail(double q) {
  double x = SolveErf(q, std::log(q * (2.0 - q)), true);
  if (q >= 1e-280) return x;
  const double log_q = std::log(q);
  for (int i = 0; i < 8; ++i) {
    const double scaled = Erfcx(x);
    const double step = (std::log(scaled) - x * x - log_q) * scaled / -k2_SqrtPi;
    x -= step;
    if (std::abs(step) <= kEps * std::abs(x)) break;
  }
  return x;
}

// exp(-a) * I_nu(a) for a >= 0, nu = 0 or 1: the power series sum (a/2)^(2k+nu) /
// (k! (k+nu)!) up to 30 (its terms are all positive: no cancellation), the asymptotic
// expansion beyond (its terms shrink until k ~ 2a; stopped at 1e-17).
double ScaledBesselI(int nu, double a) {
  if (a <= 30.0) {
    double term = nu == 0 ? 1.0 : 0.5 * a, sum = term;
    const double quarter_a2 = 0.25 * a * a;
    for (int k = 1; k < 500 && term > kEps * 0.1 * sum; ++k) {
      term *= quarter_a2 / (static_cast<double>(k) * (k + nu));
      sum += term;
    }
    return std::exp(-a) * sum;
  }
  const double mu = 4.0 * nu * nu;
  double term = 1.0, sum = 1.0;
  for (int k = 1; k < 200; ++k) {
    const double next = -term * (mu - (2.0 * k - 1) * (2.0 * k - 1)) / (8.0 * k * a);
    if (std::abs(next) >= std::abs(term)) break;  // the asymptotic series turns
    term = next;
    sum += term;
    if (std::abs(term) < 1e-17 * std::abs(sum)) break;
  }
  return sum / std::sqrt(2.0 * kPi * a);
}

// I_nu(a) for a >= 0 without overflowing before the result does (e^a overflows at 709.8,
// I0 at 713.9).
double BesselI(int nu, double a) {
  if (a <= 30.0) return std::exp(a) * ScaledBesselI(nu, a);
  return std::exp(a - 0.5 * std::log(a)) * (ScaledBesselI(nu, a) * std::sqrt(a));
}

}  // namespace

double Digamma(double x) {
  if (std::isnan(x)) return x;
  if (x == 0) return std::copysign(kInf, -x);  // torch: -inf at +0, +inf at -0
  if (x < 0) {
    if (x == std::floor(x)) return kNaN;  // poles at the negative integers
    // Reflection psi(x) = psi(1 - x) - pi / tan(pi x); tan's period is 1, and x minus its
    // nearest integer is exact (x - floor(x) would round -1e-30 to 1).
    return Digamma(1.0 - x) - kPi / std::tan(kPi * (x - std::nearbyint(x)));
  }
  double result = 0;
  for (; x < 10.0; x += 1.0) result -= 1.0 / x;  // psi(x) = psi(x + 1) - 1 / x
  const double t = 1.0 / (x * x);  // psi(x) ~ ln x - 1/(2x) - sum B_2k / (2k x^2k)
  const double series =
      t * (1.0 / 12 - t * (1.0 / 120 - t * (1.0 / 252 - t * (1.0 / 240 - t * (
          1.0 / 132 - t * (691.0 / 32760 - t / 12.0))))));
  return result + std::log(x) - 0.5 / x - series;
}

double HurwitzZeta(double s, double q) {
  if (std::isnan(s) || std::isnan(q)) return kNaN;
  if (s == 1.0) return kInf;
  if (s < 1.0) return kNaN;
  if (q <= 0) {
    if (q == std::floor(q)) return kInf;  // a term (q + k)^-s divides by zero
    if (s != std::floor(s)) return kNaN;  // a negative base to a fractional power
    if (q < -1e7) return kNaN;  // the direct sum would take |q| terms (Polygamma reflects)
  }
  // Sum the first terms directly until q + k >= 9, then Euler-Maclaurin for the rest:
  // integral a^(1-s) / (s - 1), half the first term, and the B_2j corrections.
  double sum = 0, a = q;
  for (int k = 0; k < 9 || a < 9.0; ++k, a += 1.0) {
    const double term = std::pow(a, -s);
    sum += term;
    if (k >= 9 && std::abs(term) <= kEps * std::abs(sum)) return sum;
  }
  const double fa = std::pow(a, -s);
  sum += a * fa / (s - 1.0) + 0.5 * fa;
  double derivative = s * fa / a;  // s (s+1) ... (s+2j-2) a^(-s-2j+1)
  for (int j = 1; j <= 12; ++j) {
    const double correction = kBernoulliOverFactorial[j - 1] * derivative;
    sum += correction;
    if (std::abs(correction) <= kEps * std::abs(sum)) break;
    derivative *= (s + 2.0 * j - 1.0) * (s + 2.0 * j) / (a * a);
  }
  return sum;
}

// d^n/dx^n cot(pi x) at x, from c = cot(pi x): P_0(c) = c, P_{k+1}(c) = -pi (1 + c^2) P_k'(c)
// (d/dx cot(pi x) = -pi (1 + cot^2)), evaluated by Horner. `r` is x minus its nearest
// integer (exact), where tan is accurate.
double CotDerivative(int n, double r) {
  const double c = 1.0 / std::tan(kPi * r);
  std::vector<double> p = {0.0, 1.0};  // coefficients of c^0, c^1, ...
  for (int k = 0; k < n; ++k) {
    std::vector<double> next(p.size() + 1, 0.0);
    for (size_t i = 1; i < p.size(); ++i) {  // -pi (1 + c^2) * i p_i c^(i-1)
      next[i - 1] += -kPi * i * p[i];
      next[i + 1] += -kPi * i * p[i];
    }
    p = std::move(next);
  }
  double value = 0;
  for (size_t i = p.size(); i-- > 0;) value = value * c + p[i];
  return value;
}

double Polygamma(int n, double x) {
  if (n == 0) return Digamma(x);
  if (x == kInf) return 0.0;  // every derivative of digamma vanishes at +inf
  if (x < 0 && x != std::floor(x)) {
    // Reflection, differentiated n times from psi(1 - x) - psi(x) = pi cot(pi x):
    // psi^(n)(x) = (-1)^n psi^(n)(1 - x) - pi d^n/dx^n cot(pi x). The zeta sum for a negative
    // argument would take |x| terms (it never ended for x = -1e12).
    const double flip = (n % 2 == 0) ? 1.0 : -1.0;
    return flip * Polygamma(n, 1.0 - x) - kPi * CotDerivative(n, x - std::nearbyint(x));
  }
  const double sign = (n % 2 == 1) ? 1.0 : -1.0;  // (-1)^(n+1)
  return sign * std::exp(std::lgamma(n + 1.0)) * HurwitzZeta(n + 1.0, x);
}

double ErfInv(double y) {
  if (std::isnan(y)) return y;
  const double a = std::abs(y);
  if (a > 1.0) return kNaN;
  if (a == 1.0) return std::copysign(kInf, y);
  if (a <= 0.5) return InverseErf(y);
  return std::copysign(InverseErfcTail(1.0 - a), y);  // 1 - a is exact for a >= 0.5
}

double Ndtri(double p) {
  if (std::isnan(p)) return p;
  if (p < 0.0 || p > 1.0) return kNaN;
  if (p == 0.0) return -kInf;
  if (p == 1.0) return kInf;
  // ndtri(p) = -sqrt(2) erfcinv(2p); 2p and the differences below are exact.
  const double q = 2.0 * p;
  double x;
  if (q < 0.5) x = InverseErfcTail(q);
  else if (q > 1.5) x = -InverseErfcTail(2.0 - q);
  else x = InverseErf(1.0 - q);
  return -1.4142135623730950488 * x;
}

double BesselI0(double x) { return std::isnan(x) ? x : BesselI(0, std::abs(x)); }
double BesselI0e(double x) { return std::isnan(x) ? x : ScaledBesselI(0, std::abs(x)); }
double BesselI1(double x) {
  return std::isnan(x) ? x : std::copysign(BesselI(1, std::abs(x)), x);
}
double BesselI1e(double x) {
  return std::isnan(x) ? x : std::copysign(ScaledBesselI(1, std::abs(x)), x);
}

double Erfcx(double x) {
  if (std::isnan(x)) return x;
  if (x < 0) {
    if (x < -26.7) return kInf;
    const double hi = x * x, lo = std::fma(x, x, -hi);  // x^2 exactly, as hi + lo
    return 2.0 * std::exp(hi) * (1.0 + lo) - Erfcx(-x);
  }
  if (x < 10.0) {
    const double hi = x * x, lo = std::fma(x, x, -hi);
    return std::exp(hi) * (1.0 + lo) * std::erfc(x);
  }
  // erfcx(x) ~ 1 / (x sqrt(pi)) * sum (-1)^k (2k-1)!! / (2x^2)^k
  double term = 1.0, sum = 1.0;
  const double inv_2x2 = 0.5 / (x * x);
  for (int k = 1; k < 60; ++k) {
    term *= -(2.0 * k - 1.0) * inv_2x2;
    sum += term;
    if (std::abs(term) < 1e-17 * sum) break;
  }
  return sum / (x * 1.7724538509055160273);
}

}  // namespace tg::cpu::special
