"""ATen table entries for float functions that PyTorch's decompositions leave to prims (no
Core ATen op computes them): exp2, fmax / fmin, signbit, frexp, angle, nextafter and
polygamma (the special functions with an IR op of their own are in _aten's unary list);
and addmv and tril / triu_indices, whose decompositions differ from eager at the edges.
Each is built from IR ops with eager's special cases (NaN, -0.0, infinities) spelled out.
"""
import math

from ._aten import _INTEGER, aten, handles


def _nan(cx, value):
    return cx.op("ne", [value, value])


@handles(aten.exp2.default)
def _exp2(cx, n, x):
    """2 ** x as pow(2, x): the C library's pow is exact at integers and within an ulp
    elsewhere (exp(x * ln 2) would lose x's low bits for large x)."""
    dtype = cx.dtype_of(n)
    return cx.op("pow", [cx.scalar(2.0, None, dtype), cx.cast(cx.v(x), dtype)])


def _nan_ignoring(larger):
    def handler(cx, n, a, b):
        """torch.fmax / fmin: maximum / minimum (ties split the gradient evenly, as eager's),
        ignoring a NaN operand (NaN only where both are)."""
        a_, b_ = cx.operands(n, a, b)
        out = cx.op("maximum" if larger else "minimum", [a_, b_])
        if cx.dtype_of(n) not in _INTEGER + ("bool",):
            out = cx.op("where", [_nan(cx, b_), a_, cx.op("where", [_nan(cx, a_), b_, out])])
        return out
    return handler


aten_fmax = handles(aten.fmax.default)(_nan_ignoring(True))
aten_fmin = handles(aten.fmin.default)(_nan_ignoring(False))


@handles(aten.signbit.default)
def _signbit(cx, n, x):
    """Whether x's sign bit is set: negative numbers, -0.0 and negative NaNs (x86's 0 / 0
    makes one), as eager reads the bit: the IR's signbit op."""
    dtype = cx.dtype_of(x)
    if dtype in ("bool", "u8"):
        return cx.op("ne", [cx.cast(cx.v(x), "i32"), cx.cast(cx.v(x), "i32")])  # all False
    if dtype in _INTEGER:
        return cx.op("lt", [cx.v(x), cx.scalar(0, None, dtype)])
    return cx.op("signbit", [cx.v(x)])


@handles(aten.frexp.Tensor)
def _frexp(cx, n, x):
    """(mantissa, exponent) with x = mantissa * 2 ** exponent and 0.5 <= |mantissa| < 1 (C's
    frexp): the exponent from log2(|x|), corrected by one either way where log2 rounded
    across an integer; 0, infinities and NaN give themselves and exponent 0."""
    dtype = cx.dtype_of(x)  # eager refuses integer inputs before tracing
    value = cx.v(x)

    def k(v):
        return cx.scalar(v, None, dtype)
    magnitude = cx.op("abs", [value])
    finite_nonzero = cx.op("logical_and", [
        cx.op("gt", [magnitude, k(0.0)]), cx.op("lt", [magnitude, k(math.inf)])])
    safe = cx.op("where", [finite_nonzero, magnitude, k(1.0)])
    exponent = cx.op("add", [cx.op("floor", [cx.op("log2", [safe])]), k(1.0)])
    for _ in range(2):  # |m| must land in [0.5, 1): step the exponent where it did not
        scaled = cx.op("div", [safe, cx.op("pow", [k(2.0), exponent])])
        exponent = cx.op("add", [exponent, cx.op("sub", [
            cx.cast(cx.op("ge", [scaled, k(1.0)]), dtype),
            cx.cast(cx.op("lt", [scaled, k(0.5)]), dtype)])])
    # 2 ** e underflows to 0 below the smallest subnormal: divide in two halves.
    half = cx.op("trunc", [cx.op("div", [exponent, k(2.0)])])
    mantissa = cx.op("div", [cx.op("div", [value, cx.op("pow", [k(2.0), half])]),
                             cx.op("pow", [k(2.0), cx.op("sub", [exponent, half])])])
    mantissa = cx.op("where", [finite_nonzero, mantissa, value])
    exponent = cx.op("where", [finite_nonzero, exponent, k(0.0)])
    return [mantissa, cx.cast(exponent, "i32")]


@handles(aten.angle.default)
def _angle(cx, n, x):
    """The argument of a real number: pi for negatives, 0 otherwise, NaN for NaN (eager's
    rule; its gradient is zero)."""
    dtype = cx.dtype_of(n)
    value = cx.cast(cx.v(x), dtype)
    zero = cx.scalar(0.0, None, dtype)
    arg = cx.op("where", [cx.op("lt", [value, zero]), cx.scalar(math.pi, None, dtype), zero])
    if dtype in _INTEGER:
        return arg
    return cx.op("where", [_nan(cx, value), value, arg])


@handles(aten.polygamma.default)
def _polygamma(cx, n, order, x):
    """The order-th derivative of digamma (order 0 is digamma itself)."""
    value = cx.cast(cx.v(x), cx.dtype_of(n))
    if order == 0:
        return cx.op("digamma", [value])
    if order < 0:
        cx.unsupported(n, "polygamma of a negative order (eager raises)")
    return cx.op("polygamma", [value], {"n": float(order)})


@handles(aten.nextafter.default)
def _nextafter(cx, n, a, b):
    """The next representable value after a toward b, in the operands' own format (f32 or
    f64; half formats would step by their own ulp, which the widened kernels cannot)."""
    if cx.own_dtype(n) not in ("f32", "f64"):
        cx.unsupported(n, f"nextafter of {cx.own_dtype(n)} tensors (f32 and f64 are supported)")
    a_, b_ = cx.operands(n, a, b)
    return cx.op("nextafter", [a_, b_])


@handles(aten.tril_indices.default, aten.triu_indices.default)
def _triangle_indices(cx, n, *args, **kwargs):
    """Constants: torch computes them at capture from the integer sizes (empty ones too)."""
    return cx.constant_from_torch(n)


@handles(aten.addmv.default)
def _addmv(cx, n, x, mat, vec, beta=1, alpha=1):
    """beta * x + alpha * (mat @ vec); as eager, alpha = 0 skips the product (an inf in mat
    gives no NaN) and beta = 0 ignores x (its NaN too)."""
    dtype = cx.dtype_of(n)
    rows = cx.shape_of(mat)[0]
    out = None
    if alpha != 0:
        column = cx.op("reshape", [cx.cast(cx.v(vec), dtype)],
                       {"shape": [cx.shape_of(vec)[0], 1]})
        product = cx.op("matmul", [cx.cast(cx.v(mat), dtype), column])
        out = cx.op("reshape", [product], {"shape": [rows]})
        if alpha != 1:
            out = cx.op("mul", [out, cx.scalar(alpha, None, dtype)])
    if beta != 0:
        term = cx.op("expand", [cx.cast(cx.v(x), dtype)], {"shape": [rows]})
        if beta != 1:
            term = cx.op("mul", [term, cx.scalar(beta, None, dtype)])
        out = term if out is None else cx.op("add", [out, term])
    if out is None:
        out = cx.op("full", [], {"shape": [rows], "value": 0.0, "dtype": "dtype:" + dtype})
    return out


@handles(aten.special_log_ndtr.default)
def _log_ndtr(cx, n, x):
    """log of the standard normal distribution function, by PyTorch's formula (erfcx below 1,
    log1p(-erfc / 2) above), each branch evaluated only where it is taken (the other at a
    harmless point): the untaken branch's infinities made NaN gradients (x <= -10)."""
    dtype = cx.dtype_of(n)
    value = cx.cast(cx.v(x), dtype)

    def k(v):
        return cx.scalar(v, None, dtype)
    low = cx.op("lt", [value, k(1.0)])
    t_low = cx.op("mul", [cx.op("where", [low, value, k(0.0)]), k(0.7071067811865476)])
    t_high = cx.op("mul", [cx.op("where", [low, k(2.0), value]), k(0.7071067811865476)])
    below = cx.op("sub", [cx.op("log", [cx.op("div", [cx.op("erfcx", [cx.op("neg", [t_low])]),
                                                      k(2.0)])]),
                          cx.op("mul", [t_low, t_low])])
    above = cx.op("log1p", [cx.op("neg", [cx.op("div", [cx.op("erfc", [t_high]), k(2.0)])])])
    return cx.op("where", [low, below, above])
