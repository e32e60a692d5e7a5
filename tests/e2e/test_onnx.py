"""The ONNX front end (tilegraph.onnx, PopART's role): models exported by torch.onnx.export run
inference matching ONNX Runtime and train in tilegraph's C++ TrainingSession with the weights
eager PyTorch (and tilegraph's PyTorch front end) reach; bad files give errors, never crashes."""
import io
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tilegraph
import tilegraph.onnx as tgx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def export(model, args, names, outputs, **kw):
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, f, input_names=names, output_names=outputs, dynamo=False,
                          **kw)
    return f.getvalue()


def close(got, ref, rtol):
    ref = np.asarray(ref)
    scale = max(float(np.abs(ref).max()), 1e-6)
    assert got.shape == ref.shape
    assert float(np.abs(got - ref).max()) <= rtol * scale, float(np.abs(got - ref).max()) / scale


# ---- inference against ONNX Runtime --------------------------------------------------------

def test_resnet50_matches_onnxruntime():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    x = torch.randn(2, 3, 64, 64)
    data = export(model, (x,), ["images"], ["logits"])
    ref = ort.InferenceSession(data).run(None, {"images": x.numpy()})[0]
    got = tgx.InferenceSession(data).run(None, {"images": x.numpy()})[0]
    close(got, ref, 1e-5)


def _bert():
    tf = pytest.importorskip("transformers")
    cfg = tf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, vocab_size=128, max_position_embeddings=32)
    bert = tf.BertModel(cfg).eval()

    class Outputs(nn.Module):  # keyword arguments, as users call it
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, ids, mask):
            out = self.bert(input_ids=ids, attention_mask=mask)
            return out.last_hidden_state, out.pooler_output
    return Outputs()


def test_bert_matches_onnxruntime_with_symbolic_batch():
    torch.manual_seed(0)
    model = _bert()
    ids = torch.randint(0, 128, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0
    data = export(model, (ids, mask), ["input_ids", "attention_mask"], ["hidden", "pooled"],
                  dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}})
    sess = tgx.InferenceSession(data)
    assert sess.get_inputs()[0].shape == ["batch", 16]
    ref_sess = ort.InferenceSession(data)
    for batch in (2, 3):  # each batch size compiles once
        feed = {"input_ids": torch.randint(0, 128, (batch, 16)).numpy(),
                "attention_mask": np.ones((batch, 16), np.int64)}
        for got, ref in zip(sess.run(None, feed), ref_sess.run(None, feed)):
            close(got, ref, 1e-5)
    only = sess.run(["pooled"], feed)
    assert len(only) == 1 and only[0].shape == (3, 64)


def test_torch_export_dynamo_exporter():
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    x = torch.randn(2, 3, 16, 16)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, input_names=["x"], output_names=["y"], dynamo=True,
                          verbose=False)
    data = f.getvalue()
    got = tgx.InferenceSession(data).run(None, {"x": x.numpy()})[0]
    close(got, model(x).detach().numpy(), 1e-5)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_recurrent_layers_match_pytorch(kind):
    """nn.LSTM / GRU / RNN (2 layers, bidirectional, batch_first) exported to ONNX's recurrent
    ops, unrolled at import."""
    torch.manual_seed(0)
    layer = getattr(nn, kind)(6, 8, num_layers=2, bidirectional=True, batch_first=True).eval()
    x = torch.randn(3, 5, 6)
    data = export(layer, (x,), ["x"], ["y", "h"], opset_version=17)
    got = tgx.InferenceSession(data).run(None, {"x": x.numpy()})
    want = layer(x)
    close(got[0], want[0].detach().numpy(), 1e-5)
    h = want[1][0] if kind == "LSTM" else want[1]
    close(got[1], h.detach().numpy(), 1e-5)


def test_gru_trains_like_eager():
    torch.manual_seed(0)

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru, self.out = nn.GRU(4, 8, batch_first=True), nn.Linear(8, 3)

        def forward(self, x, y):
            return F.cross_entropy(self.out(self.gru(x)[0][:, -1]), y)
    model, eager = Tagger(), Tagger()
    eager.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(4)
    xs, ys = torch.randn(4, 6, 5, 4, generator=g), torch.randint(0, 3, (4, 6), generator=g)
    data = export(model, (xs[0], ys[0]), ["x", "y"], ["loss"], opset_version=17,
                  do_constant_folding=False)
    sess = tgx.TrainingSession(data, "loss", tgx.SGD(lr=0.1), tgx.DataFlow(batches_per_step=4))
    losses = sess.run({"x": xs.numpy(), "y": ys.numpy()})["loss"]
    np.testing.assert_allclose(losses, _eager_steps(eager, torch.optim.SGD(eager.parameters(), lr=0.1), xs, ys),
                               rtol=1e-5)
    assert set(sess.weights()) >= {"out.weight", "out.bias"}


def test_slice_to_the_end_with_int64_max():
    """torch.onnx.export writes `x[:, 1:]` as Slice(ends=INT64_MAX): read exactly, not through
    a double (which made the end negative and the slice silently empty)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [helper.make_tensor("s", TensorProto.INT64, [1], [1]),
             helper.make_tensor("e", TensorProto.INT64, [1], [2**63 - 1]),
             helper.make_tensor("a", TensorProto.INT64, [1], [1])]
    model = helper.make_model(
        helper.make_graph([helper.make_node("Slice", ["x", "s", "e", "a"], ["y"])], "g", [x], [y],
                          inits), opset_imports=[helper.make_opsetid("", 17)])
    data = np.arange(10, dtype=np.float32).reshape(2, 5)
    np.testing.assert_array_equal(tgx.InferenceSession(model).run(None, {"x": data})[0], data[:, 1:])


def test_shapes_given_by_inputs_are_value_specialized():
    """A Reshape whose target shape is a graph input: compiled once per shape value."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
                              [x, shape], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = tgx.InferenceSession(model)
    data = np.arange(12, dtype=np.float32).reshape(2, 6)
    for s in ([3, 4], [4, 3], [-1, 2]):
        (out,) = sess.run(None, {"x": data, "shape": np.array(s, np.int64)})
        np.testing.assert_array_equal(out, data.reshape(s))


# ---- export: tilegraph's IR back to ONNX ---------------------------------------------------

@pytest.mark.parametrize("family", ["resnet18", "transformer"])
def test_export_of_the_pytorch_front_ends_graph_runs_in_onnxruntime(family, tmp_path):
    torch.manual_seed(0)
    if family == "resnet18":
        torchvision = pytest.importorskip("torchvision")
        model = torchvision.models.resnet18().eval()
        x = torch.randn(2, 3, 64, 64)
    else:
        model = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True).eval()
        x = torch.randn(2, 10, 32)
    im = tilegraph.inferenceModel(model)
    ours = im(x).numpy()
    path = tmp_path / "exported.onnx"
    im.exportOnnx(path)
    sess = ort.InferenceSession(str(path))
    (ref,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    close(ref, ours, 1e-5)
    close(ref, model(x).detach().numpy(), 1e-5)
    (back,) = tgx.InferenceSession(str(path)).run(None, {sess.get_inputs()[0].name: x.numpy()})
    close(back, ours, 1e-6)  # and tilegraph imports its own export


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_export_of_recurrent_layers_compiled_to_layer_ops_runs_in_onnxruntime(kind, tmp_path):
    """nn.LSTM / nn.GRU compile to lstm_layer / gru_layer ops (one per layer and direction);
    the export writes each unrolled over its steps in plain ONNX ops, with the same outputs
    and final states."""
    torch.manual_seed(0)
    model = getattr(nn, kind)(5, 4, num_layers=2, bidirectional=True, batch_first=True).eval()
    x = torch.randn(2, 6, 5)
    im = tilegraph.inferenceModel(model)
    out, state = im(x)
    path = tmp_path / "recurrent.onnx"
    im.exportOnnx(path)
    sess = ort.InferenceSession(str(path))
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    want_out, want_state = model(x)
    ours = (out, *state) if kind == "LSTM" else (out, state)
    eager = (want_out, *want_state) if kind == "LSTM" else (want_out, want_state)
    assert len(got) == len(ours)
    for ref, mine, want in zip(got, ours, eager):
        close(ref, mine.numpy(), 1e-5)
        close(ref, want.detach().numpy(), 1e-5)


def test_export_of_det_and_a_clear_refusal_for_ops_onnx_lacks(tmp_path):
    """det exports as ONNX Det and the triangle op (householder_product's reflectors) as
    Trilu (onnxruntime agrees); a Cholesky factorization, which ONNX has no op for, is
    refused naming the node and the user's line."""
    class Det(nn.Module):
        def forward(self, x):
            q = torch.linalg.householder_product(x, torch.full((3, 3), 0.5))
            return torch.linalg.det(x @ x.mT + torch.eye(4)), q

    class Chol(nn.Module):
        def forward(self, x):
            return torch.linalg.cholesky(x @ x.mT + torch.eye(4))

    x = torch.randn(3, 4, 4)
    im = tilegraph.inferenceModel(Det())
    ours = im(x)
    im.exportOnnx(tmp_path / "det.onnx")
    sess = ort.InferenceSession(str(tmp_path / "det.onnx"))
    refs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    assert {n.op_type for n in onnx.load(str(tmp_path / "det.onnx")).graph.node} >= {"Det",
                                                                                     "Trilu"}
    for ref, got in zip(refs, ours):
        close(ref, got.numpy(), 1e-5)
    im = tilegraph.inferenceModel(Chol())
    im(x)
    with pytest.raises(NotImplementedError, match="cholesky.*test_onnx.py"):
        im.exportOnnx(tmp_path / "chol.onnx")


def test_export_refuses_training_models():
    model = nn.Linear(3, 2)
    tm = tilegraph.trainingModel(model, tilegraph.Options(), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="inference"):
        tm.exportOnnx("/nonexistent/never_written.onnx")


# ---- training in the C++ TrainingSession ---------------------------------------------------

class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x, labels):
        h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return F.cross_entropy(self.fc(h.flatten(1)), labels)


def _eager_steps(model, opt, xs, ys):
    """Eager PyTorch training, one step per leading index of xs / ys: the losses."""
    losses = []
    for x, y in zip(xs, ys):
        opt.zero_grad()
        loss = model(x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _training_data(steps, batch=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(steps, batch, 3, 8, 8, generator=g),
            torch.randint(0, 10, (steps, batch), generator=g))


def test_training_session_matches_eager_and_the_pytorch_front_end():
    torch.manual_seed(0)
    model = ConvNet()
    steps = 6
    xs, ys = _training_data(steps)
    data = export(model, (xs[0], ys[0]), ["x", "labels"], ["loss"],
                  training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
                  opset_version=17)
    eager = ConvNet()
    eager.load_state_dict(model.state_dict())
    front = ConvNet()
    front.load_state_dict(model.state_dict())

    sess = tgx.TrainingSession(data, loss="loss", optimizer=tgx.SGD(lr=0.05, momentum=0.9),
                               data_flow=tgx.DataFlow(batches_per_step=steps, mode="all"))
    losses = sess.run({"x": xs.numpy(), "labels": ys.numpy()})["loss"]

    eager_losses = _eager_steps(eager, torch.optim.SGD(eager.parameters(), lr=0.05, momentum=0.9),
                                xs, ys)
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-4)

    opts = tilegraph.Options()
    tm = tilegraph.trainingModel(front, opts, tilegraph.optim.SGD(front.parameters(), lr=0.05,
                                                                  momentum=0.9))
    for s in range(steps):
        tm(xs[s], ys[s])
    tm.copyWeightsToHost()
    weights = sess.weights()
    for name, p in eager.named_parameters():
        close(weights[name], p.detach().numpy(), 1e-4)
        close(weights[name], dict(front.named_parameters())[name].detach().numpy(), 1e-4)
    # The running mean follows ONNX's momentum rule (0.9 * running + 0.1 * batch, as PyTorch's
    # momentum=0.1); the running variance is the population one per the ONNX spec (PyTorch
    # keeps the unbiased one), so only the mean is compared.
    close(weights["bn.running_mean"], eager.bn.running_mean.numpy(), 1e-4)


def test_cpp_onnx_train_program_matches_eager(tmp_path):
    """examples/cpp/onnx_train (C++ only: no Python in the process) trains the exported model
    from raw input files; its saved weights match eager PyTorch's after the same steps."""
    program = ROOT / "build" / "onnx_train"
    if not program.exists():
        pytest.fail(f"{program} is not built (scripts/setup.sh builds it)")
    torch.manual_seed(0)
    model, eager = ConvNet(), ConvNet()
    eager.load_state_dict(model.state_dict())
    steps = 4
    xs, ys = _training_data(steps, seed=5)
    path = tmp_path / "convnet.onnx"
    path.write_bytes(export(model, (xs[0], ys[0]), ["x", "labels"], ["loss"],
                            training=torch.onnx.TrainingMode.TRAINING,
                            do_constant_folding=False, opset_version=17))
    xs.numpy().tofile(tmp_path / "x.bin")
    ys.numpy().tofile(tmp_path / "labels.bin")
    r = subprocess.run([str(program), str(path), "--loss", "loss", "--steps", str(steps),
                        "--lr", "0.05", "--momentum", "0.9", "--input", f"x={tmp_path / 'x.bin'}",
                        "--input", f"labels={tmp_path / 'labels.bin'}",
                        "--save", str(tmp_path / "trained.onnx")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    losses = [float(line.split()[-1]) for line in r.stdout.splitlines()]
    eager_losses = _eager_steps(eager, torch.optim.SGD(eager.parameters(), lr=0.05, momentum=0.9),
                                xs, ys)
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-4)
    trained = {t.name: onnx.numpy_helper.to_array(t)
               for t in onnx.load(str(tmp_path / "trained.onnx")).graph.initializer}
    for name, p in eager.named_parameters():
        close(trained[name], p.detach().numpy(), 1e-4)


def test_trained_model_saves_and_runs_in_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))

    class WithLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x, y):
            return F.mse_loss(self.net(x), y), self.net(x)
    x, y = torch.randn(4, 6), torch.randn(4, 3)
    data = export(WithLoss(), (x, y), ["x", "y"], ["loss", "pred"], opset_version=17,
                  do_constant_folding=False)
    sess = tgx.TrainingSession(data, loss="loss", optimizer=tgx.Adam(lr=1e-2),
                               data_flow=tgx.DataFlow(batches_per_step=20, mode="final"))
    first = None
    for _ in range(3):
        out = sess.run({"x": np.repeat(x.numpy()[None], 20, 0),
                        "y": np.repeat(y.numpy()[None], 20, 0)})
        first = first if first is not None else float(out["loss"])
    assert float(out["loss"]) < 0.5 * first
    path = tmp_path / "trained.onnx"
    sess.save(path)
    loss, pred = ort.InferenceSession(str(path)).run(None, {"x": x.numpy(), "y": y.numpy()})
    trained = tgx.InferenceSession(str(path)).run(None, {"x": x.numpy(), "y": y.numpy()})
    close(trained[1], pred, 1e-5)
    assert float(loss) < 0.5 * first


def test_adam_training_matches_eager():
    torch.manual_seed(0)

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(12, 32), nn.Linear(32, 4)

        def forward(self, x, t):
            return F.cross_entropy(self.b(F.gelu(self.a(x))), t)
    model, eager = Mlp(), Mlp()
    eager.load_state_dict(model.state_dict())
    steps = 10
    g = torch.Generator().manual_seed(3)
    xs, ts = torch.randn(steps, 16, 12, generator=g), torch.randint(0, 4, (steps, 16), generator=g)
    data = export(model, (xs[0], ts[0]), ["x", "t"], ["loss"], opset_version=17,
                  do_constant_folding=False)
    sess = tgx.TrainingSession(data, "loss", tgx.Adam(lr=1e-3),
                               tgx.DataFlow(batches_per_step=steps, mode="sum"))
    total = sess.run([xs.numpy(), ts.numpy()])["loss"]
    eager_total = sum(_eager_steps(eager, torch.optim.Adam(eager.parameters(), lr=1e-3), xs, ts))
    np.testing.assert_allclose(float(total), eager_total, rtol=1e-5)
    for name, p in eager.named_parameters():
        close(sess.weights()[name], p.detach().numpy(), 1e-4)


def test_training_session_with_replicas_matches_one_replica_on_the_whole_batch():
    """Data parallelism: 2 replicas on half batches (mean-reduced gradients) train like one
    replica on the whole batch. Feeds are [steps, replicas, ...]."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))

    class WithLoss(nn.Module):
        def __init__(self, batch):
            super().__init__()
            self.net, self.batch = model, batch

        def forward(self, x, y):
            return F.cross_entropy(self.net(x), y)
    steps, batch = 3, 8
    g = torch.Generator().manual_seed(2)
    xs, ys = torch.randn(steps, batch, 6, generator=g), torch.randint(0, 3, (steps, batch), generator=g)
    whole = export(WithLoss(batch), (xs[0], ys[0]), ["x", "y"], ["loss"], opset_version=17,
                   do_constant_folding=False)
    half = export(WithLoss(batch // 2), (xs[0, :4], ys[0, :4]), ["x", "y"], ["loss"],
                  opset_version=17, do_constant_folding=False)
    one = tgx.TrainingSession(whole, "loss", tgx.SGD(lr=0.1), tgx.DataFlow(batches_per_step=steps))
    one.run({"x": xs.numpy(), "y": ys.numpy()})
    two = tgx.TrainingSession(half, "loss", tgx.SGD(lr=0.1), tgx.DataFlow(batches_per_step=steps),
                              replicas=2)
    losses = two.run({"x": xs.reshape(steps, 2, 4, 6).numpy(), "y": ys.reshape(steps, 2, 4).numpy()})
    assert losses["loss"].shape == (steps, 2)
    for name, w in one.weights().items():
        close(two.weights()[name], w, 1e-5)


def test_data_flow_modes():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    nodes = [helper.make_node("Mul", ["x", "w"], ["xw"]),
             helper.make_node("ReduceSum", ["xw"], ["y"], keepdims=0)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    xs = np.arange(12, dtype=np.float32).reshape(4, 3)
    expect = xs @ np.array([1.0, 2.0, 3.0], np.float32)
    for mode, every_n, want in (("all", 1, expect), ("final", 1, expect[-1]),
                                ("sum", 1, expect.sum()), ("every_n", 2, expect[1::2])):
        sess = tgx.TrainingSession(model, "y", tgx.SGD(lr=0.0),
                                   tgx.DataFlow(batches_per_step=4, mode=mode, every_n=every_n))
        np.testing.assert_allclose(sess.run([xs])["y"], want, rtol=1e-6)


def test_keras_cnn_through_tf2onnx_trains_like_keras():
    """A Keras CNN converted by tf2onnx (with a loss appended) and trained by tilegraph for 5
    SGD steps: per-step losses and every weight as Keras' own training gives (a child process:
    TensorFlow stays out of this one). tensorflow-cpu and tf2onnx are installed by setup."""
    import json
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "e2e" / "keras_child.py")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["ours"], result["keras"], rtol=1e-5)
    assert len(result["weights"]) == 4
    for name, diff in result["weights"].items():
        assert diff is not None and diff < 1e-5, (name, diff)


# ---- errors, never crashes -----------------------------------------------------------------

def _tiny_model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], list(np.linspace(-1, 1, 12)))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["y"], name="act")]
    return helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], [w]),
                             opset_imports=[helper.make_opsetid("", 17)])


def test_unsupported_ops_are_listed_at_once_with_node_names():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="fine"),
             helper.make_node("Unique", ["a"], ["b"], name="first_bad"),
             helper.make_node("MyCustom", ["b"], ["y"], name="second_bad", domain="com.example")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid("com.example", 1)])
    with pytest.raises(NotImplementedError) as e:
        tgx.InferenceSession(model.SerializeToString()).run(None, {"x": np.zeros(4, np.float32)})
    msg = str(e.value)
    assert "2 ONNX node(s)" in msg and "'first_bad' (Unique)" in msg
    assert "'second_bad' (MyCustom) of domain 'com.example'" in msg


def test_malformed_and_hostile_files_are_errors():
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        tgx.InferenceSession(b"\x08\x07garbage\xff\xff\xff").run(None, {})
    good = _tiny_model().SerializeToString()
    with pytest.raises(ValueError):
        tgx.TrainingSession(good[: len(good) // 2], loss="y")
    # External data would make the loader open other paths: refused.
    model = _tiny_model()
    w = model.graph.initializer[0]
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    entry = w.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    with pytest.raises(NotImplementedError, match="external file"):
        tgx.TrainingSession(model.SerializeToString(), loss="y")
    # Symbolic dimensions need shapes for a training session.
    model = _tiny_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with pytest.raises(ValueError, match="input_shapes"):
        tgx.TrainingSession(model.SerializeToString(), loss="y")
    sess = tgx.InferenceSession(model.SerializeToString(), input_shapes={"x": [5, 4]})
    assert sess.run(None, {"x": np.ones((5, 4), np.float32)})[0].shape == (5, 3)
    with pytest.raises(ValueError, match="expected"):  # a feed of another shape
        sess.run(None, {"x": np.zeros((2, 4), np.float32)})


def test_feeds_are_checked_as_onnx_runtime_checks_them():
    """An array of another element type is refused, not converted (int64 into an int32 input
    would wrap, floats into ints truncate); a rank or fixed dimension other than the model's
    is refused; lists are converted, symbolic dimensions take any size."""
    i = helper.make_tensor_value_info("i", TensorProto.INT32, ["n"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    o = helper.make_tensor_value_info("o", TensorProto.INT32, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["i", "i"], ["o"]), helper.make_node("Relu", ["x"], ["y"])],
        "g", [i, x], [o, y]), opset_imports=[helper.make_opsetid("", 17)])
    sess = tgx.InferenceSession(model.SerializeToString())
    x_ok = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match=r"Actual: \(tensor\(int64\)\), expected: \(tensor\(int32"):
        sess.run(None, {"i": np.array([2 ** 32 + 5, 3]), "x": x_ok})
    with pytest.raises(TypeError, match="tensor\\(double\\)"):
        sess.run(None, {"i": np.array([1], np.int32), "x": x_ok.astype(np.float64)})
    with pytest.raises(ValueError, match="Invalid rank for input: x Got: 1 Expected: 2"):
        sess.run(None, {"i": np.array([1], np.int32), "x": np.ones(6, np.float32)})
    with pytest.raises(ValueError, match="index: 1 Got: 4 Expected: 3"):
        sess.run(None, {"i": np.array([1], np.int32), "x": np.ones((2, 4), np.float32)})
    o_, y_ = sess.run(None, {"i": np.array([1, 2, 3], np.int32), "x": [[1.0, -2, 3]] * 2})
    assert o_.tolist() == [2, 4, 6] and y_.tolist() == [[1.0, 0.0, 3.0]] * 2


def test_a_one_hot_depth_beyond_what_is_built_at_import_is_refused():
    """OneHot's classes are built on the host at import: a 99-byte model asking for 2^40 of
    them is refused (it ran the process out of memory), as Range's bound refuses."""
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    for depth in (2 ** 40, -4, 0):
        nodes = [helper.make_node("Constant", [], ["d"], value=helper.make_tensor(
                     "d", TensorProto.INT64, [], [depth])),
                 helper.make_node("Constant", [], ["v"], value=helper.make_tensor(
                     "v", TensorProto.FLOAT, [2], [0.0, 1.0])),
                 helper.make_node("OneHot", ["idx", "d", "v"], ["y"])]
        model = helper.make_model(helper.make_graph(nodes, "g", [idx], [y]),
                                  opset_imports=[helper.make_opsetid("", 17)])
        with pytest.raises(ValueError, match="OneHot: depth"):
            tgx.InferenceSession(model.SerializeToString()).run(
                None, {"idx": np.array([0, 1, 2])})


def _one_node_model(node, x_shape, x_type=TensorProto.FLOAT, extra_inputs=()):
    x = helper.make_tensor_value_info("x", x_type, x_shape)
    inputs = [x] + [helper.make_tensor_value_info(n, t, s) for n, t, s in extra_inputs]
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output]
    return helper.make_model(helper.make_graph([node], "g", inputs, outputs),
                             opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_attributes_and_split_sizes_are_checked_as_onnx_runtime_checks_them():
    """An attribute of the wrong type (Softmax's axis as a string ran as axis 0), Split sizes
    that are negative but add up to the axis (ran), and GatherElements' range error names
    the axis it indexes (it named dimension 0)."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    node = helper.make_node("Softmax", ["x"], ["y"], name="sm", axis="zero")
    with pytest.raises(ValueError, match="attribute 'axis' is STRING, expected INT"):
        tgx.InferenceSession(_one_node_model(node, [2, 3])).run(None, {"x": x})
    split = helper.make_tensor("s", TensorProto.INT64, [2], [5, -2])
    node = helper.make_node("Split", ["x", "s"], ["a", "b"], axis=1)
    model = helper.make_model(helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in "ab"], [split]),
        opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with pytest.raises(ValueError, match="Split: size -2 is negative"):
        tgx.InferenceSession(model).run(None, {"x": x})
    node = helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1)
    model = _one_node_model(node, [2, 3], extra_inputs=[("i", TensorProto.INT64, [2, 1])])
    sess = tgx.InferenceSession(model)
    assert sess.run(None, {"x": x, "i": np.array([[2], [-1]])})[0].tolist() == [[2.0], [5.0]]
    with pytest.raises(RuntimeError, match="out of bounds for dimension 1 with size 3"):
        sess.run(None, {"x": x, "i": np.array([[3], [0]])})


def test_scatter_elements_reductions_match_numpy():
    """ScatterElements with reduction add, mul, max and min (repeated positions, a negative
    index) against numpy's unbuffered ufunc.at."""
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    index = np.array([[0, 2, 2], [-1, 0, 0]])
    updates = np.array([[2.0, -1.0, 0.5], [3.0, 4.0, -2.0]], dtype=np.float32)
    ufuncs = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}
    for reduction, ufunc in ufuncs.items():
        node = helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=1,
                                reduction=reduction)
        model = _one_node_model(node, [2, 3], extra_inputs=[("i", TensorProto.INT64, [2, 3]),
                                                            ("u", TensorProto.FLOAT, [2, 3])])
        want = x.copy()
        for r in range(2):
            ufunc.at(want[r], index[r] % 3, updates[r])
        got = tgx.InferenceSession(model).run(None, {"x": x, "i": index, "u": updates})[0]
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=reduction)


def test_fuzzed_models_never_crash():
    """Truncated and mutated protobufs of a small CNN: each loads and runs or raises a Python
    exception (the child process exits normally); a crash fails with the seed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    data = export(model.eval(), (torch.randn(1, 1, 6, 6),), ["x"], ["y"])
    path = ROOT / "build" / "fuzz_seed.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    child = ROOT / "tests" / "e2e" / "onnx_fuzz_child.py"
    r = subprocess.run([sys.executable, str(child), str(path), "400"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "outcomes:" in r.stdout


# ---- the conformance suite --------------------------------------------------------------------

def test_onnx_backend_conformance(tmp_path):
    """The onnx package's backend tests through tilegraph.onnx_backend: no crash or hang on any
    model, and >= 90% of the tests whose ops and dtypes tilegraph has pass."""
    out = tmp_path / "results.json"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "onnx_conformance.py"), "--no-write",
                        "--json", str(out)], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    results = json.loads(out.read_text())
    supported = set(tgx.supported_ops())
    assert not [x for x in results if x["status"] in ("crash", "hang")]
    ours = [x for x in results if x["ops"] and all(o in supported for o in x["ops"])
            and x["status"] != "dtype not supported"]
    passed = sum(x["status"] == "pass" for x in ours)
    assert len(ours) > 1200 and passed / len(ours) >= 0.9, (passed, len(ours))
