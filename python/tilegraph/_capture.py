"""Capture: an nn.Module -> torch.export -> Core ATen -> a tilegraph Graph.

The exported program's parameters become trainable variables, buffers become frozen
variables (buffer mutations, such as batch-norm running statistics, become variable
updates), user inputs become per-step inputs. Each node is translated by the table in
_aten.py and keeps the user's file:line. Every op the table lacks is collected first and
reported in one NotImplementedError before anything is built.
"""
import contextlib
import os
import re
import warnings

import numpy as np
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException
from torch.fx.experimental.symbolic_shapes import (GuardOnDataDependentSymNode,
                                                   PendingUnbackedSymbolNotFound)

from . import _core
from ._aten import TABLE
from ._blocks import Error, ModelError, UnsupportedError

aten = torch.ops.aten
# With the separator: torchvision's files (".../torchvision/...") are not torch's.
_TORCH_DIR = os.path.join(os.path.dirname(torch.__file__), "")
_TILEGRAPH_DIR = os.path.join(os.path.dirname(__file__), "")

_DTYPES = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16",
           torch.bfloat16: "bf16", torch.int64: "i64", torch.int32: "i32", torch.bool: "bool",
           torch.uint8: "u8", torch.int8: "i8", torch.int16: "i16"}
_NUMPY = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "i64": np.int64,
          "i32": np.int32, "bool": np.bool_, "u8": np.uint8, "i8": np.int8, "i16": np.int16}


def torch_dtype_of(name):
    """The torch dtype of a tilegraph dtype name ("f32" -> torch.float32)."""
    for torch_dtype, tg_name in _DTYPES.items():
        if tg_name == name:
            return torch_dtype
    raise TypeError(f"no torch dtype for tilegraph dtype {name!r}")


def tg_dtype(torch_dtype):
    if torch_dtype not in _DTYPES:
        raise TypeError(f"tilegraph does not support dtype {torch_dtype}")
    return _DTYPES[torch_dtype]


def user_location(node):
    """"path:line" of the innermost frame of the node's stack trace that is not inside torch
    or tilegraph (the user's code), or "" if there is none."""
    best = ""
    for line in (node.meta.get("stack_trace") or "").splitlines():
        line = line.strip()
        if not line.startswith("File "):
            continue
        try:
            path = line.split('"')[1]
            lineno = line.split("line ")[1].split(",")[0]
        except IndexError:
            continue
        if _is_user_file(path):
            best = f"{path}:{lineno}"  # frames run outermost first: keep the last
    return best


def _is_user_file(path):
    """A file of the user's (or a library's), not torch's or tilegraph's own, nor code torch
    generated at run time ("<string>", "<eval_with_key>": no file to point at)."""
    return not (path.startswith(_TORCH_DIR) or path.startswith(_TILEGRAPH_DIR)
                or path.startswith("<"))


class _Unavailable:
    """A result the engine does not produce (e.g. max-pool indices); an error if used."""

    def __init__(self, node, what):
        self.node, self.what = node, what


class Captured:
    def __init__(self):
        self.graph = None
        self.user_inputs = []      # tilegraph input names, in call order
        self.params = {}           # module FQN -> variable name (trainable)
        self.buffers = {}          # module FQN -> variable name (frozen)
        self.outputs = []          # tilegraph value names of the user outputs
        self.output_meta = []      # (shape, torch dtype) per user output
        self.mutated_buffers = {}  # buffer FQN -> value name of its new value
        self.output_structure = None  # _structure.OutputStructure of the user's result
        self.loss_index = None     # index in outputs of the loss identity_loss marked
        self.loss_op_outputs = []  # indices in outputs of results of torch loss functions
        self.last_output_uses_loss_op = False  # the last tensor output is computed from one
        self.input_mutations = []  # (tensor input index, output index): in-place updates
        self.anchors = {}          # Options().anchorTensor short name -> output index
        self.buffer_decisions = {}  # buffer name -> value a Python decision of the forward
                                    # was compiled on (_capture_patches._BufferDecisions)
        self.anchor_modes = {}     # output index -> an anchor's own (mode, period) (not the
                                   # executor's)
        self.grad_of = {}          # parameter variable -> its gradient value (training)


_HALF = ("f16", "bf16")
# The dtype each narrow dtype is translated in (see _Context): half floats in f32, 8- and
# 16-bit integers in i32 (exact for comparisons and selections; sums, differences and
# products wrap back to the same narrow value as torch's narrow arithmetic when narrowed).
_WIDE = {"f16": "f32", "bf16": "f32", "u8": "i32", "i8": "i32", "i16": "i32"}
_NARROW = tuple(t for t, name in _DTYPES.items() if name in _WIDE)  # their torch dtypes


class _Context:
    """What handlers in _aten.py use to emit IR for one FX node.

    Half precision: a node that reads or produces f16/bf16 is translated *widened*: its
    handler sees f32 operands (half values are cast up as they are read) and f32 dtypes,
    and its results are rounded back to the node's half dtype. That is torch's CPU
    semantics for half ops (computed in float, rounded per op), on kernels that compute in
    f32; the mixed-precision work replaces it with native half kernels where they pay.
    8- and 16-bit integers (uint8 images, int8 data, int16 audio) are widened the same way,
    to i32 (_WIDE)."""

    def __init__(self, graph, training=True):
        self.g = graph
        self.training = training  # the graph will be differentiated
        self.widened = False
        self._widened_values = {}
        self.values = {}  # fx node -> value name, list of names, or _Unavailable
        self.source = ""
        self.placement = 0  # the device of the FX node being translated (model parallelism)
        self.node = None
        self._constants = {}
        from ._ragged import Rows
        self.rows = Rows(self)  # masked selections x[mask]: their rows' validity

    # ---- access to FX values -------------------------------------------------------------
    def results(self, fx_node):
        return self.values[fx_node]

    def v(self, arg):
        if isinstance(arg, torch.fx.Node):
            value = self.values[arg]
            if isinstance(value, _Unavailable):
                raise UnsupportedError(
                    f"{self.source or '<unknown>'}: uses {value.what} of {value.node.target}, "
                    "which tilegraph does not produce")
            narrow = self.g.type_of(value)[0] if isinstance(value, str) else None
            if self.widened and narrow in _WIDE:
                if value not in self._widened_values:
                    self._widened_values[value] = self.op("cast", [value],
                                                          {"dtype": "dtype:" + _WIDE[narrow]})
                return self._widened_values[value]
            return value
        return self.scalar(arg, None)

    def narrow(self, node, result):
        """A widened node's result(s) rounded back to the node's narrow dtype(s)."""
        metas = node.meta.get("val")
        if isinstance(result, str):
            want = tg_dtype(metas.dtype) if isinstance(metas, torch.Tensor) else None
            return self.cast(result, want) if want in _WIDE else result
        if isinstance(result, (list, tuple)) and isinstance(metas, (list, tuple)):
            return type(result)(
                self.cast(r, tg_dtype(m.dtype)) if isinstance(r, str) and
                isinstance(m, torch.Tensor) and tg_dtype(m.dtype) in _WIDE else r
                for r, m in zip(result, metas))
        return result

    def meta(self, x):
        return x.meta["val"] if isinstance(x, torch.fx.Node) else None

    def shape_of(self, x):
        """x's shape; a masked selection's row count is its upper bound (_ragged)."""
        return [self.rows.bound(d) for d in self.meta(x).shape]

    def own_dtype(self, x):
        """x's dtype as torch has it (not widened)."""
        return tg_dtype(self.meta(x).dtype)

    def dtype_of(self, x):
        """x's dtype as the handler computes in it (widened, see _Context)."""
        dtype = self.own_dtype(x)
        return _WIDE[dtype] if self.widened and dtype in _WIDE else dtype

    # ---- emitting ------------------------------------------------------------------------
    def op(self, name, inputs, attrs=None):
        return self.g.op(name, inputs, attrs or {}, self.source, self.placement)[0]

    def ops(self, name, inputs, attrs, count):
        outs = self.g.op(name, inputs, attrs or {}, self.source, self.placement)
        assert len(outs) == count
        return outs

    def cast(self, value, dtype):
        if self.g.type_of(value)[0] == dtype:
            return value
        return self.op("cast", [value], {"dtype": "dtype:" + dtype})

    def scalar(self, v, like, dtype=None):
        """A rank-0 constant of `like`'s dtype (an FX node), or of `dtype`."""
        if dtype is None:
            dtype = self.dtype_of(like) if isinstance(like, torch.fx.Node) else (
                "bool" if isinstance(v, bool) else "i64" if isinstance(v, int) else "f32")
        key = (dtype, float(v))
        if key not in self._constants:
            self._constants[key] = self.g.add_constant(np.array(v, dtype=_NUMPY[dtype]))
        return self._constants[key]

    def operands(self, n, a, b):
        """Binary operands in the op's computation dtype: the result dtype, or for a
        comparison (a bool result) the operands' common dtype by torch's promotion rules
        (a Python scalar or 0-dim tensor only promotes across categories: int < 2.5 compares
        as float, i64 == 1.0 as well, f16 > 0.5 as f16)."""
        out = self.dtype_of(n)
        if out == "bool":
            out = self.common_dtype(a, b)

        def one(x):
            if isinstance(x, torch.fx.Node):
                return self.cast(self.v(x), out)
            return self.scalar(x, None, out)
        return one(a), one(b)

    def common_dtype(self, *args):
        """torch.result_type of the arguments (FX nodes or Python scalars)."""
        def proxy(x):
            if isinstance(x, torch.fx.Node):
                val = self.meta(x)
                return torch.empty(val.shape, dtype=val.dtype, device="meta")
            return x
        a, b = (proxy(x) for x in args)
        dtype = tg_dtype(torch.result_type(a, b))
        return _WIDE[dtype] if self.widened and dtype in _WIDE else dtype

    def affine(self, w, b, shape, n):
        shape = [shape] if isinstance(shape, int) else shape
        dtype = self.dtype_of(n.args[0])
        w_ = self.v(w) if w is not None else self.g.add_constant(
            np.ones(shape, dtype=_NUMPY[dtype]))
        b_ = self.v(b) if b is not None else self.g.add_constant(
            np.zeros(shape, dtype=_NUMPY[dtype]))
        return w_, b_

    def unavailable(self, n, what):
        return _Unavailable(n, what)

    def unsupported(self, n, what):
        raise UnsupportedError(f"{self.source or '<unknown>'}: {what} ({n.target}) is not "
                                  "supported by tilegraph")

    def constant_from_torch(self, n):
        def fake(a):
            if isinstance(a, torch.fx.Node):
                val = a.meta["val"]
                return torch.zeros(val.shape, dtype=val.dtype)
            return a
        args = torch.fx.node.map_aggregate(n.args, fake)
        kwargs = torch.fx.node.map_aggregate(n.kwargs, fake)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("device", "pin_memory", "layout")}
        if n.target in (torch.ops.aten.empty.memory_format, torch.ops.aten.empty_permuted.default,
                        torch.ops.aten.empty_strided.default):
            value = torch.zeros(n.meta["val"].shape, dtype=n.meta["val"].dtype)
        else:
            value = n.target(*args, **kwargs)
        dtype = tg_dtype(value.dtype)
        if self.widened and dtype in _WIDE:
            value, dtype = value.to(torch_dtype_of(_WIDE[dtype])), _WIDE[dtype]
        return self.g.add_constant(np.asarray(value.numpy().astype(_NUMPY[dtype]), order="C"))


# Ops whose result's size (or value, for .item()) depends on the data, and what to write.
_DATA_DEPENDENT_ADVICE = {
    "index": ("boolean-mask indexing x[mask]",
              "keep the shape with torch.where(mask, x, 0), or weight by the mask "
              "((x * mask).sum() / mask.sum() for a masked mean)"),
    "nonzero": ("torch.nonzero / argwhere / where(mask) with one argument",
                "use the mask itself (torch.where(mask, a, b), x * mask)"),
    "masked_select": ("masked_select", "use torch.where(mask, x, 0) and reduce"),
    "_local_scalar_dense": (".item(), float(t), int(t) or bool(t) of a tensor",
                            "keep the value a tensor (x * s rather than x * s.item()); a "
                            "Python branch on it cannot be compiled, torch.where can"),
}


def _data_dependent(node):
    """The unbacked symbols (sizes or values known only at run time) of a node's result."""
    from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols
    val = node.meta.get("val")
    try:
        return free_unbacked_symbols(val) if val is not None else set()
    except (TypeError, AttributeError):
        return set()


def _unsupported_report(gm):
    """Lines naming every op the engine cannot compile, with the user's file:line. An op
    whose output size depends on the data is named once, with what to write instead; the
    size bookkeeping torch.export adds after it (sym_size, _assert_scalar, ...) is not. A
    boolean-mask selection x[mask] is compiled when everything it feeds is row-wise work
    ending in reductions (_ragged); what else it feeds is named."""
    from . import _ragged
    missing, origins, tainted, selected = [], [], set(), set()
    for node in gm.graph.nodes:
        if node.op == "output":
            for arg in node.all_input_nodes:
                if arg in selected and _ragged.row_symbol(arg) is not None:
                    origins.append(f"  Indexing using boolean or byte tensor masks is "
                                   f"unsupported when the selection is returned: "
                                   f"boolean-mask indexing x[mask] returned from the model, "
                                   f"from {user_location(arg) or '<unknown location>'}"
                                   ": " + _DATA_DEPENDENT_ADVICE["index"][1])
            continue
        if node.op != "call_function":
            continue
        symbols = _data_dependent(node)
        inherited = set()
        for arg in node.all_input_nodes:
            inherited |= _data_dependent(arg)
        where = user_location(node) or "<unknown location>"
        if symbols - inherited and _ragged.is_masked_selection(node):
            selected.add(node)
        elif symbols - inherited:
            name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
            what, advice = _DATA_DEPENDENT_ADVICE.get(name, (str(node.target), ""))
            origins.append(f"  {what} ({node.target}) at {where}" + (f": {advice}" if advice
                                                                      else ""))
            tainted.add(node)
        elif any(a in tainted for a in node.all_input_nodes):
            tainted.add(node)
        elif symbols or any(a in selected for a in node.all_input_nodes):
            reason = _ragged.why_not(node)
            if reason is not None:
                origins.append(f"  boolean-mask indexing x[mask] used by {node.target} at "
                               f"{where}: {reason}; " + _DATA_DEPENDENT_ADVICE["index"][1])
                tainted.add(node)
            elif _ragged.row_symbol(node) is not None or _ragged.is_bookkeeping(node):
                selected.add(node)
        elif node.target not in TABLE:
            missing.append(f"  {node.target} at {where}")
    return _counted(origins), [line + _hint_for(line) for line in _counted(missing)]


def _hint_for(line):
    """": what to do instead" for a line naming an op _UNSUPPORTED_HINTS knows, else ""."""
    return next((": " + h for prefix, h in _UNSUPPORTED_HINTS.items()
                 if line.startswith("  " + prefix)), "")


# What to do instead, for unsupported ops of libraries users bring (by the op's name).
_UNSUPPORTED_HINTS = {
    "transformers.grouped_mm_fallback":
        "Hugging Face's grouped mixture-of-experts kernel splits tokens by data-dependent "
        "counts; set config._experts_implementation = \"batched_mm\" before building the "
        "model (every expert on every token, weighted: the same result)",
}


def _counted(lines):
    """Lines in first-seen order, a repeated one once with how many times it occurred."""
    counts = {}
    for line in lines:
        counts[line] = counts.get(line, 0) + 1
    return [line if n == 1 else f"{line} (x{n})" for line, n in counts.items()]


def raise_if_unsupported(gm, what):
    """One NotImplementedError listing everything in `gm` the engine cannot compile."""
    origins, missing = _unsupported_report(gm)
    lines = []
    if origins:
        lines += [f"{len(origins)} op(s) produce a result whose size or value depends on the "
                  "data, which an ahead-of-time compiled program cannot hold:"] + origins
    if missing:
        lines += [f"{len(missing)} op(s) are not supported by tilegraph:"] + missing
    if lines:
        raise UnsupportedError(f"tilegraph cannot compile {what}:\n" + "\n".join(lines))


def _user_frame(tb):
    """"path:line" of the innermost frame of a traceback outside torch and tilegraph."""
    import traceback
    best = ""
    for frame in traceback.extract_tb(tb):
        if _is_user_file(frame.filename):
            best = f"{frame.filename}:{frame.lineno}"
    return best


def _custom_function_message(used):
    names = {}
    for name, where in used:
        names.setdefault(name, where)
    listed = "; ".join(f"{name} (applied at {where or '<unknown>'})"
                       for name, where in names.items())
    return ("the model applies torch.autograd.Function subclasses with their own backward: "
            f"{listed}. A training program differentiates what the forward computes and "
            "cannot run a hand-written backward, so a straight-through estimator, a gradient "
            "reversal or a surrogate gradient would train differently from eager PyTorch. "
            "Write the gradient trick in tensor ops (straight-through: x + (f(x) - x)."
            "detach()), or, if the Function's backward is its forward's true gradient, set "
            "`tilegraph_differentiate_forward = True` on the class. (Inference programs "
            "run such Functions' forwards.)")


def export(model, example_args, example_kwargs=None, training=False):
    """torch.export + Core ATen decompositions of `model(*example_args, **example_kwargs)`.
    Node metadata set while tracing (model-parallel blocks, identity_loss) is preserved.
    `training`: the graph will be differentiated (custom autograd Functions are refused).
    A plain tensor attribute (neither parameter nor buffer) that the forward updates in
    place, which torch.export refuses, becomes a non-persistent buffer of its module (the
    same tensor; state_dict unchanged), so that its updates carry on from call to call as
    in eager PyTorch."""
    kept = set()
    while True:
        # A failed trace has run the forward's update on the attribute itself: undone from
        # a copy (of attributes up to 2^20 elements: larger ones keep the update).
        plain = {f"{prefix}.{k}" if prefix else k: v.clone() if v.numel() <= 1 << 20 else v
                 for prefix, m in model.named_modules() for k, v in vars(m).items()
                 if isinstance(v, torch.Tensor) and not isinstance(v, torch.nn.Parameter)}
        try:
            return _export_once(model, example_args, example_kwargs, training)
        except RuntimeError as e:
            found = re.search(r"Constant (\S+) is mutated in the forward method", str(e))
            if found is None or found.group(1) in kept or found.group(1) not in plain:
                raise
            kept.add(found.group(1))
            _keep_as_buffer(model, found.group(1), plain[found.group(1)])


def _refuse_decisions_on_updated_buffers(ep, decisions):
    """A Python decision on a buffer the program updates (`if not self.initted: ...;
    self.initted.fill_(True)`) would be the capture's decision at every step of a call,
    where eager decides again each time: refused, with what to do instead."""
    updated = set(ep.graph_signature.buffers_to_mutate.values())
    for name in decisions.decisions:
        if name in updated:
            raise decision_on_updated_buffer(name, decisions.where.get(name))


def decision_on_updated_buffer(name, where):
    """The UnsupportedError for a Python decision on a buffer the forward also updates."""
    return UnsupportedError(
        f"{where or '<unknown location>'}: the model decides in Python on the value of buffer "
        f"{name!r} (an `if`, .item(), int() or float() of it) and also updates it, so the "
        "decision could change from one step to the next, which one compiled program cannot "
        "follow. tilegraph compiles such decisions on buffers the forward leaves alone "
        "(recompiling when they change): run the call that updates it eagerly first (a "
        "data-dependent initialization), or compute with the tensor (torch.where) instead")


def _keep_as_buffer(model, name, value):
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    tensor = owner.__dict__.pop(leaf)
    if value is not tensor:
        with torch.no_grad():
            tensor.copy_(value)
    owner.register_buffer(leaf, tensor, persistent=False)
    warnings.warn(f"tilegraph: {name} is a tensor attribute (not a buffer) that the forward "
                  "updates in place; it is now a non-persistent buffer of its module, so that "
                  "its updates carry from call to call as in eager PyTorch (register_buffer "
                  "says so in the model)", stacklevel=4)


def _export_once(model, example_args, example_kwargs, training):
    import torch.fx.traceback as fx_traceback
    from . import _blocks, _capture_patches, _recurrent, autocasting
    from .ops import compiling
    # The patches also cover run_decompositions, which traces the graph again (CTC's).
    with warnings.catch_warnings(), fx_traceback.preserve_node_meta(), compiling(), \
            _capture_patches.applied(), \
            _capture_patches.custom_autograd_functions() as custom_functions, \
            _capture_patches.gradient_hooks(model) as gradient_hooks:
        # torch.export's own deprecation chatter (pytree internals), not the user's concern.
        warnings.simplefilter("ignore", FutureWarning)
        # nn.LSTM / nn.GRU refresh their internal _flat_weights list while tracing; torch
        # warns about the attribute assignment, which is torch's, not the user's, business.
        warnings.filterwarnings("ignore", message=".*_flat_weights.*were assigned during export")
        # torch's functionalization of an in-place buffer update, not the user's business.
        warnings.filterwarnings("ignore", message="erase_node.*on an already erased node")
        _blocks.start_capture()
        try:
            with torch.no_grad() if not model.training else torch.enable_grad(), \
                    autocasting.tracing(), _capture_patches.tensor_bound_slices(), \
                    _recurrent.recurrent_layers(), \
                    contextlib.nullcontext() if training else \
                    _capture_patches.dropout_as_identity(), \
                    _capture_patches.buffer_decisions(model) as decisions:
                ep = torch.export.export(model, tuple(example_args), example_kwargs or {},
                                        strict=False)
            ep.tilegraph_buffer_decisions = decisions
        except DataDependentOutputException as e:  # torch.equal and kin: a Python value
            raise UnsupportedError(
                f"{_user_frame(e.__traceback__) or '<unknown location>'}: {e.func} gives a "
                "Python value computed from tensor data, which one compiled graph cannot hold; "
                "compute a tensor instead (e.g. (a == b).all() and torch.where)") from None
        except GuardOnDataDependentSymNode as e:
            raise UnsupportedError(
                f"{_user_frame(e.__traceback__) or '<unknown location>'}: the model decides on a "
                "tensor's value (an `if` on a tensor that computes either way, `.item()`), or "
                "uses here a size that an earlier op computed from data (torch.bincount, "
                "nonzero, unique, ...), which one compiled graph cannot hold. Use torch.where "
                "and sizes known from shapes (checks that only raise, `if <bad>: raise ...` and "
                "`assert`, compile into run-time assertions)") from None
        except PendingUnbackedSymbolNotFound as e:  # torch.narrow(x, d, <tensor>, n), ...
            raise UnsupportedError(
                f"{_user_frame(e.__traceback__) or '<unknown location>'}: a number read from "
                "a tensor's data is used here where torch.export needs a Python int (a "
                "tensor as torch.narrow's start, say), which one compiled graph cannot hold; "
                "slice with tensor bounds instead (x[:, s:s + n]) or pass a Python int") from None
        except RuntimeError as e:
            if "which is not a known type" not in str(e):
                raise
            raise UnsupportedError(
                f"the model returns an object tilegraph cannot take apart into tensors: "
                f"{str(e).split(' in output')[0].replace('Found ', '')}. Return tensors, "
                "tuples, lists, dicts or namedtuples of them, or register the class with "
                "torch.utils._pytree.register_pytree_node") from None
        finally:
            _blocks.finish_capture()
        if training and custom_functions:
            raise UnsupportedError(_custom_function_message(custom_functions))
        if training and gradient_hooks:
            raise UnsupportedError(
                f"the model has gradient hooks: {'; '.join(dict.fromkeys(gradient_hooks))}. "
                "A training program differentiates what the forward computes and cannot call "
                "Python during the backward, so the hooks would be skipped and the model "
                "would train differently from eager PyTorch. Write the gradient change in "
                "tensor ops (a gradient reversal by s: x.detach() * (1 + s) - x * s has x's "
                "value and the gradient -s), or remove the hooks. (Inference programs ignore "
                "them: there are no gradients.)")
        _refuse_explicit_generators(ep)
        _unused_scalar_reads_removed(ep)
        _views_as_reshapes(ep)
        _no_grad_results_detached(ep)
        _unbatched_margin_losses_as_0d(ep)
        _bool_powers_of_bools(ep)
        _loss_range_checks(ep)
        _mark_loss_function_outputs(ep)
        decomposed = ep.run_decompositions(_decompositions())
        _refuse_decisions_on_updated_buffers(decomposed, ep.tilegraph_buffer_decisions)
        decomposed.tilegraph_buffer_decisions = dict(ep.tilegraph_buffer_decisions.decisions)
        return decomposed


def _refuse_explicit_generators(ep):
    """Random ops given a torch.Generator: refused at the user's line (decomposing them
    fails inside torch.export with an AssertionError about node metadata). tilegraph's
    random ops draw from its own Philox stream (Options().randomSeed)."""
    for node in ep.graph.nodes:
        generator = node.kwargs.get("generator") if node.op == "call_function" else None
        if generator is not None:
            raise UnsupportedError(
                f"{user_location(node) or '<unknown location>'}: random numbers from an "
                f"explicit torch.Generator ({node.target}) are not supported by tilegraph; "
                "draw without one (tilegraph's random stream is seeded by "
                "Options().randomSeed)")


_SCALAR_READS = {aten.item.default, aten._local_scalar_dense.default}


def _unused_scalar_reads_removed(ep):
    """A tensor read as a Python scalar whose value only feeds torch's range assertions on
    it (what a value check answered by _capture_patches.value_checks_as_assertions leaves:
    the check itself is an _assert_async on the tensor) is removed with them: nothing the
    program computes uses it, and reading a value out of a compiled graph is not possible."""
    graph = ep.graph_module.graph
    order = {n: i for i, n in enumerate(graph.nodes)}
    changed = False
    for node in reversed(list(graph.nodes)):
        if node.op != "call_function" or node.target not in _SCALAR_READS:
            continue
        chain, frontier, pure = [node], [node], True
        while frontier and pure:
            for user in list(frontier.pop().users):
                if isinstance(user.meta.get("val"), torch.Tensor) or user.op != "call_function":
                    pure = False
                    break
                if user not in chain:
                    chain.append(user)
                    frontier.append(user)
        if pure:  # every user of a chain node is in the chain: erase users first
            for n in sorted(chain, key=order.get, reverse=True):
                graph.erase_node(n)
            changed = True
    if changed:
        ep.graph_module.recompile()


def _operand_message(cx, node, error):
    """What a ModelError says: the user's line, the op, the core's complaint, and for
    operands of different float dtypes (a float64 input into float32 weights: eager refuses
    it too) what to cast."""
    floats = sorted({str(a.meta["val"].dtype).replace("torch.", "")
                     for a in node.all_input_nodes if isinstance(a.meta.get("val"), torch.Tensor)
                     and a.meta["val"].is_floating_point()})
    hint = ""
    if len(floats) > 1:
        hint = (f"\nIts operands mix {' and '.join(floats)} (eager PyTorch refuses this too): "
                "cast the inputs to the model's dtype (x.float()), or the model to theirs "
                "(model.double())")
    return f"{cx.source or '<unknown>'}: {node.target} cannot be built: {error}{hint}"


def _decompositions():
    """Core ATen decompositions, except the composite ops tilegraph compiles whole:
    scaled_dot_product_attention (its fused attention op, see _aten._sdpa),
    linalg_vector_norm (a zero vector's gradient, see _aten_spatial), torch.linalg's
    solvers (their errors, see _aten_linalg), detach, hardswish,
    hardsigmoid and max_unpool2d; nn.LSTM / nn.GRU as lstm_layer / gru_layer ops (_recurrent); plus PyTorch's
    own decompositions of the few Core ATen ops the ATen table leaves to them
    (core_aten.DECOMPOSED_AT_CAPTURE) and of some non-core ones
    (core_aten.NON_CORE_DECOMPOSED_AT_CAPTURE)."""
    from torch._decomp import decomposition_table
    from .core_aten import (DECOMPOSED_AT_CAPTURE, NON_CORE_DECOMPOSED_AT_CAPTURE,
                            overload_named)
    table = torch.export.default_decompositions()
    table.pop(torch.ops.aten.scaled_dot_product_attention.default, None)
    # (its decomposition returns the probabilities where eager returns the logsumexp)
    table.pop(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default, None)
    # Norms: their decomposition's gradient is NaN at a zero vector (_aten_spatial.p_norm).
    table.pop(torch.ops.aten.linalg_vector_norm.default, None)
    # detach decomposes to alias, which would let gradients through (_aten._detach).
    table.pop(torch.ops.aten.detach.default, None)
    # hardswish / hardsigmoid are tilegraph ops (a convolution's epilogue activation, one
    # elementwise kernel); decomposed, they are a five-op clamp chain that fuses with neither.
    table.pop(torch.ops.aten.hardswish.default, None)
    table.pop(torch.ops.aten.hardsigmoid.default, None)
    # max_unpool2d / 3d: its decomposition (index_put) gives a twice-named position's gradient to
    # one copy; torch's own gradient (a gather) gives it to each (_aten._max_unpool).
    table.pop(torch.ops.aten.max_unpool2d.default, None)
    table.pop(torch.ops.aten.max_unpool3d.default, None)
    # frac: decomposed, frac of an integer tensor is x - trunc(x) = 0, where eager refuses
    # it; whole, the ATen table refuses it too (_aten._frac).
    table.pop(torch.ops.aten.frac.default, None)
    # log_ndtr: its decomposition's untaken where-branch gives NaN gradients (_aten_math).
    table.pop(torch.ops.aten.special_log_ndtr.default, None)
    # torch.linalg's solvers: their decompositions (the _ex forms) drop eager's errors for
    # singular / indefinite matrices; whole, they keep them (_aten_linalg).
    for name in ("linalg_inv", "inverse", "linalg_det", "det", "linalg_slogdet", "slogdet",
                 "logdet", "linalg_cholesky", "linalg_solve", "linalg_solve_ex"):
        table.pop(getattr(torch.ops.aten, name).default, None)
    # nn.LSTM / nn.GRU: one op per layer and direction instead of a cell per time step
    # (_recurrent.py; it falls back to torch's decomposition where the ops do not apply).
    from . import _recurrent
    table[torch.ops.aten.lstm.input] = _recurrent.lstm
    table[torch.ops.aten.gru.input] = _recurrent.gru
    # Core ATen ops (and a few others) that PyTorch's own rules rewrite into table ops
    for name in (*DECOMPOSED_AT_CAPTURE, *NON_CORE_DECOMPOSED_AT_CAPTURE):
        table[overload_named(name)] = decomposition_table[overload_named(name)]
    return table


def _views_as_reshapes(ep):
    """Every aten.view becomes aten.reshape before decomposing. Re-tracing during
    run_decompositions can give a tensor other strides than the first trace did (a reshape
    that copied becomes a view of a transpose: Hugging Face's GPT-2 attention), and a view
    recorded on the contiguous original then fails ("Cannot view a tensor with ...
    strides"). A reshape means the same values whatever the strides, and tilegraph's IR
    has no strides, so nothing else changes."""
    changed = False
    for node in ep.graph_module.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.view.default:
            node.target = torch.ops.aten.reshape.default
            changed = True
    if changed:
        ep.graph_module.recompile()


def _no_grad_results_detached(ep):
    """A `with torch.no_grad():` block in a training forward is exported as a
    wrap_with_set_grad_enabled(False, ...) region, which decomposing inlines: its results
    would carry gradients. Each result of such a region is detached (aten.detach, kept by the
    decompositions, becomes stop_gradient), as autograd sees it in eager PyTorch."""
    hop = getattr(torch.ops.higher_order, "wrap_with_set_grad_enabled", None)
    graph = ep.graph_module.graph
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not hop or node.args[0] is not False:
            continue
        for user in list(node.users):
            if user.op != "call_function" or not isinstance(user.meta.get("val"), torch.Tensor):
                continue
            with graph.inserting_after(user):
                detached = graph.call_function(torch.ops.aten.detach.default, (user,))
            detached.meta = dict(user.meta)
            user.replace_all_uses_with(detached, delete_user_cb=lambda u: u is not detached)
            changed = True
    if changed:
        ep.graph_module.recompile()


# Checks torch.export leaves in the graph (a dtype conversion's metadata assertion, a size's
# range): they compute nothing, and carry no model-parallel block of their own.
_ASSERTIONS = frozenset(getattr(aten, name).default for name in (
    "_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_constrain_range",
    "sym_constrain_range_for_size") if hasattr(aten, name))

LOSS_OP_KEY = "tilegraph_loss_op"  # FX node metadata: a torch loss function's result

# torch's loss functions as the export records them (before decomposing): PopTorch takes the
# result of one of these for the training loss wherever the model returns it.
_LOSS_FUNCTIONS = frozenset(getattr(aten, name) for name in (
    "cross_entropy_loss", "nll_loss_nd", "nll_loss", "nll_loss2d", "mse_loss", "l1_loss",
    "smooth_l1_loss", "huber_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "kl_div", "soft_margin_loss", "hinge_embedding_loss", "cosine_embedding_loss",
    "margin_ranking_loss", "triplet_margin_loss", "poisson_nll_loss", "multi_margin_loss",
    "multilabel_margin_loss", "ctc_loss") if hasattr(aten, name))


def _mark_loss_function_outputs(ep):
    """Marks the user outputs that are a loss function's result (LOSS_OP_KEY); decomposing
    keeps the mark on the node that then computes the value (the executor's _loss_index)."""
    output = next(n for n in ep.graph.nodes if n.op == "output")
    for value in output.args[0]:
        if isinstance(value, torch.fx.Node) and value.op == "call_function" and \
                getattr(value.target, "overloadpacket", None) in _LOSS_FUNCTIONS:
            value.meta.setdefault("custom", {})[LOSS_OP_KEY] = True


# Margin losses with reduction="none" on one sample: eager PyTorch's kernels give a 0-d loss
# where torch's shape function and decomposition give [1]. Op -> (position of its reduction
# argument, the largest target rank eager answers with a 0-d loss): multi_margin_loss when
# the target is 0-d, multilabel_margin_loss when it is 0-d or 1-d.
_MARGIN_LOSS_0D = {aten.multi_margin_loss.default: (5, 0),
                   aten.multilabel_margin_loss.default: (2, 1)}


def _unbatched_margin_losses_as_0d(ep):
    """Each such loss is followed by a reshape to 0-d, the shape eager PyTorch returns."""
    graph = ep.graph_module.graph
    changed = False
    for node in list(graph.nodes):
        if node.target not in _MARGIN_LOSS_0D:
            continue
        position, max_target_rank = _MARGIN_LOSS_0D[node.target]
        reduction = node.args[position] if len(node.args) > position else \
            node.kwargs.get("reduction", 1)
        if reduction != 0 or node.args[1].meta["val"].dim() > max_target_rank or \
                node.meta["val"].dim() == 0:
            continue
        with graph.inserting_after(node):
            scalar = graph.call_function(aten.reshape.default, (node, []))
        scalar.meta = {**node.meta, "val": node.meta["val"].reshape([])}
        node.replace_all_uses_with(scalar, delete_user_cb=lambda u: u is not scalar)
        changed = True
    if changed:
        ep.graph_module.recompile()


def _with_meta(graph, target, args, like):
    """A new call of `target` on `args`, with `like`'s source location, module path and
    block (its errors name the user's line) and the fake value of its result."""
    node = graph.call_function(target, args)
    node.meta = {key: like.meta[key] for key in ("stack_trace", "nn_module_stack",
                                                 "source_fn_stack") if key in like.meta}
    if "custom" in like.meta:  # the model-parallel block; not the loss marks
        node.meta["custom"] = {k: v for k, v in like.meta["custom"].items()
                               if k not in (LOSS_OP_KEY, LOSS_KEY)}
    node.meta["val"] = target(*(a.meta["val"] if isinstance(a, torch.fx.Node) else a
                                for a in args))
    return node


def _bool_powers_of_bools(ep):
    """bool_tensor ** True / False (aten.pow.Tensor_Scalar with a bool exponent): eager
    gives a bool tensor (x itself, or all True), where torch's shape function says int64
    and the table would compute int64. Rewritten to what eager computes (a copy of x, or
    full_like(x, True)) before decomposing, which recomputes the dtypes after it."""
    graph = ep.graph_module.graph
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != aten.pow.Tensor_Scalar or \
                type(node.args[1]) is not bool or \
                node.args[0].meta["val"].dtype != torch.bool:
            continue
        x = node.args[0]
        with graph.inserting_before(node):
            value = _with_meta(graph, aten.clone.default, (x,), node) if node.args[1] else \
                _with_meta(graph, aten.full_like.default, (x, True), node)
        node.replace_all_uses_with(value)
        graph.erase_node(node)
        changed = True
    if changed:
        ep.graph_module.recompile()


# Loss functions whose torch kernel checks its arguments' range and raises, where the
# decomposition computes on (NaN): op -> [(argument position, its name in torch's message)].
_RANGE_CHECKED = {aten.binary_cross_entropy.default: [(0, "input"), (1, "target")]}


def _loss_range_checks(ep):
    """F.binary_cross_entropy / nn.BCELoss: eager raises "all elements of input should be
    between 0 and 1" (and of target), its decomposition gives NaN. Each call gets run-time
    assertions of the range with torch's message (aten._assert_async, compiled to an
    assert_all that fails the call with a RuntimeError naming the user's line:
    _aten.KERNEL_CHECK_MESSAGES). NaN fails the check, as in eager."""
    graph = ep.graph_module.graph
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _RANGE_CHECKED:
            continue
        for position, name in _RANGE_CHECKED[node.target]:
            value = node.args[position] if len(node.args) > position else None
            if not isinstance(value, torch.fx.Node):
                continue
            with graph.inserting_before(node):
                inside = _with_meta(graph, aten.logical_and.default, (
                    _with_meta(graph, aten.ge.Scalar, (value, 0), node),
                    _with_meta(graph, aten.le.Scalar, (value, 1), node)), node)
                everywhere = _with_meta(graph, aten.all.default, (inside,), node)
                _with_meta(graph, aten._assert_async.msg, (
                    everywhere, f"all elements of {name} should be between 0 and 1"), node)
            changed = True
    if changed:
        ep.graph_module.recompile()


# Ops that only move, copy, select or convert elements: they take 8-bit values as they are
# (not widened), so `images.permute(...).float()` is a u8 permute and one u8 -> f32 cast.
_AS_IS_FOR_8BIT = frozenset(
    (aten.clone.default, aten.alias.default, aten.lift_fresh_copy.default,
        aten.detach.default, aten.contiguous.default, aten.view.default,
        aten._unsafe_view.default, aten.reshape.default, aten.squeeze.dims, aten.squeeze.dim,
        aten.squeeze.default, aten.unsqueeze.default, aten.flatten.using_ints,
        aten.permute.default, aten.t.default, aten.transpose.int, aten.expand.default,
        aten.slice.Tensor, aten.select.int, aten.repeat.default, aten.flip.default,
        aten.cat.default, aten.split_with_sizes.default, aten.split.Tensor,
        aten.gather.default, aten.index_select.default, aten.index.Tensor,
        aten.constant_pad_nd.default, aten._to_copy.default, aten.to.dtype))


def _touches_narrow(node):
    """Whether a node reads or produces f16/bf16 values, or 8- / 16-bit integers other than by
    moving or converting them (translated widened, see _Context)."""
    narrow = (torch.float16, torch.bfloat16) if node.target in _AS_IS_FOR_8BIT else _NARROW

    def is_narrow(val):
        if isinstance(val, torch.Tensor):
            return val.dtype in narrow
        if isinstance(val, (list, tuple)):
            return any(is_narrow(v) for v in val)
        return False
    return is_narrow(node.meta.get("val")) or any(is_narrow(a.meta.get("val"))
                                                  for a in node.all_input_nodes)


def node_block(node):
    """(user_id, ipu_id) of the model-parallel block an FX node was traced in, or None."""
    from ._blocks import _KEY
    block = (node.meta.get("custom") or {}).get(_KEY)
    return tuple(block) if block is not None else None


def capture(model, example_args, name="model", placement_of=None, example_kwargs=None,
            training=True):
    """Translates `model(*example_args, **example_kwargs)` into a Captured graph (raises
    NotImplementedError listing every unsupported op with its location, before building
    anything). Tensor leaves of the arguments (in pytree order) become the graph's inputs;
    other leaves were baked in by the export. `placement_of(block)` maps a node's block
    (user_id, ipu_id), or None outside any block, to its device; without it every node is
    on device 0. `training`: the graph will train (it then has one loss)."""
    ep = export(model, example_args, example_kwargs, training=training)
    gm = ep.graph_module
    raise_if_unsupported(gm, type(model).__name__)
    sig = ep.graph_signature
    kinds = torch.export.graph_signature.InputKind
    out_kinds = torch.export.graph_signature.OutputKind
    g = _core.Graph(name)
    cx = _Context(g, training)
    cap = Captured()
    cap.graph = g
    cap.buffer_decisions = getattr(ep, "tilegraph_buffer_decisions", {})
    state = dict(model.named_parameters(remove_duplicate=False))
    state.update(model.named_buffers(remove_duplicate=False))  # non-persistent ones too
    constants = getattr(ep, "constants", {})
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    input_index = {}  # placeholder name -> index among the tensor inputs
    declared = {}  # id(parameter or buffer) -> its variable
    for node, spec in zip(placeholders, sig.input_specs):
        meta = node.meta["val"]
        if not isinstance(meta, torch.Tensor):
            if spec.kind == kinds.USER_INPUT:
                continue  # a number, string or None: the export specialized on its value
            raise UnsupportedError(f"exported input {spec} is not a tensor")
        dtype, shape = tg_dtype(meta.dtype), [int(d) for d in meta.shape]
        if spec.kind in (kinds.PARAMETER, kinds.BUFFER):
            # A tensor registered under several names (a tied weight: a language model's
            # word embedding and decoder) is one variable that every name maps to: the
            # program reads and trains it once, whichever placeholder a use went through.
            tensor = state.get(spec.target)
            key = id(tensor) if tensor is not None else spec.target
            if key not in declared:
                trainable = (spec.kind == kinds.PARAMETER
                             and getattr(tensor, "requires_grad", True))
                declared[key] = g.add_variable(spec.target, dtype, shape, trainable)
            cx.values[node] = declared[key]
            (cap.params if spec.kind == kinds.PARAMETER else cap.buffers)[spec.target] = \
                cx.values[node]
        elif spec.kind == kinds.CONSTANT_TENSOR:
            value = constants[spec.target].detach()
            if value.dtype == torch.bfloat16:  # numpy has no bf16: widened exactly, rounded back
                cx.values[node] = cx.cast(g.add_constant(np.asarray(value.float().numpy(),
                                                                    order="C")), "bf16")
            else:
                cx.values[node] = g.add_constant(np.asarray(value.numpy(), order="C"))
        elif spec.kind == kinds.USER_INPUT:
            input_index[node.name] = len(cap.user_inputs)
            cx.values[node] = g.add_input(f"input{len(cap.user_inputs)}", dtype, shape)
            cap.user_inputs.append(cx.values[node])
        else:
            raise UnsupportedError(f"exported input kind {spec.kind} is not supported")
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        cx.node, cx.source = node, user_location(node)
        if node.target not in _ASSERTIONS:  # no value: no block, no pipeline stage
            block = node_block(node)
            cx.placement = placement_of(block) if placement_of else 0
        cx.widened = _touches_narrow(node)
        if cx.rows.handles(node):
            result = cx.rows.translate(node)
        else:
            try:
                result = TABLE[node.target](cx, node, *node.args, **node.kwargs)
            except ValueError as e:
                if isinstance(e, Error):
                    raise
                raise ModelError(_operand_message(cx, node, e)) from None
        if cx.widened:
            result = cx.narrow(node, result)
            cx.widened = False
        cx.values[node] = result
    output_node = next(n for n in gm.graph.nodes if n.op == "output")
    results = output_node.args[0]
    leaves, mutations, loss_leaves = [], [], []
    loss_op_nodes, last_output_node = [], None  # (for the loss's choice: _loss_index)
    for value, spec in zip(results, sig.output_specs):
        if spec.kind == out_kinds.BUFFER_MUTATION:
            buffer_dtype, buffer_shape = g.type_of(cap.buffers[spec.target])
            meta = value.meta["val"]
            if tg_dtype(meta.dtype) != buffer_dtype or list(meta.shape) != list(buffer_shape):
                raise UnsupportedError(
                    f"Buffer {spec.target} is reassigned within the model when calling the "
                    f"forward method. This is not supported. Consider using "
                    f"self.{spec.target}.copy_(src) to copy data from a source tensor, where "
                    f"src is the name of the source tensor. ({name}: buffer {spec.target!r} is "
                    f"{buffer_dtype}{list(buffer_shape)}, the new value "
                    f"{tg_dtype(meta.dtype)}{list(meta.shape)}; a compiled model keeps each "
                    "buffer's dtype and shape.)")
            cap.mutated_buffers[spec.target] = cx.v(value)
            g.set_update(cap.buffers[spec.target], cx.cast(cx.v(value), cx.dtype_of(value)))
        elif spec.kind == out_kinds.USER_INPUT_MUTATION:
            mutations.append((input_index[spec.target], value))
        elif spec.kind in (out_kinds.USER_OUTPUT, out_kinds.LOSS_OUTPUT):
            if not isinstance(value, torch.fx.Node):
                leaves.append(("constant", value))  # None or a number the forward returned
                continue
            if (value.meta.get("custom") or {}).get(LOSS_KEY) is not None:
                loss_leaves.append((len(cap.outputs), value))
            if (value.meta.get("custom") or {}).get(LOSS_OP_KEY):
                cap.loss_op_outputs.append(len(cap.outputs))
                loss_op_nodes.append(value)
            last_output_node = value
            leaves.append(("tensor", len(cap.outputs)))
            cap.outputs.append(cx.v(value))
            meta = value.meta["val"]
            cap.output_meta.append((tuple(meta.shape), meta.dtype))
        elif spec.kind == out_kinds.PARAMETER_MUTATION:  # WGAN's clamp of its weights, ...
            raise UnsupportedError(
                f"{user_location(value) if isinstance(value, torch.fx.Node) else ''}: the "
                f"forward updates parameter {spec.target!r} in place; tilegraph's programs "
                "change parameters only through the optimizer. Do the update on the host "
                "between calls (under torch.no_grad(); tilegraph sees the edit), or compute "
                "with the updated value instead of writing it back".lstrip(": "))
        else:
            raise UnsupportedError(f"exported output kind {spec.kind} is not supported")
    from ._structure import OutputStructure
    cap.output_structure = OutputStructure(ep.call_spec.out_spec, leaves)
    cap.last_output_uses_loss_op = last_output_node is not None and any(
        _feeds(node, last_output_node) for node in loss_op_nodes)
    # An identity_loss whose value feeds another one is a step on the way (PopTorch allows
    # that): the loss is the one the others lead to.
    loss_leaves = [(i, v) for i, v in loss_leaves
                   if not any(_feeds(v, other) for _, other in loss_leaves if other is not v)]
    if len(loss_leaves) > 1 and not training:
        loss_leaves = []  # inference: identity_loss is a reduction, as many as the model has
    if len(loss_leaves) > 1:
        raise Error(f"{name}: identity_loss marks {len(loss_leaves)} of the outputs; "
                           "a model has one loss (sum the losses, then mark the sum)")
    cap.loss_index = loss_leaves[0][0] if loss_leaves else None
    for index, value in mutations:
        cap.input_mutations.append((index, len(cap.outputs)))
        cap.outputs.append(cx.v(value))
        meta = value.meta["val"]
        cap.output_meta.append((tuple(meta.shape), meta.dtype))
    return cap


LOSS_KEY = "tilegraph_loss"  # FX node metadata identity_loss sets on the loss it returns


def _feeds(a, b):
    """Whether FX node a is among the inputs, direct or not, of FX node b."""
    seen, stack = set(), [b]
    while stack:
        node = stack.pop()
        for up in node.all_input_nodes:
            if up is a:
                return True
            if up not in seen:
                seen.add(up)
                stack.append(up)
    return False
