"""Activations and small ops PopTorch users hit (issue 13): leaky_relu, elu, selu, celu,
softplus, rrelu (evaluation), mish, log1p / expm1, sin / cos, fmod / remainder by a number
and one_hot (with its index check), in inference and in training, against eager PyTorch."""
import copy

import pytest
import torch
import torch.nn.functional as F

import tilegraph
from parity import assert_infers_and_trains_like_eager

ACTIVATIONS = {
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "leaky_relu_default": F.leaky_relu,
    "elu": lambda x: F.elu(x, 0.7),
    "selu": F.selu,
    "celu": lambda x: F.celu(x, 1.3),
    "softplus": lambda x: F.softplus(x, 2.0, 3.0),
    "rrelu_eval": lambda x: F.rrelu(x, training=False),
    "mish": F.mish,
    "log1p": lambda x: torch.log1p(x.abs()),
    "expm1": lambda x: torch.expm1(x * 0.5),
    "sin_cos": lambda x: torch.sin(x) * torch.cos(0.5 * x),
    "fmod": lambda x: torch.fmod(x, 1.5) + x,
    "remainder": lambda x: x % -2.0 + x,
}


class Net(torch.nn.Module):
    def __init__(self, act):
        super().__init__()
        self.act = act
        self.a, self.b = torch.nn.Linear(6, 16), torch.nn.Linear(16, 3)

    def forward(self, x, t):
        out = self.b(self.act(self.a(x)))
        return out, F.cross_entropy(out, t)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_inference_and_training_match_eager(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(8, 6, generator=g) * 2, torch.randint(0, 3, (8,), generator=g)
    assert_infers_and_trains_like_eager(Net(ACTIVATIONS[name]), (x, t), steps=5)


class OneHot(torch.nn.Module):
    def forward(self, idx):
        return F.one_hot(idx, 5).float() * 2


def test_one_hot_matches_and_an_index_out_of_range_is_an_error():
    infer = tilegraph.inferenceModel(OneHot())
    idx = torch.tensor([0, 3, 4, 1])
    torch.testing.assert_close(infer(idx), OneHot()(idx))
    with pytest.raises(Exception, match="Class values must be smaller than num_classes"):
        infer(torch.tensor([0, 3, 7, 1]))  # eager PyTorch raises too


class IntegerMod(torch.nn.Module):
    def forward(self, idx):
        return idx % 3, torch.fmod(idx, 3), idx % -3


def test_integer_fmod_and_remainder_follow_torch_signs():
    idx = torch.tensor([-7, -3, -1, 0, 1, 5, 8])
    for ours, want in zip(tilegraph.inferenceModel(IntegerMod())(idx), IntegerMod()(idx)):
        assert ours.dtype == want.dtype
        assert torch.equal(ours, want), (ours, want)


class Padded(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3)

    def forward(self, x, t):
        y = F.pad(x, (1, 2, 0, 1), value=0.5)        # grow width and height
        y = F.pad(self.conv(y), (-1, 0, 1, -1))      # crop and grow
        out = y.mean(dim=(2, 3))
        return out, F.cross_entropy(out, t)


def test_constant_padding_and_cropping_train_like_eager():
    torch.manual_seed(0)
    model = Padded()
    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(4, 2, 6, 7, generator=g), torch.randint(0, 3, (4,), generator=g)
    torch.testing.assert_close(tilegraph.inferenceModel(model)(x, t)[0], reference(x, t)[0],
                               rtol=1e-5, atol=1e-6)
    trainer = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    eager = torch.optim.SGD(reference.parameters(), lr=0.1)
    for _ in range(3):
        trainer(x, t)
        eager.zero_grad()
        reference(x, t)[1].backward()
        eager.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


class PadInts(torch.nn.Module):
    def forward(self, idx):
        return F.pad(idx, (2, -1), value=7)


def test_padding_integer_tensors():
    idx = torch.arange(12).reshape(3, 4)
    assert torch.equal(tilegraph.inferenceModel(PadInts())(idx), PadInts()(idx))
