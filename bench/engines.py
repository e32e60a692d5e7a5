"""The engines a workload runs on. Each builder returns a callable that runs `steps`
training (or inference) steps on one micro-batch, so one call does the same work in every
engine: eager PyTorch and torch.compile loop in Python; tilegraph runs the steps as
deviceIterations inside one engine call; ONNX Runtime loops over `InferenceSession.run`.
All use the same thread count, batch, dtype (fp32) and optimizer (SGD, momentum 0.9).
"""
import contextlib
import os
import tempfile

import numpy as np
import torch

import tilegraph


def _loss_of(out):
    return out[-1] if isinstance(out, (tuple, list)) else out


def _sgd(model, lr):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def _python_train_loop(model, inputs, steps, lr, context=contextlib.nullcontext):
    """`context()` wraps each forward (bench/mixed_precision.py: bf16 autocast)."""
    opt = _sgd(model, lr)

    def call():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            with context():
                loss = _loss_of(model(*inputs))
            loss.backward()
            opt.step()
    return call


def eager_train(model, inputs, steps, lr, threads):
    model.train()
    return _python_train_loop(model, inputs, steps, lr)


def compiled_train(model, inputs, steps, lr, threads):
    """torch.compile (default Inductor) on the model; backward through AOTAutograd."""
    model.train()
    return _python_train_loop(torch.compile(model), inputs, steps, lr)


def _stacked(inputs, steps):
    return [torch.cat([t] * steps) for t in inputs]


def tilegraph_train(model, inputs, steps, lr, threads):
    model.train()
    opts = tilegraph.Options().deviceIterations(steps).setThreads(threads)
    engine = tilegraph.trainingModel(model, opts, _sgd(model, lr))
    stacked = _stacked(inputs, steps)
    call = lambda: engine(*stacked)  # noqa: E731
    call.engine = engine
    return call


def _python_infer_loop(model, inputs, steps, context=contextlib.nullcontext):
    def call():
        with torch.no_grad(), context():
            for _ in range(steps):
                model(*inputs)
    return call


def eager_infer(model, inputs, steps, threads):
    return _python_infer_loop(model.eval(), inputs, steps)


def compiled_infer(model, inputs, steps, threads):
    return _python_infer_loop(torch.compile(model.eval()), inputs, steps)


def tilegraph_infer(model, inputs, steps, threads):
    opts = tilegraph.Options().deviceIterations(steps).setThreads(threads)
    engine = tilegraph.inferenceModel(model.eval(), opts)
    stacked = _stacked(inputs, steps)
    call = lambda: engine(*stacked)  # noqa: E731
    call.engine = engine
    return call


def onnxruntime_infer(model, inputs, steps, threads):
    """torch.onnx.export (the TorchScript exporter, opset 17), then an ORT CPU session with
    every graph optimization, `threads` intra-op threads and sequential execution."""
    import onnxruntime as ort
    path = os.path.join(tempfile.mkdtemp(prefix="tg_bench_"), "model.onnx")
    names = [f"input{i}" for i in range(len(inputs))]
    with torch.no_grad():
        torch.onnx.export(model.eval(), tuple(inputs), path, input_names=names, opset_version=17,
                          dynamo=False)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    used = {i.name for i in session.get_inputs()}  # the exporter drops unused inputs
    feeds = {n: np.ascontiguousarray(t.numpy()) for n, t in zip(names, inputs) if n in used}

    def call():
        for _ in range(steps):
            session.run(None, feeds)
    return call


TRAIN = {"eager": eager_train, "torch.compile": compiled_train, "tilegraph": tilegraph_train}
INFER = {"eager": eager_infer, "torch.compile": compiled_infer,
         "onnxruntime": onnxruntime_infer, "tilegraph": tilegraph_infer}
