"""Inputs and outputs of any structure (PopTorch's contract): tuples, lists, dicts and
nesting of tensors, keyword arguments, defaults, None, 0-d tensors and Python constants in;
the model's own structure out, per output mode; the loss anywhere in the result; in-place
updates of inputs applied to the caller's tensors. Each case is compared with eager PyTorch."""
import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tilegraph


class Cell(nn.Module):
    """An LSTM-style cell: the state comes in and goes out as a tuple (h, c)."""

    def __init__(self, d=8):
        super().__init__()
        self.gates = nn.Linear(2 * d, 4 * d)

    def forward(self, x, state):
        h, c = state
        i, f, g, o = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


def test_a_tuple_state_in_and_nested_tuples_out():
    torch.manual_seed(0)
    cell = Cell()
    x, h, c = (torch.randn(4, 8) for _ in range(3))
    out, (h2, c2) = tilegraph.inferenceModel(cell)(x, (h, c))
    ref, (rh, rc) = cell(x, (h, c))
    for a, b in ((out, ref), (h2, rh), (c2, rc)):
        torch.testing.assert_close(a, b)


class Mixed(nn.Module):
    """Positional, defaulted, keyword-only and dict arguments; a dict result holding a
    tuple with None and a Python number."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x, extras, scale=2.0, mask=None, *, feats):
        y = self.fc(x) * scale + extras[0] + feats["bias"]
        if mask is not None:
            y = y * mask
        return {"y": y, "pair": (extras[1] * 2, None), "count": 3}


def _mixed_inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(4, 6, generator=g), [torch.randn(4, 6, generator=g),
                                               torch.randn(4, 6, generator=g)],
            {"bias": torch.randn(4, 6, generator=g)})


def test_keyword_arguments_lists_dicts_and_constants_in_the_models_structure_out():
    model = Mixed()
    x, extras, feats = _mixed_inputs()
    run = tilegraph.inferenceModel(model)
    out = run(x, extras, feats=feats)
    ref = model(x, extras, feats=feats)
    assert set(out) == {"y", "pair", "count"} and out["count"] == 3
    assert isinstance(out["pair"], tuple) and out["pair"][1] is None
    torch.testing.assert_close(out["y"], ref["y"])
    torch.testing.assert_close(out["pair"][0], ref["pair"][0])
    # The same call spelled differently (a keyword for a positional parameter) is the
    # same program: no recompilation.
    before = tilegraph.compilation_count()
    run(x, extras=extras, feats=feats)
    assert tilegraph.compilation_count() == before


def test_a_changed_constant_or_none_recompiles_with_a_warning_and_is_honoured():
    model = Mixed()
    x, extras, feats = _mixed_inputs()
    mask = (torch.arange(24).reshape(4, 6) % 2).float()
    run = tilegraph.inferenceModel(model)
    run(x, extras, 2.0, feats=feats)
    before = tilegraph.compilation_count()
    with pytest.warns(UserWarning, match="recompiling: non-tensor argument 0 changed from "
                                         "2.0 to 0.5"):
        out = run(x, extras, 0.5, feats=feats)
    torch.testing.assert_close(out["y"], model(x, extras, 0.5, feats=feats)["y"])
    out = run(x, extras, 0.5, mask, feats=feats)  # None -> a tensor: another program
    torch.testing.assert_close(out["y"], model(x, extras, 0.5, mask, feats=feats)["y"])
    assert tilegraph.compilation_count() == before + 2


def test_zero_dim_tensor_inputs_and_outputs():
    class Scale(nn.Module):
        def forward(self, x, k):
            return x * k, (x * k).sum()

    x, k = torch.randn(5), torch.tensor(3.0)
    y, total = tilegraph.inferenceModel(Scale())(x, k)
    torch.testing.assert_close(y, x * 3)
    # A scalar of one step comes back as a scalar (eager's and PopTorch's shape); of several
    # steps, as one value per step.
    assert total.shape == () and torch.allclose(total, (x * 3).sum())

    class Total(nn.Module):
        def forward(self, x):
            return x.sum()

    steps = tilegraph.inferenceModel(Total(), tilegraph.Options().deviceIterations(2))
    totals = steps(torch.cat([x, 2 * x]))  # two steps of 5 elements each
    assert totals.shape == (2,) and torch.allclose(totals, torch.stack([x.sum(), 2 * x.sum()]))


def test_structured_outputs_follow_the_output_mode_leaf_by_leaf():
    model = Mixed()
    g = torch.Generator().manual_seed(2)
    steps = 3
    x = torch.randn(4 * steps, 6, generator=g)
    extras = [torch.randn(4 * steps, 6, generator=g), torch.randn(4 * steps, 6, generator=g)]
    feats = {"bias": torch.randn(4 * steps, 6, generator=g)}
    ref = model(x, extras, feats=feats)
    out = tilegraph.inferenceModel(model, tilegraph.Options().deviceIterations(steps))(
        x, extras, feats=feats)
    torch.testing.assert_close(out["y"], ref["y"])   # All: every step, concatenated
    torch.testing.assert_close(out["pair"][0], ref["pair"][0])
    final = tilegraph.inferenceModel(model, tilegraph.Options().deviceIterations(steps)
                                     .outputMode(tilegraph.OutputMode.Final))(
        x, extras, feats=feats)
    torch.testing.assert_close(final["y"], ref["y"][-4:])  # the last step's micro-batch
    assert final["count"] == 3


class LossInADict(nn.Module):
    def __init__(self, marked):
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.marked = marked

    def forward(self, x, t):
        logits = self.fc(x)
        loss = F.cross_entropy(logits, t)
        if self.marked:
            loss = tilegraph.identity_loss(loss, reduction="sum")
        # The loss is neither last nor alone: first in a dict (Hugging Face's layout).
        return {"loss": loss, "logits": logits, "aux": (logits.argmax(1), None)}


@pytest.mark.parametrize("marked", [True, False], ids=["identity_loss", "loss_key"])
def test_training_finds_the_loss_anywhere_in_the_result(marked):
    torch.manual_seed(0)
    model = LossInADict(marked)
    eager = copy.deepcopy(model)
    opt = torch.optim.SGD(eager.parameters(), lr=0.1, momentum=0.9)
    run = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1,
                                                                   momentum=0.9))
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        x, t = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        out = run(x, t)
        opt.zero_grad()
        ref = eager(x, t)
        ref["loss"].backward()
        opt.step()
        torch.testing.assert_close(out["loss"], ref["loss"].detach(), rtol=1e-5, atol=1e-6)
        assert out["aux"][1] is None and out["aux"][0].dtype == torch.int64
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_identity_loss_in_a_nested_tuple_is_the_loss_not_the_last_output():
    class Nested(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            y = self.fc(x)
            return (tilegraph.identity_loss((y ** 2).mean(), "sum"), y), y.sum()

    torch.manual_seed(0)
    model = Nested()
    eager = copy.deepcopy(model)
    run = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5))
    x = torch.randn(3, 4)
    (loss, y), total = run(x)
    ref_loss = (eager.fc(x) ** 2).mean()
    ref_loss.backward()
    with torch.no_grad():
        for p in eager.parameters():
            p -= 0.5 * p.grad
    torch.testing.assert_close(loss, ref_loss.detach())
    torch.testing.assert_close(model.fc.weight.detach(), eager.fc.weight.detach())


def test_two_identity_losses_are_an_error():
    class Two(nn.Module):
        def forward(self, x):
            return tilegraph.identity_loss(x.sum(), "sum"), tilegraph.identity_loss(x.sum(),
                                                                                    "sum")

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.ones(3))
            self.two = Two()

        def forward(self, x):
            return self.two(x * self.p)

    with pytest.raises(RuntimeError, match="identity_loss marks 2 of the outputs"):
        tilegraph.trainingModel(Holder())(torch.randn(3))


def test_in_place_updates_of_inputs_reach_the_callers_tensors():
    class Normalize(nn.Module):
        def forward(self, x, counter):
            x.sub_(x.mean(dim=1, keepdim=True))  # in place, as some preprocessing does
            counter.add_(1)
            return x * 2

    x = torch.randn(4, 5)
    counter = torch.zeros(4, 1)
    expected_x = x - x.mean(dim=1, keepdim=True)
    out = tilegraph.inferenceModel(Normalize())(x, counter)
    torch.testing.assert_close(x, expected_x)
    torch.testing.assert_close(counter, torch.ones(4, 1))
    torch.testing.assert_close(out, expected_x * 2)


def test_in_place_input_updates_with_several_steps_need_output_mode_all():
    class Bump(nn.Module):
        def forward(self, x):
            x.add_(1)
            return x.sum()

    opts = tilegraph.Options().deviceIterations(2).outputMode(tilegraph.OutputMode.Final)
    with pytest.raises(NotImplementedError, match="OutputMode.All"):
        tilegraph.inferenceModel(Bump(), opts)(torch.zeros(4, 2))
    x = torch.zeros(4, 2)
    tilegraph.inferenceModel(Bump(), tilegraph.Options().deviceIterations(2).outputMode(
        tilegraph.OutputMode.All))(x)
    torch.testing.assert_close(x, torch.ones(4, 2))


def test_structures_survive_export_and_load(tmp_path):
    model = Mixed()
    x, extras, feats = _mixed_inputs()
    run = tilegraph.inferenceModel(model)
    path = str(tmp_path / "mixed.tg")
    run.compileAndExport(path, x, extras, feats=feats)
    loaded = tilegraph.load(path)
    out = loaded(x, extras, feats=feats)
    ref = model(x, extras, feats=feats)
    torch.testing.assert_close(out["y"], ref["y"])
    assert out["pair"][1] is None and out["count"] == 3
    with pytest.raises(ValueError, match="takes its arguments as they were exported"):
        loaded(x, extras, 0.5, feats=feats)


def test_wrong_arguments_name_the_forwards_parameters():
    run = tilegraph.inferenceModel(Mixed())
    x, extras, feats = _mixed_inputs()
    with pytest.raises(TypeError, match="missing a required argument: 'feats'"):
        run(x, extras)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        run(x, extras, feats=feats, nope=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = run(x, extras, feats=feats)  # still usable, no recompilation warning
    assert out["count"] == 3


def _supplies_flag(forward):
    """A forward decorator that supplies a keyword when the caller leaves it out, as Hugging
    Face's do for `use_cache`: passing the default explicitly is not the same call."""
    import functools

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        kwargs.setdefault("doubled", True)
        return forward(self, *args, **kwargs)
    return wrapper


class Decorated(nn.Module):
    @_supplies_flag
    def forward(self, x, mask=None, doubled=None):
        y = x * 2 if doubled else x
        return y if mask is None else y * mask


def test_a_forward_decorator_gets_the_arguments_the_caller_passed():
    x = torch.randn(3)
    run = tilegraph.inferenceModel(Decorated())
    torch.testing.assert_close(run(x), Decorated()(x))  # doubled, from the decorator
    torch.testing.assert_close(run(x, doubled=None), x)  # passed explicitly: not doubled


def test_a_hugging_face_model_is_wrapped_directly():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64)
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, 100, (2, 7))
    run = tilegraph.inferenceModel(model)
    want = model(ids).last_hidden_state
    torch.testing.assert_close(run(ids).last_hidden_state, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(run(input_ids=ids).last_hidden_state, want, rtol=1e-5, atol=1e-5)
