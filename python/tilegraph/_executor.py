"""The executor returned by trainingModel / inferenceModel (PopTorch's PoplarExecutor).

On the first call (or compile()) it captures the model at the micro-batch size, has the C++
core add the backward and the optimizer update (training), compiles, and pushes the
module's weights in. Each call then feeds the combined batch (micro-batch x
deviceIterations x gradientAccumulation) as that many steps of one engine run.
"""
import collections
import contextvars
import math
import os
import re
import threading
import time
import warnings
import weakref

import numpy as np
import torch

from . import _cache, _capture_patches, _core, _guards, autocasting, enums, optim
from ._capture import LOSS_KEY, capture, tg_dtype
from ._engine_io import from_engine, read_variables_into, to_engine
from ._structure import CallStructure, dumps_or_none
from ._options import ENGINE_OUTPUT_MODE, Options, OutputMode, ReductionType, threads_to_run
from ._blocks import Error, UnsupportedError
from ._system import RecoverableError, logger
from .optim import describe, state_dtypes, structure


def _owns_contiguous_storage(t):
    """Whether `t` is a contiguous CPU tensor that is the whole of its storage and the only
    tensor using it (no other parameter tied to it, no view the user kept: replacing its
    `.data` then changes what no other tensor shows). The storage's use count while one
    temporary storage object is held is 2 when `t` alone uses it."""
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    if use_count is None or t.device.type != "cpu" or not t.is_contiguous() or t.numel() == 0:
        return False
    if t.storage_offset() != 0 or t._base is not None:
        return False
    storage = t.untyped_storage()
    return storage.nbytes() == t.numel() * t.element_size() and use_count(storage._cdata) == 2


_compilations = 0  # process-wide count of engine compilations (tests read it)
# Held while any executor reads or writes a module: its capture (torch.export is not thread-
# safe, swaps the module's parameters for fake tensors while tracing, and an inference capture
# flips the module to eval mode), guard checks and host <-> engine weight copies. Engine runs
# do not hold it. Lock order: an executor's own lock first, then this one.
_MODULE_LOCK = threading.RLock()
_warned = set()


def _warn_once(what, message):
    if what not in _warned:
        _warned.add(what)
        warnings.warn(f"tilegraph: {message}", stacklevel=3)
_identity_loss_reduction = contextvars.ContextVar("tilegraph_identity_loss", default=None)


def compilation_count():
    return _compilations


def identity_loss(x, reduction="sum"):
    """Marks `x` as the loss, reduced by "sum", "mean" or "none" (PopTorch's identity_loss)."""
    if reduction not in ("sum", "mean", "none"):
        raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
    import torch.fx.traceback as fx_traceback
    marks = _identity_loss_reduction.get()
    if marks is not None:
        marks.append(reduction)
    # The annotation names the loss wherever the forward puts it in its result (_capture).
    with fx_traceback.annotate({LOSS_KEY: reduction}):
        if reduction == "sum":
            return x.sum()
        if reduction == "mean":
            return x.mean()
        return x * 1  # an op of its own, to carry the annotation



def _hyperparameters_of(optimizer):
    """The optimizer's per-group hyperparameters as plain values (what an LR scheduler or an
    edit of param_groups changes); a training call compares them with the ones applied."""
    def plain(v):
        if isinstance(v, torch.Tensor):
            return float(v) if v.numel() == 1 else ("tensor", id(v))
        if isinstance(v, (bool, int, float, str, type(None))) or \
                (isinstance(v, tuple) and all(isinstance(x, (int, float)) for x in v)):
            return v
        return ("object", id(v))  # compared by identity (an array's == is elementwise)
    return tuple(tuple((k, plain(v)) for k, v in g.items() if k != "params") +
                 (("params", len(g["params"])),) for g in optim.effective_param_groups(optimizer))

# The live training executor of each module: PopTorch refuses a second trainingModel on a
# module until the first is destroyed (two engines would train it apart, the second from
# fresh optimizer state).
_TRAINING_EXECUTORS = weakref.WeakKeyDictionary()  # module -> weakref to its executor

_WRAPPED_TWICE = ("Model has already been wrapped in 'poptorch.trainingModel'. Call "
                  "model.destroy() on the model to unwrap before wrapping again.")


class _DestroyModule:
    """`model.destroy()` on a module a trainingModel wraps (PopTorch's wrapped modules have
    it): destroys that executor (its weights stay in the module). Removed from the module by
    the executor's destroy; a copy or pickle of the module gets one that does nothing."""

    def __init__(self, executor=None):
        self._executor = None if executor is None else weakref.ref(executor)

    def __call__(self):
        executor = None if self._executor is None else self._executor()
        if executor is not None:
            executor.destroy()

    def __reduce__(self):
        return (_DestroyModule, ())


def _export_path(filename):
    """Where save / compileAndExport write: `filename`, or model.tilegraph inside it when it
    names a directory (PopTorch's older compileAndExport wrote one file into a directory)."""
    if os.path.isdir(filename):
        return os.path.join(filename, "model.tilegraph")
    return filename


def _refuse_wrapped(model, executor=None):
    """A module a live trainingModel trains (compiled, not destroyed) is not wrapped, or
    compiled for training, by another (PopTorch's error). One that never compiled (its
    first call failed) holds no state to lose, and gives way."""
    previous = _TRAINING_EXECUTORS.get(model)
    previous = previous() if previous is not None else None
    if previous is not None and previous is not executor and not previous._destroyed and \
            previous._exe is not None:
        raise Error(_WRAPPED_TWICE)


def _wrap_for_training(model, executor):
    """Registers `executor` as `model`'s training executor and gives the module PopTorch's
    `destroy()`."""
    _TRAINING_EXECUTORS[model] = weakref.ref(executor)
    executor._destroyed = False  # a destroyed executor called again compiles again
    own = getattr(type(model), "destroy", None)
    if own is None and isinstance(model.__dict__.get("destroy", _DestroyModule()), _DestroyModule):
        model.__dict__["destroy"] = _DestroyModule(executor)


def _unwrap_for_training(model, executor):
    entry = _TRAINING_EXECUTORS.get(model)
    if entry is not None and entry() is executor:
        del _TRAINING_EXECUTORS[model]
    hook = model.__dict__.get("destroy")
    if isinstance(hook, _DestroyModule) and hook._executor is not None and \
            hook._executor() is executor:
        del model.__dict__["destroy"]


class PoplarExecutor:
    """Runs a module's step on the engine (see the module comment).

    Guarantees (docs/RELIABILITY.md): calls are serialized per executor, and host <-> engine
    weight copies across executors; the program is re-captured when a guard on the module
    changes (_guards.py); weights edited on the host (by hand, load_state_dict, another
    executor's training) are pushed in before a call; after any failure, including Ctrl-C
    between steps, the module holds exactly what the engine applied."""

    def __init__(self, model, options=None, optimizer=None, training=False, user_model=None,
                 poptorch_version=None):
        """PopTorch's constructor (trainingModel / inferenceModel call it): `user_model` is
        the module the caller holds when `model` wraps it (PopTorch's test helpers pass both;
        they share parameters, so syncing `model` syncs it: it needs no handle of its own),
        `poptorch_version` is accepted and unused."""
        del user_model, poptorch_version
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        if options is not None and not isinstance(options, Options):
            raise Error(f"Invalid type: 'options' is of type {type(options).__name__} "
                        "(expected tilegraph.Options)")
        options = Options() if options is None else options
        if not training and options.Training.gradient_accumulation != 1:
            raise Error("You must set poptorch.Options().Training.gradientAccumulation to 1 "
                        "or leave it as its default value (1) when running a "
                        "poptorch.inferenceModel(). Use poptorch.Options().deviceIterations() "
                        "to process a sufficient number of batches each run for pipelined "
                        "execution instead. (Training.gradientAccumulation is "
                        f"{options.Training.gradient_accumulation})")
        # The user's options are frozen (the program is compiled from them: changing them
        # later would not change it); the executor works on its own frozen copy.
        options._freeze()
        own = options.clone()
        if own.output_mode == OutputMode.Default:
            # resolved as PopTorch resolves it when wrapping: Final for training, All for
            # inference (executor.options.output_mode reports it; the user's options keep
            # Default)
            own.outputMode(OutputMode.Final if training else OutputMode.All)
        self.options = own._freeze()
        self.training = training
        if training and not model.training:
            # PopTorch's trainingModel trains: a module in eval mode is put in training mode
            # when wrapped (a module already in training mode keeps its submodules' modes: a
            # layer the user froze with .eval() stays frozen). Modes set after wrapping are
            # followed, as eager would.
            model.train()
        if training and optimizer is None:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        self.optimizer = optimizer
        self._exe = None
        self._destroyed = False
        self._cap = None
        self._key = None            # cache key of the compiled graph (_cache.graph_key)
        self._guard = None          # _guards.Guard: the module as it was at capture
        self._global_hooks = None   # _guards.global_hooks() at capture
        self._host_version = None   # _guards.Versions at the last host <-> engine sync
        self._synced = None         # _synced_tensors(), cached while the guard holds
        self._aliased = {}          # engine variable -> data_ptr of the module tensor viewing it
        self._alias_pending = False  # _alias_module_weights at the end of the next call
        self._compiled_membership = None  # param groups' parameters the program was built for
        self.runs = 0  # engine calls made
        self._synthetic = None      # enableSyntheticData: (input specs, the drawn inputs)
        self._attached = False
        self._returns_tuple = False
        self._call = None  # CallStructure of the call the program was compiled for
        self._last_call = None  # (CallStructure, forward identity) of a plain call: rebind
        self._opt_flags = None
        self._opt_state_dtypes = None  # optim.state_dtypes of the compiled program's optimizer
        self._hyper = {}
        self._applied_hypers = None  # _hyperparameters_of(optimizer) the engine runs with
        self._input_specs = []  # (shape of the combined batch per call, torch dtype)
        self._lock = threading.RLock()
        # An inference executor keeps the train/eval modes its module had when it was made
        # (PopTorch's inferenceModel works on its own copy): model.train() later, to go on
        # training, does not change what it serves.
        self._modes = None if training else [(m, m.training) for m in model.modules()]
        self.loaded_from_cache = False
        self.weight_copies = {"to_device": 0, "to_host": 0}  # whole-model copies made
        self._perf = []  # per call: host times (input, input_complete, output, output_complete)

    # ---- batch arithmetic ----------------------------------------------------------------
    @property
    def _steps(self):
        accumulation = self.options.Training.gradient_accumulation if self.training else 1
        return self.options.device_iterations * accumulation

    def _output_mode(self):
        mode = self.options.output_mode
        if mode == OutputMode.Default:
            mode = OutputMode.Final if self.training else OutputMode.All
        return mode

    @property
    def _replicas(self):
        return self.options.replication_factor

    @property
    def _processes(self):
        return self.options.Distributed.numProcesses

    def _split(self, tensors):
        """The micro-batch of every tensor input: the combined batch is [steps, replicas,
        micro-batch] (PopTorch/PopART's order)."""
        parts = self._steps * self._replicas
        if parts == 1:
            return list(tensors)  # any tensor, 0-d included
        micro = []
        for i, a in enumerate(tensors):
            if a.dim() == 0 or a.shape[0] % parts != 0:
                raise ValueError(
                    f"argument {i}: expected a batch dimension divisible by {parts} "
                    f"(deviceIterations x replicationFactor x gradientAccumulation), got shape "
                    f"{tuple(a.shape)}")
            micro.append(a[: a.shape[0] // parts])
        return micro

    # ---- compilation ---------------------------------------------------------------------
    def compile(self, *args, **kwargs):
        """Captures and compiles for these inputs without running (PopTorch's compile)."""
        with self._lock:
            if self.training and self._exe is None:
                self._enter_training_mode()
            self._compile(self._structure_of(args, kwargs))
        return self

    def _enter_training_mode(self):
        """Before the first compilation of a trainingModel: the module becomes this
        executor's to train (another live trainingModel of it is refused). (The module was
        put in training mode when wrapped; an eval() since is followed, as eager would.)"""
        if isinstance(self.model, torch.nn.Module) and \
                not isinstance(self.model, _cache.ExportedModule):
            _refuse_wrapped(self.model, self)  # another one compiled since this was made
            _wrap_for_training(self.model, self)

    def _structure_of(self, args, kwargs):
        last, forward = self._last_call, self._forward_identity()
        if (last is not None and last[1] == forward and last[0].plain_arity == len(args)
                and not kwargs and all(type(a) is torch.Tensor for a in args)):
            return last[0].rebind(args)
        call = self._bind_call(args, kwargs)
        # Rebind from the compiled call's structure where this one is the same: the keys are
        # then one object, and _prepare's comparison of them costs no TreeSpec comparison.
        same = self._call is not None and self._call.plain_arity == call.plain_arity \
            and self._call.key == call.key
        base = self._call if same else call
        self._last_call = (base, forward) if call.plain_arity is not None else None
        return call

    def _forward_identity(self):
        """What decides the forward's signature: its function, on the class or the instance."""
        return (type(self.model).forward, self.model.__dict__.get("forward"))

    def _bind_call(self, args, kwargs):
        # An executor from an export file binds calls with the exported forward's signature.
        signature = self._call.signature if isinstance(self.model, _cache.ExportedModule) \
            and self._call is not None else None
        # Hugging Face caches passed in (past_key_values) are trees of tensors, from the
        # first call on (registered at capture, they were one opaque leaf until then).
        _capture_patches.register_hf_caches()
        return CallStructure.of(self.model, args, kwargs, signature)

    def _compile(self, call):
        """Captures the model for `call` (a CallStructure) and compiles it, unless the
        captured graph is the one already compiled. An executable replaced here hands its
        engine state (optimizer state, weights) to the new one where names and shapes
        agree."""
        micro = _distinct_memory(self._split(call.tensors))
        input_specs = [(tuple(a.shape), a.dtype) for a in call.tensors]
        cap, marks = self._capture(call, micro)
        self._check_mutations(cap)
        self._call = call
        self._set_guard()
        for out in cap.outputs:
            cap.graph.add_output(out)
        key = _cache.graph_key(self, cap, input_specs)
        if self._exe is not None and key == self._key:
            return  # a guard changed, the graph did not
        self._input_specs = input_specs
        old = self._exe  # the host already holds its weights (copied after every training call)
        hit = None
        disk = _cache.ExecutableCache(self.options.cache_dir) if self.options.cache_dir else None
        if disk is not None:
            hit = disk.load(key)
        self.loaded_from_cache = hit is not None
        if hit is not None:
            live, (cap, meta) = cap, hit
            # The structures of the live capture (the same graph: the key holds its IR).
            cap.output_structure, cap.loss_index = live.output_structure, live.loss_index
            cap.anchors = {k: int(v) for k, v in meta.get("anchors", {}).items()}
            cap.input_mutations = live.input_mutations
            cap.buffer_decisions = live.buffer_decisions
        else:
            self._returns_tuple = len(cap.outputs) > 1
            self._apply_mixed_precision(cap)
            self._hyper = self._add_training(cap, marks) if self.training else {}
            self._add_anchors(cap)
            meta = _cache.capture_meta(cap, self._cache_extra())
            if disk is not None:
                disk.store(key, cap, self._cache_extra())
        self._set_anchor_modes(cap)
        previous = getattr(self, "_cap", None)
        old_own = set(previous.params.values()) | set(previous.buffers.values()) \
            if previous is not None and old is not None else set()
        self._compile_from(cap, meta)
        self._key = key
        if old is not None:
            self._adopt_state(old, old_own)

    def _check_mutations(self, cap):
        """In-place updates of inputs come back to the host tensors: every step's value,
        so only where all steps' outputs return (or there is one step)."""
        if cap.input_mutations and self._steps * self._replicas > 1 and \
                self._output_mode() != OutputMode.All:
            raise UnsupportedError(
                "the forward updates an input in place; with several steps per call "
                "(deviceIterations x gradientAccumulation x replicas) tilegraph returns the "
                "updated input only with Options().outputMode(OutputMode.All); return the "
                "new value as an output instead")

    def _capture(self, call, micro):
        """torch.export of the model, under the module lock. An inference executor captures
        with the modes of its creation (self._modes) and restores the module's own after.
        Compile hooks (registerPreCompileHook / registerPostCompileHook) run around it."""
        for hook in list(_PRECOMPILE_HOOKS.values()):
            hook()
        cap, marks = self._capture_model(call, micro)
        for hook in list(_POSTCOMPILE_HOOKS.values()):
            hook()
        return cap, marks

    def _capture_model(self, call, micro):
        marks = []
        token = _identity_loss_reduction.set(marks)
        current = None if self._modes is None else [(m, m.training) for m in self.model.modules()]
        try:
            with _MODULE_LOCK:
                for m, mode in self._modes or ():
                    m.training = mode
                try:
                    placements = _Placements(self.options.execution_strategy)
                    args, kwargs = call.arguments(micro)
                    with autocasting.capturing(self.model, self.options.Precision,
                                               (args, kwargs)):
                        cap = capture(self.model, args, name=type(self.model).__name__,
                                      placement_of=placements, example_kwargs=kwargs,
                                      training=self.training)
                    self._stages = placements.check(self)
                finally:
                    for m, mode in current or ():
                        m.training = mode
        finally:
            _identity_loss_reduction.reset(token)
        return cap, marks

    def _adopt_state(self, old, old_own=()):
        """Optimizer state of a replaced executable carries over (same names and shapes).
        State the new program lacks (a parameter frozen, or on a branch this capture did not
        take, gets no update) is kept aside and comes back when a later program has it
        again, as eager's optimizer keeps a parameter's state while it has no gradient."""
        own = set(self._cap.params.values()) | set(self._cap.buffers.values())
        stash = self.__dict__.setdefault("_stashed_state", {})
        for name in old.variables:
            if name not in self._exe.variables and name not in old_own and \
                    name not in own and not name.startswith("optimizer."):
                stash[name] = from_engine(old.read_variable(name)).clone()
        for name in self._exe.variables:
            if name in own:
                continue
            if name in old.variables:
                value = from_engine(old.read_variable(name)).clone()
            elif name in stash:
                value = stash.pop(name)
            else:
                continue
            try:
                self._exe.write_variable(name, to_engine(value))
            except ValueError:
                pass  # its shape changed with the parameter's: it starts from zero

    def _cache_extra(self):
        return dict(returns_tuple=self._returns_tuple, hyperparams=self._hyper,
                    call_structure=dumps_or_none(self._call) if self._call else None,
                    opt_flags=list(self._opt_flags) if self._opt_flags else None,
                    input_specs=[[list(s), str(d).replace("torch.", "")]
                                 for s, d in self._input_specs])

    def _compile_from(self, cap, meta):
        """Compiles a captured (or cache-loaded) step graph and pushes the weights in."""
        global _compilations
        self._returns_tuple = bool(meta["returns_tuple"])
        self._synced = None  # a new program: its own list of variables
        self._last_call = None
        if self._call is None and meta.get("call_structure"):  # an executor from a file
            import json
            self._call = CallStructure.from_json(json.loads(meta["call_structure"]))
        self._hyper = {str(k): float(v) for k, v in meta["hyperparams"].items()}
        if self.training and self.optimizer is not None:
            self._compiled_membership = self._group_membership(self.optimizer)
        self._opt_flags = tuple(meta["opt_flags"]) if meta["opt_flags"] else None
        self._input_specs = [(tuple(int(d) for d in s), _cache.torch_dtype(d))
                             for s, d in meta["input_specs"]]
        distributed = self._processes > 1
        if distributed:
            _join_distributed_run(self.options)
        exe = _core.Executable.compile(cap.graph, training=self.training,
                                       num_threads=threads_to_run(self.options.num_threads),
                                       seed=_engine_seed(self.options),
                                       profile=self.options.profiling_dir is not None,
                                       replicas=self._replicas, distributed=distributed,
                                       pipeline_micro_batches=self._pipeline_micro_batches(),
                                       recompute_stages=self.training and
                                       self.options._Popart.recompute_stages,
                                       stages_across_processes=self._stages_on_processes(),
                                       accumulation_steps=self.options.Training
                                       .gradient_accumulation if self.training else 0,
                                       **self._ipu_model_args())
        if exe.pipeline_fallback_reason:
            _warn_once("pipeline-fallback", "PipelinedExecution: this program runs its stages "
                       "one after another (as ShardedExecution: the same numbers, no overlap) "
                       "because " + exe.pipeline_fallback_reason)
        _compilations += 1
        for name, value in self._hyper.items():
            exe.set_hyperparam(name, value)
        if self.options.ipu_model:
            self._check_ipu_count(exe)  # before it is kept: a refused program never runs
        self._cap, self._exe, self._attached = cap, exe, True
        self._written = frozenset(exe.written_variables)  # what a training call changes
        if self.options.ipu_model and self.options.profiling_dir is not None:
            os.makedirs(self.options.profiling_dir, exist_ok=True)
            self.writeIpuModelReport(os.path.join(self.options.profiling_dir,
                                                  "ipu_model_report.html"))
        if self.training:
            self.setOptimizer(self.optimizer)  # the optimizer's current hyperparameters
        self.copyWeightsToDevice()
        if distributed:
            # Every process compiled the same program, and starts from process 0's weights.
            exe.check_same_program_everywhere()
            exe.broadcast_variables()
            self.copyWeightsToHost()
        self._aliased = {}
        # A training executor's module views its variables from the end of its first call.
        self._alias_pending = self.training and not distributed

    def _stages_on_processes(self):
        """Options().Distributed.placeStagesOnProcesses(S): checked against the model."""
        wanted = self.options.Distributed.stages_on_processes
        if not wanted:
            return False
        from ._blocks import PipelinedExecution
        if not isinstance(self.options.execution_strategy, PipelinedExecution):
            raise ValueError("placeStagesOnProcesses needs setExecutionStrategy("
                             "PipelinedExecution(...))")
        if getattr(self, "_stages", 1) != wanted:
            raise ValueError(f"placeStagesOnProcesses({wanted}), but the model's blocks use "
                             f"{getattr(self, '_stages', 1)} device(s)")
        if self._replicas != 1:
            raise ValueError("placeStagesOnProcesses: one replica per process (its device); "
                             f"replicationFactor is {self._replicas}")
        if self._processes % wanted:
            raise ValueError(f"placeStagesOnProcesses({wanted}): {self._processes} processes "
                             f"are not a whole number of {wanted}-stage pipelines")
        return True

    def _pipeline_micro_batches(self):
        """Micro-batches per pipelined wave: the gradient accumulation (one optimizer step);
        0 for sharded execution."""
        from ._blocks import PipelinedExecution
        if not isinstance(self.options.execution_strategy, PipelinedExecution):
            return 0
        if getattr(self, "_stages", 1) <= 1:
            return 0
        return self.options.Training.gradient_accumulation if self.training else 1

    def exportOnnx(self, filename, *args, **kwargs):
        """Writes the compiled inference model as an ONNX file (opset 17) with the current
        weights: tilegraph's captured graph translated back (tilegraph.onnx imports it, ONNX
        Runtime runs it). Compiles for `args` first if needed. Inference models only; ops
        without an ONNX form are listed in the error. (A tilegraph extension, not PopTorch's.)"""
        if self.training:
            raise ValueError("exportOnnx exports inference models (inferenceModel)")
        with self._lock:
            if self._exe is None:
                self.compile(*args, **kwargs)
            self._sync_host_edits()
            data = self._cap.graph.to_onnx(self._exe)
        with open(filename, "wb") as f:
            f.write(data)

    def compileAndExport(self, filename, *args, export_model=True, **kwargs):
        """Compiles for `args` and saves everything tilegraph.load needs to `filename` (a
        pickle-free, checksummed file: see _archive.py). `export_model` is PopTorch's: its
        False leaves the model out so that only loadExecutable can use the file; tilegraph's
        file always serves both (the program holds the weights; loadExecutable replaces them
        with the module's)."""
        del export_model
        with self._lock:
            if self._exe is None:
                self.compile(*args, **kwargs)
            self._sync_host_edits()
            _cache.export(_export_path(filename), self)

    def _add_training(self, cap, marks):
        index = _loss_index(cap)
        loss = cap.outputs[index]
        shape, dtype = cap.output_meta[index]
        if not dtype.is_floating_point or (len(shape) != 0 and "none" not in marks):
            raise Error(_NO_LOSS + f" (the loss output is {dtype}{list(shape)})")
        kind, flags, groups, loss_scaling = describe(self.optimizer)
        self._applied_hypers = _hyperparameters_of(self.optimizer)
        # Tied parameters (e.g. BERT's decoder and word embeddings) have several names;
        # the export keeps one of them.
        names = {id(p): n for n, p in self.model.named_parameters(remove_duplicate=False)
                 if n in cap.params}
        tg_groups = []
        for params, h in groups:
            members = [cap.params[names[id(p)]] for p in params
                       if id(p) in names and names[id(p)] in cap.params and p.requires_grad]
            tg_groups.append(dict(params=members, **h))
        reduction = self.options.Training.reduction
        info = cap.graph.add_training_step(
            loss, kind, tg_groups, loss_scaling=loss_scaling != 1.0,
            accumulation_steps=self.options.Training.gradient_accumulation,
            accumulation_mean=reduction == ReductionType.Mean,
            replicas_total=self._replicas * self.options.Distributed.numDataParallel,
            shard_optimizer_state=self.options.TensorLocations.shard_optimizer_state,
            stochastic_rounding=self.options.Precision.stochastic_rounding,
            automatic_loss_scaling=self.options.Training.automatic_loss_scaling,
            **self.options.Training.loss_scaling_settings,
            **state_dtypes(self.optimizer), **flags)
        self._opt_flags = (kind, structure(flags))
        self._opt_state_dtypes = state_dtypes(self.optimizer)
        training = self.options.Training
        if self._opt_state_dtypes["grad_accum_dtype"] == "f16" and \
                training.mean_reduction_strategy == enums.MeanReductionStrategy.Post:
            # PopTorch switches to Running for half accumulators (a sum of many half
            # gradients could overflow) and reports it in the model's options. tilegraph's
            # accumulators sum and divide once whatever the strategy (docs/POPTORCH.md).
            object.__setattr__(training, "mean_reduction_strategy",
                               enums.MeanReductionStrategy.Running)
        cap.grad_of = dict(info["grad_of"])
        if cap.grad_of and all(cap.graph.is_zeros(g) for g in cap.grad_of.values()):
            # PopTorch runs such a model (its tests train a parameterless eval-mode dropout);
            # the usual cause is a metric returned after the loss, hence the warning.
            warnings.warn(
                f"the loss (output {index} of the model's result) does not depend on any "
                "trainable parameter: every gradient is zero, so only weight decay or momentum "
                "can change the weights. If that output is not the loss, return the loss last, "
                "under a \"loss\" key, or mark it with tilegraph.identity_loss", stacklevel=2)
        hyper = dict(info["hyperparams"])
        if "loss_scale" in hyper:
            hyper["loss_scale"] = self._initial_loss_scale(loss_scaling)
        return hyper

    def _apply_mixed_precision(self, cap):
        """Precision.setMixedPrecision: the policy's ops of the captured forward compute in
        half precision (before the backward is built from it)."""
        if self.options.Precision.mixed_precision is None:
            return
        dtype, ops, min_rows, min_depth = self.options.Precision.mixed_precision
        cap.graph.apply_mixed_precision({torch.bfloat16: "bf16", torch.float16: "f16"}[dtype],
                                        ops, min_rows, min_depth)

    def _initial_loss_scale(self, loss_scaling):
        """The loss_scale hyperparameter: the optimizer's; with automatic loss scaling and no
        loss_scaling of the optimizer's, 2**16 (the scale in use is this x 2**exponent)."""
        if self.options.Training.automatic_loss_scaling and loss_scaling == 1.0:
            return 2.0 ** 16
        return loss_scaling

    def lossScalingState(self):
        """tilegraph: {"scale", "skipped_steps", "growth_tracker"} of automatic loss scaling
        (Options().Training.setAutomaticLossScaling), read from the engine."""
        with self._lock:
            if self._exe is None or "optimizer.loss_scale_log2" not in self._exe.variables:
                raise Error("lossScalingState: the model is not a compiled training "
                                   "model with automatic loss scaling")
            def read(name):
                return float(np.asarray(self._exe.read_variable(name)))
            base = self._initial_loss_scale(describe(self.optimizer)[3])
            return dict(scale=base * 2.0 ** read("optimizer.loss_scale_log2"),
                        skipped_steps=int(read("optimizer.skipped_steps")),
                        growth_tracker=int(read("optimizer.loss_scale_good_steps")))

    def _add_anchors(self, cap):
        """Options().anchorTensor: each anchored tensor becomes an output of the program
        (after the model's own)."""
        from ._capture import torch_dtype_of
        cap.anchors = {}
        for short, (long_name, _, _) in self.options.anchored_tensors.items():
            name = _anchor_value(cap, long_name, self.training)
            cap.anchors[short] = len(cap.outputs)
            cap.graph.add_output(name)
            cap.outputs.append(name)
            dtype, shape = cap.graph.type_of(name)
            cap.output_meta.append((tuple(shape), torch_dtype_of(dtype)))

    def _set_anchor_modes(self, cap):
        """Each anchor's output mode: its own (anchorTensor's output_mode, period), or the
        executor's where it names none. cap.anchor_modes: output index -> (mode, period) for
        the anchors whose mode is not the executor's (_in_mode reduces them)."""
        cap.anchor_modes = {}
        mode = self._output_mode()
        executor = (mode, self.options.output_return_period if mode == OutputMode.EveryN else 1)
        for short, (long_name, wanted, period) in self.options.anchored_tensors.items():
            own = (wanted, period) if wanted not in (None, OutputMode.Default) else executor
            own = (own[0], own[1] if own[0] == OutputMode.EveryN else 1)
            logger.debug("Anchoring %s %s/%d", long_name, _ANCHOR_MODE_NAMES[own[0]], own[1])
            if own[0] == OutputMode.EveryN and self._steps > 1 and self._steps % own[1] != 0:
                raise ValueError(f"anchorTensor({short!r}): output mode EveryN: the steps of a "
                                 f"call ({self._steps}) must be a multiple of its period "
                                 f"({own[1]})")
            if own != executor and short in cap.anchors:
                cap.anchor_modes[cap.anchors[short]] = own

    def _engine_mode(self):
        """The output mode the engine runs with: the executor's, or All when an anchor asks
        for another mode (each output is then reduced to its own mode: _in_mode)."""
        if self._cap.anchor_modes and self._steps > 1:
            return OutputMode.All
        return self._output_mode()

    def _in_mode(self, index, out, mode, engine):
        """Output `index` of an engine run in `engine` (_engine_mode()) as its own mode asks:
        the executor's `mode`, or its anchor's (Final: the last step's; EveryN: every n-th
        step's; Sum: the steps added in order, in the output's dtype, as the engine's sum mode
        adds them). Returns (array or tensor, mode)."""
        own, period = self._cap.anchor_modes.get(index, (mode, self.options.output_return_period))
        if engine == own or self._steps == 1:  # (one step: every mode gives the same)
            return out, engine
        rows = from_engine(out)  # [steps, replicas?, *shape]
        if own == OutputMode.Final:
            return rows[-1], own
        if own == OutputMode.EveryN:
            return rows[period - 1::period], own
        total = rows[0].clone()
        exact = total.dtype in (torch.float32, torch.float64, torch.int64, torch.int32)
        for row in rows[1:]:
            total = total + row if exact else (total.double() + row.double()).to(total.dtype)
        return total, own

    def _anchored_value(self, short, value):
        """An anchored output as PopART names it: "finalLossScale" is the loss scale (the
        program outputs log2 of its factor over the initial loss scaling)."""
        if self.options.anchored_tensors[short][0] != "finalLossScale":
            return value
        base = self._initial_loss_scale(describe(self.optimizer)[3])
        return (base * torch.exp2(value.double())).to(torch.float32)

    def getAnchoredTensor(self, short_name):
        """The value of the tensor anchored as `short_name` (Options().anchorTensor) in the
        last call."""
        anchored = getattr(self, "_anchored", None)
        if anchored is None:
            raise Error("getAnchoredTensor: the model has not run yet")
        if short_name not in anchored:
            raise Error(f"getAnchoredTensor: no tensor anchored as {short_name!r}; anchored: "
                        f"{sorted(anchored)}")
        return anchored[short_name]

    def __repr__(self):
        """The wrapped module's repr, with its blocks (as PopTorch prints an executor)."""
        from ._blocks import module_repr
        return module_repr(self.model)

    # ---- calls ---------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        with self._lock:
            with _MODULE_LOCK:
                call = self._prepare(args, kwargs)
            started = time.time()
            outs = self._run(self._synthetic_inputs(call.tensors)
                             if self.options.synthetic_data else call.tensors)
            if self.options.profiling_dir is not None:
                self._write_profile()
            mode, engine = self._output_mode(), self._engine_mode()
            results = [self._to_torch(*self._in_mode(i, o, mode, engine), meta)
                       for i, (o, meta) in enumerate(zip(outs, self._cap.output_meta))]
            self._apply_input_mutations(call, results)
            inputs = {id(t) for t in call.tensors}
            for r in results:  # `.backward()` explains itself, as PopTorch's outputs do
                if isinstance(r, torch.Tensor) and id(r) not in inputs:
                    r.backward = _backward_on_output
            self._anchored = {short: self._anchored_value(short, results[i])
                              for short, i in self._cap.anchors.items()}
            self._record_perf(started)
            structure = self._cap.output_structure
            if structure is None:  # an export file without a recorded structure
                return tuple(results) if self._returns_tuple else results[0]
            return structure.rebuild(results)

    def _synthetic_inputs(self, tensors):
        """Options.enableSyntheticData: tensors of the arguments' shapes and dtypes, drawn
        once (floating point: standard normal from randomSeed's generator; integers and
        booleans: zeros) and reused by every call."""
        key = tuple((tuple(t.shape), t.dtype) for t in tensors)
        cached = self._synthetic
        if cached is None or cached[0] != key:
            gen = torch.Generator().manual_seed(self.options.random_seed or 0)
            data = [torch.randn(t.shape, generator=gen).to(t.dtype) if t.is_floating_point()
                    else torch.zeros(t.shape, dtype=t.dtype) for t in tensors]
            cached = self._synthetic = (key, data)
        return cached[1]

    def _apply_input_mutations(self, call, results):
        """In-place updates the forward made to its inputs, applied to the caller's tensors
        (as PopTorch does; not with synthetic data, where the inputs were never read)."""
        if not self._cap.input_mutations or self.options.synthetic_data:
            return  # the common case: no torch.no_grad() to enter (~3 us of a small call)
        with torch.no_grad():
            for index, output in self._cap.input_mutations:
                host = call.tensors[index]
                host.copy_(results[output].reshape(host.shape))

    def _prepare(self, args, kwargs):
        """Before a run: compile, or re-capture when a guard or a baked-in argument changed;
        check the arguments; push weights edited on the host. Returns the CallStructure."""
        call = self._structure_of(args, kwargs)
        if self._exe is None:
            if self.training:
                self._enter_training_mode()
            self._compile(call)
        elif self._call is not None and call.key != self._call.key:
            if isinstance(self.model, _cache.ExportedModule):
                raise ValueError("this executor was loaded by tilegraph.load and takes its "
                                 "arguments as they were exported: "
                                 + call.describe_change(self._call))
            _warn_once(("recompile-args", id(self)), "recompiling: " +
                       call.describe_change(self._call) + " (non-tensor arguments are "
                       "compiled into the program; pass a tensor for a value that varies)")
            self._compile(call)
        elif not self._guard.unchanged(self.model) and self._guard_changed():
            if isinstance(self.model, _cache.ExportedModule):
                raise Error(
                    "the module of an executor loaded by tilegraph.load changed ("
                    + _guards.describe_change(self._guard.fingerprint, _guards.fingerprint(
                        self.model, self._guard_modes()))
                    + "); it has no Python code to capture again. Pass the model to "
                    "tilegraph.load(path, model=...) to allow that")
            self._compile(call)  # re-capture; recompiles only if the graph changed
        elif self._decided_buffers_changed():
            self._compile(call)  # the forward's Python decision on a buffer goes another way
        elif _guards.global_hooks() != self._global_hooks:
            self._compile(call)  # a forward hook registered for every module, or removed
        if self.training and self.optimizer is not None and \
                _hyperparameters_of(self.optimizer) != self._applied_hypers:
            # Changed since compiling or setOptimizer (an LR scheduler's step, an edit of
            # param_groups): applied now, as eager's next optimizer.step() would use them.
            # Parameters added to or moved between groups (add_param_group) need another
            # program: compiled now (the state of the others carries over).
            if self._group_membership(self.optimizer) != self._compiled_membership and \
                    not isinstance(self.model, _cache.ExportedModule):
                self._compile(call)
            self.setOptimizer(self.optimizer)
        if not self._attached:
            self.attachToDevice()
        self._check_args(call.tensors)
        self._sync_host_edits(self._synced_tensors(checked=True))
        self._push_optimizer_state()
        if self.training and not self.model.training:
            _warn_once("eval-training", "a trainingModel was called while its module is in "
                       "eval mode (model.eval()); it runs in eval mode, as eager PyTorch "
                       "would. Call model.train() to train with training-mode layers.")
        return call

    def _decided_buffers_changed(self):
        """Whether a one-element buffer that the forward's Python code decided on when it
        was captured (`if self.initted:`, `.item()`; _capture_patches._BufferDecisions)
        holds another value now. The program never updates such a buffer (a capture where it
        does is refused), so the module's value is the current one."""
        for name, value in self._cap.buffer_decisions.items():
            try:
                now = self.model.get_buffer(name)
            except AttributeError:
                return True
            if now is None or now.numel() != 1:
                return True
            now = now.item()
            if now != value and not (now != now and value != value):  # (NaN: unchanged)
                return True
        return False

    def _run(self, args):
        """One engine call. On any failure (bad data found in step k, Ctrl-C between steps)
        the weights the engine holds, which include the steps it completed, are copied into
        the module, and the error says so."""
        steps, replicas = self._steps, self._replicas
        lead = (steps, replicas) if self._exe.replicated else (steps,)
        parts = steps * replicas
        feeds = [to_engine(a.reshape(*lead, *(a.shape if parts == 1 else (
            a.shape[0] // parts, *a.shape[1:])))) for a in args]
        mode = self._engine_mode()
        self._fed_at = time.time()
        self.runs += 1  # (a loaded optimizer state_dict shows as loaded until the next run)
        try:
            outs = self._exe.run(feeds, steps=steps, mode=ENGINE_OUTPUT_MODE[mode],
                                 every_n=self.options.output_return_period)
        except BaseException as e:
            if self.training:
                done = self._exe.steps_completed_in_last_run
                self.copyWeightsToHost()
                if hasattr(e, "add_note"):
                    e.add_note(f"tilegraph: {done} of the {steps} steps of this call were "
                               "applied; the module now holds the engine's weights after them")
            if isinstance(e, RecoverableError) and _INDEX_OUT_OF_RANGE.search(str(e)):
                error = _IndexOutOfRange(*e.args)  # an IndexError, as eager raises there
                error.__notes__ = list(getattr(e, "__notes__", []))
                raise error.with_traceback(e.__traceback__) from None
            raise
        self._returned_at = time.time()
        if self.training:  # the guard was checked by _prepare for this call
            tensors = self._synced_tensors(checked=True)
            if self._alias_pending:
                self._alias_module_weights(tensors)
                self._alias_optimizer_state()
            self._copy_weights_to_host(tensors, written_only=True)
        elif self._written:
            # An inference program that updates buffers (a counter, a train-mode batch norm's
            # statistics): the module shows them after the call, as eager's would.
            self._copy_weights_to_host(self._synced_tensors(), written_only=True)
        return outs

    def _check_args(self, tensors):
        if self._cap.input_mutations:
            _refuse_updates_through_aliases(tensors, self._cap.input_mutations)
        if len(tensors) != len(self._input_specs):
            raise _InputShapeChanged(f"expected {len(self._input_specs)} tensor inputs, got "
                                     f"{len(tensors)}")
        for i, (a, (shape, dtype)) in enumerate(zip(tensors, self._input_specs)):
            if a.dtype != dtype:
                raise _InputTypeChanged(
                    f"One or more input data types have changed since the first model run: "
                    f"input {i}: expected dtype {dtype}, got {a.dtype} (the program is "
                    "compiled for the first call's types; cast the input, or wrap the model "
                    "again for the new type)")
            if tuple(a.shape) != shape:
                raise _InputShapeChanged(f"input {i}: expected shape {list(shape)}, got "
                                         f"{list(a.shape)} ({self._combined_batch_factors()})")

    def _combined_batch_factors(self):
        """What the first dimension of an input holds, for an error message: the factors
        that apply to this executor, with their values."""
        factors = [f"deviceIterations ({self.options.device_iterations})"]
        if self.training:
            factors.append(f"gradientAccumulation "
                           f"({self.options.Training.gradient_accumulation})")
        factors.append(f"replicationFactor ({self._replicas})")
        return "the combined batch is micro-batch x " + " x ".join(factors)

    def _to_torch(self, out, mode, meta):
        """The engine's [rows?, replicas?, *shape] as PopTorch returns it: per-step and
        per-replica batches concatenated into one combined batch; scalars as a vector with
        one value per step and replica (a replica dimension only when there are replicas),
        and as a scalar, as eager PyTorch returns it, when OutputMode.All has one step and
        replica."""
        t = out if isinstance(out, torch.Tensor) else from_engine(out)
        shape, _ = meta
        lead = 1 if mode in (OutputMode.All, OutputMode.EveryN) else 0
        if self._exe.replicated:
            if self._replicas == 1:  # one replica per process: no replica dimension
                t = t.reshape(tuple(t.shape[:lead]) + tuple(t.shape[lead + 1:]))
            else:
                lead += 1
        if lead > 0 and (len(shape) >= 1 or lead > 1):
            rows = math.prod(t.shape[:lead + 1])  # (not -1: a tensor may have no elements)
            t = t.reshape(rows, *t.shape[lead + 1:]) if len(shape) >= 1 else t.reshape(-1)
        if len(shape) == 0 and t.numel() == 1 and mode == OutputMode.All:
            t = t.reshape(())
        return t

    # ---- weights and device state --------------------------------------------------------
    def _named_state(self):
        state = dict(self.model.named_parameters(remove_duplicate=False))
        state.update(dict(self.model.named_buffers(remove_duplicate=False)))
        return state

    def _variable(self, fqn):
        """The engine variable a parameter's or buffer's module name maps to."""
        return self._cap.params.get(fqn) or self._cap.buffers[fqn]

    def _guard_modes(self):
        """Whether train/eval modes and requires_grad are part of the guard: for a training
        executor of a module with Python code. The program of an exported module
        (tilegraph.load) has no code to capture again and cannot follow them: they are not
        (eval() on a module an inference executor shares with it changes nothing there)."""
        return self.training and not isinstance(self.model, _cache.ExportedModule)

    def _set_guard(self, fingerprint=None):
        self._guard = _guards.Guard(self.model, self._guard_modes(), fingerprint)
        self._global_hooks = _guards.global_hooks()
        self._synced = None

    def _guard_changed(self):
        """Whether the module really changed since capture, after the compiled guard said it
        may have (the fingerprint decides); if not, the compiled guard is taken afresh."""
        now = _guards.fingerprint(self.model, with_modes=self._guard_modes())
        if now != self._guard.fingerprint:
            return True
        self._set_guard(now)  # e.g. a parameter replaced by one of the same shape
        return False

    def _synced_tensors(self, checked=False):
        """(name, tensor) of every parameter and buffer the engine holds, in program order.
        Cached while the guard holds (it records each tensor's identity); `checked`: the
        caller has just checked the guard."""
        if self._synced is None or not (checked or self._guard.unchanged(self.model)):
            state = self._named_state()
            names = list(self._cap.params) + list(self._cap.buffers)
            for fqn in names:
                if fqn not in state:  # e.g. `del self._buffers[...]` inside forward
                    kind = "Parameter" if fqn in self._cap.params else "Buffer"
                    raise Error(f"{kind} {fqn} is removed from the model when calling the "
                                "forward method. The compiled program reads it on every "
                                "call, so the module must keep it registered")
            self._synced = [(fqn, state[fqn]) for fqn in names]
        return self._synced

    def _sync_host_edits(self, tensors=None):
        """Pushes the module's weights in when they changed on the host since the last sync
        (PopTorch does this for an inference model after its training model ran)."""
        with _MODULE_LOCK:
            tensors = self._synced_tensors() if tensors is None else tensors
            last = self._host_version
            if last is not None and last.unchanged(tensors):
                return
            if last is not None and _guards.host_versions(tensors) == last.versions:
                self._host_version = _guards.Versions(tensors)  # the same tensors, new list
                return
            self.copyWeightsToDevice()

    def _alias_module_weights(self, tensors):
        """Training executors (one process), after their first call: each parameter and
        buffer that is the whole of its own contiguous storage, of the variable's exact dtype
        and shape, becomes a view of the engine variable's memory (`Executable.variable_view`:
        runs write it in place), so the module holds the weights a call left without a copy
        (BERT-Base: 440 MB, ~30 ms of a ~260 ms bf16 training call). The tensors stay the
        same objects (their `.data` is replaced), so references the user holds (an optimizer's
        param groups) see the new values too; every call moves their version counters, as a
        copy would (_copy_weights_to_host). `TILEGRAPH_ALIAS_WEIGHTS=0` keeps the copies."""
        self._alias_pending = False
        self._aliased = {}
        if os.environ.get("TILEGRAPH_ALIAS_WEIGHTS", "1") == "0":
            return
        # A tensor object behind two variables (two modules' tensors the user made one after
        # capture) can view only one: it is copied. (A tied weight registered under two names
        # is one variable: capture maps both names to it.)
        variables_of = collections.defaultdict(set)
        for fqn, t in tensors:
            variables_of[id(t)].add(self._variable(fqn))
        with self._lock, _MODULE_LOCK:
            for fqn, t in tensors:
                name = self._variable(fqn)
                if name in self._aliased or len(variables_of[id(t)]) > 1 or \
                        not _owns_contiguous_storage(t):
                    continue
                view = from_engine(self._exe.variable_view(name))
                if view.dtype != t.dtype or tuple(view.shape) != tuple(t.shape):
                    continue
                with torch.no_grad():
                    t.data = view
                self._aliased[name] = t.data_ptr()

    # torch.optim's per-parameter state keys that tilegraph's state variables carry
    # ("<parameter variable>.<key>"; SGD's step count is tilegraph's own, not torch's).
    _TORCH_STATE_KEYS = {"sgd": ("momentum_buffer",),
                         "adam": ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                         "adamw": ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                         "rmsprop": ("step", "square_avg", "momentum_buffer", "grad_avg")}

    def _torch_optimizer(self):
        """The executor's optimizer where it is a torch.optim one (tilegraph.optim's keep
        their state in state_dict()["ipu_state"] instead), and the program trains."""
        o = self.optimizer
        if not self.training or o is None or isinstance(o, optim.Optimizer) or \
                self._exe is None or self._opt_flags is None:
            return None
        return o

    def _optimizer_state_variables(self, optimizer):
        """(parameter tensor, {torch state key: engine variable}) for the program's trained
        parameters, the optimizer's own tensors."""
        keys = self._TORCH_STATE_KEYS.get(self._opt_flags[0], ())
        variables = set(self._exe.variables)
        params = dict(self.model.named_parameters(remove_duplicate=False))
        out, seen = [], set()
        for fqn, var in self._cap.params.items():
            p = params.get(fqn)
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            names = {k: f"{var}.{k}" for k in keys if f"{var}.{k}" in variables}
            if names:
                out.append((p, var, names))
        return out

    def _alias_optimizer_state(self):
        """After a training executor's first call: a torch.optim optimizer's `state[p]`
        holds views of the engine's state variables (momentum buffers, Adam's moments and
        step counts: what eager's optimizer would hold, updated by every call in place), so
        that optimizer.state_dict() checkpoints resume exactly. State the program lacks
        (kept aside for a parameter without a gradient) is shown as a copy."""
        o = self._torch_optimizer()
        if o is None:
            return
        if os.environ.get("TILEGRAPH_ALIAS_WEIGHTS", "1") == "0":
            self._aliased_state = o.state  # pushed (or empty): not pushed again
            return
        stash = self.__dict__.get("_stashed_state", {})
        for p, var, names in self._optimizer_state_variables(o):
            entry = {k: from_engine(self._exe.variable_view(n)) for k, n in names.items()}
            if any(k != "step" and t.shape != p.shape for k, t in entry.items()):
                continue  # sharded state (each replica holds a part): not eager's layout
            for k in self._TORCH_STATE_KEYS.get(self._opt_flags[0], ()):
                if k not in entry and f"{var}.{k}" in stash:
                    entry[k] = stash[f"{var}.{k}"].clone()
            o.state[p] = entry
        self._aliased_state = o.state

    def _push_optimizer_state(self):
        """Before a call: state the user put in a torch.optim optimizer (steps taken
        eagerly before wrapping, optimizer.load_state_dict of a checkpoint, before or
        between calls) goes into the engine, as eager's next step would start from it."""
        o = self._torch_optimizer()
        if o is None or getattr(self, "_aliased_state", None) is o.state or not o.state:
            return
        for p, var, names in self._optimizer_state_variables(o):
            given = o.state.get(p) if p in o.state else None
            if not given:
                continue
            for k, name in names.items():
                if k not in given:
                    continue
                held = from_engine(self._exe.variable_view(name))
                value = torch.as_tensor(given[k]).detach().to(held.dtype)
                if value.numel() != held.numel():
                    raise ValueError(f"optimizer state {k!r} of a parameter of shape "
                                     f"{list(p.shape)} has shape {list(value.shape)}")
                self._exe.write_variable(name, to_engine(value.reshape(held.shape)))
            step = f"{var}.step"
            if "momentum_buffer" in given and "step" not in given and \
                    step in self._exe.variables:
                # torch's SGD keeps no count: a given buffer means "not the first step".
                held = from_engine(self._exe.read_variable(step))
                self._exe.write_variable(step, to_engine(torch.clamp(held, min=1.0)))
        self._alias_optimizer_state()

    def _unalias_optimizer_state(self):
        """The optimizer's state tensors get memory of their own (their values now)."""
        o = self._torch_optimizer()
        if o is None or getattr(self, "_aliased_state", None) is not o.state:
            return
        for entry in o.state.values():
            for k, t in list(entry.items()):
                if isinstance(t, torch.Tensor):
                    entry[k] = t.clone()
        self._aliased_state = None

    def _unalias_module_weights(self):
        """The module's aliased tensors get memory of their own again (the values they show
        now), so that the executable can be freed."""
        if not self._aliased:
            return
        with self._lock, _MODULE_LOCK, torch.no_grad():
            for fqn, t in self._synced_tensors():
                name = self._variable(fqn)
                if self._aliased.get(name) == t.data_ptr():
                    t.data = t.data.clone()
            self._aliased = {}

    def _check_not_destroyed(self, what):
        """PopTorch's error for weight copies of a destroyed executor (before a call compiles
        it again); before the first compilation they do nothing."""
        if self._exe is None and self._destroyed:
            raise Error(f"{what}: Model has not been compiled or has been destroyed.")

    def copyWeightsToHost(self):
        with self._lock, _MODULE_LOCK:
            self._check_not_destroyed("copyWeightsToHost")
            if self._exe is None:
                return
            self._copy_weights_to_host(self._synced_tensors())

    def _copy_weights_to_host(self, tensors, written_only=False):
        """The engine's weights into the module's tensors. `written_only`: only the variables
        the program writes (after a training call; the others still hold what was pushed)."""
        with self._lock, _MODULE_LOCK:
            written = self._written if written_only else None
            pairs = []
            for fqn, t in tensors:
                name = self._variable(fqn)
                if written is not None and name not in written:
                    continue
                if name in self._aliased:
                    if self._aliased[name] == t.data_ptr():
                        # A view of the variable: it already shows the engine's values.
                        torch.autograd.graph.increment_version(t)
                        continue
                    del self._aliased[name]  # given other memory since: copied again
                pairs.append((name, t))
            # A tensor behind two names (a tied weight, one variable) or two variables (tensors
            # made one after capture) is copied into once, from one variable: the last the
            # program writes, else the last. read_variables_into copies on several threads;
            # two copies into one tensor would race (when a tied weight was two variables,
            # the module now and then showed the untrained one).
            chosen = {}
            for i, (name, t) in enumerate(pairs):
                if id(t) not in chosen or name in self._written or \
                        pairs[chosen[id(t)]][0] not in self._written:
                    chosen[id(t)] = i
            pairs = [pair for i, pair in enumerate(pairs) if chosen[id(pair[1])] == i]
            with torch.no_grad():
                for name, t in read_variables_into(self._exe, pairs):
                    value = from_engine(np.asarray(self._exe.read_variable(name)))
                    t.copy_(value.reshape(t.shape))
            self._host_version = _guards.Versions(tensors)
            self.weight_copies["to_host"] += 1

    def copyWeightsToDevice(self):
        with self._lock, _MODULE_LOCK:
            self._check_not_destroyed("copyWeightsToDevice")
            if self._exe is None:
                return
            tensors = self._synced_tensors()
            for fqn, t in tensors:
                value = to_engine(t)
                self._exe.write_variable(self._variable(fqn),
                                         value)
            self._host_version = _guards.Versions(tensors)
            self.weight_copies["to_device"] += 1

    def copyNamedBuffersToDevice(self):
        """Writes the buffers named by Options().updatableNamedBuffers (all buffers if none
        are named) into the engine, without copying the whole model."""
        with self._lock, _MODULE_LOCK:
            if self._exe is None:
                raise Error("copyNamedBuffersToDevice: the model has not been compiled yet")
            names = self.options.updatable_buffers or list(self._cap.buffers)
            unknown = [n for n in names if n not in self._cap.buffers]
            if unknown:
                raise Error(f"copyNamedBuffersToDevice: {unknown} are not buffers of the "
                            f"compiled program; its buffers: {sorted(self._cap.buffers)}")
            state = dict(self.model.named_buffers(remove_duplicate=False))
            last = self._host_version
            before = dict((n, v) for n, *v in (last.versions if last is not None else ()))
            for name in names:
                self._exe.write_variable(self._cap.buffers[name], to_engine(state[name]))
            tensors = self._synced_tensors()
            after = _guards.host_versions(tensors)
            # Only what was written changed on the host: the engine is in sync again.
            if all(tuple(v) == tuple(before.get(n, ())) for n, *v in after if n not in names):
                self._host_version = _guards.Versions(tensors)

    def _group_membership(self, optimizer):
        """The module names of each param group's parameters (what a program compiled the
        groups from; the cache key holds the same)."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return [[names.get(id(p), "?") for p in g["params"]]
                for g in optim.effective_param_groups(optimizer)]

    def setOptimizer(self, optimizer):
        """New hyperparameters for the compiled step (no recompilation)."""
        if not self.training:
            raise Error("setOptimizer is only valid on a training model")
        with self._lock:
            kind, flags, groups, loss_scaling = describe(optimizer)
            if self._exe is not None and not optim.runs_on(tuple(self._opt_flags), kind,
                                                           flags, groups):
                raise ValueError(f"setOptimizer: expected a {self._opt_flags[0]} optimizer with "
                                 f"{self._opt_flags[1]}, got {kind} with {structure(flags)}; "
                                 "these change the compiled program (wrap the model again; "
                                 "max_grad_norm can change, but not from None to a value; "
                                 "pass momentum=0.0 explicitly to change it later)")
            compiled_dtypes = getattr(self, "_opt_state_dtypes", None)
            if self._exe is not None and compiled_dtypes is not None and \
                    state_dtypes(optimizer) != compiled_dtypes:
                raise _OptimizerCompiled(
                    f"setOptimizer: the optimizer state dtypes (accum_type, ...) are "
                    f"{state_dtypes(optimizer)} but the model is already compiled with "
                    f"{compiled_dtypes}; they shape the program: wrap the model again (or "
                    "destroy() it) to compile with the new ones")
            self.optimizer = optimizer
            if self._exe is None:
                return
            if self._group_membership(optimizer) != self._compiled_membership and \
                    not isinstance(self.model, _cache.ExportedModule):
                self._applied_hypers = None  # another program: the next call compiles it
                return
            self._applied_hypers = _hyperparameters_of(optimizer)
            for i, (_, h) in enumerate(groups):
                for field, value in h.items():
                    name = f"group{i}.{field}"
                    if name in self._exe.hyperparams:
                        self._exe.set_hyperparam(name, value)
            if "loss_scale" in self._exe.hyperparams:
                self._exe.set_hyperparam("loss_scale", self._initial_loss_scale(loss_scaling))
            if "max_grad_norm" in self._exe.hyperparams:
                self._exe.set_hyperparam("max_grad_norm", flags["max_grad_norm"])
            if isinstance(optimizer, optim.Optimizer):
                optimizer._attach(self)  # its state_dict reads this engine from now on

    def detachFromDevice(self):
        with self._lock:
            if self._exe is None:
                raise Error("the model has not been compiled yet")
            if not self._attached:
                raise Error("Device is not attached: detachFromDevice was called on a "
                            "detached model (attachToDevice, or a call, attaches it)")
            self.copyWeightsToHost()
            self._attached = False

    def attachToDevice(self):
        with self._lock:
            if self._exe is None:
                raise Error("the model has not been compiled yet")
            self.copyWeightsToDevice()
            self._attached = True

    def isAttachedToDevice(self):
        return self._attached

    def isCompiled(self):
        return self._exe is not None

    def destroy(self):
        with self._lock:
            if self._exe is not None and self.training:
                self.copyWeightsToHost()
                self._unalias_module_weights()
                self._unalias_optimizer_state()
                if isinstance(self.optimizer, optim.Optimizer):
                    self.optimizer._keep_state(self)  # its state_dict outlives the engine
            self._exe = None
            self._attached = False
            self._destroyed = True
            if self.training and isinstance(self.model, torch.nn.Module):
                _unwrap_for_training(self.model, self)

    # ---- introspection -------------------------------------------------------------------
    @property
    def executable(self):
        return self._exe

    def profileReport(self, top_instructions=15):
        """Time, share, GB/s and GFLOP/s per op kind, then the slowest instructions (needs
        Options().enableProfiling(dir); counts accumulate over calls)."""
        return self._exe.profile_report(top_instructions) if self._exe is not None else ""

    def profile(self, per_instruction=False):
        """The profile as a list of dicts (op, calls, seconds, bytes, flops[, source])."""
        return self._exe.profile(per_instruction) if self._exe is not None else []

    def resetProfile(self):
        """Zeroes the profile's counts, e.g. after the first call, whose times include
        one-time work (oneDNN generates its GEMM kernels on first use, ~30 ms each)."""
        if self._exe is not None:
            self._exe.reset_profile()

    # ---- PopTorch's executor API beyond calls --------------------------------------------
    def __getattr__(self, name):
        """What the executor lacks comes from the wrapped module, as in PopTorch:
        `poptorch_model.fc.weight`, `.named_parameters()`, `.state_dict()`. Training calls
        copy the weights to the module, so these are the engine's current values."""
        model = self.__dict__.get("model")
        if model is None or name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(model, name)

    @property
    def _trace(self):
        """PopTorch's name for the module its executor runs (its tests inspect the
        parameters' dtypes through it): here the wrapped module itself."""
        return self.model

    def __getstate__(self):
        """Pickling (torch.save of an executor) keeps the module, options and optimizer; the
        unpickled executor compiles again on its first call (a compiled program is not
        pickled: compileAndExport writes one to a file, without pickle)."""
        if self.training and self._exe is not None:
            self.copyWeightsToHost()
        return dict(model=self.model, options=self.options, optimizer=self.optimizer,
                    training=self.training, modes=self._modes)

    def __setstate__(self, state):
        self.__init__(state["model"], state["options"], state["optimizer"], state["training"])
        self._modes = state["modes"]

    def getTensorNames(self):
        """The names of the compiled program's tensors: inputs, variables (parameters by
        their module names, optimizer state) and outputs, and PopART's names that
        Options().anchorTensor takes for a training program: "Gradient___model.<param>" (the
        parameter's gradient), "UpdatedVar___model.<param>" (its value after the step), both
        also without the "model." prefix, and
        "scaledLearningRate___group<i>" (the learning rate of parameter group i). Before the
        first compilation it raises, as PopTorch's does, an error that is also an
        AssertionError."""
        if self._exe is None:
            raise _NotCompiledError("getTensorNames: the model has not been compiled yet")
        g = self._cap.graph
        names = list(g.inputs) + list(self._exe.variables) + list(g.outputs)
        if self.training:
            trained = [fqn for fqn, var in self._cap.params.items() if var in self._cap.grad_of]
            # PopTorch's names carry its wrapper's "model." prefix in some versions and not
            # in others (its tests check both forms); both anchor the same tensor.
            for prefix in ("model.", ""):
                names += [f"Gradient___{prefix}{fqn}" for fqn in trained]
                names += [f"UpdatedVar___{prefix}{fqn}" for fqn in trained]
            names += [f"scaledLearningRate___{h[:-len('.lr')]}" for h in self._exe.hyperparams
                      if h.startswith("group") and h.endswith(".lr")]
        return names

    def cycleCount(self):
        """PopTorch: the IPU cycles of the last call. On the IPU Model
        (Options().useIpuModel(True)) this is the compiler's estimate for the steps the last
        call ran (an estimate, never a measurement); the CPU device counts time, not cycles,
        and raises, naming what to use instead."""
        if not self.options.log_cycle_count:
            raise Error("cycleCount: cycle counting is off; enable it with "
                        "Options().logCycleCount(True)")
        if self.options.ipu_model:
            steps = self._exe.steps_completed_in_last_run if self._exe is not None else 0
            if steps == 0:
                raise Error("cycleCount: the model has not run yet (or its last call failed)")
            return int(round(self._exe.ipu_step_cycles * steps))
        raise Error("cycleCount: the CPU device has no IPU cycle counter; use "
                    "getPerfCounters() / getLatency() (host times per call), "
                    "Options().enableProfiling(dir) and profile() (time per op), or the IPU "
                    "Model's estimate (Options().useIpuModel(True))")

    def ipuModelReport(self):
        """The IPU Model's report as a dict (docs/IPU_MODEL.md): tile memory per tile and
        category, liveness over the program, estimated cycles per compute set, overflows
        and the largest contributors. Every cycle figure is an estimate."""
        import json
        if not self.options.ipu_model:
            raise Error("ipuModelReport: the model was not compiled for the IPU Model; set "
                        "Options().useIpuModel(True)")
        if self._exe is None:
            raise Error("ipuModelReport: the model has not been compiled yet: call it or "
                        "compile() it first")
        report = json.loads(self._exe.ipu_report_json(self._samples_per_step()))
        report["ipus_attached"] = self._ipus_attached
        return report

    def writeIpuModelReport(self, path):
        """Writes the IPU Model's report as one self-contained HTML page (and the JSON
        beside it, same name with .json); returns the HTML path."""
        import json
        from . import ipu_report
        report = self.ipuModelReport()
        path = os.fspath(path)
        with open(os.path.splitext(path)[0] + ".json", "w") as f:
            json.dump(report, f)
        return ipu_report.write_html(report, path)

    def _ipu_model_args(self):
        o = self.options
        if not o.ipu_model:
            if o.available_memory_proportion:
                from ._options import _ipu_only
                _ipu_only("setAvailableMemoryProportion", "bounds the tile memory matmuls and "
                          "convolutions may use for temporaries (tilegraph's IPU Model "
                          "honours it: Options().useIpuModel(True))")
            return {}
        proportions = o.available_memory_proportion
        listed = [proportions.get(i, 0.6) for i in range(max(proportions, default=-1) + 1)]
        return dict(device="ipu_model", ipu_target=o.ipu_model_target,
                    available_memory_proportion=listed,
                    ipu_allow_out_of_memory=o.ipu_allow_out_of_memory)

    def _samples_per_step(self):
        """Samples one step of one replica consumes: the micro-batch (the first input's
        combined batch over the call's steps and the replicas)."""
        if self._input_specs and self._input_specs[0][0]:
            combined = self._input_specs[0][0][0]
            return max(1.0, combined / (self._steps * self._replicas))
        return 1.0

    def _check_ipu_count(self, exe):
        """IPU devices come in powers of two: a model needing another count attaches the
        next power of two with autoRoundNumIPUs, and is refused without it (as PopTorch)."""
        ipus = exe.ipu_num_ipus * self._replicas * max(1, self._processes)
        attached = 1 << max(0, (ipus - 1).bit_length())
        if attached != ipus and not self.options.ipu_settings.get("autoRoundNumIPUs"):
            raise Error(f"useIpuModel: the model needs {ipus} IPUs (stages x replicas); IPU "
                        f"devices come in powers of two: Options().autoRoundNumIPUs(True) "
                        f"attaches {attached}")
        self._ipus_attached = attached

    def getPerfCounters(self):
        """PopTorch's host-side performance counters: for each of 'input',
        'input_complete', 'output', 'output_complete', a list per replica of one timestamp
        (seconds since the epoch) per step. tilegraph runs all the steps of a call in one
        engine run, so every step of a call carries its call's times: inputs handed over,
        inputs ready for the engine, engine finished, results returned."""
        counters = {k: [[] for _ in range(self._replicas)]
                    for k in ("input", "input_complete", "output", "output_complete")}
        for steps, times in self._perf:
            for key, t in zip(counters, times):
                for replica in counters[key]:
                    replica.extend([t] * steps)
        return counters

    def _record_perf(self, started):
        self._perf.append((self._steps, (started, self._fed_at, self._returned_at,
                                         time.time())))
        del self._perf[:-1000]  # the last 1,000 calls

    def _latency(self, start, end):
        spans = [t[end] - t[start] for _, t in self._perf]
        if not spans:
            return (0.0, 0.0, 0.0)
        return (min(spans), max(spans), sum(spans) / len(spans))

    def getLatency(self):
        """(min, max, mean) seconds from inputs handed over to results returned, per call."""
        return self._latency(0, 3)

    def getHostIpuLatency(self):
        """(min, max, mean) seconds to hand a call's inputs to the engine."""
        return self._latency(0, 1)

    def getComputeLatency(self):
        """(min, max, mean) seconds the engine ran per call."""
        return self._latency(1, 2)

    def getIpuHostLatency(self):
        """(min, max, mean) seconds to return a call's results."""
        return self._latency(2, 3)

    @property
    def rng_state(self):
        """[seed, step]: the engine's random stream (dropout, ...) is a function of both, so
        setting a saved state back replays the same random numbers."""
        if self._exe is None:
            raise Error("rng_state: the model has not been compiled yet")
        return [int(self._exe.seed), int(self._exe.step)]

    @rng_state.setter
    def rng_state(self, state):
        if self._exe is None:
            raise Error("rng_state: the model has not been compiled yet")
        if not isinstance(state, (list, tuple)) or len(state) != 2 or \
                not all(isinstance(v, int) and v >= 0 for v in state):
            raise ValueError(f"rng_state: expected [seed, step] as read from rng_state, got "
                             f"{state!r}")
        with self._lock:
            self._exe.set_seed(state[0])
            self._exe.step = state[1]

    def save(self, filename, export_model=True, save_rng_state=True):
        """Writes the compiled program, weights and optimizer state to `filename` (as
        compileAndExport does after compiling); tilegraph.load or loadExecutable read it."""
        with self._lock:
            if self._exe is None:
                raise Error("save: the model has not been compiled yet (call it, or compile())")
            self._sync_host_edits()
            _cache.export(_export_path(filename), self)

    @property
    def _user_model(self):
        """PopTorch's name for the wrapped module (its tests read it)."""
        return self.model

    def copyWeightsToHostIfNeeded(self):
        """False: the module's tensors view the engine's weights (or a training call copies
        them as it returns), so the module is never behind the engine (PopTorch copies
        lazily, on access)."""
        return False

    def loadExecutable(self, filename):
        """Uses the program compileAndExport wrote to `filename` instead of compiling; the
        module's current weights are pushed in (PopTorch's loadExecutable)."""
        with self._lock:
            meta = _cache.read_export_meta(filename)
            if bool(meta.get("training")) != self.training:
                raise Error(f"loadExecutable: {filename} holds "
                            f"{'a training' if meta.get('training') else 'an inference'} "
                            f"program, this is {'a training' if self.training else 'an inference'}"
                            " model")
            theirs, ours = meta.get("options") or {}, self.options.to_dict()
            if theirs != ours:
                diff = ", ".join(f"{k}: {theirs[k]!r} in the file, {ours[k]!r} here"
                                 for k in ours if theirs.get(k) != ours[k])
                raise Error(f"loadExecutable: {filename} was compiled with other options "
                            f"({diff})")
            loaded = _cache.load_exported(filename, model=self.model, keep_model_weights=True)
            for name in ("_exe", "_cap", "_key", "_call", "_hyper", "_opt_flags", "_input_specs",
                         "_returns_tuple", "_guard", "_global_hooks", "_stages", "_written",
                         "_alias_pending", "_aliased"):
                if name in loaded.__dict__:
                    self.__dict__[name] = loaded.__dict__[name]
            self._synced, self._last_call = None, None
            self._attached = True
            self.copyWeightsToDevice()

    def _write_profile(self):
        import json
        import os
        os.makedirs(self.options.profiling_dir, exist_ok=True)
        data = {"model": type(self.model).__name__, "training": self.training,
                "steps": self._exe.step, "by_op": self._exe.profile(False),
                "instructions": self._exe.profile(True)}
        path = os.path.join(self.options.profiling_dir, "profile.json")
        with open(path, "w") as f:
            json.dump(data, f, indent=1)


_NO_LOSS = ("Couldn't find a loss in graph: a training model's forward must return the loss, "
            "or (outputs..., loss) with the "
            "loss last, as a floating-point scalar; wrap a custom or combined loss in "
            "tilegraph.identity_loss(x, reduction='sum'|'mean'|'none')")


class _Placements:
    """Maps the model-parallel block of each captured operation to its device (the block's
    ipu_id, or its Stage's .ipu(n)), in forward order, and checks the configuration."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.device_of_block = {}
        self.order = []  # devices in forward order
        self.last_block = None
        self.ipus = set()  # the blocks' ipu_ids (AutoIncrement: several stages per IPU)

    def __call__(self, block):
        from ._blocks import AutoStage
        if self.strategy is not None and self.strategy.auto == AutoStage.AutoIncrement:
            # Every new block (in forward order) is the next stage, on a device of its own
            # (its ipu_id may repeat: a stage per block, not per IPU). An operation outside
            # every block once blocks began has no stage (PopTorch's error).
            if block is None and self.last_block is not None:
                raise _PipelineError("No active Block: with AutoStage.AutoIncrement every "
                                     "operation after the first block must be inside a block "
                                     "(put it in the last block, or use AutoStage.SameAsIpu)")
            if not self.order or block != self.last_block:
                self.order.append(len(self.order))
                self.last_block = block
                self.ipus.add(block[1] if block is not None else 0)
            return self.order[-1]
        if block is None:
            return 0  # outside any block: device 0
        user_id, ipu_id = block
        device = ipu_id if self.strategy is None else self.strategy.device_of(user_id, ipu_id)
        device = 0 if device is None else int(device)
        seen = self.device_of_block.setdefault(user_id, device)
        if seen != device:
            raise ValueError(f"block {user_id!r} is used on two devices ({seen} and {device}); "
                             "a block (stage id) belongs to one device")
        if not self.order or self.order[-1] != device:
            self.order.append(device)
        return device

    def check(self, executor):
        """The number of devices; errors for configurations pipelining cannot run."""
        from ._blocks import PipelinedExecution
        stages = 1 + max(self.order, default=0)
        # No strategy set: PopTorch's default is pipelined execution, so its rules apply
        # (tilegraph then runs the stages one after another, as ShardedExecution).
        if (self.strategy is None or isinstance(self.strategy, PipelinedExecution)) and \
                stages > 1:
            for a, b in zip(self.order, self.order[1:]):
                if b < a:
                    raise ValueError(f"pipeline stages out of order: the forward runs device "
                                     f"{a} before device {b}; stages must follow the forward "
                                     "(use ShardedExecution for other orders)")
            used = set(self.order) | {0}  # operations outside any block run on device 0
            missing = sorted(set(range(stages)) - used)
            if missing:
                raise ValueError(f"pipelined execution over devices 0..{stages - 1}: device(s) "
                                 f"{missing} hold no block, so that stage does not exist; "
                                 f"number the blocks' ipu_id 0..{len(used) - 1} "
                                 "without gaps")
            accumulation = executor.options.Training.gradient_accumulation
            if executor.training and accumulation < 2 * stages - 1:
                raise _PipelineError(
                    "poptorch.Options().Training.gradientAccumulation must be greater than or "
                    f"equal to the number of pipeline stages ({2 * stages - 1}) when using "
                    f"poptorch.PipelinedExecution. Please note that a model with {stages} "
                    f"pipeline stages in PopTorch will have an additional {stages - 1} stages "
                    f"when training. (pipelined training over {stages} stages needs "
                    f"gradientAccumulation >= 2 x {stages} - 1 = {2 * stages - 1}, got "
                    f"{accumulation}; or use ShardedExecution)")
            # Inference fills the pipeline one batch per IPU: several AutoIncrement stages on
            # one IPU count once (Graphcore's BERT fine-tuning tutorial validates 26 blocks
            # on 2 IPUs with deviceIterations 2).
            iterations = executor.options.device_iterations
            ipus = len(self.ipus) if self.ipus else stages
            if not executor.training and iterations < ipus:
                raise _PipelineError(
                    "poptorch.Options().deviceIterations must be greater than or equal to the "
                    f"number of pipeline stages ({ipus}) when using "
                    f"poptorch.PipelinedExecution (it is {iterations}; or use "
                    "ShardedExecution)")
        return stages


def _module_name(cap, fqn):
    """A parameter or buffer name as the program knows it: PopTorch's names carry the prefix
    "model." (its wrapper's attribute), which the module's own names do not."""
    if fqn not in cap.params and fqn not in cap.buffers and fqn.startswith("model."):
        return fqn[len("model."):]
    return fqn


def _anchor_value(cap, long_name, training):
    """The graph value Options().anchorTensor's `long_name` names: "Gradient___<param>"
    (PopART's name for a parameter's gradient), a parameter's or buffer's module name, or a
    value of the program. PopART's "UpdatedVar___<param>" is the parameter's module name
    (its value after the step); "scaledLearningRate___group<i>" the group's learning rate.
    Parameter names may carry PopTorch's "model." prefix."""
    if long_name.startswith("UpdatedVar___"):
        fqn = _module_name(cap, long_name[len("UpdatedVar___"):])
        if fqn in cap.params:
            long_name = fqn
    if long_name == "finalLossScale":  # PopART's: the loss scale the step used
        if "optimizer.loss_scale_log2" not in cap.graph.variables:
            raise Error("anchorTensor 'finalLossScale': the program has no automatic loss "
                        "scaling (Options().Training.setAutomaticLossScaling(True))")
        # a copy read before the step's update (made the scale in _anchored_value)
        return cap.graph.op("copy", ["optimizer.loss_scale_log2"])[0]
    if long_name.startswith("scaledLearningRate___"):
        lr = long_name[len("scaledLearningRate___"):] + ".lr"
        if lr in cap.graph.hyperparams:
            return lr
    if long_name.startswith("Gradient___"):
        fqn = _module_name(cap, long_name[len("Gradient___"):])
        if not training:
            raise Error(f"anchorTensor {long_name!r}: an inference model has no gradients")
        if fqn not in cap.params or cap.params[fqn] not in cap.grad_of:
            raise Error(f"anchorTensor {long_name!r}: {fqn!r} is not a trained parameter; "
                        f"parameters: {sorted(cap.params)}")
        return cap.grad_of[cap.params[fqn]]
    long_name = _module_name(cap, long_name)
    if long_name in cap.params or long_name in cap.buffers:
        return cap.params.get(long_name) or cap.buffers[long_name]
    try:
        cap.graph.type_of(long_name)
    except (ValueError, KeyError, RuntimeError):
        raise Error(f"anchorTensor {long_name!r}: no such tensor; anchor "
                    "'Gradient___<parameter name>', a parameter or buffer name, or a name "
                    "getTensorNames() lists") from None
    return long_name


# How PopTorch's log names an anchor's output mode ("Gradient___model.fc2.bias EVERYN/4").
_ANCHOR_MODE_NAMES = {OutputMode.All: "ALL", OutputMode.EveryN: "EVERYN",
                      OutputMode.Final: "FINAL", OutputMode.Sum: "Sum"}


class _PipelineError(Error, ValueError):
    """A pipeline configuration PopTorch refuses (its Error; tilegraph raised ValueError)."""


class _InputTypeChanged(Error, TypeError):
    """An argument of another dtype than the compiled program's: PopTorch raises its Error
    there, tilegraph raised a TypeError; this is both."""


def _backward_on_output(*args, **kwargs):
    """An executor output's `.backward()` (PopTorch's message and Error)."""
    raise Error("backward() cannot be called explicitly on outputs of a PopTorch model. If "
                "you're using a trainingModel, the backwards pass is performed automatically "
                "when invoking the model. If you're using an inferenceModel, you should use a "
                "trainingModel instead.")


class _OptimizerCompiled(Error, ValueError):
    """setOptimizer with a setting the compiled program is built on (PopTorch raises a
    ValueError saying the model "is already compiled")."""


_INDEX_OUT_OF_RANGE = re.compile(r"index -?\d+ (is )?out of (range|bounds)")


class _IndexOutOfRange(RecoverableError, IndexError):
    """An index (embedding, gather, a loss's target, ...) out of range at run time: PopTorch's
    RecoverableError, and the IndexError eager raises there."""


def _shares_memory(a, b):
    """Whether the bytes two tensors reach overlap (their spans within one storage)."""
    if a.numel() == 0 or b.numel() == 0 or \
            a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False

    def span(t):
        reach = sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride()))
        return t.data_ptr(), t.data_ptr() + (reach + 1) * t.element_size()
    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def _distinct_memory(tensors):
    """The capture's example inputs, each in its own memory: torch.export fails inside
    functionalization on inputs that alias each other (x passed twice). Copies of the later
    ones; the program reads each input separately anyway."""
    out = []
    for t in tensors:
        out.append(t.clone() if any(_shares_memory(t, o) for o in out) else t)
    return out


def _refuse_updates_through_aliases(tensors, mutations):
    """A forward that updates an input in place, given inputs that share memory: eager's
    result depends on each update being seen through the other names at once; the program
    reads each input as it was at the call. Refused, rather than numbers that differ."""
    for index, _ in mutations:
        for other, t in enumerate(tensors):
            if other != index and _shares_memory(tensors[index], t):
                raise ValueError(
                    f"input {index} is updated in place by the forward and shares memory with "
                    f"input {other}; eager sees the update through both, a compiled program "
                    "reads each input as the call gave it. Pass separate tensors (.clone())")


class _InputShapeChanged(Error, ValueError):
    """Arguments of other shapes (or another count) than the compiled program's: PopTorch
    raises its Error there, tilegraph raised a ValueError; this is both."""


class _NotCompiledError(Error, AssertionError):
    """A query that needs the compiled program, before the first compilation: PopTorch
    asserts there, so this is an AssertionError as well as a tilegraph.Error."""


def _loss_index(cap):
    """Which output is the loss: the one identity_loss marked, wherever it is in the
    result; else a top-level "loss" entry (a dict or a Hugging Face ModelOutput); else the
    last tensor of the result (PopTorch's convention: (outputs..., loss)) unless that is not
    a loss function's result, is not computed from one, and exactly one scalar output is
    (PopTorch takes the loss function's result wherever it is: `return loss_fn(out, t),
    accuracy`; but `return ce, ce + aux` trains on the last)."""
    if cap.loss_index is not None:
        return cap.loss_index
    structure = cap.output_structure
    tensors = [v for kind, v in structure.leaves if kind == "tensor"] if structure else \
        list(range(len(cap.outputs)))
    if not tensors:
        raise Error(_NO_LOSS)
    if structure is not None:
        import torch.utils._pytree as pytree
        # The result rebuilt from shape-only tensors (classes such as Hugging Face's
        # DynamicCache read their leaves' device and dtype when rebuilt), each standing for
        # its output index.
        stand_ins = [torch.empty(shape, dtype=dtype, device="meta")
                     for shape, dtype in cap.output_meta]
        index = {id(t): i for i, t in enumerate(stand_ins)}
        try:
            paths, _ = pytree.tree_flatten_with_path(structure.rebuild(stand_ins))
        except Exception:  # noqa: BLE001 - a user class's own rebuild: fall back below
            paths = []
        for path, leaf in paths:
            key = getattr(path[0], "key", getattr(path[0], "name", None)) if path else None
            if len(path) == 1 and key == "loss" and id(leaf) in index:
                return index[id(leaf)]
    losses = [i for i in cap.loss_op_outputs
              if cap.output_meta[i][1].is_floating_point and
              math.prod(cap.output_meta[i][0]) == 1]
    if tensors[-1] not in losses and len(losses) == 1 and \
            not getattr(cap, "last_output_uses_loss_op", False):
        return losses[0]
    return tensors[-1]


def _engine_seed(options):
    """The seed of the engine's random stream: Options.randomSeed when set, else torch's
    seed (torch.initial_seed: the last torch.manual_seed, or the process's random one), so
    dropout masks change with torch.manual_seed as they do in eager PyTorch and repeat when
    it repeats."""
    if options.random_seed is not None:
        return options.random_seed
    return torch.initial_seed()


def _join_distributed_run(options):
    """Checks that the MPI launch is the one the options describe, and makes an uncaught
    error in any process end the whole run at once (MPI_Abort: the other processes stop now,
    and mpirun names this one) instead of leaving them to wait for their collective timeout."""
    global _abort_hook_installed
    if not _core.mpi_available():
        raise Error("Options().Distributed describes several processes, but this "
                           "tilegraph was built without MPI")
    rank, size = _core.mpi_world()
    want = (options.Distributed.processId, options.Distributed.numProcesses)
    if (rank, size) != want:
        raise Error(f"Options().Distributed says process {want[0]} of {want[1]}, but MPI "
                           f"says rank {rank} of {size}: start the script with "
                           f"`python -m tilegraph.run -n {want[1]} ...` (or mpirun)")
    if not _abort_hook_installed:
        import sys
        previous = sys.excepthook

        def abort_on_uncaught(kind, value, tb):
            previous(kind, value, tb)
            sys.stderr.write(f"tilegraph: process {rank} of {size} failed; stopping the run\n")
            sys.stderr.flush()
            _core.mpi_abort(1)

        sys.excepthook = abort_on_uncaught
        _abort_hook_installed = True


_abort_hook_installed = False


_PRECOMPILE_HOOKS = collections.OrderedDict()  # (weak-referenceable, for RemovableHandle)
_POSTCOMPILE_HOOKS = collections.OrderedDict()


def _register_hook(hooks, hook):
    if not callable(hook):
        raise Error(f"compile hooks must be callable, got {type(hook).__name__}")
    import torch.utils.hooks
    handle = torch.utils.hooks.RemovableHandle(hooks)
    hooks[handle.id] = hook
    return handle


def registerPreCompileHook(hook):
    """Calls hook() before every capture of a model for compilation; returns a handle
    whose remove() unregisters it."""
    return _register_hook(_PRECOMPILE_HOOKS, hook)


def registerPostCompileHook(hook):
    """Calls hook() after every capture of a model for compilation."""
    return _register_hook(_POSTCOMPILE_HOOKS, hook)


def trainingModel(model, options=None, optimizer=None):
    """An executor that trains `model` (an nn.Module, or another executor's module) with
    `optimizer` (default SGD, lr 0.01): each call runs deviceIterations x
    gradientAccumulation steps, and the module holds the trained weights after it."""
    model = model.model if isinstance(model, PoplarExecutor) else model
    wraps = isinstance(model, torch.nn.Module) and not isinstance(model, _cache.ExportedModule)
    if wraps:
        _refuse_wrapped(model)
    executor = PoplarExecutor(model, options, optimizer, training=True)
    if wraps:
        _wrap_for_training(model, executor)
    return executor


def inferenceModel(model, options=None):
    """An executor that runs `model` (an nn.Module, or another executor's module) in the
    train/eval modes it has now; weights trained by another executor reach it before its
    next call (copied only when they changed)."""
    model = model.model if isinstance(model, PoplarExecutor) else model
    return PoplarExecutor(model, options, None, training=False)
