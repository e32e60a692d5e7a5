"""poptorch.ops: PopTorch's functions used inside a model's forward, on tilegraph.

Each is written in PyTorch so that torch.export captures it into the compiled program:
- for_loop unrolls its body `count` times (the program holds count copies; an IPU runs one
  copy in a device loop). Same values.
- cond computes both branches and selects with torch.where (branches must be free of side
  effects and return tensors of the same shapes, as PopTorch requires). Same values; when
  not compiling (eager), only the branch taken runs, as in PopTorch on the CPU.
- dynamic_slice / dynamic_update: slicing at a start index held in a tensor, through
  index_select and where (no data-dependent shapes).
- serializedMatMul: the product itself (the IPU splits it to save tile memory).
Functions that only steer IPU hardware (set_overlap_for_input/output, MultiConv, Attribute,
ipu_print_tensor's printing) pass values through unchanged and warn once, saying what they do
on an IPU; custom_op (Poplar code for IPU tiles) raises an Error that says so.
- ctc_beam_search_decoder, fps and nearest are IR ops of their own (_poptorch_ops).
"""
import contextlib
import warnings

import torch

from . import enums
from ._blocks import Error
# ctc_beam_search_decoder, fps, nearest: IR ops of their own (torch custom ops the capture
# translates).
from ._poptorch_ops import ctc_beam_search_decoder, fps, nearest  # noqa: F401
from .autocasting import autocast  # noqa: F401 (poptorch.autocast)

_warned = set()
_capturing = [0]  # > 0 while torch.export traces a model (isRunningOnIpu)


def _warn_once(name, message):
    if name not in _warned:
        _warned.add(name)
        warnings.warn(f"tilegraph: {name}: {message}", stacklevel=3)


def isRunningOnIpu():
    """True while tilegraph compiles the model (PopTorch: while it runs on the IPU), so a
    forward can take a different branch for the compiled program than for eager runs."""
    return _capturing[0] > 0


@contextlib.contextmanager
def compiling():
    """Marks the capture of a model (isRunningOnIpu() is True inside)."""
    _capturing[0] += 1
    try:
        yield
    finally:
        _capturing[0] -= 1


def _tensor_list(name, inputs):
    """`inputs` as a list, or a ValueError in PopTorch's words (its tests match them)."""
    if not isinstance(inputs, (list, tuple)):
        raise ValueError(f"{name}: expected a list of tensors, got {type(inputs).__name__} "
                         "(Object is not list)")
    for i, t in enumerate(inputs):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a list of tensors, got {type(t).__name__} at "
                             f"index {i} (Object contained in list at index {i} is not "
                             "torch.tensor)")
    return list(inputs)


def _as_list(result):
    return [result] if isinstance(result, torch.Tensor) else list(result)


def for_loop(count, body, inputs):
    """Runs body(*values) `count` times, its outputs feeding the next iteration; returns
    the last outputs (a list). The inputs are passed by value (cloned)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"for_loop: count must be an int >= 0, got {count!r}")
    values = [t.clone() for t in _tensor_list("for_loop", inputs)]
    for _ in range(count):
        outputs = _as_list(body(*values))
        if len(outputs) != len(values):
            raise Error(f"for_loop: the body returned {len(outputs)} tensor(s) for "
                        f"{len(values)} input(s); it must return one per input")
        values = outputs
    return values


def cond(condition, then_body, then_inps, else_body, else_inps):
    """then_body(*then_inps) where `condition` (a one-element bool tensor) holds, else
    else_body(*else_inps); returns a list of tensors."""
    then_inps = _tensor_list("cond: then_inps", then_inps)
    else_inps = _tensor_list("cond: else_inps", else_inps)
    if not isinstance(condition, torch.Tensor) or condition.numel() != 1:
        raise ValueError("cond: condition must be a tensor with one element")
    if not isRunningOnIpu():
        return _as_list(then_body(*then_inps) if bool(condition) else else_body(*else_inps))
    taken, other = _as_list(then_body(*then_inps)), _as_list(else_body(*else_inps))
    if len(taken) != len(other):
        raise Error(f"cond: the branches return {len(taken)} and {len(other)} tensors; they "
                    "must return the same number")
    flag = condition.reshape(()).to(torch.bool)
    return [torch.where(flag, a, b) for a, b in zip(taken, other)]


def _window(length, start, size, step=1):
    """The positions start, start + step, ... below start + size (PopTorch's span)."""
    if not isinstance(start, torch.Tensor):
        raise Error("dynamic_slice/dynamic_update: start must be a tensor (a Python int is "
                    "a static slice: use tensor[a:b])")
    positions = torch.arange(0, size, step, device=start.device)
    return start.reshape(()).to(torch.int64) + positions


def dynamic_slice(tensor, dim, start, size, step):
    """tensor[start : start + size : step] along `dim`, `start` a tensor (PopTorch's: `size`
    is the span of the slice, so it holds ceil(size / step) elements)."""
    if not isinstance(size, int) or not isinstance(step, int) or step < 1:
        raise Error("dynamic_slice: size and step must be ints, step >= 1")
    if size == 0:
        raise Error("dynamic_slice: The start and end of a slice must be different.")
    if size < 0:
        raise Error("dynamic_slice: Taking a slice of a tensor with the end less than the "
                    "start is not supported.")
    return torch.index_select(tensor, dim, _window(tensor.shape[dim], start, size, step))


def dynamic_update(input, src, dim, start, size):
    """`input` with src written at input[start : start + size] along `dim`."""
    if input.dim() != src.dim() or input.dtype != src.dtype:
        raise Error("dynamic_update: input and src must have the same rank and dtype")
    if src.shape[dim] != size:
        raise Error(f"dynamic_update: src has {src.shape[dim]} elements along dim {dim}, "
                    f"size is {size}")
    length = input.shape[dim]
    offset = torch.arange(length) - start.reshape(()).to(torch.int64)
    inside = (offset >= 0) & (offset < size)
    placed = torch.index_select(src, dim, offset.clamp(0, size - 1))
    shape = [1] * input.dim()
    shape[dim] = length
    return torch.where(inside.reshape(shape), placed, input)


def serializedMatMul(lhs, rhs, mode, factor=0, keep_precision=False):
    """lhs @ rhs. On an IPU the product is split into `factor` serial pieces along
    `mode`'s dimension to save tile memory; the result is the same."""
    if not isinstance(mode, enums.MatMulSerializationMode):
        raise ValueError(f"serializedMatMul: mode must be a MatMulSerializationMode, got "
                         f"{mode!r}")
    if mode != enums.MatMulSerializationMode.Disabled:
        _warn_once("serializedMatMul", "on an IPU it splits the product to save tile memory; "
                   "tilegraph computes it in one piece (the same result)")
    return torch.matmul(lhs, rhs)


def _overlap(name, tensors, mode):
    if not isinstance(mode, enums.OverlapMode):
        raise ValueError(f"{name}: mode must be an OverlapMode, got {mode!r}")
    _warn_once(name, "on an IPU it overlaps host IO with compute through IO tiles; "
               "tilegraph passes the tensors through unchanged")
    return tensors


def set_overlap_for_input(input_tensors, mode):
    return _overlap("set_overlap_for_input", input_tensors, mode)


def set_overlap_for_output(output_tensors, mode):
    return _overlap("set_overlap_for_output", output_tensors, mode)


def ipu_print_tensor(tensor, title="", print_gradient=True, summarise_threshold=1000,
                     edge_items=3, max_line_width=80, digits=4, float_format="auto",
                     separator=", ", open_bracket="(", close_bracket=")"):
    """The tensor itself. PopTorch prints it (and its gradient) from the IPU at run time;
    tilegraph's compiled programs have no print operation, so this warns once and prints
    only when the model runs eagerly."""
    if float_format not in ("auto", "fixed", "scientific", "none"):
        raise KeyError(f"ipu_print_tensor: float_format must be auto, fixed, scientific or "
                       f"none, got {float_format!r}")
    if isRunningOnIpu():
        _warn_once("ipu_print_tensor", "compiled programs do not print; the tensor passes "
                   "through unchanged (read values as outputs, or with "
                   "Options().anchorTensor)")
    else:
        print(f"{title}: {tensor}" if title else tensor)
    return tensor


class CPU:
    """PopTorch runs `layer_to_call` on the host in the middle of an IPU program. tilegraph
    already runs on this machine's CPU: the callable is captured into the program like the
    rest of the forward (it must be traceable PyTorch code)."""

    def __init__(self, layer_to_call, ID):
        if not callable(layer_to_call) or not isinstance(ID, str):
            raise ValueError("CPU(layer_to_call, ID): expected a callable and a str ID")
        self.layer_to_call, self.ID = layer_to_call, ID

    def __call__(self, *args, **kwargs):
        return self.layer_to_call(*args, **kwargs)


class MultiConv:
    """PopTorch plans the data-independent convolutions inside the block together on the
    IPU. tilegraph compiles each convolution by itself (oneDNN); the setters are checked
    and recorded."""

    def __init__(self):
        self.settings = {}

    def _set(self, name, value, check):
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not all(check(v) for v in values):
            raise ValueError(f"MultiConv.{name}: invalid value {value!r}")
        self.settings[name] = value
        return self

    def availableMemoryProportions(self, value):
        return self._set("availableMemoryProportions", value,
                         lambda v: isinstance(v, (int, float)) and 0 <= v <= 1)

    def partialsTypes(self, value):
        return self._set("partialsTypes", value, lambda v: v in (
            torch.float, torch.half, torch.float32, torch.float16,
            enums.MultiConvPartialsType.Float, enums.MultiConvPartialsType.Half))

    def enableConvDithering(self, value):
        return self._set("enableConvDithering", value, lambda v: isinstance(v, bool))

    def planType(self, value):
        return self._set("planType", value, lambda v: isinstance(v, enums.MultiConvPlanType))

    def perConvReservedTiles(self, value):
        return self._set("perConvReservedTiles", value, lambda v: isinstance(v, int))

    def cycleBackOff(self, value):
        return self._set("cycleBackOff", value, lambda v: isinstance(v, float))

    _depth = 0  # MultiConv blocks entered and not left (in any thread: capture is serial)

    def __enter__(self):
        if MultiConv._depth:
            raise Error("Nested poptorch.MultiConv is not supported")
        _warn_once("MultiConv", "on an IPU the block's convolutions are planned together; "
                   "tilegraph compiles each one by itself (the same results)")
        MultiConv._depth += 1
        return self

    def __exit__(self, *exc):
        MultiConv._depth -= 1
        return False


class NameScope:
    """Prefixes the names of the ops inside (PopTorch). Names only: no effect on results;
    tilegraph names ops by the user's file:line instead."""

    def __init__(self, name):
        if not isinstance(name, str):
            raise ValueError(f"NameScope: expected a str, got {name!r}")
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Attribute:
    """PopART attributes for the ops inside (PopTorch). Accepted; they steer PopART's
    lowering to Poplar only."""

    def __init__(self, **attributes):
        self.attributes = attributes

    def __enter__(self):
        _warn_once("Attribute", "PopART op attributes steer PopART's lowering to Poplar; "
                   "tilegraph has no PopART")
        return self

    def __exit__(self, *exc):
        return False


def custom_op(inputs, name, domain, domain_version, example_outputs, attributes=None):
    """PopTorch calls a PopART custom op: Poplar C++ code for IPU tiles, loaded from the
    user's shared library. tilegraph cannot run Poplar code."""
    raise Error(f"custom_op {domain}::{name} (version {domain_version}): PopART custom ops "
                "are Poplar code for IPU tiles, which tilegraph cannot run. Write the op in "
                "PyTorch inside the forward (it is captured and compiled), or add it to "
                "tilegraph as an op (docs/DESIGN.md, 'How an op is defined')")

