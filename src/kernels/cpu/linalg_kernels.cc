#include "kernels/cpu/linalg_kernels.h"

#include <cmath>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace tg::cpu {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Matrices per task: one per task from 16 x 16 up (the work per matrix is n^3).
int64_t Grain(int64_t n) { return n >= 16 ? 1 : 4096 / (n * n * n + 1) + 1; }

// Runs body(m) for every matrix m of the batch, spread over threads.
template <typename Body>
void ForEachMatrix(const LinalgShape& s, Body body) {
  ParallelFor(s.batch, Grain(s.n), [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) body(m);
  });
}

// x[0, k) += f * y[0, k): the row operation every substitution is made of.
inline void AddScaledRow(double* x, const double* y, double f, int64_t k) {
  for (int64_t c = 0; c < k; ++c) x[c] += f * y[c];
}

// One matrix's LU factorization with partial pivoting, in double: P A = L U with L unit lower
// triangular (below lu's diagonal) and U upper (on and above it); row i of P A is row perm[i]
// of A. info: the first zero pivot (1-based), 0 when there is none.
struct Lu {
  int64_t n = 0;
  std::vector<double> lu;
  std::vector<int64_t> perm;
  bool odd_swaps = false;
  int32_t info = 0;
  double at(int64_t i, int64_t j) const { return lu[i * n + j]; }
};

template <typename T>
void Factor(const T* a, int64_t n, Lu& f) {
  f.n = n;
  f.lu.assign(a, a + n * n);
  f.perm.resize(n);
  std::iota(f.perm.begin(), f.perm.end(), 0);
  f.odd_swaps = false;
  f.info = 0;
  double* lu = f.lu.data();
  for (int64_t j = 0; j < n; ++j) {
    int64_t p = j;
    for (int64_t i = j + 1; i < n; ++i) {
      if (std::fabs(lu[i * n + j]) > std::fabs(lu[p * n + j])) p = i;
    }
    if (lu[p * n + j] == 0.0) {  // singular: LAPACK's getrf goes on with the next column
      if (f.info == 0) f.info = static_cast<int32_t>(j + 1);
      continue;
    }
    if (p != j) {
      for (int64_t c = 0; c < n; ++c) std::swap(lu[p * n + c], lu[j * n + c]);
      std::swap(f.perm[p], f.perm[j]);
      f.odd_swaps = !f.odd_swaps;
    }
    const double inv = 1.0 / lu[j * n + j];
    for (int64_t i = j + 1; i < n; ++i) {
      const double l = lu[i * n + j] *= inv;
      if (l != 0.0) AddScaledRow(lu + i * n + j + 1, lu + j * n + j + 1, -l, n - j - 1);
    }
  }
}

// x [n, k] = P B on entry, A^-1 B on exit: L y = P B forward, U x = y backward.
void SolveFactored(const Lu& f, double* x, int64_t k) {
  const int64_t n = f.n;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < i; ++j) {
      if (f.at(i, j) != 0.0) AddScaledRow(x + i * k, x + j * k, -f.at(i, j), k);
    }
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    for (int64_t j = i + 1; j < n; ++j) {
      if (f.at(i, j) != 0.0) AddScaledRow(x + i * k, x + j * k, -f.at(i, j), k);
    }
    const double inv = 1.0 / f.at(i, i);
    for (int64_t c = 0; c < k; ++c) x[i * k + c] *= inv;
  }
}

// x [n, k] = B on entry, P A^-T B on exit (A^T = U^T L^T P): U^T y = B forward, L^T z = y
// backward; the caller un-permutes (row i of the result is row perm[i] of A^-T B).
void SolveAdjointFactored(const Lu& f, double* x, int64_t k) {
  const int64_t n = f.n;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < i; ++j) {
      if (f.at(j, i) != 0.0) AddScaledRow(x + i * k, x + j * k, -f.at(j, i), k);
    }
    const double inv = 1.0 / f.at(i, i);
    for (int64_t c = 0; c < k; ++c) x[i * k + c] *= inv;
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    for (int64_t j = i + 1; j < n; ++j) {
      if (f.at(j, i) != 0.0) AddScaledRow(x + i * k, x + j * k, -f.at(j, i), k);
    }
  }
}

template <typename T>
void Store(const double* x, T* out, int64_t count, bool failed) {
  for (int64_t i = 0; i < count; ++i) out[i] = static_cast<T>(failed ? kNaN : x[i]);
}

// log |det| and its sign from an LU factorization (0 and -inf when singular).
std::pair<double, double> SignAndLog(const Lu& f) {
  if (f.info != 0) return {0.0, -std::numeric_limits<double>::infinity()};
  double sign = f.odd_swaps ? -1.0 : 1.0, log = 0.0;
  for (int64_t i = 0; i < f.n; ++i) {
    const double u = f.at(i, i);
    if (u < 0) sign = -sign;
    log += std::log(std::fabs(u));
  }
  return {std::isnan(log) ? kNaN : sign, log};
}

// The Cholesky factor of (A + A^T) / 2 row by row (Cholesky-Banachiewicz), lower, in l [n, n];
// returns info.
template <typename T>
int32_t CholeskyLower(const T* a, int64_t n, double* l) {
  for (int64_t i = 0; i < n * n; ++i) l[i] = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      double dot = 0.0;
      const double *li = l + i * n, *lj = l + j * n;
#pragma omp simd reduction(+ : dot)
      for (int64_t p = 0; p < j; ++p) dot += li[p] * lj[p];
      const double sym = 0.5 * (static_cast<double>(a[i * n + j]) + a[j * n + i]);
      const double s = sym - dot;
      if (i == j) {
        if (!(s > 0.0)) return static_cast<int32_t>(i + 1);
        l[i * n + i] = std::sqrt(s);
      } else {
        l[i * n + j] = s / l[j * n + j];
      }
    }
  }
  return 0;
}

// Whether op(A) (A^T when transposed) is lower triangular.
bool EffectiveLower(TriangularSolveFlags f) { return f.upper == f.transpose; }

}  // namespace

template <typename T>
void MatrixInverse(const T* a, T* inv, int32_t* info, const LinalgShape& s) {
  const int64_t n = s.n;
  ForEachMatrix(s, [&](int64_t m) {
    Lu f;
    Factor(a + m * n * n, n, f);
    std::vector<double> x(n * n, 0.0);
    for (int64_t i = 0; i < n; ++i) x[i * n + f.perm[i]] = 1.0;  // P I
    if (f.info == 0) SolveFactored(f, x.data(), n);
    Store(x.data(), inv + m * n * n, n * n, f.info != 0);
    info[m] = f.info;
  });
}

template <typename T>
void LinearSolve(const T* a, const T* b, T* x, int32_t* info, const LinalgShape& s,
                 bool adjoint) {
  const int64_t n = s.n, k = s.k;
  ForEachMatrix(s, [&](int64_t m) {
    Lu f;
    Factor(a + m * n * n, n, f);
    const T* bm = b + m * n * k;
    std::vector<double> y(n * k), out(n * k);
    if (adjoint) {
      y.assign(bm, bm + n * k);
      if (f.info == 0) SolveAdjointFactored(f, y.data(), k);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t c = 0; c < k; ++c) out[f.perm[i] * k + c] = y[i * k + c];
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t c = 0; c < k; ++c) out[i * k + c] = bm[f.perm[i] * k + c];
      }
      if (f.info == 0) SolveFactored(f, out.data(), k);
    }
    Store(out.data(), x + m * n * k, n * k, f.info != 0);
    info[m] = f.info;
  });
}

template <typename T>
void SlogDet(const T* a, T* sign, T* logabsdet, const LinalgShape& s) {
  ForEachMatrix(s, [&](int64_t m) {
    Lu f;
    Factor(a + m * s.n * s.n, s.n, f);
    auto [sg, log] = SignAndLog(f);
    sign[m] = static_cast<T>(sg);
    logabsdet[m] = static_cast<T>(log);
  });
}

template <typename T>
void Det(const T* a, T* det, const LinalgShape& s) {
  ForEachMatrix(s, [&](int64_t m) {
    Lu f;
    Factor(a + m * s.n * s.n, s.n, f);
    double d = f.odd_swaps ? -1.0 : 1.0;
    for (int64_t i = 0; i < s.n; ++i) d *= f.at(i, i);
    det[m] = static_cast<T>(f.info != 0 ? 0.0 : d);
  });
}

template <typename T>
void Cholesky(const T* a, T* l, int32_t* info, const LinalgShape& s, bool upper) {
  const int64_t n = s.n;
  ForEachMatrix(s, [&](int64_t m) {
    std::vector<double> low(n * n);
    const int32_t bad = CholeskyLower(a + m * n * n, n, low.data());
    T* out = l + m * n * n;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        const double v = upper ? low[j * n + i] : low[i * n + j];
        out[i * n + j] = static_cast<T>(bad ? kNaN : v);
      }
    }
    info[m] = bad;
  });
}

template <typename T>
void TriangularSolve(const T* a, const T* b, T* x, const LinalgShape& s, TriangularSolveFlags f) {
  const int64_t n = s.n, k = s.k;
  const bool lower = EffectiveLower(f);
  ForEachMatrix(s, [&](int64_t m) {
    const T* am = a + m * n * n;
    auto op = [&](int64_t i, int64_t j) {
      return static_cast<double>(f.transpose ? am[j * n + i] : am[i * n + j]);
    };
    std::vector<double> y(b + m * n * k, b + (m + 1) * n * k);
    for (int64_t step = 0; step < n; ++step) {
      const int64_t i = lower ? step : n - 1 - step;
      const int64_t j0 = lower ? 0 : i + 1, j1 = lower ? i : n;
      for (int64_t j = j0; j < j1; ++j) {
        const double v = op(i, j);
        if (v != 0.0) AddScaledRow(y.data() + i * k, y.data() + j * k, -v, k);
      }
      if (!f.unitriangular) {
        const double d = op(i, i);
        for (int64_t c = 0; c < k; ++c) y[i * k + c] /= d;
      }
    }
    Store(y.data(), x + m * n * k, n * k, false);
  });
}

// ---- reference kernels: other algorithms, long double -------------------------------------
namespace {

using Wide = long double;

// Gauss-Jordan elimination with partial pivoting on [M | R] (M n x n, R n x k): on success R
// holds M^-1 R. Returns info (first zero pivot, 1-based); `det` gets the pivots' signed
// product.
int32_t GaussJordan(std::vector<Wide>& mat, std::vector<Wide>& rhs, int64_t n, int64_t k,
                    Wide* det) {
  Wide d = 1;
  for (int64_t j = 0; j < n; ++j) {
    int64_t p = j;
    for (int64_t i = j + 1; i < n; ++i) {
      if (std::fabs(mat[i * n + j]) > std::fabs(mat[p * n + j])) p = i;
    }
    if (mat[p * n + j] == 0) {
      if (det) *det = 0;
      return static_cast<int32_t>(j + 1);
    }
    if (p != j) {
      for (int64_t c = 0; c < n; ++c) std::swap(mat[p * n + c], mat[j * n + c]);
      for (int64_t c = 0; c < k; ++c) std::swap(rhs[p * k + c], rhs[j * k + c]);
      d = -d;
    }
    const Wide pivot = mat[j * n + j];
    d *= pivot;
    for (int64_t c = 0; c < n; ++c) mat[j * n + c] /= pivot;
    for (int64_t c = 0; c < k; ++c) rhs[j * k + c] /= pivot;
    for (int64_t i = 0; i < n; ++i) {
      const Wide f = mat[i * n + j];
      if (i == j || f == 0) continue;
      for (int64_t c = 0; c < n; ++c) mat[i * n + c] -= f * mat[j * n + c];
      for (int64_t c = 0; c < k; ++c) rhs[i * k + c] -= f * rhs[j * k + c];
    }
  }
  if (det) *det = d;
  return 0;
}

template <typename T>
std::vector<Wide> WideMatrix(const T* a, int64_t n, bool transpose) {
  std::vector<Wide> w(n * n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) w[i * n + j] = transpose ? a[j * n + i] : a[i * n + j];
  }
  return w;
}

template <typename T>
void StoreWide(const std::vector<Wide>& x, T* out, bool failed) {
  for (size_t i = 0; i < x.size(); ++i) out[i] = static_cast<T>(failed ? kNaN : x[i]);
}

}  // namespace

template <typename T>
void MatrixInverseRef(const T* a, T* inv, int32_t* info, const LinalgShape& s) {
  const int64_t n = s.n;
  for (int64_t m = 0; m < s.batch; ++m) {
    std::vector<Wide> mat = WideMatrix(a + m * n * n, n, false), rhs(n * n, 0);
    for (int64_t i = 0; i < n; ++i) rhs[i * n + i] = 1;
    info[m] = GaussJordan(mat, rhs, n, n, nullptr);
    StoreWide(rhs, inv + m * n * n, info[m] != 0);
  }
}

template <typename T>
void LinearSolveRef(const T* a, const T* b, T* x, int32_t* info, const LinalgShape& s,
                    bool adjoint) {
  const int64_t n = s.n, k = s.k;
  for (int64_t m = 0; m < s.batch; ++m) {
    std::vector<Wide> mat = WideMatrix(a + m * n * n, n, adjoint);
    std::vector<Wide> rhs(b + m * n * k, b + (m + 1) * n * k);
    info[m] = GaussJordan(mat, rhs, n, k, nullptr);
    StoreWide(rhs, x + m * n * k, info[m] != 0);
  }
}

template <typename T>
void DetRef(const T* a, T* det, const LinalgShape& s) {
  for (int64_t m = 0; m < s.batch; ++m) {
    std::vector<Wide> mat = WideMatrix(a + m * s.n * s.n, s.n, false), rhs;
    Wide d = 0;
    GaussJordan(mat, rhs, s.n, 0, &d);
    det[m] = static_cast<T>(d);
  }
}

template <typename T>
void SlogDetRef(const T* a, T* sign, T* logabsdet, const LinalgShape& s) {
  for (int64_t m = 0; m < s.batch; ++m) {
    std::vector<Wide> mat = WideMatrix(a + m * s.n * s.n, s.n, false), rhs;
    Wide d = 0;
    GaussJordan(mat, rhs, s.n, 0, &d);
    const bool nan = std::isnan(static_cast<double>(d));
    sign[m] = static_cast<T>(d > 0 ? 1 : d < 0 ? -1 : nan ? kNaN : 0);
    logabsdet[m] = static_cast<T>(std::log(std::fabs(d)));
  }
}

template <typename T>
void CholeskyRef(const T* a, T* l, int32_t* info, const LinalgShape& s, bool upper) {
  const int64_t n = s.n;
  for (int64_t m = 0; m < s.batch; ++m) {
    const T* am = a + m * n * n;
    std::vector<Wide> low(n * n, 0);
    int32_t bad = 0;
    for (int64_t j = 0; j < n && !bad; ++j) {  // column by column (Cholesky-Crout)
      Wide d = am[j * n + j];
      for (int64_t p = 0; p < j; ++p) d -= low[j * n + p] * low[j * n + p];
      if (!(d > 0)) {
        bad = static_cast<int32_t>(j + 1);
        break;
      }
      low[j * n + j] = std::sqrt(d);
      for (int64_t i = j + 1; i < n; ++i) {
        Wide v = (static_cast<Wide>(am[i * n + j]) + am[j * n + i]) / 2;
        for (int64_t p = 0; p < j; ++p) v -= low[i * n + p] * low[j * n + p];
        low[i * n + j] = v / low[j * n + j];
      }
    }
    std::vector<Wide> out(n * n);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) out[i * n + j] = upper ? low[j * n + i] : low[i * n + j];
    }
    StoreWide(out, l + m * n * n, bad != 0);
    info[m] = bad;
  }
}

template <typename T>
void TriangularSolveRef(const T* a, const T* b, T* x, const LinalgShape& s,
                        TriangularSolveFlags f) {
  const int64_t n = s.n, k = s.k;
  const bool lower = EffectiveLower(f);
  for (int64_t m = 0; m < s.batch; ++m) {
    const T* am = a + m * n * n;
    auto op = [&](int64_t i, int64_t j) -> Wide {
      return f.transpose ? am[j * n + i] : am[i * n + j];
    };
    for (int64_t c = 0; c < k; ++c) {  // one column at a time, eliminating below / above
      std::vector<Wide> col(n);
      for (int64_t i = 0; i < n; ++i) col[i] = b[(m * n + i) * k + c];
      for (int64_t step = 0; step < n; ++step) {
        const int64_t j = lower ? step : n - 1 - step;
        if (!f.unitriangular) col[j] /= op(j, j);
        for (int64_t i = 0; i < n; ++i) {
          if (lower ? i > j : i < j) col[i] -= op(i, j) * col[j];
        }
      }
      for (int64_t i = 0; i < n; ++i) x[(m * n + i) * k + c] = static_cast<T>(col[i]);
    }
  }
}

#define TG_LINALG_INSTANTIATE(T)                                                              \
  template void MatrixInverse<T>(const T*, T*, int32_t*, const LinalgShape&);                \
  template void LinearSolve<T>(const T*, const T*, T*, int32_t*, const LinalgShape&, bool);  \
  template void SlogDet<T>(const T*, T*, T*, const LinalgShape&);                            \
  template void Det<T>(const T*, T*, const LinalgShape&);                                    \
  template void Cholesky<T>(const T*, T*, int32_t*, const LinalgShape&, bool);               \
  template void TriangularSolve<T>(const T*, const T*, T*, const LinalgShape&,               \
                                   TriangularSolveFlags);                                    \
  template void MatrixInverseRef<T>(const T*, T*, int32_t*, const LinalgShape&);             \
  template void LinearSolveRef<T>(const T*, const T*, T*, int32_t*, const LinalgShape&, bool); \
  template void SlogDetRef<T>(const T*, T*, T*, const LinalgShape&);                         \
  template void DetRef<T>(const T*, T*, const LinalgShape&);                                 \
  template void CholeskyRef<T>(const T*, T*, int32_t*, const LinalgShape&, bool);            \
  template void TriangularSolveRef<T>(const T*, const T*, T*, const LinalgShape&,            \
                                      TriangularSolveFlags);
TG_LINALG_INSTANTIATE(float)
TG_LINALG_INSTANTIATE(double)
#undef TG_LINALG_INSTANTIATE

}  // namespace tg::cpu
