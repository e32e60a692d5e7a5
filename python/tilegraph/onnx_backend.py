"""tilegraph as an ONNX backend (`onnx.backend.base.Backend`), for the ONNX conformance tests.

    import tilegraph.onnx_backend as backend
    rep = backend.prepare(model)            # an onnx.ModelProto
    outputs = rep.run([x, y])               # numpy arrays in the graph's input order

Each prepare() compiles the model for the shapes of the first inputs it runs with (tilegraph
compiles static shapes); a run with other shapes compiles again.
"""
import numpy as np
from onnx.backend.base import Backend, BackendRep

from . import onnx as tgx


class TilegraphRep(BackendRep):
    def __init__(self, model):
        self._session = tgx.InferenceSession(model)
        self._names = [i.name for i in self._session.get_inputs()]

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            feed = dict(inputs)
        else:
            if not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
            if len(inputs) != len(self._names):
                raise ValueError(f"expected {len(self._names)} inputs ({self._names}), "
                                 f"got {len(inputs)}")
            feed = dict(zip(self._names, inputs))
        return tuple(self._session.run(None, {k: np.asarray(v) for k, v in feed.items()}))


class TilegraphBackend(Backend):
    @classmethod
    def supports_device(cls, device):
        return device.upper().startswith("CPU")

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        super().prepare(model, device, **kwargs)
        return TilegraphRep(model)

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device="CPU", outputs_info=None, **kwargs):
        raise NotImplementedError("tilegraph runs whole models: use run_model / prepare")


prepare = TilegraphBackend.prepare
run_model = TilegraphBackend.run_model
supports_device = TilegraphBackend.supports_device
