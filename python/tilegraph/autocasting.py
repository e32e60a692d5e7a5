"""PopTorch's automatic casting: `autocast` regions, `Module.autocast()`, and
`autocasting.Policy` with `Options().Precision.autocastPolicy` / `autocastEnabled`.

Everything here happens while torch.export traces the model (tilegraph's capture): the casts
a region asks for are recorded into the program as `to` ops, so the compiled graph holds
them like any other op, the autodiff differentiates through them, and the parameters stay
in their own dtype (float32 master weights; PopTorch cast a listed module's parameters to
half in place instead).

What a region is:
- `with autocast():` / `@autocast()` in a forward, or the forward of a module marked with
  `module.autocast()` (every module called inside it is in the region too);
  `autocast(False)` opens a region with casting off (nested regions: the innermost decides);
- `Options().Precision.autocastEnabled(False)` turns every region of that model off.

What a region does:
- no policy set (the default): torch.autocast("cpu", dtype=torch.float16), torch's own op
  lists; eager runs of the same forward compute the same numbers;
- `Options().Precision.autocastPolicy(policy)`: the policy's lists decide, op by op, in the
  order PopTorch used: an op whose floating inputs mix float16 and float32 runs in float32
  if it is in `promote`, in float16 if in `demote`; otherwise an op in `fp16` / `fp32` runs
  in that dtype; otherwise, inside a module whose type is in `fp16` / `fp32` (or, with mixed
  float16 / float32 parameters or inputs, `promote` / `demote`), in the module's dtype;
  otherwise nothing is cast and the op follows its inputs (torch's type promotion). To run
  an op in a dtype means: its float16 / float32 tensor arguments, parameters included, are
  cast to that dtype first.
`Options().Precision.halfFloatCasting(HalfFloatCastingBehavior.FloatDowncastToHalf)`: every
op in the model whose operands mix float16 and float32 runs in float16 (PopTorch's tracing
frontend did this by default); `Default` and `HalfUpcastToFloat` follow torch's promotion,
except where eager PyTorch would raise: a linear or convolution whose weights are float32
and input float16 (or the other way round) runs in its input's type, its weights cast, as
PopTorch's do (float16 activations through float32 layers give float16); a product of two
activations that mix them (matmul, bmm, einsum, ...: torch does not promote there) runs in
float32, as HalfUpcastToFloat says (Graphcore's BERT multiplies a float32 one-hot matrix
with float16 hidden states).
Ops that write one of their operands (in place, or out=) are never cast.
Ops are named as torch names them: `torch.mul`, `Tensor.mul`, `x * y` and `x *= y` all are
`mul`; `torch.nn.functional.relu` and `torch.relu` are both `relu`.
"""
import contextlib
import functools

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

_HALF, _FLOAT = torch.float16, torch.float32
# Operators that Python spells with dunders: the torch op each one calls.
_DUNDER_OPS = {"truediv": "div", "floordiv": "floor_divide", "and": "bitwise_and",
               "or": "bitwise_or", "xor": "bitwise_xor", "lshift": "bitwise_left_shift",
               "rshift": "bitwise_right_shift", "mod": "remainder", "neg": "neg",
               "abs": "abs", "add": "add", "sub": "sub", "mul": "mul", "matmul": "matmul",
               "pow": "pow"}


def _base_name(func):
    """func's __name__ without an aten overload's suffix (torch.ops.aten.add_.Tensor: add_)."""
    name = getattr(func, "__name__", None)
    if not isinstance(name, str):
        return ""
    return name.split(".")[0] if isinstance(func, torch._ops.OpOverload) else name


def op_name(func):
    """The name of the torch op a __torch_function__ call runs, as a policy lists it (None
    for attribute access and other calls no policy can name)."""
    name = _base_name(func)
    if not name:
        return None
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        for prefix in ("r", "i"):  # reflected (0.5 * x) and in-place (x *= 2) operators
            if name.startswith(prefix) and name[1:] in _DUNDER_OPS:
                name = name[1:]
        return _DUNDER_OPS.get(name)
    if name.endswith("_") and not name.endswith("__"):
        name = name[:-1]  # in-place methods: x.mul_(2) is mul
    return name


def _is_module_class(entry):
    return isinstance(entry, type) and issubclass(entry, torch.nn.Module)


class Policy:
    """An automatic casting policy (PopTorch's poptorch.autocasting.Policy). Each list holds
    torch operators (`torch.mul`, `torch.nn.functional.gelu`, `torch.Tensor.softmax`) and
    module classes (`torch.nn.Conv2d`): `fp16` / `fp32` run in that dtype, `promote` /
    `demote` run in float32 / float16 when their inputs mix the two. The module docstring
    says in which order the lists apply."""

    def __init__(self, fp16=None, fp32=None, promote=None, demote=None):
        self.fp16 = self._checked("fp16", fp16)
        self.fp32 = self._checked("fp32", fp32)
        self.promote = self._checked("promote", promote)
        self.demote = self._checked("demote", demote)
        self._ops = {kind: {op_name(e) for e in getattr(self, kind) if not _is_module_class(e)}
                     for kind in ("fp16", "fp32", "promote", "demote")}
        self._modules = {kind: tuple(e for e in getattr(self, kind) if _is_module_class(e))
                         for kind in ("fp16", "fp32", "promote", "demote")}

    @staticmethod
    def _checked(kind, entries):
        if entries is None:
            return []
        if isinstance(entries, (str, bytes)) or not hasattr(entries, "__iter__"):
            raise TypeError(f"autocasting.Policy: {kind} must be a list of torch operators "
                            f"or module classes, got {type(entries).__name__}")
        entries = list(entries)
        for e in entries:
            name = op_name(e) if callable(e) and not _is_module_class(e) else None
            if not (_is_module_class(e) or (name and name.isidentifier())):
                raise TypeError(f"autocasting.Policy: {kind} holds {e!r}, which is neither a "
                                "torch operator (e.g. torch.mul) nor an nn.Module class")
        return entries

    def op_dtype(self, name, mixed):
        """The dtype an op named `name` runs in by the op lists (None: not listed)."""
        if mixed and name in self._ops["promote"]:
            return _FLOAT
        if mixed and name in self._ops["demote"]:
            return _HALF
        if name in self._ops["fp16"]:
            return _HALF
        if name in self._ops["fp32"]:
            return _FLOAT
        return None

    def module_dtype(self, module, mixed):
        """The dtype a module of this type runs in by the module lists (None: not listed)."""
        if mixed and isinstance(module, self._modules["promote"]):
            return _FLOAT
        if mixed and isinstance(module, self._modules["demote"]):
            return _HALF
        if isinstance(module, self._modules["fp16"]):
            return _HALF
        if isinstance(module, self._modules["fp32"]):
            return _FLOAT
        return None

    def __repr__(self):
        def names(entries):
            return [e.__name__ if _is_module_class(e) else op_name(e) for e in entries]
        return (f"Policy(fp16={names(self.fp16)}, fp32={names(self.fp32)}, "
                f"promote={names(self.promote)}, demote={names(self.demote)})")


# PopTorch's default policy: matmuls and convolutions in half, ops that combine several
# tensors promoted; plus torch.nn.functional.linear (PopTorch's tracer saw nn.Linear as a
# matmul, torch.export sees linear).
default_fp16 = [torch.addbmm, torch.addmm, torch.addmv, torch.addr, torch.baddbmm, torch.bmm,
                torch.chain_matmul, torch.conv1d, torch.conv2d, torch.conv3d, torch.conv_tbc,
                torch.conv_transpose1d, torch.conv_transpose2d, torch.conv_transpose3d,
                torch.convolution, torch.matmul, torch.mm, torch.mv, torch.nn.Conv2d,
                torch.nn.functional.linear]
default_fp32 = []
default_promote = [torch.addcdiv, torch.addcmul, torch.atan2, torch.bilinear, torch.cat,
                   torch.cross, torch.dot, torch.equal, torch.index_put, torch.stack,
                   torch.tensordot]
default_demote = []
default = Policy(default_fp16, default_fp32, default_promote, default_demote)


def _mark(module, enabled=True):
    """module.autocast(enabled=True): the module's forward is an autocast region when
    tilegraph compiles it (PopTorch's Module.autocast)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"autocast: enabled must be a bool, got {enabled!r}")
    module._tilegraph_autocast = enabled
    return module


if not hasattr(torch.nn.Module, "autocast"):
    torch.nn.Module.autocast = _mark


def _mixes_half_and_float(tensors):
    dtypes = {t.dtype for t in tensors}
    return _HALF in dtypes and _FLOAT in dtypes


def _writes_an_operand(func, kwargs):
    """In-place ops (x.mul_(y), x *= y, F.relu(x, inplace=True)) and ops with out=: casting
    their operands would make them write a copy, so they are left as they are (their result
    has the written tensor's dtype anyway)."""
    name = _base_name(func)
    in_place = (name.endswith("_") and not name.endswith("__")) or (
        name.startswith("__i") and name[3:-2] in _DUNDER_OPS)
    return in_place or kwargs.get("inplace") is True or kwargs.get("out") is not None


# Layers with weights that PopTorch runs in their input's float type when the weights have
# the other one (float16 activations through a float32 nn.Linear give float16; float32
# through float16 weights give float32), where eager PyTorch raises a dtype mismatch.
_WEIGHTED_OPS = frozenset({"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                           "conv_transpose2d", "conv_transpose3d"})
# Products whose torch kernels refuse operands of two dtypes (no type promotion).
_UNPROMOTED_PRODUCTS = frozenset({"matmul", "mm", "bmm", "mv", "dot", "vdot", "addmm", "addmv",
                                  "addbmm", "baddbmm", "einsum", "tensordot", "inner", "outer",
                                  "ger", "chain_matmul", "multi_dot"})


def _input_and_weight(args, kwargs):
    x = args[0] if args else kwargs.get("input")
    w = args[1] if len(args) > 1 else kwargs.get("weight")
    return x, w


class _CastingMode(TorchFunctionMode):
    """Casts the float16 / float32 tensor arguments of the ops traced under it: by a Policy
    inside enabled regions (a stack of booleans that autocast regions push and pop) and
    inside listed modules (a stack of dtypes their wrapped forwards push and pop); with
    `downcast` (Precision.halfFloatCasting(FloatDowncastToHalf)), every op whose operands
    mix float16 and float32, to float16, everywhere in the model; and otherwise, with
    `weights_follow_inputs` (the capture mixes the two types), a linear or convolution whose
    weights' type differs from its input's, to the input's type, as PopTorch does, and a
    product of mixed operands torch would refuse (_UNPROMOTED_PRODUCTS), to float32."""

    def __init__(self, policy, downcast, weights_follow_inputs=False):
        super().__init__()
        self.policy = policy
        self.downcast = downcast
        self.weights_follow_inputs = weights_follow_inputs
        self.regions = []
        self.module_dtypes = []

    def _dtype(self, func, tensors, args, kwargs):
        mixed = _mixes_half_and_float(tensors)
        name = op_name(func) if self.policy is not None and self.regions and \
            self.regions[-1] else None
        if name is not None:
            dtype = self.policy.op_dtype(name, mixed) or next(
                (d for d in reversed(self.module_dtypes) if d is not None), None)
            if dtype is not None:
                return dtype
        if self.downcast and mixed:
            return _HALF
        if self.weights_follow_inputs and mixed and _base_name(func) in _WEIGHTED_OPS:
            x, w = _input_and_weight(args, kwargs)
            if isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor) and \
                    x.dtype in (_HALF, _FLOAT) and w.dtype != x.dtype:
                return x.dtype
        if mixed and op_name(func) in _UNPROMOTED_PRODUCTS:
            return _FLOAT
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not _writes_an_operand(func, kwargs):
            tensors = [t for t in pytree.tree_leaves((args, kwargs))
                       if isinstance(t, torch.Tensor) and t.dtype in (_HALF, _FLOAT)]
            dtype = self._dtype(func, tensors, args, kwargs) if tensors else None
            if dtype is not None and any(t.dtype != dtype for t in tensors):
                def cast(v):
                    if isinstance(v, torch.Tensor) and v.dtype in (_HALF, _FLOAT):
                        return v.to(dtype)
                    return v
                args, kwargs = pytree.tree_map(cast, (args, kwargs))
        return func(*args, **kwargs)

    def enter_module(self, module, inputs):
        params = [p for p in module.parameters() if p.dtype in (_HALF, _FLOAT)]
        tensors = params + [t for t in pytree.tree_leaves(inputs)
                            if isinstance(t, torch.Tensor) and t.dtype in (_HALF, _FLOAT)]
        self.module_dtypes.append(self.policy.module_dtype(module,
                                                           _mixes_half_and_float(tensors)))

    def leave_module(self):
        if self.module_dtypes:
            self.module_dtypes.pop()


class _CompileScope:
    """The casting settings of one capture (Options().Precision): whether autocast regions
    cast, and the casting mode when a policy or FloatDowncastToHalf asks for one, or when the
    model's weights or example inputs hold float16 (weights follow inputs where they mix
    float16 and float32; mixed products upcast)."""

    def __init__(self, precision, mixed, has_half):
        from .enums import HalfFloatCastingBehavior
        self.enabled = precision.autocast_enabled
        policy = precision.autocast_policy if self.enabled else None
        downcast = precision.half_float_casting == HalfFloatCastingBehavior.FloatDowncastToHalf
        self.mode = _CastingMode(policy, downcast, mixed) \
            if policy is not None or downcast or has_half else None
        self.policy = policy


_scopes = []  # the capture in progress (captures hold the module lock: one at a time)


class autocast:
    """PopTorch's autocast region (context manager or decorator). The module docstring says
    what a region casts; outside a tilegraph capture (an eager call of the forward) it is
    torch.autocast("cpu", dtype=torch.float16)."""

    def __init__(self, enabled=True):
        if not isinstance(enabled, bool):
            raise TypeError(f"autocast: enabled must be a bool, got {enabled!r}")
        self.enabled = enabled
        self._exits = []

    def __enter__(self):
        scope = _scopes[-1] if _scopes else None
        if scope is not None and scope.policy is not None:
            scope.mode.regions.append(self.enabled)
            self._exits.append(scope.mode.regions.pop)
        else:
            enabled = self.enabled and (scope is None or scope.enabled)
            region = torch.autocast("cpu", dtype=torch.float16, enabled=enabled)
            region.__enter__()
            self._exits.append(lambda: region.__exit__(None, None, None))
        return self

    def __exit__(self, *exc):
        self._exits.pop()()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with autocast(self.enabled):
                return fn(*args, **kwargs)
        return wrapped


@contextlib.contextmanager
def capturing(model, precision, example_inputs=()):
    """The casting settings in force while tilegraph captures `model` on `example_inputs`:
    modules marked with module.autocast() run their forward in a region, and `tracing()`
    applies the casting mode (a policy, FloatDowncastToHalf, weights following inputs)."""
    tensors = [t for t in list(model.parameters()) + pytree.tree_leaves(example_inputs)
               if isinstance(t, torch.Tensor)]
    scope = _CompileScope(precision, _mixes_half_and_float(tensors),
                          any(t.dtype == _HALF for t in tensors))
    patched = []
    _scopes.append(scope)
    try:
        for m in model.modules():
            if getattr(m, "_tilegraph_autocast", False):
                patched.append((m, m.__dict__.get("forward")))
                m.forward = autocast(True)(m.forward)
        mode = scope.mode
        if scope.policy is not None:
            # Modules of a listed type run in the module's dtype: their forward is wrapped
            # (as PopTorch wraps it), so a direct `module.forward(x)` call counts too.
            listed = tuple(c for kind in ("fp16", "fp32", "promote", "demote")
                           for c in scope.policy._modules[kind])
            for m in model.modules():
                if listed and isinstance(m, listed):
                    patched.append((m, m.__dict__.get("forward")))
                    m.forward = _in_module(mode, m, m.forward)
        yield
    finally:
        for m, own in reversed(patched):
            if own is None:
                del m.forward
            else:
                m.forward = own
        _scopes.remove(scope)


def _in_module(mode, module, forward):
    """`forward` run with `module`'s dtype on the casting mode's module stack."""
    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        mode.enter_module(module, (args, kwargs))
        try:
            return forward(*args, **kwargs)
        finally:
            mode.leave_module()
    return wrapped


def tracing():
    """The casting mode of the capture in progress, for torch.export's trace of the forward
    only: the re-trace of the exported graph (run_decompositions) sees the casts already
    recorded, as aten ops, and must not cast again."""
    scope = _scopes[-1] if _scopes else None
    if scope is None or scope.mode is None:
        return contextlib.nullcontext()
    return scope.mode
