"""Executable caching and compileAndExport / load, on the pickle-free container of
_archive.py.

The cache key is the captured forward graph itself (its canonical IR text, constants
included) plus the options and optimizer structure that shape the compiled step. Anything
the exported graph depends on — a helper function the forward calls, a constructor argument,
a plain attribute, a global — changes the key when it changes the graph, and nothing that
leaves the graph unchanged does. The price: torch.export runs on every compile, cached or
not; a hit skips autodiff, optimizer generation and whatever the passes and lowering do not
redo (`tests/e2e/test_caching.py` prints both compile times).

An entry is an archive whose meta repeats its key: a corrupted, truncated or foreign entry
is reported once (naming the file), discarded and recompiled. A cache directory that cannot
be created or written turns caching off with one warning; compiling goes on. The checksum
catches damage, not intent: an entry is the program the next process runs, so a directory
or entry another user could have written is not trusted (caching off, or the entry ignored,
with a warning; `_untrusted`).
"""
import hashlib
import json
import math
import os
import warnings

import torch

from . import _archive, _core, _guards
from ._archive import ArchiveError  # noqa: F401 (re-exported as tilegraph.ArchiveError)
from ._capture import Captured
from ._structure import OutputStructure, dumps_or_none

_KEY_FORMAT = 2
_warned = set()


def _warn_once(what, message):
    if what not in _warned:
        _warned.add(what)
        warnings.warn(f"tilegraph: {message}", stacklevel=4)


def graph_key(executor, cap, input_specs):
    """The cache key of a compile: the forward graph, inputs, options, optimizer structure."""
    from . import __version__
    o = executor.options
    parts = dict(format=_KEY_FORMAT, tilegraph=__version__, torch=torch.__version__,
                 training=executor.training, ir=str(cap.graph), params=cap.params,
                 buffers=cap.buffers, inputs=[[list(s), str(d)] for s, d in input_specs],
                 device_iterations=o.device_iterations, replicas=o.replication_factor,
                 processes=o.Distributed.numProcesses,
                 sharded=o.TensorLocations.shard_optimizer_state,
                 accumulation=o.Training.gradient_accumulation,
                 reduction=int(o.Training.reduction),
                 anchors=sorted((k, v[0]) for k, v in o.anchored_tensors.items()),
                 mixed_precision=str(o.Precision.mixed_precision))
    if executor.training:
        from .optim import describe
        kind, flags, groups, loss_scaling = describe(executor.optimizer)
        names = {id(p): n for n, p in executor.model.named_parameters()}
        from .optim import state_dtypes
        parts["optimizer"] = [kind, sorted(flags.items()), loss_scaling != 1.0,
                              [[names.get(id(p), "?") for p in ps] for ps, _ in groups]]
        parts["precision"] = [state_dtypes(executor.optimizer), o.Precision.stochastic_rounding,
                              o.Training.automatic_loss_scaling,
                              sorted(o.Training.loss_scaling_settings.items())]
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def capture_meta(cap, extra):
    meta = dict(user_inputs=cap.user_inputs, params=cap.params, buffers=cap.buffers,
                outputs=cap.outputs,
                output_meta=[[list(s), str(d).replace("torch.", "")] for s, d in cap.output_meta],
                output_structure=dumps_or_none(cap.output_structure)
                if cap.output_structure else None,
                loss_index=cap.loss_index, loss_op_outputs=cap.loss_op_outputs,
                input_mutations=cap.input_mutations,
                anchors=cap.anchors)
    meta.update(extra)
    return meta


_TORCH_DTYPES = {str(d).replace("torch.", ""): d for d in
                 (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                  torch.int32, torch.bool, torch.uint8, torch.int8, torch.int16)}


def torch_dtype(name):
    """A dtype named in a file, from a fixed list (never getattr on a file's string)."""
    if name not in _TORCH_DTYPES:
        raise ValueError(f"unknown dtype {name!r}")
    return _TORCH_DTYPES[name]


def captured_from(text, meta):
    cap = Captured()
    cap.graph = _core.Graph.parse(text)
    cap.user_inputs = list(meta["user_inputs"])
    cap.params = dict(meta["params"])
    cap.buffers = dict(meta["buffers"])
    cap.outputs = list(meta["outputs"])
    cap.output_meta = [(tuple(int(d) for d in s), torch_dtype(d)) for s, d in meta["output_meta"]]
    if meta.get("output_structure"):
        cap.output_structure = OutputStructure.from_json(json.loads(meta["output_structure"]))
    cap.loss_index = None if meta.get("loss_index") is None else int(meta["loss_index"])
    cap.loss_op_outputs = [int(i) for i in meta.get("loss_op_outputs", [])]
    cap.input_mutations = [(int(i), int(o)) for i, o in meta.get("input_mutations", [])]
    cap.anchors = {str(k): int(v) for k, v in meta.get("anchors", {}).items()}
    _check_indices(cap)
    return cap


def _check_indices(cap):
    """What a file says about the graph's outputs must agree with the graph (a crafted file
    gets an error at load, not an IndexError or a wrong reshape at the first call): output
    indices exist, one (shape, dtype) per output with the graph's shape, in-place updates
    name a tensor input of the same size."""
    n = len(cap.outputs)
    indices = [v for kind, v in cap.output_structure.leaves if kind == "tensor"] \
        if cap.output_structure else []
    indices += [o for _, o in cap.input_mutations] + list(cap.anchors.values())
    if cap.loss_index is not None:
        indices.append(cap.loss_index)
    if any(not 0 <= i < n for i in indices):
        raise ValueError(f"output index out of range (the graph has {n} outputs)")
    if len(cap.output_meta) != n:
        raise ValueError(f"output_meta describes {len(cap.output_meta)} outputs, the graph "
                         f"has {n}")
    for name, (shape, _) in zip(cap.outputs, cap.output_meta):
        if list(shape) != list(cap.graph.type_of(name)[1]):
            raise ValueError(f"output_meta: output {name!r} has shape "
                             f"{list(cap.graph.type_of(name)[1])}, the file says {list(shape)}")
    for index, output in cap.input_mutations:
        if not 0 <= index < len(cap.user_inputs):
            raise ValueError(f"input_mutations: input index {index} out of range (the model "
                             f"has {len(cap.user_inputs)} tensor inputs)")
        if math.prod(cap.graph.type_of(cap.user_inputs[index])[1]) != \
                math.prod(cap.output_meta[output][0]):
            raise ValueError(f"input_mutations: output {output} does not have input {index}'s "
                             f"size")


def _untrusted(path, is_directory):
    """Why a cache directory or entry cannot be trusted, or "" when it can. An entry runs
    as the program it holds (its checksum only catches damage), so only this user may have
    been able to write it: the entry owned by this user and writable by no one else; the
    directory owned by this user and writable by no one else, or sticky (as /tmp: others
    cannot replace this user's entries there)."""
    if not hasattr(os, "geteuid"):
        return ""
    try:
        st = os.lstat(path)
    except OSError:
        return ""
    others_write = st.st_mode & 0o022
    if st.st_uid != os.geteuid():
        return f"owned by another user (uid {st.st_uid})"
    if is_directory and others_write and not st.st_mode & 0o1000:
        return "writable by other users (not sticky)"
    if not is_directory and others_write:
        return "writable by other users"
    return ""


class ExecutableCache:
    """The on-disk cache in one directory (see the module comment)."""

    def __init__(self, directory):
        self.directory = directory
        self.enabled = True
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as e:
            self._disable(f"cannot create it ({e.strerror or e})")
            return
        untrusted = _untrusted(directory, is_directory=True)
        if untrusted:
            self._disable(untrusted)

    def _disable(self, why):
        self.enabled = False
        _warn_once(("disabled", self.directory),
                   f"executable cache at {self.directory!r} disabled: {why}; compiling without "
                   "a cache")

    def _path(self, key):
        return os.path.join(self.directory, key + ".tgcache")

    def load(self, key):
        """(Captured, meta) for `key`, or None. A bad entry is reported and removed."""
        if not self.enabled:
            return None
        path = self._path(key)
        if not os.path.lexists(path):
            return None
        try:
            untrusted = _untrusted(path, is_directory=False)
            if untrusted:  # another user could have written it: not read, not removed
                _warn_once(("untrusted", path, untrusted),
                           f"executable-cache entry {path} ignored: {untrusted}; recompiling")
                return None
            entry = _archive.read(path, "cache")
            if entry.meta.get("key") != key:
                raise _archive.ArchiveError(f"{path}: belongs to a different model")
            return captured_from(entry.texts["ir"], entry.meta), entry.meta
        except (_archive.ArchiveError, ValueError, KeyError, TypeError, NotImplementedError) as e:
            try:
                seen = os.lstat(path)
                what = ("bad", path, seen.st_size, seen.st_mtime_ns)  # once per bad entry
            except OSError:
                what = ("bad", path)
            _warn_once(what, f"discarding executable-cache entry {path}: {e}; recompiling")
            try:
                os.unlink(path)
            except OSError:
                pass
            return None

    def store(self, key, cap, extra):
        if not self.enabled:
            return
        meta = capture_meta(cap, extra)
        meta["key"] = key
        try:
            _archive.write(self._path(key), "cache", meta, texts={"ir": str(cap.graph)})
            os.chmod(self._path(key), 0o600)
        except OSError as e:
            self._disable(f"cannot write to it ({e.strerror or e})")


# ---- compileAndExport / load -------------------------------------------------------------

def export(path, executor):
    """Everything tilegraph.load needs, without pickle: the step graph, metadata, options,
    the optimizer's description, and every engine variable (weights, buffers, optimizer
    state). The model's Python code is not in the file."""
    from . import __version__
    from .optim import spec_of
    cap, model = executor._cap, executor.model
    for structure in (cap.output_structure, executor._call):
        if structure is not None:
            try:
                structure.to_json()
            except NotImplementedError as e:  # a tree node type torch cannot name
                raise ValueError(f"compileAndExport: {e}") from None
    params = dict(model.named_parameters(remove_duplicate=False))
    meta = dict(tilegraph=__version__, torch=torch.__version__, training=executor.training,
                model_class=type(model).__qualname__,
                requires_grad={fqn: bool(params[fqn].requires_grad) for fqn in cap.params},
                options=executor.options.to_dict(),
                optimizer=spec_of(executor.optimizer, model) if executor.training else None,
                capture=capture_meta(cap, executor._cache_extra()))
    exe = executor._exe
    tensors = {name: exe_variable(exe, name) for name in exe.variables}
    _archive.write(path, "export", meta, texts={"ir": str(cap.graph)}, tensors=tensors)


def exe_variable(exe, name):
    import numpy as np
    from ._engine_io import from_engine
    return from_engine(np.array(exe.read_variable(name)))


def read_export_meta(path):
    """The metadata of a compileAndExport file (checked like any archive)."""
    return _archive.read(path, "export").meta


def load_exported(path, model=None, edit_opts_fn=None, keep_model_weights=False):
    """tilegraph.load: an executor from a compileAndExport file. Its `model` is `model` if
    given (its parameters and buffers receive the file's values, unless
    `keep_model_weights`, loadExecutable's case; names and shapes must match) or an
    ExportedModule holding the file's parameters and buffers."""
    from ._executor import PoplarExecutor
    from ._options import Options
    from .optim import from_spec
    entry = _archive.read(path, "export")
    try:
        meta, cmeta = entry.meta, entry.meta["capture"]
        cap = captured_from(entry.texts["ir"], cmeta)
        if cmeta.get("call_structure"):  # parsed here so a bad one is an ArchiveError
            from ._structure import CallStructure
            CallStructure.from_json(json.loads(cmeta["call_structure"]))
        options = Options.from_dict(meta["options"])
        training = bool(meta["training"])
        variables = entry.tensors
        host = {fqn: variables[var] for fqn, var in {**cap.params, **cap.buffers}.items()}
    except (KeyError, TypeError, ValueError, NotImplementedError, RecursionError,
            OverflowError) as e:
        raise _archive.ArchiveError(f"{path}: corrupt metadata or IR ({e})") from None
    if model is None:
        try:
            model = ExportedModule(meta.get("model_class", "model"), cap.params, cap.buffers,
                                   host, meta.get("requires_grad", {}))
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            raise _archive.ArchiveError(f"{path}: corrupt parameters ({e})") from None
    else:
        _fill(model, host, path, write=not keep_model_weights)
    if edit_opts_fn is not None:
        edit_opts_fn(options)
    optimizer = from_spec(meta["optimizer"], model) if training else None
    executor = PoplarExecutor(model, options, optimizer, training)
    try:
        executor._compile_from(cap, cmeta)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # the file's program: an IR the verifier refuses, ...
        raise _archive.ArchiveError(f"{path}: its program does not compile: {e}") from e
    executor._set_guard()
    own = set(cap.params.values()) | set(cap.buffers.values())
    for name, value in variables.items():  # optimizer state: the engine's own variables
        if name not in own and name in executor._exe.variables:
            from ._engine_io import to_engine
            executor._exe.write_variable(name, to_engine(value))
    return executor


def _fill(model, host, path, write=True):
    state = dict(model.named_parameters(remove_duplicate=False))
    state.update(model.named_buffers(remove_duplicate=False))
    for fqn, value in host.items():
        if fqn not in state or tuple(state[fqn].shape) != tuple(value.shape):
            have = tuple(state[fqn].shape) if fqn in state else "absent"
            raise ValueError(f"{path}: the model given to tilegraph.load does not match the "
                             f"file: {fqn} is {tuple(value.shape)} in the file, {have} in the "
                             "model")
    if not write:
        return
    with torch.no_grad():
        for fqn, value in host.items():
            state[fqn].copy_(value)


class ExportedModule(torch.nn.Module):
    """The parameters and buffers of an exported model under their original names (so
    state_dict() loads into the original class). Its forward cannot run: the model's Python
    code is not in the file; the executor returned by tilegraph.load runs the compiled step."""

    def __init__(self, class_name, params, buffers, host, requires_grad):
        super().__init__()
        self.exported_class = str(class_name)
        # Names that share a variable were one tensor (tied weights): they share one again.
        tensors = {}
        for fqn, var in params.items():
            if var not in tensors:
                tensors[var] = torch.nn.Parameter(host[fqn].clone(),
                                                  requires_grad=requires_grad.get(fqn, True))
            _owner(self, fqn).register_parameter(fqn.rsplit(".", 1)[-1], tensors[var])
        for fqn, var in buffers.items():
            if var not in tensors:
                tensors[var] = host[fqn].clone()
            _owner(self, fqn).register_buffer(fqn.rsplit(".", 1)[-1], tensors[var])

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"this {self.exported_class} was loaded from a tilegraph export and "
                           "has no Python code; call the executor tilegraph.load returned")


def _owner(root, fqn):
    module = root
    for part in fqn.split(".")[:-1]:
        child = module._modules.get(part)
        if child is None:
            child = torch.nn.Module()
            module.add_module(part, child)
        module = child
    return module
