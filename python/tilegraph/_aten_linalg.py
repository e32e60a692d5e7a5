"""ATen table entries for torch.linalg's dense solvers on f32 / f64 matrices: inv / inverse,
det, slogdet, logdet, cholesky, solve, solve_triangular, cholesky_solve and
cholesky_inverse, and their _ex forms (with LAPACK's info); householder_product and
matrix_exp composed of matmuls (the orthogonal parametrization's maps). They are kept whole at capture
(_capture._decompositions) and become the IR's linalg ops (src/ops/linalg.cc), so a
singular or indefinite matrix fails the call with torch's error (an assert_all on info)
where eager raises, instead of the garbage its decompositions return.

Where tilegraph differs: cholesky factors the symmetric part (A + A^T) / 2 (torch reads one
triangle; the same for every symmetric input, and torch's symmetric gradient is then the
true derivative); cholesky_solve / cholesky_inverse read L's triangle only, and their
gradient w.r.t. L is masked to it (torch's has an upper part too, which its forward never
reads); det's gradient at a singular matrix is NaN (torch uses an SVD there).
"""
import math

import numpy as np
import torch

from ._aten import _NUMPY_OF, _TORCH_TYPE_NAME, _eager_raises, aten, handles

_FLOATS = ("f32", "f64")


def _matrix(cx, n, name, x, square=True):
    """x as a floating matrix batch, refusing eager's refusals (integers, half precision)."""
    dtype = cx.own_dtype(x)
    if dtype in ("f16", "bf16"):
        _eager_raises(cx, n, f"{name}: Low precision dtypes not supported. Got "
                             f"{'Half' if dtype == 'f16' else 'BFloat16'}")
    if dtype not in _FLOATS:
        _eager_raises(cx, n, f"{name}: Expected a floating point or complex tensor as input. "
                             f"Got {_TORCH_TYPE_NAME.get(dtype, dtype)}")
    shape = cx.shape_of(x)
    if len(shape) < 2:
        _eager_raises(cx, n, f"{name}: The input tensor A must have at least 2 dimensions.")
    if square and shape[-1] != shape[-2]:
        _eager_raises(cx, n, f"{name}: A must be batches of square matrices, but they are "
                             f"{shape[-2]} by {shape[-1]} matrices")
    return cx.v(x)


def _check(cx, info, message):
    """Fails the call with `message` (a RuntimeError, as torch's) where info is nonzero."""
    ok = cx.op("eq", [info, cx.scalar(0, None, "i32")])
    cx.op("assert_all", [ok], {"message": message, "runtime_error": 1})


_SINGULAR_INV = ("linalg.inv: The diagonal element is zero, the inversion could not be "
                 "completed because the input matrix is singular.")
_SINGULAR_SOLVE = "torch.linalg.solve: The solver failed because the input matrix is singular."
_NOT_PD = ("linalg.cholesky: The factorization could not be completed because the input is "
           "not positive-definite.")


def _mT(cx, x):
    rank = len(cx.g.type_of(x)[1])
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    return cx.op("permute", [x], {"perm": perm})


def _broadcast_batches(cx, a, b):
    """a [..., n, n] and b [..., r, c] expanded to their common batch shape."""
    shapes = [list(cx.g.type_of(x)[1]) for x in (a, b)]
    batch = list(torch.broadcast_shapes(*(tuple(s[:-2]) for s in shapes)))

    def to(x, shape):
        if shape[:-2] == batch:
            return x
        ones = [1] * (len(batch) - len(shape) + 2)  # (expand keeps the rank)
        x = cx.op("reshape", [x], {"shape": ones + shape}) if ones else x
        return cx.op("expand", [x], {"shape": batch + shape[-2:]})
    return to(a, shapes[0]), to(b, shapes[1])


# ---- inverse ---------------------------------------------------------------------------
def _inverse(cx, n, a, check=True):
    inv, info = cx.ops("matrix_inverse", [_matrix(cx, n, "linalg.inv", a)], {}, 2)
    if check:
        _check(cx, info, _SINGULAR_INV)
    return inv, info


@handles(aten.linalg_inv.default, aten.inverse.default)
def _inv(cx, n, a):
    return _inverse(cx, n, a)[0]


@handles(aten.linalg_inv_ex.default)
def _inv_ex(cx, n, a, check_errors=False):
    return list(_inverse(cx, n, a, check=check_errors))


# ---- determinants ----------------------------------------------------------------------
@handles(aten.linalg_det.default, aten.det.default)
def _det(cx, n, a):
    return cx.op("det", [_matrix(cx, n, "linalg.det", a)])


@handles(aten._linalg_det.default)
def _det_lu(cx, n, a):
    return [_det(cx, n, a), cx.unavailable(n, "_linalg_det's LU factors"),
            cx.unavailable(n, "_linalg_det's pivots")]


def _slogdet_of(cx, n, a):
    return cx.ops("slogdet", [_matrix(cx, n, "linalg.slogdet", a)], {}, 2)


@handles(aten.linalg_slogdet.default, aten.slogdet.default)
def _slogdet(cx, n, a):
    return list(_slogdet_of(cx, n, a))


@handles(aten._linalg_slogdet.default)
def _slogdet_lu(cx, n, a):
    return [*_slogdet_of(cx, n, a), cx.unavailable(n, "_linalg_slogdet's LU factors"),
            cx.unavailable(n, "_linalg_slogdet's pivots")]


@handles(aten.logdet.default)
def _logdet(cx, n, a):
    """log det A: NaN where det < 0, -inf where singular (torch's logdet)."""
    sign, logabs = _slogdet_of(cx, n, a)
    negative = cx.op("lt", [sign, cx.scalar(0.0, None, cx.own_dtype(a))])
    return cx.op("where", [negative, cx.scalar(float("nan"), None, cx.own_dtype(a)), logabs])


# ---- Cholesky --------------------------------------------------------------------------
def _cholesky_of(cx, n, a, upper, check):
    lower, info = cx.ops("cholesky", [_matrix(cx, n, "linalg.cholesky", a)],
                         {"upper": bool(upper)}, 2)
    if check:
        _check(cx, info, _NOT_PD)
    return lower, info


@handles(aten.linalg_cholesky.default)
def _cholesky(cx, n, a, upper=False):
    return _cholesky_of(cx, n, a, upper, True)[0]


@handles(aten.linalg_cholesky_ex.default)
def _cholesky_ex(cx, n, a, upper=False, check_errors=False):
    return list(_cholesky_of(cx, n, a, upper, check_errors))


def _gram_of_factor(cx, n, factor, upper, name):
    """L L^T (or U^T U) from the factor's triangle."""
    t = cx.op("triangle", [_matrix(cx, n, name, factor)], {"upper": bool(upper), "diagonal": 0})
    return cx.op("matmul", [t, t], {"transpose_a": bool(upper), "transpose_b": not upper})


@handles(aten.cholesky_solve.default)
def _cholesky_solve(cx, n, b, factor, upper=False):
    """(L L^T)^-1 B from a Cholesky factor (U^T U with upper)."""
    gram = _gram_of_factor(cx, n, factor, upper, "cholesky_solve")
    gram, rhs = _broadcast_batches(cx, gram, cx.v(b))
    return cx.ops("linear_solve", [gram, rhs], {"adjoint": False}, 2)[0]


@handles(aten.cholesky_inverse.default)
def _cholesky_inverse(cx, n, factor, upper=False):
    gram = _gram_of_factor(cx, n, factor, upper, "cholesky_inverse")
    return cx.ops("matrix_inverse", [gram], {}, 2)[0]


# ---- solves ----------------------------------------------------------------------------
def _solve(cx, n, a, b, left, check):
    """torch.linalg.solve's rules: B is a vector batch when it is 1-d or A's batch of
    vectors; batches broadcast; left=False solves X A = B as A^T X^T = B^T."""
    a_ = _matrix(cx, n, "torch.linalg.solve", a)
    sa, sb = cx.shape_of(a), cx.shape_of(b)
    vector = len(sb) == 1 or (len(sb) == len(sa) - 1 and sb == sa[:-1])
    rhs = cx.v(b)
    if vector:
        rhs = cx.op("reshape", [rhs], {"shape": sb + [1] if left else sb[:-1] + [1, sb[-1]]})
    if not left:
        rhs = _mT(cx, rhs)
    a_, rhs = _broadcast_batches(cx, a_, rhs)
    x, info = cx.ops("linear_solve", [a_, rhs], {"adjoint": not left}, 2)
    if not left:
        x = _mT(cx, x)
    if vector:
        shape = cx.g.type_of(x)[1]
        x = cx.op("reshape", [x], {"shape": list(shape[:-1]) if left else
                                   list(shape[:-2]) + [shape[-1]]})
    if check:
        _check(cx, info, _SINGULAR_SOLVE)
    return x, info


@handles(aten.linalg_solve.default)
def _linalg_solve(cx, n, a, b, left=True):
    return _solve(cx, n, a, b, left, True)[0]


@handles(aten.linalg_solve_ex.default)
def _linalg_solve_ex(cx, n, a, b, left=True, check_errors=False):
    return list(_solve(cx, n, a, b, left, check_errors))


@handles(aten._linalg_solve_ex.default)
def _linalg_solve_ex_lu(cx, n, a, b, left=True, check_errors=False):
    x, info = _solve(cx, n, a, b, left, check_errors)
    return [x, cx.unavailable(n, "_linalg_solve_ex's LU factors"),
            cx.unavailable(n, "_linalg_solve_ex's pivots"), info]


def _triangular(cx, n, a, b, upper, left, unitriangular, transpose=False):
    a_ = _matrix(cx, n, "linalg.solve_triangular", a)
    rhs = cx.v(b) if left else _mT(cx, cx.v(b))
    a_, rhs = _broadcast_batches(cx, a_, rhs)
    # X A = B  <=>  A^T X^T = B^T
    x = cx.op("triangular_solve", [a_, rhs], {"upper": bool(upper),
                                              "transpose": bool(transpose) != (not left),
                                              "unitriangular": bool(unitriangular)})
    return (x if left else _mT(cx, x)), a_


@handles(aten.linalg_solve_triangular.default)
def _solve_triangular(cx, n, a, b, upper, left=True, unitriangular=False):
    return _triangular(cx, n, a, b, upper, left, unitriangular)[0]


@handles(aten.triangular_solve.default)
def _triangular_solve(cx, n, b, a, upper=True, transpose=False, unitriangular=False):
    """The deprecated torch.triangular_solve: (op(A)^-1 B, A broadcast)."""
    return list(_triangular(cx, n, a, b, upper, True, unitriangular, transpose))


# ---- Householder products and the matrix exponential (torch.nn.utils.parametrizations.
# orthogonal's maps), composed of matmuls ------------------------------------------------
def _eye(cx, rows, cols, dtype):
    return cx.g.add_constant(np.eye(rows, cols, dtype=_NUMPY_OF[dtype]))


@handles(aten.linalg_householder_product.default)
def _householder_product(cx, n, a, tau):
    """The first n columns of H_1 ... H_k for A [..., m, n], tau [..., k] (LAPACK's orgqr):
    H_i = I - tau_i v_i v_i^T, v_i column i of A below the diagonal with a 1 on it; applied
    from the last reflector to the first to the m x n identity, one rank-1 update each."""
    a_ = _matrix(cx, n, "torch.linalg.householder_product", a, square=False)
    dtype = cx.own_dtype(a)
    m, cols = cx.shape_of(a)[-2:]
    k = cx.shape_of(tau)[-1]
    v = cx.op("add", [cx.op("triangle", [a_], {"upper": False, "diagonal": -1}),
                      _eye(cx, m, cols, dtype)])
    taus = cx.op("reshape", [cx.cast(cx.v(tau), dtype)],
                 {"shape": cx.shape_of(tau)[:-1] + [1, k]})
    q = _eye(cx, m, cols, dtype)
    for i in reversed(range(k)):
        vi = cx.op("slice", [v], {"axis": -1, "start": i, "end": i + 1, "step": 1})
        ti = cx.op("slice", [taus], {"axis": -1, "start": i, "end": i + 1, "step": 1})
        w = cx.op("matmul", [vi, q], {"transpose_a": True, "transpose_b": False})
        q = cx.op("sub", [q, cx.op("mul", [ti, cx.op("matmul", [vi, w], {})])])
    return q


_EXP_MAX_SQUARINGS = 24  # ||A||_1 up to 2^24 (exp of larger norms overflows f32 anyway)


@handles(aten.linalg_matrix_exp.default)
def _matrix_exp(cx, n, a):
    """exp(A) by scaling and squaring: A / 2^s with s = ceil(log2 ||A||_1) (at least 0) has
    norm <= 1, where the degree-18 Taylor polynomial is exact to double rounding (evaluated
    Paterson-Stockmeyer style: A^2..A^4 and four products), then squared s times. s is
    data: the graph squares up to 24 times, each squaring kept only where s asks for it."""
    a_ = _matrix(cx, n, "linalg.matrix_exp", a)
    dtype = cx.own_dtype(a)
    size = cx.shape_of(a)[-1]

    def num(v):
        return cx.scalar(v, None, dtype)
    norm = cx.op("amax", [cx.op("sum", [cx.op("abs", [a_])], {"axes": [-2], "keepdim": True})],
                 {"axes": [-1], "keepdim": True})                      # [..., 1, 1]
    s = cx.op("clamp", [cx.op("ceil", [cx.op("log2", [cx.op("maximum", [norm, num(1e-30)])])])],
              {"min": 0.0, "max": float(_EXP_MAX_SQUARINGS)})
    x = cx.op("mul", [a_, cx.op("pow", [num(2.0), cx.op("neg", [s])])])
    eye = _eye(cx, size, size, dtype)
    powers = [eye, x]
    for _ in range(3):
        powers.append(cx.op("matmul", [powers[-1], x], {}))             # A^2, A^3, A^4

    def block(first):  # sum_j A^j / (first + j)! for j < 4 (fewer past degree 18)
        terms = [cx.op("mul", [powers[j], num(1.0 / math.factorial(first + j))])
                 for j in range(4) if first + j <= 18]
        out = terms[0]
        for t in terms[1:]:
            out = cx.op("add", [out, t])
        return out
    y = block(16)
    for first in (12, 8, 4, 0):
        y = cx.op("add", [block(first), cx.op("matmul", [powers[4], y], {})])
    for i in range(_EXP_MAX_SQUARINGS):
        keep = cx.op("gt", [s, num(float(i))])
        y = cx.op("where", [keep, cx.op("matmul", [y, y], {}), y])
    return y  # (A's batch shape: every power but the identity has it)
