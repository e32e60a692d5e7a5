"""Fits the polynomial coefficients used by src/kernels/cpu/vector_math.h (float erf, tanh,
and the rational erf of GELU).

Least squares on dense grids in float64 (mpmath-free: scipy.special / math give the
references), then prints each fit's max relative error. Run: python3 tools/fit_vector_math.py
The printed coefficients are what vector_math.h embeds; rerun if a range or degree changes.
"""
import math

import numpy as np


def fit(name, xs, target, basis_var, degree, weight):
    """Fits target(x) ~ sum c_k * basis_var(x)^k, minimizing relative error."""
    v = basis_var(xs)
    A = np.vander(v, degree + 1, increasing=True) * weight[:, None]
    c, *_ = np.linalg.lstsq(A, target * weight, rcond=None)
    approx = np.polyval(c[::-1], v)
    rel = np.max(np.abs(approx - target) / np.abs(target))
    print(f"{name}: degree {degree}, max rel error {rel:.2e}")
    print("  {" + ", ".join(f"{x:.10e}" for x in c) + "}")
    return c


erf = np.vectorize(math.erf)
erfc = np.vectorize(math.erfc)

# erf(x) = x * P(x^2) on [0, 1]
x = np.linspace(1e-6, 1.0, 20001)
t = erf(x) / x
fit("erf small: erf(x)/x in x^2", x, t, lambda z: z * z, 6, 1 / t)

# erfc(x) = exp(-x^2) * Q(1/x) on [1, 4]
x = np.linspace(1.0, 4.0, 20001)
t = erfc(x) * np.exp(x * x)
fit("erfc large: erfc(x)*exp(x^2) in 1/x", x, t, lambda z: 1 / z, 10, 1 / t)

# tanh(x) = x * P(x^2) on [0, 0.625]
x = np.linspace(1e-6, 0.625, 20001)
t = np.tanh(x) / x
fit("tanh small: tanh(x)/x in x^2", x, t, lambda z: z * z, 6, 1 / t)


def fit_rational(name, lo, hi, num_terms, den_terms, iterations=30, lawson=60):
    """erf(x) ~ x * P(x^2) / Q(x^2), Q(0) = 1, for relative error on [lo, hi]: linearized
    least squares (P - f Q ~ 0, reweighted by the previous Q), then Lawson reweighting
    towards the minimax fit."""
    x = np.concatenate([np.linspace(lo, hi, 40001), np.linspace(0, 0.01, 2001)[1:]])
    v, f = x * x, erf(x) / x
    weights, q_prev = np.ones_like(x), np.ones_like(x)
    for it in range(iterations + lawson):
        A = np.hstack([np.vander(v, num_terms, increasing=True),
                       -f[:, None] * np.vander(v, den_terms, increasing=True)[:, 1:]])
        w = weights / (q_prev * f)
        c, *_ = np.linalg.lstsq(A * w[:, None], f * w, rcond=None)
        p, q = c[:num_terms], np.concatenate([[1.0], c[num_terms:]])
        q_prev = np.polyval(q[::-1], v)
        err = (x * np.polyval(p[::-1], v) / q_prev - erf(x)) / erf(x)
        if it >= iterations:
            weights = weights * np.abs(err) ** 0.5
            weights /= weights.max()
    print(f"{name}: max rel error {np.max(np.abs(err)):.2e} (in float: ~3.5e-7)")
    print("  P {" + ", ".join(f"{c:.10e}" for c in p[::-1]) + "}")
    print("  Q {" + ", ".join(f"{c:.10e}" for c in q[::-1]) + "}")


# erf(x) = x * P(x^2) / Q(x^2) on [0, 3.92] (GELU's ErfFast)
fit_rational("erf rational", 1e-4, 3.92, 7, 5)
