"""Guards: what a compiled program assumed about the module, checked before every call.

A program is captured from the module as it was: its submodules' train/eval modes, the
plain Python attributes its forward may read (numbers, strings, flags, tensors kept as
attributes, config objects one level deep), its hooks, and each parameter's and buffer's
shape, dtype and requires_grad. `fingerprint()` records all of that; when it differs at a
call, the executor captures the model again. A module's parameters and buffers, also where
an attribute holds them again (nn.LSTM's `_flat_weights` list), count by identity, shape and
dtype, not by their in-place version: their values are the program's inputs, pushed in when
they change (host_versions below), and training updates them after every step. Re-capturing is the sound answer (the
executor cannot know which attributes the forward reads); if the new graph is the same as
the old one (its cache key, see _cache.graph_key) nothing is recompiled.

`host_versions()` is separate: the identity and in-place version counter of every
parameter and buffer, so that an executor sees that the module's weights changed on the
host (trained by another executor, edited by hand, load_state_dict) and pushes them in.

Both run before every call, so each has a compiled twin (python/tilegraph/_core_guards.cc)
that records the same facts once and re-checks them without building Python objects:
`Guard` (fingerprint) and `Versions` (host_versions). The twins may answer "changed" where
the Python functions would not (the caller then confirms with them), never the reverse.
"""
import enum

import torch

from . import _core

_MODULE_INTERNALS = {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set",
                     "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                     "_load_state_dict_post_hooks", "_backward_pre_hooks", "_backward_hooks",
                     "_is_full_backward_hook", "_forward_hooks_with_kwargs",
                     "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
                     "_forward_hooks", "_forward_pre_hooks",  # these two: see _HOOKS
                     "destroy"}  # PopTorch's model.destroy() a trainingModel adds
_HOOKS = ("_forward_hooks", "_forward_pre_hooks")
_PLAIN = (bool, int, float, complex, str, bytes, enum.Enum, torch.dtype, torch.device,
          torch.Size, type(None))
_MAX_ITEMS = 64   # longer containers are compared by identity
_MAX_DEPTH = 2    # objects (e.g. a Hugging Face config) are looked into this deep


def fingerprint(model, with_modes):
    """A comparable record of everything a capture of `model` depended on (see above).
    `with_modes`: include train/eval modes and requires_grad (training executors)."""
    named = _named_modules(model)
    memo = {"registered": registered_tensors(named)}
    modules, params, buffers = [], [], []
    skip = () if with_modes else ("training",)
    for name, m in named:
        hooks = tuple(tuple(id(h) for h in getattr(m, k, {}).values()) for k in _HOOKS)
        modules.append((name, type(m), hooks, _attrs(m.__dict__, memo, 0, skip)))
        dot = name + "." if name else ""
        for n, p in m._parameters.items():
            if p is not None:
                params.append((dot + n, p.shape, p.dtype, p.requires_grad if with_modes else None))
        for n, b in m._buffers.items():
            if b is not None:
                buffers.append((dot + n, b.shape, b.dtype))
    return tuple(modules), tuple(params), tuple(buffers)


def registered_tensors(named_modules):
    """The identities of the parameters and buffers of (name, module) pairs."""
    return frozenset(id(t) for _, m in named_modules
                     for d in (m._parameters, m._buffers) for t in d.values() if t is not None)


def global_hooks():
    """The forward (pre-)hooks registered for every module (torch.nn.modules.module.
    register_module_forward_hook): a capture ran them, so another set means another
    program. Compared per call: two tuples, usually empty."""
    from torch.nn.modules import module as nn_module
    return (tuple(nn_module._global_forward_hooks), tuple(nn_module._global_forward_pre_hooks))


def _named_modules(root):
    """(name, module) for every submodule, shared ones under each of their names (one walk;
    torch's named_modules / named_parameters would walk the tree three times)."""
    out, stack = [], [("", root)]
    while stack:
        name, m = stack.pop()
        out.append((name, m))
        dot = name + "." if name else ""
        stack.extend((dot + n, c) for n, c in reversed(m._modules.items()) if c is not None)
    return out


def describe_change(old, new):
    """A short phrase saying what differs between two fingerprints (for the log)."""
    for part, what in ((0, "a module attribute, hook or mode"), (1, "a parameter"),
                       (2, "a buffer")):
        if old[part] != new[part]:
            names = [a[0] for a, b in zip(old[part], new[part]) if a != b]
            where = f" ({names[0] or 'the root module'})" if names else ""
            return what + where
    return "nothing"


def _attrs(d, memo, depth, skip=()):
    return tuple((k, _value(v, memo, depth)) for k, v in d.items()
                 if k not in _MODULE_INTERNALS and k not in skip)


def _value(v, memo, depth):
    if isinstance(v, _PLAIN):
        return v
    if isinstance(v, torch.Tensor):
        if id(v) in memo["registered"]:  # a parameter or buffer held again: see above
            return ("weight", id(v), tuple(v.shape), v.dtype)
        return ("tensor", id(v), _version(v), tuple(v.shape), v.dtype)
    if isinstance(v, torch.nn.Module):
        return ("module", id(v))  # its own entry covers its contents
    if isinstance(v, (tuple, list)) and len(v) <= _MAX_ITEMS:
        return (type(v), tuple(_value(x, memo, depth) for x in v))
    if isinstance(v, dict) and len(v) <= _MAX_ITEMS:
        return ("dict", tuple((repr(k), _value(x, memo, depth)) for k, x in v.items()))
    if callable(v) or depth >= _MAX_DEPTH or not hasattr(v, "__dict__"):
        return ("id", id(v))
    key = id(v)
    if key not in memo:
        memo[key] = None  # cycles
        memo[key] = ("object", type(v), _attrs(vars(v), memo, depth + 1))
    return memo[key]


def _version(t):
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter
        return None


def host_versions(named_tensors):
    """(name, identity, in-place version) of every tensor: changes when a weight changes."""
    return tuple((n, t.data_ptr(), _version(t)) for n, t in named_tensors)


class Guard:
    """fingerprint(model) at construction (or the one given, taken just now), and a fast
    `unchanged(model)` check against it (the C++ ModuleGuard, stricter: it also records
    parameter identities)."""

    def __init__(self, model, with_modes, fingerprint_now=None):
        self.fingerprint = (fingerprint(model, with_modes) if fingerprint_now is None
                            else fingerprint_now)
        self._compiled = _core.ModuleGuard(
            model, _PLAIN, torch.Tensor, torch.nn.Module,
            registered_tensors(_named_modules(model)), frozenset(_MODULE_INTERNALS),
            frozenset(() if with_modes else ("training",)), _HOOKS, with_modes, _MAX_ITEMS,
            _MAX_DEPTH)

    def unchanged(self, model):
        return self._compiled.unchanged(model)


class Versions:
    """host_versions(named_tensors) at construction, and a fast `unchanged(named_tensors)`
    check against it (the same list of pairs, in the same order). The C++ snapshot is the
    record; `versions`, host_versions' tuple, is built from it when asked for."""

    def __init__(self, named_tensors):
        self._named = named_tensors if isinstance(named_tensors, list) else list(named_tensors)
        self._compiled = _core.TensorVersions(self._named)
        self._versions = None if self._compiled.valid else host_versions(self._named)

    @property
    def versions(self):
        if self._versions is None:
            self._versions = tuple((name, data, None if version < 0 else version)
                                   for (name, _), (data, version)
                                   in zip(self._named, self._compiled.recorded()))
        return self._versions

    def unchanged(self, named_tensors):
        return self._compiled.unchanged(named_tensors)
