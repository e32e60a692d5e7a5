// Dense linear algebra on batches of square row-major matrices A [batch, n, n]: LU with
// partial pivoting (inverse, solve, slogdet, det), Cholesky, and triangular solves. Every
// matrix is factored in double (f32 operands are widened as they are read), so an f32 result
// carries its final rounding plus the problem's own conditioning. Plain O(n^3) loops per
// matrix (the inner loops run along contiguous rows), the batch spread over threads: meant
// for the small matrices models carry (covariances, flow layers, Gaussian processes of a few
// hundred points), not for large dense solves.
//
// `info` follows LAPACK: 0, or k > 0 for the first zero pivot U[k-1, k-1] (LU) / the first
// leading minor of order k that is not positive definite (Cholesky); such a matrix's outputs
// are NaN. The *Ref functions are the reference kernels: other algorithms (Gauss-Jordan
// elimination, column-oriented Cholesky and substitution) in long double.
#pragma once

#include <cstdint>

namespace tg::cpu {

struct LinalgShape {
  int64_t batch = 1;  // matrices
  int64_t n = 0;      // A is n x n
  int64_t k = 0;      // right-hand sides: B, X are n x k
};

// inv = A^-1.
template <typename T>
void MatrixInverse(const T* a, T* inv, int32_t* info, const LinalgShape& s);
// X = A^-1 B, or A^-T B when `adjoint`.
template <typename T>
void LinearSolve(const T* a, const T* b, T* x, int32_t* info, const LinalgShape& s, bool adjoint);
// sign(det A) and log |det A| (0 and -inf for a singular A).
template <typename T>
void SlogDet(const T* a, T* sign, T* logabsdet, const LinalgShape& s);
// det A.
template <typename T>
void Det(const T* a, T* det, const LinalgShape& s);
// The Cholesky factor of A's symmetric part (A + A^T) / 2: lower L with L L^T = that, or
// upper U = L^T. A symmetric A (every valid input) is its own symmetric part.
template <typename T>
void Cholesky(const T* a, T* l, int32_t* info, const LinalgShape& s, bool upper);
// X = op(A)^-1 B with A triangular (only its `upper` or lower triangle is read; a
// unitriangular A's diagonal is taken as 1, not read), op(A) = A^T when `transpose`.
// A zero on the diagonal gives inf / NaN, as torch.linalg.solve_triangular.
struct TriangularSolveFlags {
  bool upper = false, transpose = false, unitriangular = false;
};
template <typename T>
void TriangularSolve(const T* a, const T* b, T* x, const LinalgShape& s, TriangularSolveFlags f);

template <typename T>
void MatrixInverseRef(const T* a, T* inv, int32_t* info, const LinalgShape& s);
template <typename T>
void LinearSolveRef(const T* a, const T* b, T* x, int32_t* info, const LinalgShape& s,
                    bool adjoint);
template <typename T>
void SlogDetRef(const T* a, T* sign, T* logabsdet, const LinalgShape& s);
template <typename T>
void DetRef(const T* a, T* det, const LinalgShape& s);
template <typename T>
void CholeskyRef(const T* a, T* l, int32_t* info, const LinalgShape& s, bool upper);
template <typename T>
void TriangularSolveRef(const T* a, const T* b, T* x, const LinalgShape& s,
                        TriangularSolveFlags f);

}  // namespace tg::cpu
