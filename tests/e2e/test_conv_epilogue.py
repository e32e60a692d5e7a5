"""Convolution epilogues (passes/fuse_conv_epilogue.cc, op conv2d_epilogue): in inference a
conv -> bias -> batch norm -> residual add -> activation block runs as one oneDNN convolution
with the batch norm folded into its weight and bias, and conv -> conv hand-offs stay in oneDNN's blocked
layout (passes/block_conv_layout.cc). These tests show it happens on the blocks real CNNs are
made of, gives eager PyTorch's numbers, refolds when the weights or running statistics change
on the host, and leaves training (where the backward reads the intermediates) correct."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tilegraph


class Blocks(nn.Module):
    """A stem conv (with bias) + BN + act, a depthwise conv + BN + act, a 1x1 projection + BN
    without activation, a residual add, and a pooled linear head."""

    def __init__(self, act):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16),
                                  act())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
                                nn.BatchNorm2d(16, eps=1e-3), act())
        self.project = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        h = self.stem(x)
        h = h + self.project(self.dw(h))
        return self.head(h.mean(dim=(2, 3)))


def _randomize_batch_norms(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _model(act):
    torch.manual_seed(0)
    model = Blocks(act)
    _randomize_batch_norms(model)
    return model.eval()


def _input(batch=4):
    return torch.randn(batch, 3, 17, 17, generator=torch.Generator().manual_seed(1))


# The activation the epilogue takes; None: the capture decomposes it (Hardswish becomes
# x * clamp(x + 3, 0, 6) / 6), so it stays a fused elementwise kernel after the convolution.
@pytest.mark.parametrize("act,name", [(nn.ReLU, "relu"), (nn.SiLU, "silu"), (nn.GELU, "gelu"),
                                      (nn.Sigmoid, "sigmoid"), (nn.Hardswish, None)])
def test_conv_batch_norm_activation_blocks_fuse_and_match_eager(act, name):
    model = _model(act)
    x = _input()
    executor = tilegraph.inferenceModel(model)
    torch.testing.assert_close(executor(x), model(x), rtol=1e-4, atol=1e-5)
    ir = executor._exe.optimized_ir
    assert ir.count("conv2d_epilogue(") == 3, ir
    assert "batch_norm_inference(" not in ir and " = conv2d(" not in ir, ir
    if name is not None:
        assert ir.count(f'activation = "{name}"') == 2, ir  # the projection has none
        assert f" = {name}(" not in ir and "fused_elementwise" not in ir, ir
        # every convolution hands its activations over in oneDNN's blocked layout: the stem
        # output through the residual add too, which the pooling mean reads blocked
        # (block-conv-layout); the graph input stays NCHW
        assert ir.count("dst_blocked = true") == 3 and ir.count("src_blocked = true") == 2, ir
        assert "blocked_spatial_mean(" in ir, ir
    # the projection adds the residual (the stem's output) as it writes its result
    assert ir.count("residual = true") == 1, ir


def test_the_fold_follows_weights_and_statistics_edited_on_the_host():
    model = _model(nn.SiLU)
    x = _input()
    executor = tilegraph.inferenceModel(model)
    executor(x)
    with torch.no_grad():
        model.stem[0].weight.mul_(-0.5)        # the convolution's weight
        model.dw[1].running_var.mul_(3.0)      # a running statistic
        model.project[1].bias.add_(1.0)        # the batch norm's shift
    torch.testing.assert_close(executor(x), model(x), rtol=1e-4, atol=1e-5)
    other = _model(nn.SiLU)
    _randomize_batch_norms(other, seed=5)
    model.load_state_dict(other.state_dict())
    torch.testing.assert_close(executor(x), other(x), rtol=1e-4, atol=1e-5)


def test_training_with_frozen_batch_norms_trains_like_eager():
    """Eval-mode batch norms inside a training model (fine-tuning with frozen statistics):
    the backward reads the convolution outputs, so whatever fuses must keep gradients exact."""

    class Loss(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x, t):
            return F.cross_entropy(self.model(x), t)

    model = _model(nn.ReLU)
    reference = copy.deepcopy(model)
    wrapped = Loss(model)
    x, t = _input(), torch.tensor([0, 1, 2, 3])
    trainer = tilegraph.trainingModel(wrapped, None, torch.optim.SGD(wrapped.parameters(), lr=0.05))
    trainer.compile(x, t)  # compiling puts the module in training mode, as PopTorch does
    for m in model.modules():  # then freeze the batch norms (a guard recaptures)
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    for _ in range(3):
        trainer(x, t)
    opt = torch.optim.SGD(reference.parameters(), lr=0.05)
    reference.eval()  # the same modes: every batch norm frozen
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(reference(x), t).backward()
        opt.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("layer, shape", [(lambda: torch.nn.Linear(4, 3), (2, 4)),
                                          (lambda: torch.nn.Conv2d(2, 3, 3), (1, 2, 5, 5))],
                         ids=["linear", "conv"])
def test_a_fused_relu_keeps_nan(layer, shape):
    """Linear / convolution + bias + ReLU fuse into one oneDNN call; its ReLU post-op turned
    NaN into 0 (a max with 0), so a diverged step showed finite outputs and loss. NaN stays
    NaN, as in eager."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(layer(), torch.nn.ReLU()).eval()
    x = torch.randn(shape)
    x.view(-1)[1] = float("nan")
    got, want = tilegraph.inferenceModel(model)(x), model(x)
    assert torch.equal(got.isnan(), want.isnan()) and want.isnan().any()
    torch.testing.assert_close(got, want, equal_nan=True)
