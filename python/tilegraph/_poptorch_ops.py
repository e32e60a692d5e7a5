"""PopTorch's operators that are IR ops of their own in tilegraph: fps and nearest
(torch_cluster's farthest point sampling and nearest-point clustering, for PyTorch Geometric
models) and ctc_beam_search_decoder.

Each is a torch custom op (`torch.ops.tilegraph.*`) so that torch.export records it whole;
the capture translates it to the IR op (src/ops/point_cloud.cc, src/ops/ctc.cc). Outside a
compiled model (eager PyTorch) the same C++ kernels run through a one-op tilegraph program,
so both paths give the same numbers. Semantics, ties and errors are the kernels'
(src/kernels/cpu/point_cloud_kernels.h, ctc_decoder_kernels.h).
"""
import math
from typing import List, Tuple

import numpy as np
import torch

from ._blocks import Error

_programs = {}  # (op, input types, attrs) -> compiled one-op program


def _run_op(name, tensors, attrs, outputs):
    """Runs IR op `name` on torch tensors with tilegraph's CPU kernels (eager calls)."""
    from . import _core
    from ._capture import tg_dtype
    # Half operands run widened in tilegraph's kernels anyway (numpy has no bfloat16).
    tensors = [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors]
    arrays = [np.ascontiguousarray(t.detach().cpu().numpy()) for t in tensors]
    key = (name, tuple((a.dtype.str, a.shape) for a in arrays), repr(sorted(attrs.items())))
    program = _programs.get(key)
    if program is None:
        g = _core.Graph(f"eager_{name}")
        inputs = [g.add_input(f"x{i}", tg_dtype(t.dtype), list(t.shape))
                  for i, t in enumerate(tensors)]
        for out in g.op(name, inputs, attrs, "", 0)[:outputs]:
            g.add_output(out)
        program = _programs[key] = _core.Executable.compile(g, training=False)
    # One step: run() takes every input with a leading steps dimension.
    return [torch.from_numpy(np.array(r)) for r in program.run([a[None] for a in arrays])]


# ---- torch custom ops ----------------------------------------------------------------------

@torch.library.custom_op("tilegraph::fps", mutates_args=())
def _fps(src: torch.Tensor, start: torch.Tensor, ptr: List[int],
         counts: List[int]) -> torch.Tensor:
    return _run_op("farthest_point_sample", [src, start],
                   {"ptr": list(ptr), "counts": list(counts)}, 1)[0]


@_fps.register_fake
def _(src, start, ptr, counts):
    return src.new_empty((sum(counts),), dtype=torch.long)


@torch.library.custom_op("tilegraph::nearest", mutates_args=())
def _nearest(x: torch.Tensor, y: torch.Tensor, batch_x: torch.Tensor,
             batch_y: torch.Tensor) -> torch.Tensor:
    return _run_op("nearest_point", [x, y, batch_x, batch_y], {}, 1)[0]


@_nearest.register_fake
def _(x, y, batch_x, batch_y):
    return x.new_empty((x.shape[0],), dtype=torch.long)


@torch.library.custom_op("tilegraph::ctc_beam_search_decoder", mutates_args=())
def _ctc_beam_search(probs: torch.Tensor, lengths: torch.Tensor, blank: int, beam_width: int,
                     top_paths: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    attrs = {"blank": blank, "beam_width": beam_width, "top_paths": top_paths}
    scores, path_lengths, paths = _run_op("ctc_beam_search_decoder", [probs, lengths], attrs, 3)
    return scores.to(probs.dtype), path_lengths, paths


@_ctc_beam_search.register_fake
def _(probs, lengths, blank, beam_width, top_paths):
    t, b = probs.shape[0], probs.shape[1]
    return (probs.new_empty((b, top_paths)),
            probs.new_empty((b, top_paths), dtype=torch.int32),
            probs.new_empty((b, top_paths, t), dtype=torch.int32))


# ---- PopTorch's functions ------------------------------------------------------------------

def _check_tensor(op, name, value):
    if not isinstance(value, torch.Tensor):
        raise Error(f"`{op}` must take a torch.tensor `{name}` input. {type(value)} is not "
                    "supported.")


def fps(src, ptr, ratio=0.5, random_start=False):
    """PopTorch's fps (torch_cluster.fps with a `ptr` list): farthest point sampling over
    the segments [ptr[i], ptr[i + 1]) of src's points, ceil(size * ratio) points from each
    (computed in src's dtype, as torch_cluster does), starting at each segment's first point
    or, with random_start, at a point drawn from the engine's generator. Returns the taken
    points' indices into src (int64), segment after segment."""
    _check_tensor("fps", "src", src)
    if not isinstance(ptr, list):
        raise Error("`ptr` must be a list of integers.")
    if not len(ptr) >= 2:
        raise Error("`ptr` must containt at least 2 elements.")
    if not isinstance(ratio, float):
        raise Error(f"`ratio` must be of float type. {type(ratio)} is not supported.")
    if not isinstance(random_start, bool):
        raise Error(f"`random_start` must be of bool type. {type(random_start)} is not "
                    "supported.")
    if not 0.0 < ratio <= 1.0:
        raise Error(f"fps: `ratio` must be in (0, 1], got {ratio}")
    points = src.reshape(-1, 1) if src.dim() == 1 else src
    if points.dim() != 2 or not points.is_floating_point():
        raise Error(f"fps: `src` must be floating points [N, D], got {src.dtype} "
                    f"{list(src.shape)}")
    ptr = [int(p) for p in ptr]
    if ptr[0] != 0 or ptr[-1] != points.shape[0] or any(
            a > b for a, b in zip(ptr, ptr[1:])):
        raise Error(f"fps: `ptr` must rise from 0 to the number of points "
                    f"{points.shape[0]}, got {ptr}")
    sizes = [b - a for a, b in zip(ptr, ptr[1:])]
    counts = [math.ceil(_product_in(points.dtype, size, ratio)) for size in sizes]
    if random_start:
        size_t = torch.tensor(sizes, dtype=torch.float32)
        drawn = (torch.rand(len(sizes)) * size_t).long()
        start = torch.minimum(drawn, (torch.tensor(sizes) - 1).clamp(min=0))
    else:
        start = torch.zeros(len(sizes), dtype=torch.long)
    return _fps(points, start, ptr, counts)


def _product_in(dtype, a, b):
    """a * b with both operands and the product rounded to `dtype`, as torch_cluster computes
    fps's counts (ceil(10 * 0.3) is 3 in float32, 4 in float64). In numpy, not torch: inside
    a capture torch's arithmetic on constants is traced rather than computed."""
    if dtype == torch.bfloat16:
        return _round_bf16(_round_bf16(a) * _round_bf16(b))  # an exact product in float64
    np_dtype = {torch.float16: np.float16, torch.float32: np.float32}.get(dtype, np.float64)
    return float(np_dtype(a) * np_dtype(b))


def _round_bf16(x):
    """x rounded to bfloat16 (nearest even), as a Python float."""
    from .onnx import _bf16_bits
    bits = _bf16_bits(np.array([x], dtype=np.float32)).astype(np.uint32) << 16
    return float(bits.view(np.float32)[0])


def _batch_vector(value, other, name, count):
    if value is None or (isinstance(value, list) and not value):
        return torch.zeros(count, dtype=torch.long)
    if isinstance(value, list):
        dtype = other.dtype if isinstance(other, torch.Tensor) else torch.long
        value = torch.tensor(value, dtype=dtype)
    if not isinstance(value, torch.Tensor):
        raise Error(f"`batch_x` and `batch_y` must be torch.Tensors or lists while `{name}` is "
                    f"of type {type(value)}.")
    if value.shape != (count,) or value.is_floating_point():
        raise Error(f"nearest: `{name}` must be an integer vector of {count} batch indices, "
                    f"got {value.dtype} {list(value.shape)}")
    return value


def nearest(x, y, batch_x=None, batch_y=None):
    """PopTorch's nearest (torch_cluster.nearest): for every point of x, the index (int64)
    of the nearest point of y in the same batch (batch vectors sorted, as torch_cluster
    requires; the first on ties)."""
    _check_tensor("nearest", "x", x)
    _check_tensor("nearest", "y", y)
    x = x.reshape(-1, 1) if x.dim() == 1 else x
    y = y.reshape(-1, 1) if y.dim() == 1 else y
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise Error(f"nearest: `x` [N, D] and `y` [M, D] must have the same number of "
                    f"features, got {list(x.shape)} and {list(y.shape)}")
    if y.dtype != x.dtype:
        y = y.to(x.dtype)
    bx = _batch_vector(batch_x, batch_y, "batch_x", x.shape[0])
    by = _batch_vector(batch_y, batch_x, "batch_y", y.shape[0])
    return _nearest(x, y, bx, by)


def ctc_beam_search_decoder(probs, lengths, blank=0, beam_width=100, top_paths=1):
    """PopTorch's ctc_beam_search_decoder: the `top_paths` most likely label sequences of
    log probabilities [input_length, batch, classes] by prefix beam search with
    `beam_width` beams. Returns (log probabilities [batch, top_paths], path lengths
    [batch, top_paths] int32, paths [batch, top_paths, input_length] int32, each path's
    labels followed by zeros)."""
    if not isinstance(probs, torch.Tensor):
        raise Error("ctc_beam_search_decoder: probs must be a torch.tensor argument. "
                    f"{type(probs)} is not supported.")
    if not isinstance(lengths, torch.Tensor):
        raise Error("ctc_beam_search_decoder: lengths must be a torch.tensor argument. "
                    f"{type(lengths)} is not supported.")
    if probs.dim() != 3 or not probs.is_floating_point():
        raise Error("ctc_beam_search_decoder: probs must be floating log probabilities "
                    f"[input_length, batch, classes], got {probs.dtype} {list(probs.shape)}")
    if lengths.shape != (probs.shape[1],) or lengths.is_floating_point():
        raise Error(f"ctc_beam_search_decoder: lengths must be {probs.shape[1]} integers, got "
                    f"{lengths.dtype} {list(lengths.shape)}")
    for name, value in (("blank", blank), ("beam_width", beam_width), ("top_paths", top_paths)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Error(f"ctc_beam_search_decoder: {name} must be an int, got {value!r}")
    if not 0 <= blank < probs.shape[2]:
        raise Error(f"ctc_beam_search_decoder: blank {blank} out of range [0, "
                    f"{probs.shape[2]})")
    if beam_width < 1 or not 1 <= top_paths <= beam_width:
        raise Error("ctc_beam_search_decoder: expected 1 <= top_paths <= beam_width, got "
                    f"top_paths {top_paths} and beam_width {beam_width}")
    return list(_ctc_beam_search(probs, lengths, blank, beam_width, top_paths))


# ---- capture: torch ops -> IR ops ----------------------------------------------------------

def _fps_op(cx, n, src, start, ptr, counts):
    return cx.op("farthest_point_sample", [cx.v(src), cx.v(start)],
                 {"ptr": [int(p) for p in ptr], "counts": [int(c) for c in counts]})


def _nearest_op(cx, n, x, y, batch_x, batch_y):
    return cx.op("nearest_point", [cx.v(x), cx.v(y), cx.v(batch_x), cx.v(batch_y)])


def _ctc_op(cx, n, probs, lengths, blank, beam_width, top_paths):
    attrs = {"blank": int(blank), "beam_width": int(beam_width), "top_paths": int(top_paths)}
    return list(cx.ops("ctc_beam_search_decoder", [cx.v(probs), cx.v(lengths)], attrs, 3))


def register(table):
    """Adds the converters to the capture's table (_aten.TABLE)."""
    table[torch.ops.tilegraph.fps.default] = _fps_op
    table[torch.ops.tilegraph.nearest.default] = _nearest_op
    table[torch.ops.tilegraph.ctc_beam_search_decoder.default] = _ctc_op
