"""ATen table entries whose positions come from the data but whose shapes do not:
masked_scatter, scatter_reduce and index_reduce (sum / prod, mean, amax, amin),
scatter(reduce="add" / "multiply"), randperm and nanmedian; and diagonal_scatter, whose
positions are known at capture.
"""
import math

import numpy as np

from ._aten import (ComputedIndex, _leading_part, _mean_of_writes, _write_dtype, aten,
                    handles, index_shape, index_value, scatter_sums)


@handles(aten.masked_scatter.default)
def _masked_scatter(cx, n, x, mask, source):
    """x with the positions where mask is true taking source's elements in order: the k-th
    true position (row-major) takes source.flatten()[k]. Its index is the running count of
    true positions, so the shape is x's whatever the mask (gradients: source receives the
    gradient of the positions it filled, x the rest)."""
    shape, dtype = cx.shape_of(n), cx.dtype_of(n)
    total = int(np.prod(shape, dtype=np.int64))
    m = cx.op("expand", [cx.v(mask)], {"shape": shape})
    m = cx.op("reshape", [m], {"shape": [total]})
    running = cx.op("cumsum", [cx.cast(m, "i64")], {"axis": 0})
    taken = cx.op("sub", [running, cx.scalar(1, None, "i64")])
    taken = cx.op("where", [m, taken, cx.scalar(0, None, "i64")])
    src_total = int(np.prod(cx.shape_of(source), dtype=np.int64))
    flat_src = cx.op("reshape", [cx.cast(cx.v(source), dtype)], {"shape": [src_total]})
    filled = cx.op("index_select", [flat_src, taken], {"axis": 0})
    x_flat = cx.op("reshape", [cx.op("expand", [cx.cast(cx.v(x), dtype)], {"shape": shape})],
                   {"shape": [total]})
    out = cx.op("where", [m, filled, x_flat])
    return cx.op("reshape", [out], {"shape": shape})


def lowest(dtype):
    """The value below every other of `dtype` (the identity of max)."""
    return -math.inf if dtype in ("f32", "f64") else float(np.iinfo(
        {"i32": np.int32, "i64": np.int64}[dtype]).min)


def _combined_scatter(cx, n, x, dim, index, src, include_self, op, identity, negate=False):
    """x with src combined into the positions index names by `op` (scatter_max, scatter_mul),
    in the result's dtype; `negate`: on the negations, the result negated back (amin as
    -amax). Without include_self, the positions written to start from `identity` (the
    lowest value, 1) instead of x's."""
    dtype = cx.dtype_of(n)
    base, src_ = cx.cast(cx.v(x), dtype), cx.cast(cx.v(src), dtype)
    if cx.shape_of(src) != index_shape(cx, index):
        src_ = _leading_part(cx, src_, cx.shape_of(src), index_shape(cx, index))
    if negate:
        base, src_ = cx.op("neg", [base]), cx.op("neg", [src_])
    if not include_self:
        _, count, _ = scatter_sums(cx, x, dim, index, src_, dtype)
        hit = cx.op("gt", [count, cx.scalar(0, None, dtype)])
        base = cx.op("where", [hit, cx.scalar(identity(dtype), None, dtype), base])
    out = cx.op(op, [base, index_value(cx, index), src_], {"axis": dim})
    return cx.op("neg", [out]) if negate else out


def _scatter_extreme(cx, n, x, dim, index, src, reduce, include_self):
    """amax with the scatter_max op; amin as -amax of the negations. (Without include_self,
    where x's value equals the maximum, torch's backward still counts x among the tied
    maxima and drops its share; here the gradient is split among the written values only.)"""
    return _combined_scatter(cx, n, x, dim, index, src, include_self, "scatter_max", lowest,
                             negate=reduce == "amin")


def _scatter_product(cx, n, x, dim, index, src, include_self):
    """The scatter_mul op (writes multiplied in index order; its gradient divides by no
    zero)."""
    return _combined_scatter(cx, n, x, dim, index, src, include_self, "scatter_mul",
                             lambda dtype: 1)


@handles(aten.scatter_reduce.two)
def _scatter_reduce(cx, n, x, dim, index, src, reduce, include_self=True):
    """torch.scatter_reduce with reduce "sum", "mean", "prod", "amax" or "amin" (PyTorch's
    include_self rules: the mean divides by the number of writes, plus one where x's own
    value is included; amax / amin split the gradient evenly among tied maxima)."""
    if reduce in ("amax", "amin"):
        return _scatter_extreme(cx, n, x, dim, index, src, reduce, include_self)
    if reduce == "prod":
        return _scatter_product(cx, n, x, dim, index, src, include_self)
    if reduce not in ("sum", "mean"):
        cx.unsupported(n, f"scatter_reduce with reduce={reduce!r} (sum, mean, prod, amax and "
                       "amin are supported)")
    dtype = cx.dtype_of(n)
    if reduce == "mean" and dtype not in ("f32", "f64"):
        cx.unsupported(n, "scatter_reduce mean of an integer tensor")
    compute = _write_dtype(dtype)
    ishape = index_shape(cx, index)
    src_ = cx.cast(cx.v(src), compute)
    if cx.shape_of(src) != ishape:
        src_ = _leading_part(cx, src_, cx.shape_of(src), ishape)
    base, count, written = scatter_sums(cx, x, dim, index, src_, compute)
    if include_self:
        written = cx.op("add", [written, base])
        count = cx.op("add", [count, cx.scalar(1.0, None, compute)])
    if reduce == "mean":
        return _mean_of_writes(cx, base, count, written, dtype)
    hit = cx.op("gt", [count, cx.scalar(0.0, None, compute)])
    return cx.cast(cx.op("where", [hit, written, base]), dtype)


@handles(aten.index_reduce.default)
def _index_reduce(cx, n, x, dim, index, source, reduce, include_self=True):
    """Tensor.index_reduce: source's slice i along dim reduced into x's slice index[i], for
    reduce "prod", "mean", "amax" or "amin" (torch's include_self rules): scatter_reduce
    with the 1-d index spread over source's shape."""
    if reduce not in ("prod", "mean", "amax", "amin"):
        cx.unsupported(n, f"index_reduce with reduce={reduce!r} (prod, mean, amax and amin "
                          "are supported)")
    shape = cx.shape_of(source)
    if not shape:
        cx.unsupported(n, "index_reduce of a 0-d tensor")
    dim = dim % len(shape)
    along = [1] * len(shape)
    along[dim] = shape[dim]
    spread = cx.op("expand", [cx.op("reshape", [cx.v(index)], {"shape": along})],
                   {"shape": shape})
    return _scatter_reduce(cx, n, x, dim, ComputedIndex(spread, shape), source, reduce,
                           include_self)


@handles(aten.randperm.default)
def _randperm(cx, n, size, dtype=None, layout=None, device=None, pin_memory=None):
    """A uniformly random permutation of range(size): the order that sorts `size` uniform
    draws from tilegraph's Philox stream (not torch's generator, so not torch's
    permutation). Equal f32 draws, rare below ~4000 elements, keep index order."""
    u = cx.op("uniform", [], {"shape": [int(size)], "dtype": "dtype:f32"})
    _, order = cx.ops("topk", [u], {"k": int(size), "axis": 0, "largest": 0}, 2)
    return cx.cast(order, cx.dtype_of(n))


@handles(aten.diagonal_scatter.default)
def _diagonal_scatter(cx, n, x, src, offset=0, dim1=0, dim2=1):
    """x with the diagonal that torch.diagonal(x, offset, dim1, dim2) views replaced by src.
    The diagonal's positions are known at capture: a constant index picks src's element for
    each of them, and a constant mask keeps x elsewhere (gradients: src gets the diagonal's,
    x the rest)."""
    shape = cx.shape_of(x)
    total = int(np.prod(shape, dtype=np.int64))
    positions = np.diagonal(np.arange(total).reshape(shape), offset, dim1, dim2)
    if positions.size == 0:
        return cx.op("copy", [cx.v(x)])
    source_of = np.zeros(total, dtype=np.int64)
    source_of[positions.reshape(-1)] = np.arange(positions.size)
    on_diagonal = np.zeros(total, dtype=bool)
    on_diagonal[positions.reshape(-1)] = True
    flat_src = cx.op("reshape", [cx.cast(cx.v(src), cx.dtype_of(n))], {"shape": [positions.size]})
    picked = cx.op("index_select", [flat_src, cx.g.add_constant(source_of)], {"axis": 0})
    flat_x = cx.op("reshape", [cx.v(x)], {"shape": [total]})
    out = cx.op("where", [cx.g.add_constant(on_diagonal), picked, flat_x])
    return cx.op("reshape", [out], {"shape": list(shape)})


@handles(aten.scatter.reduce, aten.scatter.value_reduce)
def _scatter_with_reduce(cx, n, x, dim, index, src, reduce):
    """The deprecated scatter(..., reduce="add" or "multiply"): scatter_reduce's sum or
    product with x included; a number src is written as a tensor of index's shape."""
    if reduce not in ("add", "multiply"):
        cx.unsupported(n, f"scatter with reduce={reduce!r} (\"add\" and \"multiply\" are "
                          "supported)")
    dim = dim % max(len(cx.shape_of(x)), 1)
    dtype = cx.dtype_of(n)
    if not hasattr(src, "meta"):
        compute = _write_dtype(dtype) if reduce == "add" else dtype
        filled = cx.op("full", [], {"shape": cx.shape_of(index), "value": float(src),
                                    "dtype": "dtype:" + compute})
        if reduce == "multiply":
            return cx.op("scatter_mul", [cx.cast(cx.v(x), dtype), cx.v(index), filled],
                         {"axis": dim})
        _, _, written = scatter_sums(cx, x, dim, index, filled, compute)
        return cx.cast(cx.op("add", [cx.cast(cx.v(x), compute), written]), dtype)
    return _scatter_reduce(cx, n, x, dim, index, src, "sum" if reduce == "add" else "prod", True)


@handles(aten.nanmedian.dim, aten.nanmedian.default)
def _nanmedian(cx, n, x, dim=None, keepdim=False):
    """The lower median of the non-NaN values along dim (NaN where all are NaN), and its
    index: an ascending sort puts NaN last, and the median's position comes from the count
    of the others."""
    shape = cx.shape_of(x)
    value = cx.v(x)
    if dim is None and 0 in shape:  # no values: NaN, as eager's
        return cx.op("full", [], {"shape": [], "value": math.nan, "dtype": "dtype:" +
                                  cx.dtype_of(n)})
    if dim is None or not shape:
        total = int(np.prod(shape, dtype=np.int64))
        value, shape, axis = cx.op("reshape", [value], {"shape": [total]}), [total], 0
    else:
        axis = dim % len(shape)
    values, indices = cx.ops("topk", [value], {"k": shape[axis], "axis": axis, "largest": 0}, 2)
    counted = cx.op("sum", [cx.cast(cx.op("eq", [value, value]), "i64")],
                    {"axes": [axis], "keepdim": True})
    one = cx.scalar(1, None, "i64")
    position = cx.op("bitwise_right_shift", [cx.op("maximum", [
        cx.op("sub", [counted, one]), cx.scalar(0, None, "i64")]), one])
    picked = [cx.op("gather", [v, position], {"axis": axis}) for v in (values, indices)]
    if dim is None:
        return cx.op("reshape", [picked[0]], {"shape": []})
    return [cx.op("reshape", [v], {"shape": list(o.shape)}) for v, o in zip(picked,
                                                                             n.meta["val"])]


@handles(aten.mode.default)
def _mode(cx, n, x, dim=-1, keepdim=False):
    """(values, indices): the most frequent value along dim (the smallest of equally frequent
    ones, NaN counted as one value and largest) and, as eager's, the index that ends the
    value's run after eager's std::sort of (value, index) pairs (topk's ties = "sort"; where
    NaN is the mode eager's comparator, blind to NaN, orders them otherwise). The ascending
    sort puts equal values in runs; a run's number is the running count of run starts, its
    length a scatter of ones; the winner is the position with the largest (length, -run,
    position) key."""
    from ._aten import _ordering_key
    shape = cx.shape_of(x)
    if not shape:
        return [cx.v(x), cx.op("full", [], {"shape": [], "value": 0.0, "dtype": "dtype:i64"})]
    axis, size = dim % len(shape), shape[dim % len(shape)]
    if size == 0:
        cx.unsupported(n, "mode along an empty dimension (eager raises)")
    values, order = cx.ops("topk", [_ordering_key(cx, x)],
                           {"k": size, "axis": axis, "largest": 0, "ties": "sort"}, 2)

    def part(v, start, end):
        return cx.op("slice", [v], {"axis": axis, "start": start, "end": end, "step": 1})
    first = cx.op("eq", [part(values, 0, 1), part(values, 0, 1)])  # (True; NaN aside)
    first = cx.op("logical_or", [first, cx.op("logical_not", [first])])
    later, earlier = part(values, 1, size), part(values, 0, size - 1)
    same = cx.op("eq", [later, earlier])
    if cx.dtype_of(x) in ("f32", "f64", "f16", "bf16"):  # NaNs count as one value, as eager's
        same = cx.op("logical_or", [same, cx.op("logical_and", [
            cx.op("ne", [later, later]), cx.op("ne", [earlier, earlier])])])
    starts = cx.op("logical_not", [same])
    starts = cx.op("cat", [first, starts], {"axis": axis}) if size > 1 else first
    run = cx.op("cumsum", [cx.cast(starts, "i64")], {"axis": axis})  # 1, 1, 2, 3, 3, ...
    run0 = cx.op("sub", [run, cx.scalar(1, None, "i64")])
    ones = cx.op("full", [], {"shape": list(shape), "value": 1.0, "dtype": "dtype:f64"})
    zeros = cx.op("full", [], {"shape": list(shape), "value": 0.0, "dtype": "dtype:f64"})
    lengths = cx.op("scatter_add", [zeros, run0, ones], {"axis": axis})
    length = cx.op("gather", [lengths, run0], {"axis": axis})
    position = np.arange(size, dtype=np.float64).reshape(
        [size if d == axis else 1 for d in range(len(shape))])
    wide = float(size + 1)
    key = cx.op("add", [cx.op("mul", [length, cx.scalar(wide * wide, None, "f64")]),
                        cx.op("sub", [cx.g.add_constant(position),
                                      cx.op("mul", [cx.cast(run, "f64"),
                                                    cx.scalar(wide, None, "f64")])])])
    best = cx.op("argmax", [key], {"axis": axis, "keepdim": True})
    picked = [cx.op("gather", [cx.v(x), cx.op("gather", [order, best], {"axis": axis})],
                    {"axis": axis}),
              cx.op("gather", [order, best], {"axis": axis})]
    if keepdim:
        return picked
    return [cx.op("reshape", [v], {"shape": list(o.shape)}) for v, o in zip(picked,
                                                                             n.meta["val"])]
