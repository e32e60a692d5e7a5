"""Executable caching and export: a compiled step saved as tilegraph IR text plus the
metadata the executor needs, keyed by everything that determines it.

What is cached is the step's graph after capture, autodiff and optimizer generation (before
the pass pipeline): a cache hit skips torch.export, the ATen translation and autodiff — the
expensive part of compiling — and re-runs only the C++ passes and lowering. The key hashes
tilegraph's version, the model's class source and structure, parameter/buffer names,
shapes and dtypes, the micro-batch input types, the training flag, the batch options and the
optimizer's kind, flags and parameter grouping.
"""
import hashlib
import inspect
import json
import os

import torch

from . import _core
from ._capture import Captured

_FORMAT = 1


def cache_key(executor, micro_args):
    model = executor.model
    h = hashlib.sha256()

    def add(*items):
        for item in items:
            h.update(repr(item).encode())
            h.update(b"\0")

    from . import __version__
    add(_FORMAT, __version__, torch.__version__, executor.training)
    for cls in type(model).__mro__:
        if cls in (torch.nn.Module, object):
            break
        try:
            add(inspect.getsource(cls))
        except (OSError, TypeError):
            add(cls.__qualname__)
    add(repr(model))
    for name, t in model.state_dict(keep_vars=True).items():
        add(name, tuple(t.shape), str(t.dtype), getattr(t, "requires_grad", False))
    add([(tuple(a.shape), str(a.dtype)) for a in micro_args])
    o = executor.options
    add(o.device_iterations, o.Training.gradient_accumulation, o.Training.reduction.value)
    if executor.training:
        from .optim import describe
        kind, flags, groups, loss_scaling = describe(executor.optimizer)
        names = {id(p): n for n, p in model.named_parameters()}
        add(kind, sorted(flags.items()), loss_scaling != 1.0,
            [[names.get(id(p), "?") for p in params] for params, _ in groups])
    return h.hexdigest()


def _meta_of(cap, extra):
    meta = dict(user_inputs=cap.user_inputs, params=cap.params, buffers=cap.buffers,
                outputs=cap.outputs,
                output_meta=[[list(s), str(d).replace("torch.", "")] for s, d in cap.output_meta])
    meta.update(extra)
    return meta


def _captured_from(text, meta):
    cap = Captured()
    cap.graph = _core.Graph.parse(text)
    cap.user_inputs = meta["user_inputs"]
    cap.params = meta["params"]
    cap.buffers = meta["buffers"]
    cap.outputs = meta["outputs"]
    cap.output_meta = [(tuple(s), getattr(torch, d)) for s, d in meta["output_meta"]]
    return cap


def store(directory, key, cap, extra):
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{key}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump({"meta": _meta_of(cap, extra), "ir": str(cap.graph)}, f)
    os.replace(tmp, os.path.join(directory, key + ".tgcache"))  # atomic for concurrent runs


def load(directory, key):
    path = os.path.join(directory, key + ".tgcache")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            entry = json.load(f)
        return _captured_from(entry["ir"], entry["meta"]), entry["meta"]
    except (ValueError, KeyError, OSError):
        return None  # a corrupt entry is a miss; it is rewritten after compiling


def export(path, executor):
    """compileAndExport: the step graph, metadata, options, optimizer and the module."""
    cap = executor._cap
    torch.save({"format": _FORMAT, "ir": str(cap.graph),
                "meta": _meta_of(cap, executor._cache_extra()), "model": executor.model,
                "options": executor.options, "optimizer": executor.optimizer,
                "training": executor.training}, path)


def load_exported(path):
    from ._executor import PoplarExecutor
    entry = torch.load(path, weights_only=False)
    if entry.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a tilegraph export of format {_FORMAT}")
    executor = PoplarExecutor(entry["model"], entry["options"], entry["optimizer"],
                              entry["training"])
    executor._compile_from(_captured_from(entry["ir"], entry["meta"]), entry["meta"])
    return executor
