"""Python decisions on one-element buffers (`if self.initted:`, `if self.mode == 2:`,
`x * self.temperature.item()`): compiled on the buffer's value at capture, as PopTorch's
tracer bakes it in, recompiled when the value changes, refused where the forward updates the
buffer it decides on (eager would decide again at every step). Compared with eager."""
import copy

import pytest
import torch
import torch.nn as nn

import tilegraph


class Gated(nn.Module):
    """A flag and a mode the user sets between calls, and a temperature read as a number:
    vector-quantize-pytorch's `if self.initted:` (a [1] float buffer), a 0-d int mode
    compared with Python ints, and a float read with .item()."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.register_buffer("initted", torch.tensor([1.0]))
        self.register_buffer("mode", torch.tensor(0))
        self.register_buffer("temperature", torch.tensor(2.0))

    def forward(self, x):
        y = self.linear(x)
        if self.initted:
            y = y + 1
        if self.mode == 1:
            y = y.relu()
        elif not self.mode != 2:  # a negated comparison
            y = y * y
        return y * self.temperature.item()


def test_decisions_follow_the_buffers_value_and_recompile_when_it_changes():
    torch.manual_seed(0)
    model = Gated()
    run = tilegraph.inferenceModel(model, tilegraph.Options())
    x = torch.randn(5, 4)
    torch.testing.assert_close(run(x), model(x))
    for change in (lambda: model.mode.fill_(1), lambda: model.mode.fill_(2),
                   lambda: model.initted.zero_(), lambda: model.temperature.fill_(-0.5)):
        change()
        torch.testing.assert_close(run(x), model(x))


def test_training_through_decisions_keeps_its_weights_across_a_recompile():
    torch.manual_seed(0)

    class Loss(nn.Module):
        def __init__(self):
            super().__init__()
            self.gated = Gated()

        def forward(self, x):
            return self.gated(x).square().mean()

    model = Loss()
    reference = copy.deepcopy(model)
    run = tilegraph.trainingModel(model, tilegraph.Options(),
                                  torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(6, 4)
    for step in range(6):
        if step == 3:  # the user switches the model's mode half way
            model.gated.mode.fill_(1)
            reference.gated.mode.fill_(1)
        optimizer.zero_grad()
        expected = reference(x)
        expected.backward()
        optimizer.step()
        torch.testing.assert_close(run(x), expected.detach())
    for got, want in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-5, atol=1e-6)


class ActNorm(nn.Module):
    """Glow's data-dependent initialization: the first forward sets the scale and shift from
    the batch and marks the layer initialized."""

    def __init__(self, channels):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels))
        self.log_scale = nn.Parameter(torch.zeros(1, channels))
        self.register_buffer("initted", torch.tensor(False))

    def forward(self, x):
        if not self.initted:
            with torch.no_grad():
                self.loc.copy_(-x.mean(0, keepdim=True))
                self.log_scale.copy_(-torch.log(x.std(0, keepdim=True) + 1e-6))
                self.initted.fill_(True)
        return (x + self.loc) * self.log_scale.exp()


def test_a_decision_on_a_buffer_the_forward_updates_is_refused_at_its_line():
    model = ActNorm(3)
    x = torch.randn(8, 3) * 4 + 2
    with pytest.raises(NotImplementedError,
                       match=r"test_buffer_decisions.py:\d+: the model decides in Python on "
                             r"the value of buffer 'initted'.*run the call that updates it "
                             r"eagerly first"):
        tilegraph.inferenceModel(model, tilegraph.Options())(x)
    # After the initialization ran eagerly, the forward leaves the buffer alone: it compiles.
    model(x)
    run = tilegraph.inferenceModel(model, tilegraph.Options())
    torch.testing.assert_close(run(x), model(x))
    assert bool(model.initted)


def test_a_value_read_after_the_forward_updated_the_buffer_is_refused():
    """BatchNorm with momentum=None divides by float(num_batches_tracked) after adding 1 to
    it: the captured value would be stale, so the capture stops at once."""
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=None))

    class Loss(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = model

        def forward(self, x):
            return self.body(x).sum()

    with pytest.raises(NotImplementedError, match="'body.1.num_batches_tracked'"):
        tilegraph.trainingModel(Loss(), tilegraph.Options(),
                                torch.optim.SGD(model.parameters(), lr=0.1))(torch.randn(8, 3))
