"""The parity check most op tests share: a model trained by tilegraph and a deep copy
trained by eager PyTorch with the same SGD, step by step: equal losses every step and equal
parameters at the end (fp32 tolerances that mean something per op, ~1e-5)."""
import copy

import torch
import torch.nn.functional as F

import tilegraph


class Fn(torch.nn.Module):
    """A module whose forward is `fn(*inputs)`: one op (or a few) under test."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


class LayerNet(torch.nn.Module):
    """Linear(6, 8) -> [tanh] -> the layer under test -> Linear(8, 3), with a cross-entropy
    loss: the small model the op tests train (returns (output, loss))."""

    def __init__(self, layer, squash=False):
        super().__init__()
        self.layer, self.squash = layer, squash
        self.a, self.b = torch.nn.Linear(6, 8), torch.nn.Linear(8, 3)

    def forward(self, x, t):
        h = self.a(x)
        out = self.b(self.layer(torch.tanh(h) if self.squash else h))
        return out, F.cross_entropy(out, t)


def assert_trains_like_eager(model, args, steps=3, lr=0.1, loss_of=lambda out: out[-1],
                             rtol=1e-5, atol=1e-6, momentum=0.0):
    """Trains `model` (whose forward returns the loss, or a result `loss_of` picks it from)
    on `args` for `steps` SGD steps in tilegraph and a deep copy in eager PyTorch."""
    reference = copy.deepcopy(model)
    trainer = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum))
    eager = torch.optim.SGD(reference.parameters(), lr=lr, momentum=momentum)
    for _ in range(steps):
        loss = loss_of(trainer(*args))
        eager.zero_grad()
        ref_loss = loss_of(reference(*args))
        ref_loss.backward()
        eager.step()
        torch.testing.assert_close(loss, ref_loss.detach().reshape(loss.shape), rtol=rtol,
                                   atol=atol)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol, msg=name)


def assert_infers_and_trains_like_eager(model, args, steps=3, lr=0.1, rtol=1e-5, atol=1e-6,
                                        output_of=lambda out: out[0],
                                        loss_of=lambda out: out[-1]):
    """Inference output equal to eager's, then assert_trains_like_eager."""
    reference = copy.deepcopy(model)
    torch.testing.assert_close(output_of(tilegraph.inferenceModel(model)(*args)),
                               output_of(reference(*args)), rtol=rtol, atol=atol)
    assert_trains_like_eager(model, args, steps, lr, loss_of, rtol, atol)


def assert_layer_matches_eager(layer):
    """`layer` (a function of the hidden [4, 8] activations) inside LayerNet: inference and
    4 SGD steps against eager, from fixed data (the op tests' parametrized check)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g)
    assert_infers_and_trains_like_eager(LayerNet(layer), (x, t), steps=4, atol=1e-5)
