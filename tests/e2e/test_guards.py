"""Nothing silently stale: a compiled program follows the module it was captured from.

Guards re-capture the model when what the capture depended on changes (requires_grad, a
plain attribute the forward reads, train/eval modes, a parameter's shape), and weights
changed on the host (another executor's training, a hand edit, load_state_dict) reach the
engine before the next call. Each test compares with eager PyTorch on the same module.
"""
import copy

import torch
import torch.nn.functional as F

import tilegraph
from models import MLP, batches


def _data(steps=1, batch=4, seed=0):
    return batches("mlp", steps, batch, torch.Generator().manual_seed(seed))


def _eager_sgd_steps(model, x, t, steps, lr=0.1):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        model(x, t)[1].backward()
        opt.step()


def test_inference_model_serves_the_weights_a_training_model_just_trained():
    torch.manual_seed(0)
    model = MLP()
    reference = copy.deepcopy(model)
    x, t = _data()
    trainer = tilegraph.trainingModel(model, None, torch.optim.SGD(model.parameters(), lr=0.1))
    infer = tilegraph.inferenceModel(model)
    before = infer(x, t)[0]
    for _ in range(3):
        trainer(x, t)
    _eager_sgd_steps(reference, x, t, 3)
    after = infer(x, t)[0]
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, reference(x, t)[0], rtol=1e-5, atol=1e-5)


def test_hand_edits_and_load_state_dict_reach_both_executors():
    torch.manual_seed(0)
    model = MLP()
    x, t = _data()
    trainer = tilegraph.trainingModel(model, None, torch.optim.SGD(model.parameters(), lr=0.1))
    infer = tilegraph.inferenceModel(model)
    trainer(x, t)
    infer(x, t)
    with torch.no_grad():
        model.fc2.weight.mul_(0.5)
    torch.testing.assert_close(infer(x, t)[0], model(x, t)[0])
    other = MLP()
    model.load_state_dict(other.state_dict())
    torch.testing.assert_close(infer(x, t)[0], other(x, t)[0])
    model.fc2.bias.data = torch.ones(5)  # a new tensor, not an in-place edit
    torch.testing.assert_close(infer(x, t)[0], model(x, t)[0])
    # The training model continues from the edited weights, as eager would.
    reference = copy.deepcopy(model)
    trainer(x, t)
    _eager_sgd_steps(reference, x, t, 1)
    torch.testing.assert_close(model.fc1.weight, reference.fc1.weight, rtol=1e-5, atol=1e-6)


def test_requires_grad_change_recompiles_the_training_step():
    torch.manual_seed(0)
    model = MLP()
    x, t = _data()
    trainer = tilegraph.trainingModel(model, None, torch.optim.SGD(model.parameters(), lr=0.1))
    trainer(x, t)
    model.fc1.weight.requires_grad_(False)
    frozen = model.fc1.weight.detach().clone()
    reference = copy.deepcopy(model)
    trainer(x, t)
    _eager_sgd_steps(reference, x, t, 1)
    torch.testing.assert_close(model.fc1.weight, frozen, rtol=0, atol=0)
    torch.testing.assert_close(model.fc2.weight, reference.fc2.weight, rtol=1e-5, atol=1e-6)


class Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(20, 5)
        self.scale = 2.0
        self.use_relu = False
        self.unused = "label"

    def forward(self, x):
        y = self.fc(x) * self.scale
        return F.relu(y) if self.use_relu else y


def test_a_plain_attribute_the_forward_reads_recaptures():
    model = Scaled()
    x, _ = _data()
    infer = tilegraph.inferenceModel(model)
    torch.testing.assert_close(infer(x), model(x))
    count = tilegraph.compilation_count()
    model.scale = 3.0
    torch.testing.assert_close(infer(x), model(x))
    model.use_relu = True
    torch.testing.assert_close(infer(x), model(x))
    assert tilegraph.compilation_count() == count + 2
    model.unused = "another label"  # re-captured, same graph: nothing recompiled
    torch.testing.assert_close(infer(x), model(x))
    infer(x)
    assert tilegraph.compilation_count() == count + 2


def test_a_replaced_submodule_of_another_shape_recompiles():
    model = Scaled()
    x, _ = _data()
    infer = tilegraph.inferenceModel(model)
    assert infer(x).shape == (4, 5)
    model.fc = torch.nn.Linear(20, 7)
    out = infer(x)
    assert out.shape == (4, 7)
    torch.testing.assert_close(out, model(x))


class WithNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(20, 8)
        self.bn = torch.nn.BatchNorm1d(8)
        self.out = torch.nn.Linear(8, 5)

    def forward(self, x, t):
        y = self.out(F.relu(self.bn(self.fc(x))))
        return y, F.cross_entropy(y, t)


def test_freezing_batch_norm_after_compile_recompiles_in_its_mode():
    torch.manual_seed(0)
    model = WithNorm()
    x, t = _data(batch=8)
    trainer = tilegraph.trainingModel(model, None, torch.optim.SGD(model.parameters(), lr=0.1))
    trainer(x, t)
    model.bn.eval()  # freeze its statistics, a common fine-tuning recipe
    reference = copy.deepcopy(model)
    stats = model.bn.running_mean.clone()
    trainer(x, t)
    _eager_sgd_steps(reference, x, t, 1)
    torch.testing.assert_close(model.bn.running_mean, stats, rtol=0, atol=0)
    torch.testing.assert_close(model.fc.weight, reference.fc.weight, rtol=1e-5, atol=1e-6)


def test_inference_model_keeps_its_eval_view_when_the_module_trains():
    torch.manual_seed(0)
    model = WithNorm()
    x, t = _data(batch=8)
    infer = tilegraph.inferenceModel(model.eval())  # PopTorch's recipe: eval, then wrap
    expected = model(x, t)[0]
    model.train()  # to go on training the module
    torch.testing.assert_close(infer(x, t)[0], expected)  # compiled now: still the eval view
    assert model.training and model.bn.training  # the user's modes are left as they were
    model.bn.momentum = 0.5  # a guard fires: re-captured, still in eval mode
    torch.testing.assert_close(infer(x, t)[0], expected)


# ---- the compiled twins (_core_guards.cc): never laxer than the Python fingerprint ---------

class _Config:  # a config object one level deep, as Hugging Face models keep
    def __init__(self):
        self.hidden = 8
        self.act = "relu"
        self.inner = _Inner()


class _Inner:
    def __init__(self, nest=True):
        self.deeper = _Inner(nest=False) if nest else None  # at the walk's depth limit
        self.value = 1


class _Colour(__import__("enum").Enum):
    RED = 1
    BLUE = 2


def _guarded_module():
    m = MLP()
    m.scale = 2.0
    m.flag = True
    m.mode_name = "sum"
    m.sizes = [1, 2, 3]
    m.table = {"a": 1, "b": (2, 3)}
    m.config = _Config()
    m.colour = _Colour.RED
    m.register_buffer("steps", torch.zeros(3))
    m.mask = torch.ones(4)  # a tensor kept as a plain attribute
    return m


def _edit_param(m):
    with torch.no_grad():
        m.fc1.weight.add_(1)  # weights are host_versions' business, not the guard's


_CHANGES = {  # name: (edit, whether the Python fingerprint sees it)
    "float attribute": (lambda m: setattr(m, "scale", 3.0), True),
    "bool attribute": (lambda m: setattr(m, "flag", False), True),
    "string attribute": (lambda m: setattr(m, "mode_name", "mean"), True),
    "new attribute": (lambda m: setattr(m, "extra", 1), True),
    "deleted attribute": (lambda m: delattr(m, "scale"), True),
    "list appended in place": (lambda m: m.sizes.append(4), True),
    "dict value edited in place": (lambda m: m.table.__setitem__("b", (2, 4)), True),
    "config attribute": (lambda m: setattr(m.config, "hidden", 16), True),
    "enum attribute": (lambda m: setattr(m, "colour", _Colour.BLUE), True),
    "tensor attribute edited in place": (lambda m: m.mask.mul_(2), True),
    "tensor attribute replaced": (lambda m: setattr(m, "mask", torch.ones(5)), True),
    "forward hook": (lambda m: m.fc1.register_forward_hook(lambda *a: None), True),
    "forward pre-hook": (lambda m: m.register_forward_pre_hook(lambda *a: None), True),
    "eval mode": (lambda m: m.eval(), True),
    "requires_grad": (lambda m: m.fc1.bias.requires_grad_(False), True),
    "buffer of another shape": (lambda m: setattr(m, "steps", torch.zeros(4)), True),
    "parameter of another shape": (
        lambda m: setattr(m.fc2, "bias", torch.nn.Parameter(torch.zeros(6))), True),
    # Identities: the compiled guard records them (its cached weight list depends on them).
    "submodule replaced, same shapes": (
        lambda m: setattr(m, "fc2", torch.nn.Linear(32, 5)), False),
    "parameter replaced, same shape": (
        lambda m: setattr(m.fc2, "bias", torch.nn.Parameter(torch.zeros(5))), False),
}


def test_compiled_guard_sees_every_change_the_fingerprint_sees():
    from tilegraph import _guards
    for name, (edit, fingerprint_sees) in _CHANGES.items():
        m = _guarded_module()
        guard = _guards.Guard(m, with_modes=True)
        assert guard.unchanged(m), name
        edit(m)
        fingerprint_changed = _guards.fingerprint(m, with_modes=True) != guard.fingerprint
        assert fingerprint_changed == fingerprint_sees, name
        assert not guard.unchanged(m), name


def test_compiled_guard_ignores_what_the_fingerprint_ignores():
    from tilegraph import _guards
    m = _guarded_module()
    guard = _guards.Guard(m, with_modes=True)
    _edit_param(m)  # weights are host_versions' business
    m.config.inner.deeper.value = 5  # past the walk's depth: compared by identity only
    m(torch.randn(2, 20), torch.tensor([0, 1]))  # running the module changes nothing
    assert guard.fingerprint == _guards.fingerprint(m, with_modes=True)
    assert guard.unchanged(m)


def test_compiled_guard_without_modes_ignores_train_eval_only():
    from tilegraph import _guards
    m = _guarded_module()
    guard = _guards.Guard(m, with_modes=False)
    m.eval()
    assert guard.unchanged(m)
    m.fc1.bias.requires_grad_(False)
    assert guard.unchanged(m)
    m.scale = 4.0
    assert not guard.unchanged(m)


def test_compiled_versions_see_in_place_edits_and_new_storage():
    from tilegraph import _guards
    m = MLP()
    named = list(m.state_dict(keep_vars=True).items())
    versions = _guards.Versions(named)
    assert versions.unchanged(named)
    with torch.no_grad():
        m.fc1.weight.mul_(1.0)
    assert not versions.unchanged(named)
    versions = _guards.Versions(named)
    m.fc1.bias.data = torch.zeros_like(m.fc1.bias)  # new storage, same tensor object
    assert not versions.unchanged(named)
    assert versions.versions != _guards.host_versions(named)
    assert not versions.unchanged(named[:-1])  # another list


def test_a_parameter_replaced_by_one_of_the_same_shape_is_served_without_recompiling():
    torch.manual_seed(0)
    model = MLP()
    x, t = _data()
    infer = tilegraph.inferenceModel(model)
    infer(x, t)
    exe = infer._exe
    model.fc2.weight = torch.nn.Parameter(torch.randn_like(model.fc2.weight))
    torch.testing.assert_close(infer(x, t)[0], model(x, t)[0])
    assert infer._exe is exe
    with torch.no_grad():  # and the new parameter's later edits reach the engine too
        model.fc2.weight.mul_(-1)
    torch.testing.assert_close(infer(x, t)[0], model(x, t)[0])


def test_a_global_forward_hook_added_after_compiling_is_seen():
    """register_module_forward_hook applies to every module: a capture runs it, so one added
    (or removed) later means another program (the executor kept the old one, silently)."""
    from torch.nn.modules.module import register_module_forward_hook
    model = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    ex = tilegraph.inferenceModel(model)
    torch.testing.assert_close(ex(x), model(x))
    handle = register_module_forward_hook(
        lambda m, i, out: out * 2 if isinstance(out, torch.Tensor) else out)
    try:
        want = model(x)
        torch.testing.assert_close(ex(x), want)
    finally:
        handle.remove()
    torch.testing.assert_close(ex(x), model(x))


class _Recurrent(torch.nn.Module):
    """nn.LSTM keeps its parameters a second time in a plain attribute (_flat_weights)."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(6, 5, num_layers=2, batch_first=True)
        self.fc = torch.nn.Linear(5, 3)

    def forward(self, x, t):
        out = self.fc(self.lstm(x)[0][:, -1])
        return out, F.cross_entropy(out, t)


def test_a_trained_lstm_is_not_captured_again_at_every_step(monkeypatch):
    """Training updates the weights in place, which bumps the version counters of the
    tensors in _flat_weights too: those are the module's own parameters (program inputs,
    pushed by host_versions), so the guard does not count their versions; the capture of
    a long sequence model costs minutes."""
    from tilegraph import _executor, _guards
    captures = []
    real_capture = _executor.capture
    monkeypatch.setattr(_executor, "capture",
                        lambda *a, **k: captures.append(1) or real_capture(*a, **k))
    torch.manual_seed(0)
    model = _Recurrent()
    reference = copy.deepcopy(model)
    x, t = torch.randn(4, 7, 6), torch.tensor([0, 1, 2, 0])
    trainer = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(),
                                                                       lr=0.1))
    guard = _guards.Guard(model, with_modes=True)
    for _ in range(3):
        trainer(x, t)
    assert len(captures) == 1
    assert guard.unchanged(model)
    assert guard.fingerprint == _guards.fingerprint(model, with_modes=True)
    _eager_sgd_steps(reference, x, t, 3)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_a_plain_tensor_attribute_edited_in_place_is_still_seen():
    """Only the module's parameters and buffers lose their versions in the guard: a plain
    tensor attribute (baked into the capture) edited in place is a change."""
    from tilegraph import _guards
    m = _Recurrent()
    m.lstm.table = [torch.zeros(3)]  # a list attribute holding a plain tensor
    guard = _guards.Guard(m, with_modes=True)
    m.lstm.table[0].add_(1)
    assert not guard.unchanged(m)
    assert guard.fingerprint != _guards.fingerprint(m, with_modes=True)
