"""Half-precision models (model.half() / model.bfloat16(), PopTorch's mixed-precision
tutorial style) run inference through tilegraph with eager PyTorch's numbers: every op
computes in float and rounds to the half type, as torch's CPU kernels do. Training in half
precision: test_mixed_precision.py."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tilegraph


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.norm = nn.LayerNorm(8 * 4 * 4)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        h = self.norm(h.flatten(1))
        return F.softmax(self.fc(F.gelu(h)) * 0.5 + 1.0, dim=-1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_model_inference_matches_eager(dtype):
    torch.manual_seed(0)
    model = ConvNet().eval().to(dtype)
    x = torch.randn(4, 3, 8, 8).to(dtype)
    got = tilegraph.inferenceModel(model)(x)
    ref = model(x)
    assert got.dtype == dtype
    torch.testing.assert_close(got, ref)  # torch's own tolerances for the dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_elementwise_and_casts(dtype):
    class Mixed(nn.Module):
        def forward(self, a, b):
            # (a tensor constant made in the dtype: bf16 ones have no numpy form)
            y = (a + b) * a - torch.exp(b / 4) + torch.tanh(a) + torch.tensor(0.5, dtype=dtype)
            return y, y.float().sum(), (a > b).to(dtype) * 2

    g = torch.Generator().manual_seed(1)
    a, b = (torch.randn(5, 6, generator=g).to(dtype) for _ in range(2))
    for got, ref in zip(tilegraph.inferenceModel(Mixed())(a, b), Mixed()(a, b)):
        assert got.dtype == ref.dtype
        torch.testing.assert_close(got.reshape(ref.shape), ref)


def test_half_inputs_to_a_float_model():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)

    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return self.m(x.float())

    x = torch.randn(4, 6).half()
    torch.testing.assert_close(tilegraph.inferenceModel(Up())(x), Up()(x))


def test_automatic_loss_scaling_under_poparts_names():
    """PopTorch's options_test::test_automatic_loss_scaling: anchorTensor("finalLossScale")
    gives the loss scale each step used, and the optimizer's ipu_state holds
    "lossScaleUpdateFactor" (the scale over the optimizer's loss_scaling), readable and
    writable."""
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(5))

        def forward(self, x):
            return tilegraph.identity_loss((x * self.w).sum(), reduction="none")

    model = M().half()
    opts = tilegraph.Options()
    opts.Training.setAutomaticLossScaling(True)
    opts.anchorTensor("ls", "finalLossScale", tilegraph.OutputMode.Final)
    opt = tilegraph.optim.SGD(model.parameters(), lr=0.0, loss_scaling=2.0)
    run = tilegraph.trainingModel(model, opts, opt)
    run.compile(torch.ones(5).half())
    factor = opt.state_dict()["ipu_state"]["lossScaleUpdateFactor"]
    assert float(factor) == 1.0  # the optimizer's own loss scaling to start with
    run(torch.full((5,), 6e4).half())  # scaled by 2, the gradient overflows: halved
    assert float(run.getAnchoredTensor("ls")) == 2.0  # the scale that step used
    assert float(opt.state_dict()["ipu_state"]["lossScaleUpdateFactor"]) == 0.5
    assert run.lossScalingState()["scale"] == 1.0
    state = opt.state_dict()
    state["ipu_state"]["lossScaleUpdateFactor"] = torch.tensor(4.0)
    opt.load_state_dict(state)
    assert run.lossScalingState()["scale"] == 8.0
    run(torch.ones(5).half())
    assert float(run.getAnchoredTensor("ls")) == 8.0
