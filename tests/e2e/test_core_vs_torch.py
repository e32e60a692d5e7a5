"""The C++ core driven through the bindings, against eager PyTorch.

These build models by hand with `tilegraph.Graph` (the front end that captures nn.Modules
is a separate layer) and check forward outputs, gradients and weights after several
optimizer steps against torch, with fp32 tolerances.
"""
import numpy as np
import pytest
import torch

import tilegraph as tg


def linear(g, x, w, b):
    (y,) = g.op("matmul", [x, w], {"transpose_b": True})
    (y,) = g.op("add", [y, b])
    return y


def build_mlp(batch, din, dhidden, dout):
    g = tg.Graph("mlp")
    x = g.add_input("x", "f32", [batch, din])
    t = g.add_input("t", "i64", [batch])
    params = {
        "fc1.weight": [dhidden, din], "fc1.bias": [dhidden],
        "fc2.weight": [dout, dhidden], "fc2.bias": [dout],
    }
    for name, shape in params.items():
        g.add_variable(name, "f32", shape)
    (h,) = g.op("gelu", [linear(g, x, "fc1.weight", "fc1.bias")])
    logits = linear(g, h, "fc2.weight", "fc2.bias")
    (logp,) = g.op("log_softmax", [logits], {"axis": 1})
    (loss,) = g.op("nll_loss", [logp, t])
    g.add_output(loss)
    g.add_output(logits)
    return g, loss, list(params)


class TorchMLP(torch.nn.Module):
    def __init__(self, din, dhidden, dout):
        super().__init__()
        self.fc1 = torch.nn.Linear(din, dhidden)
        self.fc2 = torch.nn.Linear(dhidden, dout)

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def load_weights(exe, model):
    for name, p in model.named_parameters():
        exe.write_variable(name, p.detach().numpy().copy())


@pytest.mark.parametrize("device", ["cpu", "reference"])
def test_forward_and_gradients_match_torch(device):
    batch, din, dh, dout = 8, 12, 32, 5
    g, loss, names = build_mlp(batch, din, dh, dout)
    grads = g.gradients(loss, names)
    for gname in grads:
        g.add_output(gname)
    exe = tg.Executable.compile(g, training=True, device=device)
    assert exe.device.startswith(device)
    model = TorchMLP(din, dh, dout)
    load_weights(exe, model)
    x = torch.randn(batch, din)
    t = torch.randint(0, dout, (batch,))
    out = exe.run([x.numpy()[None], t.numpy()[None]], steps=1, mode="final")
    logits = model(x)
    ref_loss = torch.nn.functional.cross_entropy(logits, t)
    ref_loss.backward()
    np.testing.assert_allclose(out[0], ref_loss.item(), rtol=1e-5)
    np.testing.assert_allclose(out[1], logits.detach().numpy(), rtol=1e-5, atol=1e-6)
    for name, got in zip(names, out[2:]):
        ref = dict(model.named_parameters())[name].grad.numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("kind", ["sgd", "adamw", "adam", "rmsprop"])
def test_training_steps_match_torch_optim(kind):
    batch, din, dh, dout, steps = 16, 10, 24, 4, 30
    g, loss, names = build_mlp(batch, din, dh, dout)
    hyper = {
        "sgd": dict(lr=0.05, momentum=0.9, weight_decay=1e-4),
        "adamw": dict(lr=3e-3, weight_decay=0.05),
        "adam": dict(lr=3e-3, weight_decay=1e-3),
        "rmsprop": dict(lr=1e-3, momentum=0.5, alpha=0.9),
    }[kind]
    info = g.add_training_step(loss, kind, [dict(params=names, **hyper)],
                               use_momentum=hyper.get("momentum", 0) != 0)
    exe = tg.Executable.compile(g, training=True)
    for name, value in info["hyperparams"].items():
        exe.set_hyperparam(name, value)
    model = TorchMLP(din, dh, dout)
    load_weights(exe, model)
    opt = {
        "sgd": lambda p: torch.optim.SGD(p, **hyper),
        "adamw": lambda p: torch.optim.AdamW(p, **hyper),
        "adam": lambda p: torch.optim.Adam(p, **hyper),
        "rmsprop": lambda p: torch.optim.RMSprop(p, **hyper),
    }[kind](model.parameters())
    xs = torch.randn(steps, batch, din)
    ts = torch.randint(0, dout, (steps, batch))
    ref_losses = []
    for s in range(steps):
        opt.zero_grad()
        l = torch.nn.functional.cross_entropy(model(xs[s]), ts[s])
        l.backward()
        opt.step()
        ref_losses.append(l.item())
    out = exe.run([xs.numpy(), ts.numpy()], steps=steps, mode="all")
    np.testing.assert_allclose(out[0], ref_losses, rtol=1e-4, atol=1e-6)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(exe.read_variable(name), p.detach().numpy(),
                                   rtol=1e-4, atol=1e-5, err_msg=name)


def test_errors_map_to_python_exceptions():
    g, loss, names = build_mlp(4, 3, 5, 2)
    exe = tg.Executable.compile(g, training=False)
    with pytest.raises(ValueError, match="expected shape"):
        exe.run([np.zeros((1, 4, 7), np.float32), np.zeros((1, 4), np.int64)])
    out = exe.run([np.zeros((1, 4, 3), np.float32), np.zeros((1, 4), np.int64)])
    assert out[1].shape == (4, 2)
    with pytest.raises(NotImplementedError, match="unknown op"):
        g.op("no_such_op", [loss])
    with pytest.raises(ValueError):
        g.op("matmul", ["fc1.weight", "fc1.weight"])  # [5,3] @ [5,3]
    with pytest.raises(ValueError, match="2:14: unknown dtype"):
        tg.Graph.parse("graph g {\n  input %x : f99[2]\n}")
