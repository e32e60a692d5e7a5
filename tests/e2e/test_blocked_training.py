"""Training steps with convolution activations and their gradients in oneDNN's channel-blocked
layout (passes/block_conv_layout.cc in the training pipeline): convolutions, their two backward
passes, training-mode batch norms and their backward, activations, residual adds and their
gradients, max pooling and its backward, and bias gradients hand values over without
reordering to NCHW; the head's permute reads NCHW through an explicit reorder at the
group's edge. These tests
show that the layout is chosen on a real training step and that losses and weights after
several steps match eager PyTorch."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tilegraph


class GatedResidualNet(nn.Module):
    """Stem conv + BN + ReLU + max pool (an NCHW reader and producer), a residual block
    (conv, BN, GELU, conv, BN, + skip, GELU), a strided conv + BN + SiLU with a
    squeeze-excite gate (per-channel scale: its gradient reduces over H and W), and a
    channels-last layer norm and linear head."""

    def __init__(self, width=16):
        super().__init__()
        c = width
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(), nn.MaxPool2d(2))
        self.block = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                   nn.GELU(), nn.Conv2d(c, c, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(c))
        self.down = nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(2 * c), nn.SiLU())
        self.gate = nn.Conv2d(2 * c, 2 * c, 1)
        self.project = nn.Conv2d(2 * c, 2 * c, 1, bias=False)
        self.norm = nn.LayerNorm(2 * c)
        self.head = nn.Linear(2 * c, 5)

    def forward(self, x):
        h = self.stem(x)
        h = F.gelu(h + self.block(h))
        h = self.down(h)
        h = h * torch.sigmoid(self.gate(h.mean(dim=(2, 3), keepdim=True)))
        h = self.project(h)
        return self.head(self.norm(h.permute(0, 2, 3, 1)).mean(dim=(1, 2)))


class WithLoss(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t):
        out = self.model(x)
        return out, F.cross_entropy(out, t)


def _data(batch=4, size=16):
    g = torch.Generator().manual_seed(3)
    return torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 5, (batch,), generator=g)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_blocked_training_steps_match_eager(momentum):
    torch.manual_seed(0)
    model = GatedResidualNet()
    reference = copy.deepcopy(model)
    wrapped = WithLoss(model)
    x, t = _data()
    trainer = tilegraph.trainingModel(
        wrapped, None, torch.optim.SGD(wrapped.parameters(), lr=0.05, momentum=momentum))
    opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=momentum)
    reference.train()
    for step in range(6):
        out, loss = trainer(x, t)
        opt.zero_grad()
        ref_out = reference(x)
        ref_loss = F.cross_entropy(ref_out, t)
        ref_loss.backward()
        opt.step()
        torch.testing.assert_close(out, ref_out.detach(), rtol=1e-4, atol=1e-5,
                                   msg=f"step {step} output")
        torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-4, atol=1e-5,
                                   msg=f"step {step} loss")
    trainer.copyWeightsToHost()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    for (name, b), c in zip(model.named_buffers(), reference.buffers()):
        torch.testing.assert_close(b, c, rtol=1e-4, atol=1e-5, msg=name)

    ir = trainer._exe.optimized_ir
    # Every training-mode batch norm and its backward run on the blocked layout, as do the
    # block's convolutions in all three passes.
    norms = [line for line in ir.splitlines()
             if " = batch_norm_train(" in line or " = batch_norm_backward(" in line]
    assert len(norms) == 8, ir
    # All of them, the stem's too: its max pool and the pool's backward read and write the
    # blocked layout as well.
    assert all("{blocked = true" in line for line in norms), ir
    pools = [line for line in ir.splitlines() if " = max_pool2d" in line]
    assert len(pools) == 2 and all("{blocked = true" in line for line in pools), ir
    # The stem convolution's weight gradient (3 input channels: oneDNN has no fast kernel
    # for a blocked dy with such an x) reads its dy in NCHW, through one reorder.
    stem_dw = [line for line in ir.splitlines()
               if " = conv2d_backward_weight(" in line and "%input0" in line]
    assert len(stem_dw) == 1 and "dst_blocked = false" in stem_dw[0], ir
    for op in ("conv2d", "conv2d_backward_input", "conv2d_backward_weight"):
        lines = [line for line in ir.splitlines() if f" = {op}(" in line]
        assert any("src_blocked = true" in line and "dst_blocked = true" in line
                   for line in lines), (op, ir)
    # The max pool writes NCHW (one reorder into the block's group) and its backward reads
    # NCHW (one out); the gate's gradient reduction reads the product of two blocked values.
    assert "block_channels(" in ir and "unblock_channels(" in ir, ir
    assert "blocked_spatial_mean(" in ir and "blocked_channel_scale(" in ir, ir


def test_channels_that_are_not_whole_blocks_stay_nchw():
    torch.manual_seed(0)
    model = GatedResidualNet(width=12)  # 12 and 24 channels: a padded block
    wrapped = WithLoss(model)
    x, t = _data()
    trainer = tilegraph.trainingModel(wrapped, None, torch.optim.SGD(wrapped.parameters(), lr=0.05))
    trainer(x, t)
    ir = trainer._exe.optimized_ir
    assert "blocked = true" not in ir and "block_channels(" not in ir, ir


class PoolNet(nn.Module):
    """PopTorch's MNIST tutorial shape: conv (with bias) -> max pool -> ReLU, twice, then a
    linear head; the second block's pool windows overlap (3x3, stride 2, padding 1)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32 * 4 * 4, 5)

    def forward(self, x):
        h = F.relu(F.max_pool2d(self.conv1(x), 2))
        h = F.relu(F.max_pool2d(self.conv2(h), 3, stride=2, padding=1))
        return self.head(h.flatten(1))


def test_max_pools_and_bias_gradients_train_blocked_like_eager():
    """Max pooling forward and backward and the convolutions' bias gradients (sums of dy over
    N, H and W) run on the blocked layout; five SGD steps match eager."""
    torch.manual_seed(0)
    model = PoolNet()
    reference = copy.deepcopy(model)
    wrapped = WithLoss(model)
    x, t = _data(batch=4, size=18)
    trainer = tilegraph.trainingModel(
        wrapped, None, torch.optim.SGD(wrapped.parameters(), lr=0.05, momentum=0.9))
    opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    for step in range(5):
        out, loss = trainer(x, t)
        opt.zero_grad()
        ref_out = reference(x)
        F.cross_entropy(ref_out, t).backward()
        opt.step()
        torch.testing.assert_close(out, ref_out.detach(), rtol=1e-4, atol=1e-5,
                                   msg=f"step {step} output")
    trainer.copyWeightsToHost()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    ir = trainer._exe.optimized_ir
    pools = [line for line in ir.splitlines() if " = max_pool2d" in line]
    assert len(pools) == 4 and all("{blocked = true" in line for line in pools), ir
    # Both bias gradients read their blocked dy; conv1's weight gradient (3 input channels,
    # see above) reads it in NCHW through the one reorder.
    assert ir.count("= blocked_channel_sum(") == 2 and ir.count("= unblock_channels(") == 2, ir
