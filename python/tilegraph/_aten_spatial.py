"""ATen table entries for the rest of the spatial Core ATen ops, written with the IR's 2-D
ops: 3-D convolution and pooling, the 2-D pooling / convolution backward overloads (when a
model calls them itself), col2im (F.fold), vector norms and pairwise distances (cdist,
pdist), max pooling's indices, max unpooling and adaptive max pooling.

3-D pooling is separable: a 3-D window is the product of per-axis windows, so max (and the
average, whose divisor is a product of per-axis counts in every PyTorch mode) over (h, w)
then over d gives PyTorch's result exactly, ties included (both pick the first in raster
order). A 3-D convolution is a sum over the kernel's depth taps of 2-D convolutions of
depth-strided slices, the slices stacked into the batch. Gradients come from the IR ops'
own gradients.
"""
import math

import numpy as np

from ._aten import _pair, aten, handles, transposed_conv2d


def _triple(v):
    v = [v] if isinstance(v, int) else list(v)
    return v * 3 if len(v) == 1 else v


def _batched(cx, n, x, rank):
    """x as [N, ...] with a batch axis (PyTorch's 3-D ops also take unbatched [C, D, H, W])
    -> (value, shape, whether a batch axis was added)."""
    shape = cx.shape_of(x)
    if len(shape) == rank - 1:
        return cx.op("reshape", [cx.v(x)], {"shape": [1] + shape}), [1] + shape, True
    if len(shape) != rank:
        cx.unsupported(n, f"input of rank {len(shape)}")
    return cx.v(x), shape, False


def _unbatched(cx, n, y, added):
    return cx.op("reshape", [y], {"shape": cx.shape_of(n)}) if added else y


def _pool_3d(cx, n, x, op, hw_attrs, d_attrs):
    """Separable 3-D pooling: `op` over (h, w) of [N, C*D, H, W], then over d of
    [N, C, D, H'*W'] (a (kd, 1) window); -> [N, C, D', H', W']."""
    x_, (b, c, d, h, w), added = _batched(cx, n, x, 5)
    y = cx.op("reshape", [x_], {"shape": [b, c * d, h, w]})
    y = cx.op(op, [y], hw_attrs)
    oh, ow = cx.g.type_of(y)[1][2:]
    y = cx.op("reshape", [y], {"shape": [b, c, d, oh * ow]})
    y = cx.op(op, [y], d_attrs)
    od = cx.g.type_of(y)[1][2]
    y = cx.op("reshape", [y], {"shape": [b, c, od, oh, ow]})
    return _unbatched(cx, n, y, added)


@handles(aten.max_pool3d_with_indices.default)
def _max_pool3d(cx, n, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    k, p, dil = _triple(kernel_size), _triple(padding), _triple(dilation)
    s = _triple(stride) if stride else k

    hw = {"kernel_size": k[1:], "stride": s[1:], "padding": p[1:], "dilation": dil[1:],
          "ceil_mode": ceil_mode}
    depth = {"kernel_size": [k[0], 1], "stride": [s[0], 1], "padding": [p[0], 0],
             "dilation": [dil[0], 1], "ceil_mode": ceil_mode}
    y = _pool_3d(cx, n, x, "max_pool2d", hw, depth)
    return [y, cx.unavailable(n, "max_pool3d indices")]


@handles(aten.avg_pool3d.default)
def _avg_pool3d(cx, n, x, kernel_size, stride=(), padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None):
    k, p = _triple(kernel_size), _triple(padding)
    s = _triple(stride) if stride else k
    # With divisor_override the (h, w) stage sums (divisor 1) and the depth stage divides.
    hw = {"kernel_size": k[1:], "stride": s[1:], "padding": p[1:], "ceil_mode": ceil_mode,
          "count_include_pad": count_include_pad, "divisor_override": 1 if divisor_override else 0}
    depth = {"kernel_size": [k[0], 1], "stride": [s[0], 1], "padding": [p[0], 0],
             "ceil_mode": ceil_mode, "count_include_pad": count_include_pad,
             "divisor_override": int(divisor_override or 0)}
    return _pool_3d(cx, n, x, "avg_pool2d", hw, depth)


@handles(aten._adaptive_avg_pool3d.default)
def _adaptive_avg_pool3d(cx, n, x, output_size):
    od, oh, ow = _triple(output_size)
    shape = cx.shape_of(x)
    return _pool_3d(cx, n, x, "adaptive_avg_pool2d", {"output_size": [oh, ow]},
                    {"output_size": [od, (oh if oh else shape[-2]) * (ow if ow else shape[-1])]})


# ---- 3-D convolution ------------------------------------------------------------------------
def conv3d(cx, n, x, w, stride, padding, dilation, groups):
    """Non-transposed 3-D convolution as sum_i conv2d(x[:, :, i*dd :: sd][:Dout], w[:, :, i]),
    each depth-strided slice [N, C, Dout, H, W] laid out as a batch of N*Dout images."""
    (b, c, d, h, w_), (o, cg, kd, kh, kw) = cx.shape_of(x), cx.shape_of(w)
    (sd, sh, sw), (pd, ph, pw), (dd, dh, dw) = stride, padding, dilation
    od = (d + 2 * pd - dd * (kd - 1) - 1) // sd + 1
    x_ = cx.v(x)
    if pd:
        x_ = cx.op("pad", [x_], {"before": [0, 0, pd, 0, 0], "after": [0, 0, pd, 0, 0],
                                 "value": 0.0})
    total = None
    for i in range(kd):
        start = i * dd
        xs = cx.op("slice", [x_], {"axis": 2, "start": start, "end": start + sd * (od - 1) + 1,
                                   "step": sd})
        xs = cx.op("permute", [xs], {"perm": [0, 2, 1, 3, 4]})
        xs = cx.op("reshape", [xs], {"shape": [b * od, c, h, w_]})
        wi = cx.op("slice", [cx.v(w)], {"axis": 2, "start": i, "end": i + 1, "step": 1})
        wi = cx.op("reshape", [wi], {"shape": [o, cg, kh, kw]})
        yi = cx.op("conv2d", [xs, wi], {"stride": [sh, sw], "padding": [ph, pw],
                                        "dilation": [dh, dw], "groups": groups})
        total = yi if total is None else cx.op("add", [total, yi])
    oh, ow = cx.g.type_of(total)[1][2:]
    y = cx.op("reshape", [total], {"shape": [b, od, o, oh, ow]})
    return cx.op("permute", [y], {"perm": [0, 2, 1, 3, 4]})


def conv_transpose3d(cx, n, x, w, stride, padding, dilation, groups):
    """Transposed 3-D convolution: for each depth tap k, the transposed 2-D convolution of
    every input depth slice (a batch of N*D images) with w[:, :, k], placed at output depths
    d*sd + k*dd (sd - 1 zeros between slices), summed over k, then cropped by the depth
    padding to the output's depth (which output_padding lengthens)."""
    (b, c, d, h, w_), (_, og, kd, kh, kw) = cx.shape_of(x), cx.shape_of(w)
    _, o, od, oh, ow = cx.shape_of(n)
    (sd, sh, sw), (pd, ph, pw), (dd, dh, dw) = stride, padding, dilation
    slices = cx.op("reshape", [cx.op("permute", [cx.v(x)], {"perm": [0, 2, 1, 3, 4]})],
                   {"shape": [b * d, c, h, w_]})
    spread = (d - 1) * sd + 1  # input depths at stride sd
    length = max(spread + dd * (kd - 1), pd + od)
    total = None
    for k in range(kd):
        wk = cx.op("slice", [cx.v(w)], {"axis": 2, "start": k, "end": k + 1, "step": 1})
        wk = cx.op("reshape", [wk], {"shape": [c, og, kh, kw]})
        yk = transposed_conv2d(cx, slices, wk, {
            "stride": [sh, sw], "padding": [ph, pw], "dilation": [dh, dw], "groups": groups},
            [b * d, o, oh, ow])
        yk = cx.op("reshape", [yk], {"shape": [b, d, 1, o, oh, ow]})
        if sd > 1:  # sd - 1 zero slices after each input depth
            yk = cx.op("pad", [yk], {"before": [0] * 6, "after": [0, 0, sd - 1, 0, 0, 0],
                                     "value": 0.0})
        yk = cx.op("reshape", [yk], {"shape": [b, d * sd, o, oh, ow]})
        yk = cx.op("slice", [yk], {"axis": 1, "start": 0, "end": spread, "step": 1})
        before = k * dd
        yk = cx.op("pad", [yk], {"before": [0, before, 0, 0, 0],
                                 "after": [0, length - before - spread, 0, 0, 0], "value": 0.0})
        total = yk if total is None else cx.op("add", [total, yk])
    total = cx.op("slice", [total], {"axis": 1, "start": pd, "end": pd + od, "step": 1})
    return cx.op("permute", [total], {"perm": [0, 2, 1, 3, 4]})


# ---- backward overloads a model may call itself ---------------------------------------------
@handles(aten.avg_pool2d_backward.default)
def _avg_pool2d_backward(cx, n, dy, x, kernel_size, stride, padding, ceil_mode,
                         count_include_pad, divisor_override=None):
    return cx.op("avg_pool2d_backward", [cx.v(dy)], {
        "kernel_size": _pair(kernel_size), "stride": _pair(stride) if stride else [],
        "padding": _pair(padding), "ceil_mode": ceil_mode,
        "count_include_pad": count_include_pad, "divisor_override": divisor_override or 0,
        "input_shape": cx.shape_of(x)})


@handles(aten._adaptive_avg_pool2d_backward.default)
def _adaptive_avg_pool2d_backward(cx, n, dy, x):
    return cx.op("adaptive_avg_pool2d_backward", [cx.v(dy)], {"input_shape": cx.shape_of(x)})


@handles(aten.max_pool2d_with_indices_backward.default)
def _max_pool2d_backward(cx, n, dy, x, kernel_size, stride, padding, dilation, ceil_mode,
                         indices):
    """dx: each dy element added at the position its index names in its (n, c) plane (the
    indices are flat within H*W), as PyTorch's kernel does whatever the indices are."""
    shape = cx.shape_of(x)
    planes, area = shape[:-2], shape[-2] * shape[-1]
    out_area = int(np.prod(cx.shape_of(dy)[-2:]))
    flat = lambda v, size: cx.op("reshape", [v], {"shape": planes + [size]})  # noqa: E731
    zeros = cx.op("full", [], {"shape": planes + [area], "value": 0.0,
                               "dtype": "dtype:" + cx.dtype_of(n)})
    dx = cx.op("scatter_add", [zeros, flat(cx.v(indices), out_area),
                               flat(cx.v(dy), out_area)], {"axis": len(planes)})
    return cx.op("reshape", [dx], {"shape": shape})


@handles(aten.convolution_backward.default)
def _convolution_backward(cx, n, dy, x, w, bias_sizes, stride, padding, dilation, transposed,
                          output_padding, groups, output_mask):
    """(dx, dw, db) of a non-transposed 2-D convolution, as output_mask asks."""
    if transposed or len(cx.shape_of(x)) != 4:
        cx.unsupported(n, "convolution_backward other than 2-D, non-transposed")
    attrs = {"stride": list(stride), "padding": list(padding), "dilation": list(dilation),
             "groups": groups}
    outs = [cx.unavailable(n, "convolution_backward result not asked for")] * 3
    if output_mask[0]:
        outs[0] = cx.op("conv2d_backward_input", [cx.v(dy), cx.v(w)],
                        {**attrs, "input_shape": cx.shape_of(x)})
    if output_mask[1]:
        outs[1] = cx.op("conv2d_backward_weight", [cx.v(dy), cx.v(x)],
                        {**attrs, "weight_shape": cx.shape_of(w)})
    if output_mask[2]:
        outs[2] = cx.op("sum", [cx.v(dy)], {"axes": [0, 2, 3], "keepdim": False})
    return outs


@handles(aten.embedding_dense_backward.default)
def _embedding_dense_backward(cx, n, dy, indices, num_weights, padding_idx,
                              scale_grad_by_freq):
    if scale_grad_by_freq:
        cx.unsupported(n, "embedding_dense_backward with scale_grad_by_freq")
    return cx.op("embedding_backward", [cx.v(dy), cx.v(indices)],
                 {"num_weights": int(num_weights), "padding_idx": int(padding_idx)})


# ---- col2im (F.fold) ---------------------------------------------------------------------
@handles(aten.col2im.default)
def _col2im(cx, n, cols, output_size, kernel_size, dilation, padding, stride):
    """F.fold: [N, C*kh*kw, L] column blocks summed into [N, C, H, W] — a scatter-add of
    every column entry to its (constant) image position, computed here from the geometry."""
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = (_pair(v) for v in (kernel_size, dilation,
                                                                  padding, stride))
    h, w = _pair(output_size)
    shape = cx.shape_of(cols)
    x_, batched = cx.v(cols), len(shape) == 3
    if not batched:
        x_, shape = cx.op("reshape", [x_], {"shape": [1] + shape}), [1] + shape
    b, ckk, length = shape
    c = ckk // (kh * kw)
    bh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    bw = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if bh * bw != length:
        cx.unsupported(n, f"col2im with {length} blocks where the geometry gives {bh * bw}")
    ki, kj = np.divmod(np.arange(kh * kw), kw)
    li, lj = np.divmod(np.arange(length), bw)
    rows = li[None, :] * sh - ph + ki[:, None] * dh          # [kh*kw, L]
    cols_ = lj[None, :] * sw - pw + kj[:, None] * dw
    inside = (rows >= 0) & (rows < h) & (cols_ >= 0) & (cols_ < w)
    # Entries that land in the padding go to one extra slot, dropped afterwards.
    target = np.where(inside, rows * w + cols_, h * w)
    index = np.broadcast_to(target[None, None], (b, c, kh * kw, length)).reshape(b, c, -1)
    src = cx.op("reshape", [x_], {"shape": [b, c, kh * kw * length]})
    base = cx.op("full", [], {"shape": [b, c, h * w + 1], "value": 0.0,
                              "dtype": "dtype:" + cx.dtype_of(n)})
    out = cx.op("scatter_add", [base, cx.g.add_constant(np.ascontiguousarray(index)), src],
                {"axis": 2})
    out = cx.op("slice", [out], {"axis": 2, "start": 0, "end": h * w, "step": 1})
    return cx.op("reshape", [out], {"shape": cx.shape_of(n)})


# ---- pairwise distances --------------------------------------------------------------------
def p_norm(cx, n, x, p, axes, keepdim=False):
    """The p-norm of x over `axes` ([] = all), with gradient 0 where the norm is 0 (as
    PyTorch's norm, cdist and pdist backward define it), not the NaN of d/ds s^(1/p) at 0."""
    dtype = cx.dtype_of(n)
    attrs = {"axes": list(axes), "keepdim": bool(keepdim)}
    mag = cx.op("abs", [x])
    if p == 0:
        nonzero = cx.cast(cx.op("ne", [mag, cx.scalar(0.0, None, dtype)]), dtype)
        return cx.op("sum", [nonzero], attrs)
    if p == math.inf:
        return cx.op("amax", [mag], attrs)
    if p == -math.inf:
        return cx.op("neg", [cx.op("amax", [cx.op("neg", [mag])], attrs)])
    if p == 1:
        return cx.op("sum", [mag], attrs)
    if 0 < p < 1:  # |x|^p's derivative is infinite at 0: the gradient there is 0, as eager's
        nonzero = cx.op("gt", [mag, cx.scalar(0.0, None, dtype)])
        safe_mag = cx.op("where", [nonzero, mag, cx.scalar(1.0, None, dtype)])
        powered = cx.op("where", [nonzero, cx.op("pow_scalar", [safe_mag], {"exponent": float(p)}),
                                  cx.scalar(0.0, None, dtype)])
    else:
        powered = cx.op("mul", [x, x]) if p == 2 else cx.op("pow_scalar", [mag],
                                                              {"exponent": float(p)})
    s = cx.op("sum", [powered], attrs)
    positive = cx.op("gt", [s, cx.scalar(0.0, None, dtype)])
    safe = cx.op("where", [positive, s, cx.scalar(1.0, None, dtype)])
    root = cx.op("sqrt", [safe]) if p == 2 else cx.op("pow_scalar", [safe],
                                                      {"exponent": 1.0 / float(p)})
    return cx.op("where", [positive, root, cx.scalar(0.0, None, dtype)])


@handles(aten.linalg_vector_norm.default)
def _vector_norm(cx, n, x, ord=2, dim=None, keepdim=False, dtype=None):
    """torch.linalg.vector_norm (x.norm(), F.normalize): kept whole at capture so that its
    gradient at a zero vector is 0, as PyTorch's, instead of the NaN its decomposition
    (pow(sum(x**2), 0.5)) gives there."""
    x_ = cx.cast(cx.v(x), cx.dtype_of(n))
    axes = [] if dim is None else [dim] if isinstance(dim, int) else list(dim)
    return p_norm(cx, n, x_, float(ord), axes, keepdim)


@handles(aten._cdist_forward.default)
def _cdist(cx, n, x1, x2, p, compute_mode=None):
    """torch.cdist: ||x1[..., i, :] - x2[..., j, :]||_p from the broadcast difference
    [..., P, R, M] (exact; memory P*R*M)."""
    s1, s2 = cx.shape_of(x1), cx.shape_of(x2)
    a = cx.op("reshape", [cx.v(x1)], {"shape": s1[:-1] + [1, s1[-1]]})
    b = cx.op("reshape", [cx.v(x2)], {"shape": s2[:-2] + [1] + s2[-2:]})
    return p_norm(cx, n, cx.op("sub", [a, b]), float(p), [-1])


@handles(aten._pdist_forward.default)
def _pdist(cx, n, x, p=2.0):
    """torch.pdist: the distances between rows i < j of x [N, M], in row-major order of
    the upper triangle."""
    rows, m = cx.shape_of(x)
    i, j = np.triu_indices(rows, k=1)
    pick = lambda idx: cx.op("index_select", [cx.v(x), cx.g.add_constant(  # noqa: E731
        np.ascontiguousarray(idx, dtype=np.int64))], {"axis": 0})
    return p_norm(cx, n, cx.op("sub", [pick(i), pick(j)]), float(p), [-1])


# ---- 1-D pooling (as 2-D pooling of height 1) ---------------------------------------------
def _pool_1d(cx, n, x, op, attrs):
    shape = cx.shape_of(x)
    y = cx.op("reshape", [cx.v(x)], {"shape": shape[:-1] + [1, shape[-1]]})
    if len(shape) == 2:  # unbatched [C, L]
        y = cx.op("reshape", [y], {"shape": [1] + shape[:-1] + [1, shape[-1]]})
    return cx.op("reshape", [cx.op(op, [y], attrs)], {"shape": cx.shape_of(n)})


@handles(aten.avg_pool1d.default)
def _avg_pool1d(cx, n, x, kernel_size, stride=(), padding=0, ceil_mode=False,
                count_include_pad=True):
    k = list(kernel_size) if not isinstance(kernel_size, int) else [kernel_size]
    s = (list(stride) if not isinstance(stride, int) else [stride]) if stride else k
    p = list(padding) if not isinstance(padding, int) else [padding]
    return _pool_1d(cx, n, x, "avg_pool2d", {
        "kernel_size": [1, k[0]], "stride": [1, s[0]], "padding": [0, p[0]],
        "ceil_mode": ceil_mode, "count_include_pad": count_include_pad, "divisor_override": 0})


@handles(aten.adaptive_avg_pool1d.default)
def _adaptive_avg_pool1d(cx, n, x, output_size):
    size = output_size if isinstance(output_size, int) else output_size[0]
    return _pool_1d(cx, n, x, "adaptive_avg_pool2d", {"output_size": [1, int(size)]})


# ---- max pooling's indices, unpooling, adaptive max pooling --------------------------------
def max_pool_indices(cx, n, x, kernel, stride, padding, dilation):
    """MaxPool2d(return_indices=True)'s indices: for each window, the flat position (h * W +
    w) in its input plane of the window's first maximum, as torch's. The windows are gathered
    with a constant index (positions in the padding read -inf), argmax picks the window
    element, and a constant table maps it to its plane position."""
    shape = cx.shape_of(x)
    out_shape = list(n.meta["val"][1].shape)
    lead, (h, w), (oh, ow) = shape[:-2], shape[-2:], out_shape[-2:]
    kh, kw = kernel
    ki, kj = np.divmod(np.arange(kh * kw), kw)
    rows = (np.arange(oh)[None, :, None] * stride[0] - padding[0] +
            ki[:, None, None] * dilation[0])
    cols = (np.arange(ow)[None, None, :] * stride[1] - padding[1] +
            kj[:, None, None] * dilation[1])
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    plane = np.where(inside, rows * w + cols, h * w)  # h * w: the -inf past the plane
    lead_count = int(np.prod(lead, dtype=np.int64))
    flat = cx.op("reshape", [cx.v(x)], {"shape": [lead_count, h * w]})
    flat = cx.op("pad", [flat], {"before": [0, 0], "after": [0, 1], "value": -math.inf})
    picked = cx.op("index_select", [flat, cx.g.add_constant(plane.reshape(-1).astype(np.int64))],
                   {"axis": 1})
    windows = cx.op("reshape", [picked], {"shape": [lead_count, kh * kw, oh * ow]})
    best = cx.op("argmax", [windows], {"axis": 1, "keepdim": True})
    table = cx.g.add_constant(np.ascontiguousarray(plane.reshape(1, kh * kw, oh * ow),
                                                   dtype=np.int64))
    table = cx.op("expand", [table], {"shape": [lead_count, kh * kw, oh * ow]})
    index = cx.op("gather", [table, best], {"axis": 1})
    return cx.op("reshape", [index], {"shape": out_shape})


@handles(aten.adaptive_max_pool2d.default)
def _adaptive_max_pool(cx, n, x, output_size):
    """(values, indices) of AdaptiveMaxPool2d: bin i of an axis of size s spans
    floor(i * s / o) .. ceil((i + 1) * s / o); each bin's first maximum and its flat plane
    position. The bins are gathered with a constant index (short bins padded with -inf), and
    the values gathered at argmax, so that a gradient goes to that one element, as torch's."""
    shape = cx.shape_of(x)
    lead, (h, w) = shape[:-2], shape[-2:]
    oh, ow = (int(v) if v is not None else d for v, d in zip(_pair(output_size), (h, w)))

    def bins(size, out):
        starts = [i * size // out for i in range(out)]
        ends = [-(-(i + 1) * size // out) for i in range(out)]
        return starts, ends
    (rs, re_), (cs, ce) = bins(h, oh), bins(w, ow)
    kh, kw = max(e - b for b, e in zip(rs, re_)), max(e - b for b, e in zip(cs, ce))
    plane = np.full((kh * kw, oh * ow), h * w, dtype=np.int64)  # h * w: the -inf past it
    for i in range(oh):
        for j in range(ow):
            cells = [r * w + c for r in range(rs[i], re_[i]) for c in range(cs[j], ce[j])]
            plane[:len(cells), i * ow + j] = cells
    lead_count = int(np.prod(lead, dtype=np.int64))
    flat = cx.op("reshape", [cx.v(x)], {"shape": [lead_count, h * w]})
    padded = cx.op("pad", [flat], {"before": [0, 0], "after": [0, 1], "value": -math.inf})
    picked = cx.op("index_select", [padded, cx.g.add_constant(plane.reshape(-1))], {"axis": 1})
    windows = cx.op("reshape", [picked], {"shape": [lead_count, kh * kw, oh * ow]})
    best = cx.op("argmax", [windows], {"axis": 1, "keepdim": True})
    table = cx.op("expand", [cx.g.add_constant(plane.reshape(1, kh * kw, oh * ow))],
                  {"shape": [lead_count, kh * kw, oh * ow]})
    index = cx.op("gather", [table, best], {"axis": 1})
    values = cx.op("gather", [flat, cx.op("reshape", [index], {"shape": [lead_count, oh * ow]})],
                   {"axis": 1})
    out_shape = list(lead) + [oh, ow]
    return [cx.op("reshape", [values], {"shape": out_shape}),
            cx.op("reshape", [index], {"shape": out_shape})]


@handles(aten.max_unpool2d.default, aten.max_unpool3d.default)
def _max_unpool(cx, n, x, indices, output_size, stride=None, padding=None):
    """MaxUnpool2d / 3d: zeros of output_size per plane (volume) with x's values at their
    indices. A position named twice (overlapping windows with one maximum) holds that value
    once, and, as torch's gradient is a gather, each of its copies in x gets the position's
    whole gradient: value v / c per copy (c copies) plus (v - v) * (1 - 1 / c), whose value
    is zero and whose gradient brings each copy's to one."""
    out_shape, shape = cx.shape_of(n), cx.shape_of(x)
    spatial = len(output_size)
    lead_count = int(np.prod(shape[:-spatial], dtype=np.int64))
    plane = int(np.prod(out_shape[-spatial:], dtype=np.int64))
    count = int(np.prod(shape[-spatial:], dtype=np.int64))
    dtype = cx.dtype_of(n)

    def full(size, value):
        return cx.op("full", [], {"shape": [lead_count, size], "value": value,
                                  "dtype": "dtype:" + dtype})
    values = cx.op("reshape", [cx.v(x)], {"shape": [lead_count, count]})
    index = cx.op("reshape", [cx.v(indices)], {"shape": [lead_count, count]})
    copies = cx.op("gather", [cx.op("scatter_add", [full(plane, 0.0), index, full(count, 1.0)],
                                    {"axis": 1}), index], {"axis": 1})
    share = cx.op("div", [values, copies])
    nothing = cx.op("sub", [values, cx.op("stop_gradient", [values])])
    rest = cx.op("mul", [nothing, cx.op("sub", [cx.scalar(1.0, None, dtype),
                                                cx.op("reciprocal", [copies])])])
    written = cx.op("add", [share, rest])
    out = cx.op("scatter_add", [full(plane, 0.0), index, written], {"axis": 1})
    return cx.op("reshape", [out], {"shape": out_shape})
