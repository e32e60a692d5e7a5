"""A training executor's module tensors are views of the engine's variables
(PoplarExecutor._alias_module_weights): no copy of the weights after each call, and still
every PopTorch rule about who holds which weights when. Each test checks values against eager
PyTorch or against the same executor with the aliasing turned off
(TILEGRAPH_ALIAS_WEIGHTS=0)."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import tilegraph


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x, y):
        out = self.fc2(torch.relu(self.bn(self.fc1(x))))
        return out, nn.functional.cross_entropy(out, y)


class TiedLM(nn.Module):
    """An embedding tied to the output projection (one Parameter under two names), as BERT's
    word embedding and decoder weight."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10)
        self.out.weight = self.emb.weight

    def forward(self, idx):
        return nn.functional.cross_entropy(self.out(torch.tanh(self.emb(idx))), (idx + 1) % 10)


def _data(batch=4):
    torch.manual_seed(1)
    return torch.randn(batch, 6), torch.randint(0, 3, (batch,))


def _variable_memory(train, fqn):
    name = train._cap.params.get(fqn) or train._cap.buffers[fqn]
    return train.executable.variable_view(name).ctypes.data


def _train(alias, monkeypatch, steps=3, opts=None):
    if alias:
        monkeypatch.delenv("TILEGRAPH_ALIAS_WEIGHTS", raising=False)
    else:
        monkeypatch.setenv("TILEGRAPH_ALIAS_WEIGHTS", "0")
    torch.manual_seed(0)
    model = Net()
    train = tilegraph.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=0.1,
                                                                 momentum=0.9))
    x, y = _data()
    losses = [train(x, y)[1].item() for _ in range(steps)]
    return model, train, losses


def test_module_tensors_are_the_engine_variables(monkeypatch):
    """Parameters and buffers (running statistics included) view the variables' memory, so
    the module shows each call's weights with no copy: the same values, losses and version
    moves as with the copies, and references taken before training (an optimizer's param
    groups) see them."""
    model, train, losses = _train(True, monkeypatch)
    held = train.optimizer.param_groups[0]["params"][0]  # fc1.weight, taken before training
    for fqn, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.dtype.is_floating_point:
            assert t.data_ptr() == _variable_memory(train, fqn), fqn
    copied, copied_train, copied_losses = _train(False, monkeypatch)
    assert losses == copied_losses
    for (fqn, a), (_, b) in zip(model.state_dict().items(), copied.state_dict().items()):
        assert torch.equal(a, b), fqn
    assert held is model.fc1.weight and torch.equal(held, copied.fc1.weight)
    versions = {n: p._version for n, p in model.named_parameters()}
    train(*_data())
    assert all(p._version > versions[n] for n, p in model.named_parameters())
    assert train.weight_copies["to_host"] == copied_train.weight_copies["to_host"] + 1


def test_host_edits_reach_the_engine_and_its_bf16_copies(monkeypatch):
    """An in-place edit of an aliased weight is the engine's memory; the next call pushes it
    (the host-edit guard), so the half copies under setMixedPrecision are recast: the losses
    after the edit are those of the executor that copies, bit for bit."""
    def run(alias):
        opts = tilegraph.Options()
        opts.Precision.setMixedPrecision(torch.bfloat16)
        model, train, losses = _train(alias, monkeypatch, steps=2, opts=opts)
        with torch.no_grad():
            model.fc1.weight.mul_(-0.5)
            model.fc2.bias.add_(0.25)
        x, y = _data()
        losses += [train(x, y)[1].item() for _ in range(2)]
        return losses, model
    losses, model = run(True)
    copied_losses, copied = run(False)
    assert losses == copied_losses
    assert torch.equal(model.fc1.weight, copied.fc1.weight)


def test_destroy_gives_the_module_its_own_memory(monkeypatch):
    """After destroy the module's tensors hold the trained values in memory of their own (the
    executable can be freed) and train again eagerly or through a new executor."""
    model, train, _ = _train(True, monkeypatch)
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    view = train.executable.variable_view(train._cap.params["fc1.weight"])
    train.destroy()
    assert model.fc1.weight.data_ptr() != view.ctypes.data
    view[...] = 0  # the old memory no longer backs the module
    for n, t in model.state_dict().items():
        assert torch.equal(t, before[n]), n
    x, y = _data()
    again = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert np.isfinite(again(x, y)[1].item())


def test_a_second_training_executor_moves_the_views_after_the_first_is_destroyed(monkeypatch):
    """One live trainingModel per module (PopTorch's rule: a second is refused while the
    first holds an engine). Destroying the first leaves its trained weights in the module
    (no longer viewing its engine); the second's compile starts from them and moves the
    module's views to its own variables."""
    monkeypatch.delenv("TILEGRAPH_ALIAS_WEIGHTS", raising=False)
    torch.manual_seed(0)
    model = Net()
    x, y = _data()
    first = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    first(x, y)
    with pytest.raises(RuntimeError, match="already been wrapped"):
        tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5))
    trained = torch.from_numpy(first.executable.read_variable(first._cap.params["fc1.weight"]))
    first.destroy()
    assert torch.equal(model.fc1.weight, trained)
    second = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5))
    second.compile(x, y)
    assert torch.equal(torch.from_numpy(second.executable.read_variable(
        second._cap.params["fc1.weight"])), trained)
    second(x, y)
    assert model.fc1.weight.data_ptr() == _variable_memory(second, "fc1.weight")


def test_recompiling_moves_the_views_to_the_new_program(monkeypatch):
    """A module attribute the forward reads changes: the executor captures and compiles again;
    the new program starts from the trained weights and the module then views its
    variables."""
    class Tempered(Net):
        temperature = 1.0

        def forward(self, x, y):
            out, _ = super().forward(x, y)
            out = out / self.temperature
            return out, nn.functional.cross_entropy(out, y)

    monkeypatch.delenv("TILEGRAPH_ALIAS_WEIGHTS", raising=False)
    torch.manual_seed(0)
    model = Tempered()
    train = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    x, y = _data()
    train(x, y)
    eager = Tempered()  # one eager step from the weights the first program left
    eager.load_state_dict({n: t.clone() for n, t in model.state_dict().items()})
    eager.temperature = 2.0
    opt = torch.optim.SGD(eager.parameters(), lr=0.1)
    eager(x, y)[1].backward()
    opt.step()
    old_exe = train.executable
    model.temperature = 2.0
    train(x, y)
    assert train.executable is not old_exe
    assert model.fc1.weight.data_ptr() == _variable_memory(train, "fc1.weight")
    for (n, a), (_, b) in zip(model.state_dict().items(), eager.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)


def test_tensors_sharing_storage_keep_it(monkeypatch):
    """A parameter that is a view into a larger tensor is copied back, not aliased (replacing
    its memory would split it from the tensor it views); it still trains like eager."""
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.base = torch.randn(2, 6, 3)
            self.a = nn.Parameter(self.base[1])  # shares base's storage, at an offset
            self.b = nn.Parameter(torch.randn(3))

        def forward(self, x):
            return ((x @ self.a) * self.b).pow(2).mean()

    monkeypatch.delenv("TILEGRAPH_ALIAS_WEIGHTS", raising=False)
    model, eager = Shared(), Shared()
    train = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    opt = torch.optim.SGD(eager.parameters(), lr=0.1)
    x = torch.randn(4, 6)
    for _ in range(2):
        train(x)
        opt.zero_grad()
        eager(x).backward()
        opt.step()
    assert model.a.data_ptr() != _variable_memory(train, "a")
    assert model.a.data_ptr() == model.base[1].data_ptr()  # still base's memory
    assert torch.equal(model.base[1], model.a)
    assert model.b.data_ptr() == _variable_memory(train, "b")
    torch.testing.assert_close(model.a, eager.a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.b, eager.b, rtol=1e-5, atol=1e-6)


def test_tied_and_viewed_tensors_are_copied_not_aliased(monkeypatch):
    """Two parameter objects on one storage (a bias tied by assignment) are one variable;
    a parameter whose memory a view the user kept also shows is not aliased: every tensor on
    that storage keeps showing the trained values (copied back), as before aliasing."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)
            self.bias = nn.Parameter(torch.zeros(3))
            self.fc.bias = self.bias
            self.other = nn.Linear(3, 3)
            self.head_bias = self.other.bias.detach()  # plain tensor on other.bias' memory

        def forward(self, x):
            return self.other(self.fc(x)).pow(2).mean()

    monkeypatch.delenv("TILEGRAPH_ALIAS_WEIGHTS", raising=False)
    torch.manual_seed(0)
    model = Tied()
    kept = model.other.weight.detach()  # the user keeps a view of the weight's memory
    train = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    x = torch.randn(4, 6)
    before = model.other.weight.detach().clone()
    for _ in range(2):
        train(x)
    assert not torch.equal(model.other.weight, before)
    assert torch.equal(kept, model.other.weight)  # the kept view follows training
    assert torch.equal(model.head_bias, model.other.bias)
    assert model.fc.bias is model.bias
    assert model.other.weight.data_ptr() != _variable_memory(train, "other.weight")
    assert model.fc.weight.data_ptr() == _variable_memory(train, "fc.weight")  # the rest is


def test_a_tied_weight_is_one_variable_the_module_views(monkeypatch):
    """One Parameter object under two names (an embedding tied to the output projection, as
    BERT's) is one variable of the program, both names mapping to it (it was two, the program
    training one and only declaring the other), so the module can view it: training matches
    the copying executor bit for bit and eager PyTorch to float rounding."""
    def run(alias):
        monkeypatch.setenv("TILEGRAPH_ALIAS_WEIGHTS", "1" if alias else "0")
        torch.manual_seed(0)
        model = TiedLM()
        train = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(
            model.parameters(), lr=0.5, momentum=0.9))
        idx = torch.tensor([1, 2, 3, 7])
        losses = [train(idx).item() for _ in range(4)]
        return losses, {k: v.clone() for k, v in model.state_dict().items()}, train, model

    losses, state, train, model = run(True)
    assert train._cap.params["emb.weight"] == train._cap.params["out.weight"]
    assert [v for v in train.executable.variables if v.endswith(".weight")] == ["emb.weight"]
    assert model.emb.weight.data_ptr() == _variable_memory(train, "out.weight")
    copied_losses, copied_state, _, _ = run(False)
    assert losses == copied_losses
    for k in state:
        assert torch.equal(state[k], copied_state[k]), k
    torch.manual_seed(0)
    eager = TiedLM()
    opt = torch.optim.SGD(eager.parameters(), lr=0.5, momentum=0.9)
    for _ in range(4):
        opt.zero_grad()
        eager(torch.tensor([1, 2, 3, 7])).backward()
        opt.step()
    torch.testing.assert_close(state["emb.weight"], eager.emb.weight.detach(), rtol=1e-5,
                               atol=1e-6)


def test_a_tied_weight_copied_to_the_host_shows_the_trained_values(monkeypatch):
    """Copies to the host run on several threads; a tied weight's two names are copied into
    the one tensor once (when it was two variables, both copies landed in it and the module
    now and then showed the untrained one: a rare mismatch in the IPU Model family test)."""
    monkeypatch.setenv("TILEGRAPH_ALIAS_WEIGHTS", "0")
    torch.manual_seed(0)
    model = TiedLM()
    initial = model.emb.weight.detach().clone()
    train = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5))
    idx = torch.tensor([1, 2, 3, 7])
    for _ in range(2):
        train(idx)
    want = torch.from_numpy(train.executable.read_variable(train._cap.params["out.weight"]))
    assert not torch.equal(want, initial)
    for _ in range(30):
        train.copyWeightsToHost()
        assert torch.equal(model.emb.weight, want) and model.out.weight is model.emb.weight
