"""ATen table entries that place values among sorted ones: bucketize, searchsorted and
histc. The searches are a binary search run on every value at once (a fixed number of
halving steps, log2 of the sequence's length), so they cost O(n log m), not the O(n m) of
comparing every value with every boundary.
"""
import math

from ._aten import aten, handles


def _sorted_search(cx, seq, seq_shape, values, values_shape, right):
    """For each value, the number of sequence entries before which it goes: the first i
    with seq[i] >= value (> for `right`). `seq` is 1-D, or holds one sorted row per row of
    `values` (leading dims equal). A NaN value goes after every entry, as in eager."""
    size = seq_shape[-1]
    if size == 0:
        return cx.op("full", [], {"shape": list(values_shape), "value": 0.0,
                                  "dtype": "dtype:i64"})

    def k(v):
        return cx.scalar(v, None, "i64")

    def lookup(position):
        if len(seq_shape) > 1:
            return cx.op("gather", [seq, position], {"axis": len(seq_shape) - 1})
        total = 1
        for d in values_shape:
            total *= d
        flat = cx.op("reshape", [position], {"shape": [total]})
        picked = cx.op("index_select", [seq, flat], {"axis": 0})
        return cx.op("reshape", [picked], {"shape": list(values_shape)})

    start = cx.op("full", [], {"shape": list(values_shape), "value": 0.0, "dtype": "dtype:i64"})
    end = cx.op("full", [], {"shape": list(values_shape), "value": float(size),
                             "dtype": "dtype:i64"})
    for _ in range(size.bit_length()):  # each step halves every open range [start, end)
        open_ = cx.op("lt", [start, end])
        mid = cx.op("bitwise_right_shift", [cx.op("add", [start, end]), k(1)])
        entry = lookup(cx.op("minimum", [mid, k(size - 1)]))
        stop = cx.op("gt" if right else "ge", [entry, values])  # False for NaN: go right
        go_right = cx.op("logical_and", [open_, cx.op("logical_not", [stop])])
        go_left = cx.op("logical_and", [open_, stop])
        start = cx.op("where", [go_right, cx.op("add", [mid, k(1)]), start])
        end = cx.op("where", [go_left, mid, end])
    return start


def _compared(cx, n, seq, values):
    """seq and values (FX nodes or a number) in their common dtype."""
    dtype = cx.common_dtype(seq, values)
    seq_ = cx.cast(cx.v(seq), dtype)
    if hasattr(values, "meta"):
        return seq_, cx.cast(cx.v(values), dtype), cx.shape_of(values)
    return seq_, cx.scalar(values, None, dtype), []


def _index_result(cx, found, out_int32):
    return cx.cast(found, "i32") if out_int32 else found


@handles(aten.bucketize.Tensor, aten.bucketize.Scalar)
def _bucketize(cx, n, x, boundaries, out_int32=False, right=False):
    """The bucket of each element of x among the 1-D sorted boundaries (eager's rule:
    boundaries[i - 1] < x <= boundaries[i], or <= x < with `right`)."""
    seq, values, shape = _compared(cx, n, boundaries, x)
    return _index_result(cx, _sorted_search(cx, seq, cx.shape_of(boundaries), values, shape,
                                            bool(right)), out_int32)


@handles(aten.searchsorted.Tensor, aten.searchsorted.Scalar)
def _searchsorted(cx, n, sorted_sequence, x, out_int32=False, right=False, side=None,
                  sorter=None):
    """Where each of x's values would be inserted to keep each row of sorted_sequence
    sorted (`side="right"` or `right=True`: after equal entries). `sorter` gives the
    sequence's order when it is not sorted itself."""
    seq, values, shape = _compared(cx, n, sorted_sequence, x)
    seq_shape = cx.shape_of(sorted_sequence)
    if sorter is not None:
        seq = cx.op("gather", [seq, cx.v(sorter)], {"axis": len(seq_shape) - 1})
    right = bool(right) or side == "right"
    return _index_result(cx, _sorted_search(cx, seq, seq_shape, values, shape, right),
                         out_int32)


@handles(aten.histc.default)
def _histc(cx, n, x, bins=100, min=0, max=0):  # noqa: A002 (torch's argument names)
    """Counts of x's elements in `bins` equal-width bins over [min, max] (the last bin
    closed); elements outside, and NaN, are not counted. min == max takes the data's own
    range (widened by 1 each way if that is a single value), as eager does."""
    if cx.own_dtype(x) not in ("f32", "f64", "f16", "bf16"):
        cx.unsupported(n, f"histc of a {cx.own_dtype(x)} tensor (eager: \"histogram_cpu\" "
                          "not implemented for integers)")
    if min > max:
        cx.unsupported(n, "histc with max < min (eager raises: \"max must be larger than "
                          "min\")")
    dtype = cx.dtype_of(n)
    shape = cx.shape_of(x)
    total = 1
    for d in shape:
        total *= d
    value = cx.op("reshape", [cx.cast(cx.v(x), dtype)], {"shape": [total]})

    def k(v):
        return cx.scalar(v, None, dtype)
    if min == max:
        if total == 0:
            low, high = k(float(min)), k(float(max))
        else:
            low = cx.op("amax", [cx.op("neg", [value])], {"axes": [0], "keepdim": False})
            low = cx.op("neg", [low])
            high = cx.op("amax", [value], {"axes": [0], "keepdim": False})
        same = cx.op("eq", [low, high])
        low = cx.op("where", [same, cx.op("sub", [low, k(1.0)]), low])
        high = cx.op("where", [same, cx.op("add", [high, k(1.0)]), high])
    else:
        low, high = k(float(min)), k(float(max))
    inside = cx.op("logical_and", [cx.op("ge", [value, low]), cx.op("le", [value, high])])
    position = cx.op("div", [cx.op("mul", [cx.op("sub", [value, low]), k(float(bins))]),
                             cx.op("sub", [high, low])])
    position = cx.op("minimum", [cx.op("trunc", [position]), k(float(bins - 1))])
    # A range past the format's (max - min overflows) makes positions inf or NaN: not counted
    # (eager's own arithmetic loses them too; an integer cast of them would be garbage).
    finite = cx.op("lt", [cx.op("abs", [position]), k(math.inf)])
    inside = cx.op("logical_and", [inside, finite])
    position = cx.op("where", [inside, position, k(0.0)])
    counts = cx.op("full", [], {"shape": [int(bins)], "value": 0.0, "dtype": "dtype:" + dtype})
    return cx.op("scatter_add", [counts, cx.cast(position, "i64"), cx.cast(inside, dtype)],
                 {"axis": 0})
