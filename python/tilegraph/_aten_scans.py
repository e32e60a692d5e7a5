"""ATen table entries for the scans that are not cumsum (an IR op): cumprod, cummax /
cummin and logcumsumexp. Each runs by doubling (Hillis-Steele): log2(n) steps that combine
every element with the one `step` before it along the axis (an identity shifted in at the
start), with the IR's elementwise ops, so their gradients come from those ops'.
"""
import math

import numpy as np

from ._aten import aten, handles


def _doubled(cx, n, x, dim, fill, combine):
    """The scan of x along dim by doubling: y = combine(y, y shifted by 1, 2, 4, ...), `fill`
    (the combination's identity) shifted in; in n's dtype."""
    out = cx.dtype_of(n)
    y = cx.cast(cx.v(x), out)
    shape = cx.shape_of(n)
    if not shape:
        return y
    dim, step = dim % len(shape), 1
    while step < shape[dim]:
        y = combine(y, _shifted(cx, y, shape, dim, step, fill, out), out)
        step *= 2
    return y


def _shifted(cx, y, shape, dim, step, fill, dtype):
    """y shifted `step` along dim, `fill` shifted in (the scans' doubling step)."""
    size = shape[dim]
    pad = cx.op("full", [], {"shape": shape[:dim] + [step] + shape[dim + 1:], "value": fill,
                             "dtype": "dtype:" + dtype})
    head = cx.op("slice", [y], {"axis": dim, "start": 0, "end": size - step, "step": 1})
    return cx.op("cat", [pad, head], {"axis": dim})


@handles(aten.cumprod.default)
def _cumprod(cx, n, x, dim, dtype=None):
    """Cumulative products: plain products throughout, so zeros and their gradients are
    exact (no log / division)."""
    return _doubled(cx, n, x, dim, 1.0, lambda y, earlier, out: cx.op("mul", [y, earlier]))


@handles(aten.logcumsumexp.default)
def _logcumsumexp(cx, n, x, dim):
    """log(cumsum(exp(x))): each step y = logaddexp(y, earlier), -inf shifted in, stable
    (max + log1p(exp(-|a - b|)))."""
    def logaddexp(y, earlier, out):
        big = cx.op("maximum", [y, earlier])
        gap = cx.op("neg", [cx.op("abs", [cx.op("sub", [y, earlier])])])
        # (-inf - -inf is NaN: where both are -inf the sum is -inf)
        gap = cx.op("where", [cx.op("eq", [big, cx.scalar(-math.inf, None, out)]),
                              cx.scalar(-math.inf, None, out), gap])
        return cx.op("add", [big, cx.op("log1p", [cx.op("exp", [gap])])])
    return _doubled(cx, n, x, dim, -math.inf, logaddexp)


@handles(aten.cummax.default, aten.cummin.default)
def _cummax(cx, n, x, dim):
    """(values, indices) of the running maximum (minimum) along dim, by doubling over (value,
    index) pairs: the later element wins ties (torch's indices), a NaN wins and stays. The
    values are gathered at the indices, so a gradient goes to those elements."""
    shape = cx.shape_of(x)
    if not shape:
        return [cx.v(x), cx.op("full", [], {"shape": [], "value": 0.0, "dtype": "dtype:i64"})]
    dim = dim % len(shape)
    dtype = cx.dtype_of(x)
    key = cx.v(x)
    if dtype not in ("f32", "f64", "f16", "bf16", "i64"):  # bool and small integers as i32
        dtype, key = "i32", cx.cast(key, "i32")
    if n.target == aten.cummin.default:
        key = cx.op("neg", [key])
    positions = np.arange(shape[dim], dtype=np.int64).reshape(
        [shape[dim] if d == dim else 1 for d in range(len(shape))])
    index = cx.op("expand", [cx.g.add_constant(positions)], {"shape": shape})
    lowest = -math.inf if dtype in ("f32", "f64", "f16", "bf16") else \
        float(np.iinfo(np.int64 if dtype == "i64" else np.int32).min)
    step = 1
    while step < shape[dim]:
        earlier = _shifted(cx, key, shape, dim, step, lowest, dtype)
        earlier_index = _shifted(cx, index, shape, dim, step, 0.0, "i64")
        nan_before = cx.op("ne", [earlier, earlier])  # (an earlier NaN stays the maximum)
        keep = cx.op("logical_or", [nan_before, cx.op("logical_and", [
            cx.op("gt", [earlier, key]), cx.op("eq", [key, key])])])
        key = cx.op("where", [keep, earlier, key])
        index = cx.op("where", [keep, earlier_index, index])
        step *= 2
    return [cx.op("gather", [cx.v(x), index], {"axis": dim}), index]
