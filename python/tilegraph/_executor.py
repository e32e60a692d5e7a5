"""The executor returned by trainingModel / inferenceModel (PopTorch's PoplarExecutor).

On the first call (or compile()) it captures the model at the micro-batch size, has the C++
core add the backward and the optimizer update (training), compiles, and pushes the
module's weights in. Each call then feeds the combined batch (micro-batch x
deviceIterations x gradientAccumulation) as that many steps of one engine run.
"""
import contextvars
import warnings

import numpy as np
import torch

from . import _cache, _core
from ._capture import capture, tg_dtype
from ._options import Options, OutputMode, ReductionType
from .optim import describe

_compilations = 0  # process-wide count of engine compilations (tests read it)
_identity_loss_reduction = contextvars.ContextVar("tilegraph_identity_loss", default=None)


def compilation_count():
    return _compilations


def identity_loss(x, reduction="sum"):
    """Marks `x` as the loss, reduced by "sum", "mean" or "none" (PopTorch's identity_loss)."""
    if reduction not in ("sum", "mean", "none"):
        raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
    marks = _identity_loss_reduction.get()
    if marks is not None:
        marks.append(reduction)
    if reduction == "sum":
        return x.sum()
    if reduction == "mean":
        return x.mean()
    return x


class PoplarExecutor:
    def __init__(self, model, options=None, optimizer=None, training=False):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.options = options if options is not None else Options()
        self.training = training
        if training and optimizer is None:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        self.optimizer = optimizer
        self._exe = None
        self._cap = None
        self._attached = False
        self._returns_tuple = False
        self._opt_flags = None
        self._hyper = {}
        self._input_specs = []  # (shape of the combined batch per call, torch dtype)
        self.loaded_from_cache = False

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

    def _split(self, args):
        """The per-step micro-batch of every tensor argument."""
        steps = self._steps
        micro = []
        for i, a in enumerate(args):
            if not isinstance(a, torch.Tensor):
                raise TypeError(f"argument {i}: expected a torch.Tensor, got {type(a).__name__}")
            if a.dim() == 0 or a.shape[0] % steps != 0:
                raise ValueError(
                    f"argument {i}: expected a batch dimension divisible by {steps} "
                    f"(deviceIterations x gradientAccumulation), got shape {tuple(a.shape)}")
            micro.append(a[: a.shape[0] // steps])
        return micro

    # ---- compilation ---------------------------------------------------------------------
    def compile(self, *args):
        """Captures and compiles for these inputs without running (PopTorch's compile)."""
        if self.training:
            self.model.train()
        micro = self._split(args)
        self._input_specs = [(tuple(a.shape), a.dtype) for a in args]
        key = None
        if self.options.cache_dir:
            key = _cache.cache_key(self, micro)
            hit = _cache.load(self.options.cache_dir, key)
            if hit is not None:
                self.loaded_from_cache = True
                self._compile_from(*hit)
                return self
        marks = []
        token = _identity_loss_reduction.set(marks)
        try:
            cap = capture(self.model, micro, name=type(self.model).__name__)
        finally:
            _identity_loss_reduction.reset(token)
        self._returns_tuple = len(cap.outputs) > 1
        for out in cap.outputs:
            cap.graph.add_output(out)
        self._hyper = self._add_training(cap, marks) if self.training else {}
        self._cap = cap
        if key is not None:
            _cache.store(self.options.cache_dir, key, cap, self._cache_extra())
        self._compile_from(cap, self._cache_extra())
        return self

    def _cache_extra(self):
        return dict(returns_tuple=self._returns_tuple, hyperparams=self._hyper,
                    opt_flags=list(self._opt_flags) if self._opt_flags else None,
                    input_specs=[[list(s), str(d).replace("torch.", "")]
                                 for s, d in self._input_specs])

    def _compile_from(self, cap, meta):
        """Compiles a captured (or cache-loaded) step graph and pushes the weights in."""
        global _compilations
        self._returns_tuple = meta["returns_tuple"]
        self._hyper = meta["hyperparams"]
        self._opt_flags = tuple(meta["opt_flags"]) if meta["opt_flags"] else None
        self._input_specs = [(tuple(s), getattr(torch, d)) for s, d in meta["input_specs"]]
        exe = _core.Executable.compile(cap.graph, training=self.training,
                                       num_threads=self.options.num_threads,
                                       seed=self.options.random_seed or 0,
                                       profile=self.options.profiling_dir is not None)
        _compilations += 1
        for name, value in self._hyper.items():
            exe.set_hyperparam(name, value)
        self._cap, self._exe, self._attached = cap, exe, True
        if self.training:
            self.setOptimizer(self.optimizer)  # the optimizer's current hyperparameters
        self.copyWeightsToDevice()

    def compileAndExport(self, filename, *args):
        """Compiles for `args` and saves everything tilegraph.load needs to `filename`."""
        if self._exe is None:
            self.compile(*args)
        _cache.export(filename, self)

    def _add_training(self, cap, marks):
        if not cap.outputs:
            raise RuntimeError(_NO_LOSS)
        loss = cap.outputs[-1]
        shape, dtype = cap.output_meta[-1]
        if not dtype.is_floating_point or (len(shape) != 0 and "none" not in marks):
            raise RuntimeError(_NO_LOSS + f" (the last output is {dtype}{list(shape)})")
        kind, flags, groups, loss_scaling = describe(self.optimizer)
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
            accumulation_mean=reduction == ReductionType.Mean, **flags)
        self._opt_flags = (kind, flags)
        hyper = dict(info["hyperparams"])
        if "loss_scale" in hyper:
            hyper["loss_scale"] = loss_scaling
        return hyper

    # ---- calls ---------------------------------------------------------------------------
    def __call__(self, *args):
        if self._exe is None:
            self.compile(*args)
        if not self._attached:
            self.attachToDevice()
        self._check_args(args)
        steps = self._steps
        feeds = [np.asarray(a.detach().reshape(steps, a.shape[0] // steps,
                                                          *a.shape[1:]).numpy(), order="C")
                 for a in args]
        mode = self._output_mode()
        outs = self._exe.run(feeds, steps=steps, mode=mode.value,
                             every_n=self.options.output_return_period)
        if self.training:
            self.copyWeightsToHost()
        if self.options.profiling_dir is not None:
            self._write_profile()
        results = [self._to_torch(o, mode, meta) for o, meta in zip(outs, self._cap.output_meta)]
        return tuple(results) if self._returns_tuple else results[0]

    def _check_args(self, args):
        if len(args) != len(self._input_specs):
            raise ValueError(f"expected {len(self._input_specs)} inputs, got {len(args)}")
        for i, (a, (shape, dtype)) in enumerate(zip(args, self._input_specs)):
            if not isinstance(a, torch.Tensor):
                raise TypeError(f"input {i}: expected a torch.Tensor, got {type(a).__name__}")
            if a.dtype != dtype:
                raise TypeError(f"input {i}: expected dtype {dtype}, got {a.dtype}")
            if tuple(a.shape) != shape:
                raise ValueError(
                    f"input {i}: expected shape {list(shape)}, got {list(a.shape)} (the combined "
                    f"batch is micro-batch x deviceIterations x gradientAccumulation)")

    def _to_torch(self, out, mode, meta):
        t = torch.from_numpy(np.asarray(out))
        if mode in (OutputMode.All, OutputMode.EveryN):
            shape, _ = meta
            if len(shape) >= 1:  # stack of per-step batches -> one combined batch
                t = t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])
        return t

    # ---- weights and device state --------------------------------------------------------
    def _named_state(self):
        state = dict(self.model.named_parameters(remove_duplicate=False))
        state.update(dict(self.model.named_buffers(remove_duplicate=False)))
        return state

    def copyWeightsToHost(self):
        if self._exe is None:
            return
        state = self._named_state()
        with torch.no_grad():
            for fqn in list(self._cap.params) + list(self._cap.buffers):
                value = torch.from_numpy(np.asarray(self._exe.read_variable(fqn)))
                state[fqn].copy_(value.reshape(state[fqn].shape))

    def copyWeightsToDevice(self):
        if self._exe is None:
            return
        state = self._named_state()
        for fqn in list(self._cap.params) + list(self._cap.buffers):
            t = state[fqn].detach().contiguous()
            self._exe.write_variable(fqn, np.asarray(t.numpy(), order="C"))

    def setOptimizer(self, optimizer):
        """New hyperparameters for the compiled step (no recompilation)."""
        if not self.training:
            raise RuntimeError("setOptimizer is only valid on a training model")
        kind, flags, groups, loss_scaling = describe(optimizer)
        if self._exe is not None and (kind, flags) != self._opt_flags:
            raise ValueError(f"setOptimizer: expected a {self._opt_flags[0]} optimizer with "
                             f"{self._opt_flags[1]}, got {kind} with {flags}; these change the "
                             "compiled program (wrap the model again)")
        self.optimizer = optimizer
        if self._exe is None:
            return
        for i, (_, h) in enumerate(groups):
            for field, value in h.items():
                name = f"group{i}.{field}"
                if name in self._exe.hyperparams:
                    self._exe.set_hyperparam(name, value)
        if "loss_scale" in self._exe.hyperparams:
            self._exe.set_hyperparam("loss_scale", loss_scaling)

    def detachFromDevice(self):
        if self._exe is None:
            raise RuntimeError("the model has not been compiled yet")
        self.copyWeightsToHost()
        self._attached = False

    def attachToDevice(self):
        if self._exe is None:
            raise RuntimeError("the model has not been compiled yet")
        self.copyWeightsToDevice()
        self._attached = True

    def isAttachedToDevice(self):
        return self._attached

    def isCompiled(self):
        return self._exe is not None

    def destroy(self):
        if self._exe is not None and self.training:
            self.copyWeightsToHost()
        self._exe = None
        self._attached = False

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


_NO_LOSS = ("a training model's forward must return the loss, or (outputs..., loss) with the "
            "loss last, as a floating-point scalar; wrap a custom or combined loss in "
            "tilegraph.identity_loss(x, reduction='sum'|'mean'|'none')")


def trainingModel(model, options=None, optimizer=None):
    return PoplarExecutor(model, options, optimizer, training=True)


def inferenceModel(model, options=None):
    return PoplarExecutor(model, options, None, training=False)
