"""Model-parallel annotations, with PopTorch's names: which device (IPU in PopTorch, a stage
device here) each part of a model runs on.

- BeginBlock(module, user_id=None, ipu_id=None) returns `module` itself, annotated: from the
  moment that module starts running, everything the forward does is placed on `ipu_id`,
  until another block starts (PopTorch's semantics; layers before the first block are on
  device 0). It can be assigned as a child module (`model.l2 = BeginBlock(model.l2, ipu_id=1)`).
- `with Block(user_id=None, ipu_id=None):` places a region of the forward; BlockFunction is
  the decorator form.
- Stage / AutoStage / PipelinedExecution / ShardedExecution describe how blocks map to
  devices (Options().setExecutionStrategy); by default a block's ipu_id is its device.

Capture reads the placement of every operation from the node metadata that
torch.fx.traceback.annotate records while exporting ("tilegraph_block": (user_id, ipu_id));
_capture.py turns it into the node's placement, and autodiff places every gradient on its
forward node's device.
"""
import functools

import torch
import torch.fx.traceback as fx_traceback

_KEY = "tilegraph_block"


class _Placer:
    """The block currently open during an export (BeginBlock switches it). Outside an export
    (the module run eagerly) the annotations do nothing."""

    def __init__(self):
        self.context = None
        self.active = False

    def start_capture(self):
        self.active = True

    def switch(self, user_id, ipu_id):
        if not self.active:
            return
        self.close()
        self.context = fx_traceback.annotate({_KEY: (user_id, ipu_id)})
        self.context.__enter__()

    def close(self):
        if self.context is not None:
            context, self.context = self.context, None
            context.__exit__(None, None, None)


_placer = _Placer()


class Error(RuntimeError):
    """PopTorch's poptorch.Error: a configuration or run that cannot go on. As PopTorch's, it
    has `message` (the text), `type` (the component that raised it: "tilegraph") and
    `location` (the user's file:line the message names, or "")."""

    @property
    def message(self):
        return str(self.args[0]) if self.args else ""

    @property
    def type(self):
        return "tilegraph"

    @property
    def location(self):
        import re
        found = re.search(r"([^\s()'\"]+\.py):(\d+)", str(self))
        return f"{found.group(1)}:{found.group(2)}" if found else ""


class ModelError(Error, ValueError):
    """An op of the captured model that cannot be built for its operands (dtypes or shapes
    that disagree, as a float64 input into float32 weights): a tilegraph.Error naming the
    user's line, and a ValueError, as the core's checks raise."""


class UnsupportedError(Error, NotImplementedError):
    """Something the model does that a compiled program cannot hold: a tilegraph.Error, as
    PopTorch raises, and a NotImplementedError, as tilegraph's other refusals are."""


class _BeginBlockHook:
    """The forward pre-hook of a BeginBlock module (a class, not a closure, so that a model
    with blocks can be saved with torch.save)."""

    def __init__(self, user_id, ipu_id):
        self.user_id, self.ipu_id = user_id, ipu_id

    def __call__(self, module, args):
        _placer.switch(self.user_id, self.ipu_id)


class _FunctionBlock:
    """BeginBlock(function, user_id, ipu_id) (PopTorch's legacy form): calling it runs the
    function in that block."""

    def __init__(self, fn, user_id, ipu_id):
        self._fn, self._user_id, self._ipu_id = fn, user_id, ipu_id

    def __call__(self, *args, **kwargs):
        with Block(self._user_id, self._ipu_id):
            return self._fn(*args, **kwargs)


def BeginBlock(layer_to_call, user_id=None, ipu_id=None):
    """Marks `layer_to_call` (a module or a function: PopTorch's parameter name) as the start
    of a block on device `ipu_id`; returns it."""
    module = layer_to_call
    if ipu_id is not None and int(ipu_id) < 0:
        raise ValueError(f"BeginBlock: ipu_id must be >= 0, got {ipu_id}")
    if not isinstance(module, torch.nn.Module):
        return _FunctionBlock(module, user_id, ipu_id)
    if getattr(module, "_tilegraph_block_hook", None) is not None:
        raise Error("module has already been assigned to a block (BeginBlock); "
                    "poptorch.removeBlocks(model) clears the blocks of a model")
    module._tilegraph_block_origin = (user_id, ipu_id)  # as given: for module_repr
    user_id = user_id if user_id is not None else f"block{ipu_id}"
    module._tilegraph_block = (user_id, ipu_id)
    module._tilegraph_block_hook = module.register_forward_pre_hook(
        _BeginBlockHook(user_id, ipu_id))
    return module


def removeBlocks(module):
    """Removes every BeginBlock annotation from `module` and its submodules."""
    for m in module.modules():
        hook = getattr(m, "_tilegraph_block_hook", None)
        if hook is not None:
            hook.remove()
        for name in ("_tilegraph_block_hook", "_tilegraph_block", "_tilegraph_block_origin"):
            if name in m.__dict__:
                delattr(m, name)
    return module


def module_repr(module):
    """repr(module), with each BeginBlock shown where it starts (PopTorch's module_repr):
    `(l1): BeginBlock(user_id=None, ipu_id=1) Linear(...)`, the module itself included."""
    from torch.nn.modules.module import _addindent
    extra = module.extra_repr()
    lines = extra.split("\n") if extra else []
    children = []
    for key, child in module._modules.items():
        text = "None" if child is None else _addindent(module_repr(child), 2)
        children.append(f"({key}): {text}")
    body = lines + children
    origin = getattr(module, "_tilegraph_block_origin", None)
    text = "" if origin is None else f"BeginBlock(user_id={origin[0]!r}, ipu_id={origin[1]}) "
    text += module._get_name() + "("
    if len(lines) == 1 and not children:
        text += lines[0]
    elif body:
        text += "\n  " + "\n  ".join(body) + "\n"
    return text + ")"


class Block:
    """`with Block(user_id, ipu_id):` places a region of the forward on `ipu_id`.
    `Block.start(user_id, ipu_id)` opens one that lasts until the next block starts;
    after `Block.useAutoId()`, blocks created without a user_id get one each."""

    _auto_ids = False
    _next_auto_id = 0

    def __init__(self, user_id=None, ipu_id=None):
        if ipu_id is not None and int(ipu_id) < 0:
            raise ValueError(f"Block: ipu_id must be >= 0, got {ipu_id}")
        if user_id is None and Block._auto_ids:
            user_id = f"auto{Block._next_auto_id}"
            Block._next_auto_id += 1
        self.user_id = user_id if user_id is not None else f"block{ipu_id}"
        self.ipu_id = ipu_id
        self._context = None

    def __enter__(self):
        if _placer.active:
            self._context = fx_traceback.annotate({_KEY: (self.user_id, self.ipu_id)})
            self._context.__enter__()
        return self

    def __exit__(self, *exc):
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(*exc)
        return False

    @staticmethod
    def useAutoId():
        Block._auto_ids = True

    @staticmethod
    def start(user_id=None, ipu_id=None):
        """Everything the forward does from here runs in this block, until the next one."""
        block = Block(user_id, ipu_id)
        _placer.switch(block.user_id, block.ipu_id)


def BlockFunction(user_id=None, ipu_id=None):
    """Decorator: the function's operations run in Block(user_id, ipu_id)."""
    def wrap(fn):
        @functools.wraps(fn)
        def placed(*args, **kwargs):
            with Block(user_id, ipu_id):
                return fn(*args, **kwargs)
        return placed
    return wrap


from .enums import AutoStage  # noqa: E402 (PopTorch's poptorch.AutoStage)


class Stage:
    """A pipeline stage made of blocks (by user_id); `.ipu(n)` puts it on device n."""

    def __init__(self, *block_ids):
        self.blocks = list(block_ids)
        self.device = None

    def ipu(self, n):
        self.device = int(n)
        return self


def _stage_of(stages, block_id):
    for st in stages:
        if block_id in st.blocks:
            return st
    known = [b for st in stages for b in st.blocks]
    raise KeyError(f"no stage holds block {block_id!r} (the strategy's blocks: {known})")


class _Strategy:
    def __init__(self, *stages):
        self.auto = stages[0] if len(stages) == 1 and isinstance(stages[0], AutoStage) else None
        self.stages = [] if self.auto is not None else [
            s if isinstance(s, Stage) else Stage(s) for s in stages]

    def stage(self, block_id):
        """The stage holding block `block_id` (PopTorch's strategy.stage("B1").ipu(0))."""
        return _stage_of(self.stages, block_id)

    def device_of(self, user_id, ipu_id):
        """The device a block runs on: its stage's .ipu(n) if a stage names it, else ipu_id."""
        for s in self.stages:
            if user_id in s.blocks and s.device is not None:
                return s.device
        return ipu_id


class PipelinedExecution(_Strategy):
    """Blocks on different devices form pipeline stages; micro-batches flow through them."""


class ShardedExecution(_Strategy):
    """Blocks on different devices run one after another (no pipelining)."""


class Phase:
    """PopTorch's execution phase (stages run together, phases one after another, tensors
    streamed off chip between them). Phased execution is an IPU memory strategy that
    tilegraph does not build: a Phase can be made, setExecutionStrategy refuses it."""

    def __init__(self, *stages):
        self.stages = [s if isinstance(s, Stage) else Stage(s) for s in stages]

    def stage(self, index):
        return self.stages[index]

    def ipus(self, *ipus):
        if len(ipus) != len(self.stages):
            raise ValueError(f"Phase.ipus: {len(ipus)} IPUs for {len(self.stages)} stages")
        for stage, ipu in zip(self.stages, ipus):
            stage.ipu(ipu)
        return self


class _PhasedExecution:
    def __init__(self, *phases):
        if not phases:
            raise ValueError("phased execution needs at least one phase")
        self.phases = [p if isinstance(p, Phase) else Phase(*p) if isinstance(p, list)
                       else Phase(p) for p in phases]

    def phase(self, index):
        return self.phases[index]

    def stage(self, block_id):
        """The stage holding block `block_id`, in whichever phase."""
        return _stage_of([st for p in self.phases for st in p.stages], block_id)

    def useSeparateBackwardPhase(self, use=True):
        self.separate_backward = bool(use)
        return self


class ParallelPhasedExecution(_PhasedExecution):
    """PopTorch's parallel phased execution (not built: setExecutionStrategy refuses it)."""

    def sendTensorsOffChipAfterFwd(self, off_chip=True):
        self.off_chip = bool(off_chip)
        return self


class SerialPhasedExecution(_PhasedExecution):
    """PopTorch's serial phased execution (not built: setExecutionStrategy refuses it)."""

    def setTensorsLiveness(self, liveness):
        from .enums import Liveness
        if not isinstance(liveness, Liveness):
            raise ValueError(f"setTensorsLiveness: expected a Liveness, got {liveness!r}")
        self.liveness = liveness
        return self


def start_capture():
    _placer.start_capture()


def finish_capture():
    """Closes a block that BeginBlock left open at the end of an export."""
    _placer.close()
    _placer.active = False


# ---- recomputation ------------------------------------------------------------------------
# recomputationCheckpoint(t): t is kept for the backward pass; the forward values between
# checkpoints are recomputed there instead (passes/recompute.cc). In eager PyTorch it is the
# identity; in a captured graph it is the op tilegraph::checkpoint, translated to the IR's
# `checkpoint` (a free view).

@torch.library.custom_op("tilegraph::checkpoint", mutates_args=())
def _checkpoint(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@_checkpoint.register_fake
def _(x):
    return torch.empty_like(x)


_checkpoint.register_autograd(lambda ctx, grad: grad)


def recomputationCheckpoint(*tensors):
    """Marks tensors to keep for the backward pass (PopTorch's recomputationCheckpoint);
    returns them (one tensor, or a tuple)."""
    out = tuple(_checkpoint(t) if isinstance(t, torch.Tensor) else t for t in tensors)
    return out[0] if len(out) == 1 else out


# set_available_memory(t, p): in eager PyTorch the identity; captured, the op
# tilegraph::available_memory, which puts the hint on the matmul / convolution producing t
# (ops/memory_hint.h) and leaves no node of its own.

@torch.library.custom_op("tilegraph::available_memory", mutates_args=())
def _available_memory(x: torch.Tensor, proportion: float) -> torch.Tensor:
    return x.clone()


@_available_memory.register_fake
def _(x, proportion):
    return torch.empty_like(x)


_available_memory.register_autograd(lambda ctx, grad: (grad, None))


def set_available_memory(tensor, available_memory_proportion):
    """PopTorch's per-op memory hint: the matmul or convolution producing `tensor` may use
    this proportion of each tile's memory for its temporaries. The IPU Model's planner
    honours it (in place of setAvailableMemoryProportion for that op); the CPU ignores it.
    Returns the tensor."""
    proportion = float(available_memory_proportion)
    if not 0.0 < proportion <= 1.0:
        raise ValueError(f"available_memory_proportion must be in (0, 1], got "
                         f"{available_memory_proportion}")
    return _available_memory(tensor, proportion)
