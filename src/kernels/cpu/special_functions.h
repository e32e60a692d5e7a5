// Special functions of torch.special that the C library lacks: digamma and the polygammas
// (through the Hurwitz zeta function), the inverse error functions (erfinv, ndtri), the
// modified Bessel functions I0 / I1 and their exponentially scaled forms, and erfcx.
// Each is computed in double (float inputs round the double result once), with the special
// values PyTorch gives (poles, infinities, NaN). Methods: recurrence plus asymptotic series
// (digamma), Euler-Maclaurin summation (zeta), Halley iteration on erf / erfc from a closed
// form first guess (the inverses), power series plus the asymptotic expansion (Bessel).
// Scalar code: these ops are rare in models and never on a hot path.
#pragma once

namespace tg::cpu::special {

double Digamma(double x);
// The n-th derivative of digamma (n >= 1): (-1)^(n+1) n! zeta(n + 1, x).
double Polygamma(int n, double x);
// Hurwitz zeta: sum over k >= 0 of (q + k)^-s, for s > 1 (NaN for q < -1e7, where the
// direct part of the sum would take |q| terms).
double HurwitzZeta(double s, double q);
double ErfInv(double y);
// The inverse of the standard normal distribution function.
double Ndtri(double p);
double BesselI0(double x);
double BesselI0e(double x);  // exp(-|x|) * I0(x)
double BesselI1(double x);
double BesselI1e(double x);  // exp(-|x|) * I1(x)
double Erfcx(double x);      // exp(x^2) * erfc(x), without overflow for large x

}  // namespace tg::cpu::special
