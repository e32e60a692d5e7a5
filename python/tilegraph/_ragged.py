"""Masked selections x[mask] compiled without a data-dependent shape.

`x[mask]` (a boolean mask over x's leading dims) has as many rows as the mask has true
entries, which only the data knows. When the selected rows feed only row-wise work
(pointwise ops, linear layers, softmax over other dims, losses) and end in reductions —
the common case: `loss_fn(logits[mask], labels[mask])`, Hugging Face's ELECTRA loss — the
program keeps *all* rows (the mask's size, the upper bound) together with the mask as a
validity vector, and every reduction over the rows counts only the valid ones. Results,
and gradients, equal PyTorch's compacted computation.

Rows the mask leaves out hold a copy of the first selected row, so everything computed on
them is something PyTorch computes too (finite wherever PyTorch's result is: log of a
dropped 0 is never taken); reductions skip them with where (not a product), so their
gradient is exactly 0 and adds nothing where it flows back; a class-index target is set
to the loss's ignore_index there.

Anything else touching the selected rows (an op mixing them, a reduction this module does
not mask, returning them) is refused at capture with the user's line, as every other
data-dependent shape is (_capture._unsupported_report).
"""
import math

import numpy as np
import torch
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

aten = torch.ops.aten

# Ops that need nothing: torch.export's size bookkeeping for the unbacked row count.
_BOOKKEEPING = {aten.sym_size.int, aten._assert_scalar.default,
                aten._assert_tensor_metadata.default, aten.sym_constrain_range_for_size.default}


def is_bookkeeping(node):
    """Size bookkeeping: the ops above, and Python comparisons / arithmetic on sizes."""
    if node.target in _BOOKKEEPING:
        return True
    return (getattr(node.target, "__module__", "") in ("_operator", "operator") and
            not isinstance(node.meta.get("val"), torch.Tensor))
# Row-wise ops beyond the pointwise-tagged ones (meta-driven: the row axis is wherever the
# row-count symbol sits in the result).
_ROWWISE = {aten._to_copy.default, aten.clone.default, aten.alias.default,
            aten.view.default, aten.reshape.default, aten._unsafe_view.default,
            aten.permute.default, aten.t.default, aten.transpose.int, aten.expand.default,
            aten.unsqueeze.default, aten.mm.default, aten.addmm.default,
            aten.native_layer_norm.default}
# Row-wise when their `dim` argument (at this position) is not the row axis.
_ALONG_DIM = {aten.select.int: 1, aten.slice.Tensor: 1, aten.gather.default: 1,
              aten.squeeze.dim: 1, aten.squeeze.dims: 1, aten.cumsum.default: 1,
              aten._log_softmax.default: 1, aten._softmax.default: 1, aten.cat.default: 1}
# Reductions, by what the rows left out are replaced with before reducing.
_REDUCTION_KIND = {aten.sum.default: "sum", aten.sum.dim_IntList: "sum",
                   aten.mean.default: "mean", aten.mean.dim: "mean",
                   aten.amax.default: "amax", aten.max.default: "amax",
                   aten.amin.default: "amin", aten.min.default: "amin"}
_REDUCTIONS = set(_REDUCTION_KIND)
_LOSSES = {aten.nll_loss_forward.default}


def row_symbol(node):
    """The one unbacked symbol of a node's result (its row count), or None."""
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    try:
        symbols = free_unbacked_symbols(val) if val is not None else set()
    except (TypeError, AttributeError):
        return None
    return next(iter(symbols)) if len(symbols) == 1 else ("many" if symbols else None)


def row_axis(node):
    """The axis of a ragged node's result that holds the row count."""
    shape = node.meta["val"].shape
    axes = [d for d, s in enumerate(shape) if isinstance(s, torch.SymInt) and
            free_unbacked_symbols(s)]
    return axes[0] if len(axes) == 1 else None


def is_masked_selection(node):
    """aten.index.Tensor with one boolean mask over x's leading dims (a uint8 index is a
    mask too, as in torch: deprecated there, still honoured)."""
    if node.op != "call_function" or node.target != aten.index.Tensor:
        return False
    x, indices = node.args[0], node.args[1]
    if len(indices) != 1 or not isinstance(indices[0], torch.fx.Node):
        return False
    mask = indices[0].meta.get("val")
    return (mask is not None and mask.dtype in (torch.bool, torch.uint8) and
            tuple(mask.shape) == tuple(x.meta["val"].shape[:mask.dim()]))


def why_not(node):
    """None if the ragged node `node` (its result or an input has the row count) can be
    compiled here, else what stops it."""
    if is_bookkeeping(node) or is_masked_selection(node):
        return None
    if not hasattr(node.target, "tags"):
        return "not row-wise"
    symbols = {row_symbol(a) for a in node.all_input_nodes} - {None}
    if len(symbols) > 1 or "many" in symbols:
        return "combines selections by different masks"
    if row_symbol(node) is None and node.target not in _REDUCTIONS | _LOSSES:
        return "mixes the selected rows"
    if row_symbol(node) is not None and row_axis(node) is None:
        return "reshapes the selected rows"
    if node.target in _ALONG_DIM:
        return _along_rows(node)
    if node.target == aten.repeat.default:
        src, repeats = node.args[0], list(node.args[1])
        at = row_axis(src) + len(repeats) - src.meta["val"].dim()
        return None if repeats[at] == 1 else "repeats the selected rows"
    if torch.Tag.pointwise in node.target.tags or node.target in _ROWWISE:
        if node.target in (aten.mm.default, aten.addmm.default):
            b = node.args[-1]
            if row_symbol(b) is not None:
                return "a matrix product over the selected rows"
        return None
    if node.target in _REDUCTIONS | _LOSSES:
        return None
    return "not a row-wise op"


def _along_rows(node):
    """None if the op's dim argument avoids the row axis of its (first ragged) input."""
    src = node.args[0]
    if isinstance(src, (list, tuple)):  # cat
        src = next(a for a in src if row_symbol(a) is not None)
    dims = node.args[_ALONG_DIM[node.target]] if len(node.args) > _ALONG_DIM[node.target] \
        else node.kwargs.get("dim", 0)
    rank = src.meta["val"].dim()
    dims = [dims] if isinstance(dims, int) else list(dims)
    if row_symbol(src) is not None and row_axis(src) in [d % max(rank, 1) for d in dims]:
        return f"{node.target.__name__.split('.')[0]} along the selected rows"
    return None


class Rows:
    """The validity vectors of the row counts met while translating one graph."""

    def __init__(self, cx):
        self.cx = cx
        self.bounds = {}  # row-count symbol -> its upper bound (the mask's size)
        self.valid = {}   # row-count symbol -> bool value name [bound]

    def bound(self, dim):
        """An int for a shape entry: itself, or a row count's upper bound."""
        if isinstance(dim, torch.SymInt) and free_unbacked_symbols(dim):
            return self.bounds[next(iter(free_unbacked_symbols(dim)))]
        return int(dim)

    def handles(self, node):
        return is_bookkeeping(node) or is_masked_selection(node) or (
            any(row_symbol(a) is not None for a in node.all_input_nodes) and
            node.target in _REDUCTIONS | _LOSSES)

    def translate(self, node):
        if is_bookkeeping(node):
            return None
        if is_masked_selection(node):
            return self._select(node)
        if node.target in _LOSSES:
            return self._nll(node)
        return self._reduce(node)

    def _valid_like(self, node):
        """node's validity broadcast to its (padded) shape, as a bool value."""
        cx = self.cx
        shape, axis = cx.shape_of(node), row_axis(node)
        symbol = row_symbol(node)
        view = [1] * len(shape)
        view[axis] = shape[axis]
        v = cx.op("reshape", [self.valid[symbol]], {"shape": view})
        return cx.op("expand", [v], {"shape": shape})

    def _select(self, node):
        cx = self.cx
        x, mask = node.args[0], node.args[1][0]
        symbol = row_symbol(node)
        mshape, xshape = cx.shape_of(mask), cx.shape_of(x)
        rows = int(np.prod(mshape, dtype=np.int64))
        self.bounds[symbol] = rows
        valid = cx.op("reshape", [cx.cast(cx.v(mask), "bool")], {"shape": [rows]})
        self.valid[symbol] = valid
        # Each row left out takes a copy of the first selected row (of row 0 when none is).
        first = cx.op("argmax", [cx.cast(valid, "i32")], {"axis": 0})
        position = cx.g.add_constant(np.arange(rows, dtype=np.int64))
        source = cx.op("where", [valid, position, first])
        out = cx.op("reshape", [cx.v(x)], {"shape": [rows] + xshape[len(mshape):]})
        return cx.op("index_select", [out, source], {"axis": 0})

    def _reduce(self, node):
        """sum / mean / amax / amin: rows the mask left out are replaced by the reduction's
        identity before reducing; a mean divides by the number of valid elements reduced."""
        from ._aten import TABLE
        cx = self.cx
        x = node.args[0]
        if row_symbol(x) is None:
            return TABLE[node.target](cx, node, *node.args, **node.kwargs)
        dtype = cx.dtype_of(x)
        kind = _REDUCTION_KIND[node.target]
        fill = {"amax": -math.inf, "amin": math.inf}.get(kind, 0.0)
        valid = self._valid_like(x)
        filled = cx.op("where", [valid, cx.v(x), cx.scalar(fill, None, dtype)])
        dims = node.args[1] if len(node.args) > 1 else None
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        axes = [] if dims is None else list(dims)
        attrs = {"axes": axes, "keepdim": bool(keepdim)}
        if kind == "amax":
            return cx.op("amax", [filled], attrs)
        if kind == "amin":
            return cx.op("neg", [cx.op("amax", [cx.op("neg", [filled])], attrs)])
        out_dtype = cx.dtype_of(node)
        total = cx.op("sum", [cx.cast(filled, out_dtype)], attrs)
        if kind == "sum":
            return total
        count = cx.op("sum", [cx.cast(valid, out_dtype)], attrs)
        return cx.op("div", [total, count])

    def _nll(self, node):
        """nll_loss over selected rows: the rows left out get ignore_index as their target,
        which the loss already skips (and leaves out of a mean's count)."""
        from ._aten import TABLE
        cx = self.cx
        target, ignore_index = node.args[1], node.args[4]
        if row_symbol(target) is None:
            return TABLE[node.target](cx, node, *node.args, **node.kwargs)
        safe = cx.op("where", [self._valid_like(target), cx.v(target),
                               cx.scalar(int(ignore_index), None, cx.dtype_of(target))])
        kept, cx.values[target] = cx.values[target], safe
        try:
            return TABLE[node.target](cx, node, *node.args, **node.kwargs)
        finally:
            cx.values[target] = kept
