"""ONNX models through tilegraph: PopART's role, on the same C++ core as the PyTorch front end.

    import tilegraph.onnx as tgx
    sess = tgx.InferenceSession("resnet50.onnx")          # ONNX Runtime's surface
    (logits,) = sess.run(None, {"input": images})

    train = tgx.TrainingSession("mlp.onnx", loss="loss", optimizer=tgx.SGD(lr=0.05, momentum=0.9),
                                data_flow=tgx.DataFlow(batches_per_step=50, mode="sum"))
    out = train.run({"x": xs, "labels": ys})             # xs: [50, batch, ...]
    train.save("trained.onnx")

The import (ONNX -> tilegraph IR), autodiff, optimizer, compilation and execution are the C++
library's (src/onnx/, `tg::InferenceSession` / `tg::TrainingSession`); this module converts
arguments. tilegraph compiles static shapes: an InferenceSession compiles once per distinct set
of input shapes it is fed (symbolic dimensions take the fed sizes), a TrainingSession for the
shapes given in `input_shapes` or stated by the model.
"""
from dataclasses import dataclass, field
import os

import numpy as np

from . import _core

__all__ = ["DataFlow", "SGD", "Adam", "AdamW", "NodeArg", "InferenceSession", "TrainingSession",
           "supported_ops"]


def supported_ops():
    """The ONNX op types (default domain) tilegraph imports."""
    return list(_core.onnx_supported_ops())


@dataclass
class DataFlow:
    """How many steps one run takes and what of each anchor returns (PopART's DataFlow):
    mode "all" (every step: [batches_per_step, ...]), "final", "sum", or "every_n"."""
    batches_per_step: int = 1
    mode: str = "all"
    every_n: int = 1
    anchors: list = field(default_factory=list)  # value names; empty: the model's outputs


@dataclass
class SGD:
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    kind = "sgd"


@dataclass
class Adam:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    kind = "adam"


@dataclass
class AdamW(Adam):
    weight_decay: float = 0.01
    kind = "adamw"


@dataclass
class NodeArg:
    """An input or output as ONNX Runtime describes it."""
    name: str
    shape: list
    type: str


# Inputs up to this many elements may be compiled in as constants (value specialization).
_MAX_SPECIALIZED_ELEMENTS = 64
# A warning when one session has compiled this many times (value specialization).
_MANY_COMPILATIONS = 16
_NUMPY_OF = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "i64": np.int64,
             "i32": np.int32, "bool": np.bool_}
_ORT_TYPE = {1: "tensor(float)", 2: "tensor(uint8)", 3: "tensor(int8)", 5: "tensor(int16)",
             6: "tensor(int32)", 7: "tensor(int64)", 9: "tensor(bool)", 10: "tensor(float16)",
             11: "tensor(double)", 16: "tensor(bfloat16)"}


def _bf16_bits(a):
    """bfloat16 bits (uint16) of an ml_dtypes.bfloat16 or float array (round to nearest even)."""
    if a.dtype.name == "bfloat16" or a.dtype == np.uint16:
        return a.view(np.uint16)
    bits = np.asarray(a, dtype=np.float32, order="C").view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return np.where(np.isnan(a), 0x7FC0, rounded >> 16).astype(np.uint16)


def _from_engine(a, onnx_type):
    """bf16 outputs come back as uint16 bits: viewed as ml_dtypes.bfloat16 (onnx's own dtype)."""
    if onnx_type == "tensor(bfloat16)" and a.dtype == np.uint16:
        import ml_dtypes
        return a.view(ml_dtypes.bfloat16)
    return a


_NUMPY_OF_ORT = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                 "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                 "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
                 "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def _check_feed(arg, value, array):
    """A feed as ONNX Runtime checks it: an array of another element type than the input's
    is refused (not converted: int64 into int32 would wrap, floats into ints truncate), as is
    a rank or a fixed dimension other than the model declares (symbolic dimensions take any
    size). Python lists and numbers are converted, as ONNX Runtime converts them."""
    expected = _NUMPY_OF_ORT.get(arg.type)
    if expected is not None and isinstance(value, np.ndarray) and value.dtype != expected:
        actual = next((t for t, d in _NUMPY_OF_ORT.items() if d == value.dtype),
                      f"tensor({value.dtype})")
        raise TypeError(f"Unexpected input data type for input {arg.name!r}. Actual: ({actual}), "
                        f"expected: ({arg.type})")
    if array.ndim != len(arg.shape):
        raise ValueError(f"Invalid rank for input: {arg.name} Got: {array.ndim} Expected: "
                         f"{len(arg.shape)} Please fix either the inputs or the model.")
    wrong = [(i, got, want) for i, (got, want) in enumerate(zip(array.shape, arg.shape))
             if isinstance(want, int) and want >= 0 and got != want]
    if wrong:
        detail = "; ".join(f"index: {i} Got: {got} Expected: {want}" for i, got, want in wrong)
        raise ValueError(f"Got invalid dimensions for input: {arg.name} for the following "
                         f"indices: {detail}. Please fix either the inputs or the model.")


def _model_bytes(model):
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as f:
            return f.read()
    if hasattr(model, "SerializeToString"):  # an onnx.ModelProto
        return model.SerializeToString()
    raise TypeError(f"expected a path, bytes or an onnx.ModelProto, got {type(model).__name__}")


def _describe(values):
    return [NodeArg(name, list(dims), _ORT_TYPE.get(elem, f"tensor({elem})"))
            for name, elem, dims in values]


class _Session:
    def __init__(self, model):
        self._bytes = _model_bytes(model)
        inputs, outputs = _core.onnx_model_io(self._bytes)  # parsed by the C++ loader
        self._inputs = _describe(inputs)
        self._outputs = _describe(outputs)

    def get_inputs(self):
        return list(self._inputs)

    def get_outputs(self):
        return list(self._outputs)

    @staticmethod
    def _feed(sess, name, value, leading):
        """The feed in the session's dtype with `leading` axes added; its shape is checked by
        the engine (an error naming the input, never a silent reshape)."""
        dtype, _ = sess.input_type(name)
        if dtype == "bf16":  # as its uint16 bits (numpy has no bfloat16)
            a = np.asarray(_bf16_bits(np.asarray(value)), order="C")
        else:  # (not ascontiguousarray: it turns 0-d arrays into 1-d ones)
            a = np.asarray(value, dtype=_NUMPY_OF[dtype], order="C")
        return a.reshape(leading + a.shape) if leading else a


class InferenceSession(_Session):
    """ONNX Runtime's InferenceSession surface: run(output_names, input_feed) -> list of arrays.

    `sess_options` and `providers` are accepted for compatibility and ignored (tilegraph runs
    on its own CPU device). `input_shapes` fixes symbolic dimensions up front; otherwise each
    distinct set of fed shapes compiles once."""

    def __init__(self, path_or_bytes, sess_options=None, providers=None, *, input_shapes=None):
        super().__init__(path_or_bytes)
        self._fixed = {k: list(v) for k, v in (input_shapes or {}).items()}
        self._compiled = {}
        self._specialized = {}  # shapes -> inputs compiled in as constants

    def _session_for(self, arrays):
        """The compiled session for these feeds: one per set of input shapes, and when the
        model computes shapes, axes or sizes from small inputs (a Reshape's shape fed as an
        input), one per set of their values (value specialization: those inputs become
        constants of the compiled program)."""
        shapes = {n: list(a.shape) for n, a in arrays.items()}
        key = tuple(sorted((k, tuple(v)) for k, v in shapes.items()))
        if key in self._specialized:
            fixed = {n: arrays[n] for n in self._specialized[key]}
            vkey = key + tuple((n, a.dtype.str, a.tobytes()) for n, a in sorted(fixed.items()))
            if vkey not in self._compiled:
                if len(self._compiled) == _MANY_COMPILATIONS:
                    import warnings
                    warnings.warn(f"tilegraph.onnx: {_MANY_COMPILATIONS} compilations for this "
                                  f"model: inputs {sorted(fixed)} give shapes or sizes, and each "
                                  "new value of them compiles the model again", stacklevel=3)
                self._compiled[vkey] = _core.onnx_inference_session(
                    self._bytes, {**shapes, **self._fixed},
                    constant_inputs={n: np.asarray(a, order="C") for n, a in fixed.items()})
            return self._compiled[vkey], set(fixed)
        if key not in self._compiled:
            try:
                self._compiled[key] = _core.onnx_inference_session(
                    self._bytes, {**shapes, **self._fixed})
            except NotImplementedError as e:
                small = [n for n, a in arrays.items() if a.size <= _MAX_SPECIALIZED_ELEMENTS]
                if "must be known when the model is imported" not in str(e) or not small:
                    raise
                self._specialized[key] = small
                return self._session_for(arrays)
        return self._compiled[key], set()

    def run(self, output_names, input_feed, run_options=None):
        names = [i.name for i in self._inputs]
        missing = [n for n in names if n not in input_feed]
        extra = [n for n in input_feed if n not in names]
        if missing or extra:
            raise ValueError(f"input_feed: missing {missing}, unknown {extra} "
                             f"(the model's inputs are {names})")
        arrays = {n: np.asarray(input_feed[n]) for n in names}
        for arg in self._inputs:
            _check_feed(arg, input_feed[arg.name], arrays[arg.name])
        sess, fixed = self._session_for(arrays)
        fed = [n for n in names if n not in fixed]
        outs = sess.run([self._feed(sess, n, arrays[n], (1,)) for n in fed])
        types = {o.name: o.type for o in self._outputs}
        by_name = {n: _from_engine(o[0], types.get(n)) for n, o in zip(sess.anchor_names, outs)}
        wanted = output_names or [o.name for o in self._outputs]
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise ValueError(f"unknown output names {unknown} (outputs: {list(by_name)})")
        return [by_name[n] for n in wanted]


class TrainingSession(_Session):
    """Trains an ONNX model (PopART's TrainingSession): the loss is a scalar value of the model;
    the backward pass is tilegraph's C++ autodiff, the update its optimizer. run() takes each
    input as [batches_per_step, *shape] ([batches_per_step, replicas, *shape] with replicas > 1:
    data parallelism, gradients averaged over the replicas) and returns the anchors by name,
    as data_flow says. `trainable` names the initializers to train (default: every
    floating-point one)."""

    def __init__(self, model, loss, optimizer=None, data_flow=None, *, input_shapes=None,
                 replicas=1, seed=0, trainable=None):
        super().__init__(model)
        optimizer = optimizer or SGD()
        self.data_flow = data_flow or DataFlow()
        hyper = {k: float(v) for k, v in vars(optimizer).items()}
        f = self.data_flow
        self._sess = _core.onnx_training_session(
            self._bytes, loss, optimizer.kind, hyper,
            {k: list(v) for k, v in (input_shapes or {}).items()},
            batches_per_step=f.batches_per_step, mode=f.mode, every_n=f.every_n,
            anchors=list(f.anchors), replicas=replicas, seed=seed,
            trainable=list(trainable or []))

    @property
    def input_names(self):
        return list(self._sess.input_names)

    def run(self, inputs):
        """inputs: {name: array [batches_per_step, *shape]} or a list in the model's order."""
        names = self._sess.input_names
        if isinstance(inputs, dict):
            missing = [n for n in names if n not in inputs]
            if missing:
                raise ValueError(f"missing inputs {missing} (the model's inputs are {names})")
            inputs = [inputs[n] for n in names]
        outs = self._sess.run([self._feed(self._sess, n, a, ()) for n, a in zip(names, inputs)])
        return dict(zip(self._sess.anchor_names, outs))

    def weights(self):
        """The current weights by initializer name (copies)."""
        return {n: self._sess.read_weight(n) for n in self._sess.weight_names}

    def write_weights(self, weights):
        for n, a in weights.items():
            self._sess.write_weight(n, np.asarray(a, order="C"))

    def set_learning_rate(self, lr):
        self._sess.set_learning_rate(float(lr))

    def model_bytes(self):
        """The model with the trained weights as initializers (PopART's modelToHost)."""
        return self._sess.model_bytes()

    def save(self, path):
        self._sess.save_model(str(path))
