"""tilegraph.optim (PopTorch's poptorch.optim): LAMB compiled by the C++ optimizer builder
against its eager reference, LAMB's defining behaviour checked by hand, clipping by the global
gradient norm (max_grad_norm) and RMSprop's TensorFlow variant against their eager references
(themselves checked against torch and by hand), PopTorch's extra optimizer arguments
(accepted with a warning where they only steer IPU storage, an error where the feature is not
built), hyperparameters changed without recompiling."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tilegraph
from tilegraph.optim import LAMB


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x, t):
        out = self.b(torch.tanh(self.a(x)))
        return out, F.cross_entropy(out, t)


def _train_both(make_optimizer, steps=20, options=None, between_steps=None):
    """`steps` steps of Net in tilegraph and eagerly, losses compared at each;
    `between_steps(step, run, optimizer, eager_optimizer)` after each step."""
    torch.manual_seed(0)
    model = Net()
    eager = copy.deepcopy(model)
    eager_opt, opt = make_optimizer(eager), make_optimizer(model)
    run = tilegraph.trainingModel(model, options, optimizer=opt)
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        x, t = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        _, loss = run(x, t)
        eager_opt.zero_grad()
        _, ref = eager(x, t)
        ref.backward()
        eager_opt.step()
        torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-6)
        if between_steps is not None:
            between_steps(step, run, opt, eager_opt)
    return model, eager, run


@pytest.mark.parametrize("config", [
    dict(),
    dict(bias_correction=False, max_weight_norm=0.5, weight_decay=0.0),
    dict(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
], ids=["defaults", "no_bias_correction_clipped_norm", "betas_eps_wd"])
def test_lamb_matches_its_eager_reference_over_twenty_steps(config):
    model, eager, _ = _train_both(lambda m: LAMB(m.parameters(), lr=1e-2, **config))
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_lamb_per_group_hyperparameters_and_set_optimizer_without_recompiling():
    def make(m, lr=1e-2):
        return LAMB([{"params": m.a.parameters(), "lr": lr, "weight_decay": 0.0},
                     {"params": m.b.parameters(), "lr": lr * 3}], lr=lr)
    model, eager, run = _train_both(make, steps=5)
    before = tilegraph.compilation_count()
    # lr 0: the next step leaves the weights as they are (LAMB's update is lr * trust * r),
    # without recompiling.
    run.setOptimizer(make(model, lr=0.0))
    g = torch.Generator().manual_seed(5)
    x, t = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    w0 = [p.detach().clone() for p in model.parameters()]
    run(x, t)
    assert tilegraph.compilation_count() == before
    for p, q in zip(model.parameters(), w0):
        assert torch.equal(p.detach(), q)
    del eager


def test_adamw_without_bias_correction_matches_its_eager_reference():
    """PopTorch's AdamW(bias_correction=False): m / (sqrt(v) + eps) at lr, no 1 - beta^t
    factors (the first steps are then smaller than Adam's: m and v start at zero)."""
    make = lambda m: tilegraph.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.05,  # noqa
                                           bias_correction=False)
    model, eager, _ = _train_both(make)
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6, msg=name)
    # One step by hand: g known, m = (1-b1) g, v = (1-b2) g^2.
    lin = nn.Linear(3, 1, bias=False)
    w0 = lin.weight.detach().clone()
    opt = tilegraph.optim.AdamW(lin.parameters(), lr=0.1, weight_decay=0.0,
                                bias_correction=False)
    x = torch.tensor([[1.0, -2.0, 0.5]])
    lin(x).sum().backward()
    opt.step()
    m, v = 0.1 * x[0], 0.001 * x[0] ** 2
    torch.testing.assert_close(lin.weight.detach()[0], w0[0] - 0.1 * m / (v.sqrt() + 1e-8))


def test_lamb_max_weight_norm_zero_freezes_the_model_but_zero_parameters_still_move():
    """max_weight_norm clips ||p|| in the trust ratio, so 0 multiplies the update by 0: the
    model does not train (PopTorch's optimizers_test). The "trust = 1 where a norm is 0" rule
    is for a parameter whose own norm is 0 (a zero-initialized bias): it moves once, then
    its norm is no longer 0 and it is frozen like the rest."""
    x, t = torch.randn(8, 6), torch.randint(0, 3, (8,))

    def train(zero_bias):
        torch.manual_seed(0)
        model = Net()
        if zero_bias:
            nn.init.zeros_(model.b.bias)
        eager = copy.deepcopy(model)
        run = tilegraph.trainingModel(model, optimizer=LAMB(model.parameters(), lr=1e-2,
                                                            max_weight_norm=0.0))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        losses = [float(run(x, t)[1]) for _ in range(5)]
        opt = LAMB(eager.parameters(), lr=1e-2, max_weight_norm=0.0)
        for _ in range(5):  # the eager reference agrees
            opt.zero_grad()
            eager(x, t)[1].backward()
            opt.step()
        for (name, p), q in zip(model.named_parameters(), eager.parameters()):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7, msg=name)
        moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(),
                                                                              before[n])}
        return losses, moved

    losses, moved = train(zero_bias=False)
    assert len(set(losses)) == 1 and not moved, (losses, moved)
    losses, moved = train(zero_bias=True)
    assert moved == {"b.bias"} and losses[0] != losses[1] and len(set(losses[1:])) == 1
    # PopTorch's way to lift the clip: set the optimizer's attribute, then setOptimizer.
    model = Net()
    opt = LAMB(model.parameters(), lr=1e-2, max_weight_norm=0.0)
    run = tilegraph.trainingModel(model, optimizer=opt)
    frozen = float(run(x, t)[1])
    assert float(run(x, t)[1]) == frozen
    opt.max_weight_norm = 100.0
    assert all(g["max_weight_norm"] == 100.0 for g in opt.param_groups)
    run.setOptimizer(opt)
    for _ in range(20):
        loss = float(run(x, t)[1])
    assert loss < frozen


def test_lamb_constant_max_weight_norm_zero_takes_adams_step():
    """Graphcore's BERT gives its biases a group with max_weight_norm=0 and the attribute
    constant ("do not apply LAMB update for biases"): PopART then builds no trust ratio, the
    group takes Adam's step, while the other groups keep LAMB's (it froze them before)."""
    x, t = torch.randn(8, 6), torch.randint(0, 3, (8,))
    torch.manual_seed(0)
    model = Net()
    eager = copy.deepcopy(model)

    def groups(m):
        biases = [p for n, p in m.named_parameters() if n.endswith("bias")]
        weights = [p for n, p in m.named_parameters() if not n.endswith("bias")]
        return [{"params": weights}, {"params": biases, "max_weight_norm": 0, "weight_decay": 0}]
    opt = LAMB(groups(model), lr=1e-2)  # max_weight_norm not given: constant (65500)
    assert opt.variable_attrs.isConstant("max_weight_norm") and opt.max_weight_norm == 65500.0
    run = tilegraph.trainingModel(model, optimizer=opt)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(3):
        run(x, t)
    ref = LAMB(groups(eager), lr=1e-2)
    for _ in range(3):
        ref.zero_grad()
        eager(x, t)[1].backward()
        ref.step()
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(p.detach(), before[name]), name
    # one Adam step by hand for a bias: b - lr * m_hat / (sqrt(v_hat) + eps) = b - lr * sign(g)
    torch.manual_seed(0)
    fresh = Net()
    reference = copy.deepcopy(fresh)
    run = tilegraph.trainingModel(fresh, optimizer=LAMB(groups(fresh), lr=1e-2))
    run(x, t)
    reference(x, t)[1].backward()
    g = reference.b.bias.grad
    torch.testing.assert_close(fresh.b.bias.detach(),
                               reference.b.bias.detach() - 1e-2 * g / (g.abs() + 1e-8))


def test_poptorch_optimizers_take_none_for_every_argument():
    """PopTorch's signatures are Optional[...] = None throughout (Graphcore's ViT passes
    betas=None): the defaults apply, the arguments left out are constant attributes, and
    LAMB's max_weight_norm None is PopTorch's 65500."""
    p = [nn.Parameter(torch.ones(3))]
    made = [tilegraph.optim.Adam(p, lr=1e-3, betas=None, eps=None, weight_decay=None),
            tilegraph.optim.AdamW(p, lr=None, betas=None),
            tilegraph.optim.LAMB(p, lr=None, betas=None, eps=None, weight_decay=None),
            tilegraph.optim.SGD(p, lr=0.1, momentum=0.9, dampening=None, weight_decay=None,
                                nesterov=None),
            tilegraph.optim.RMSprop(p, lr=0.01, alpha=None, eps=None, centered=None)]
    assert made[0].defaults["betas"] == (0.9, 0.999) and made[1].defaults["weight_decay"] == 1e-2
    assert made[2].defaults["max_weight_norm"] == 65500.0 and made[2].defaults["lr"] == 1e-3
    assert made[3].defaults["dampening"] == 0.0 and made[3].defaults["nesterov"] is False
    assert made[4].defaults["alpha"] == 0.99
    assert made[0].variable_attrs.isConstant("betas")
    assert not made[0].variable_attrs.isConstant("lr")
    assert not made[3].variable_attrs.isConstant("momentum")


def test_one_lamb_step_by_hand():
    """One parameter vector, its gradient known: the update is lr * trust * r with
    trust = ||p|| / ||r|| (the layer-wise trust ratio that defines LAMB)."""
    class Lin(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([3.0, 4.0]))

        def forward(self, x):
            return (self.w * x).sum()  # d/dw = x

    model = Lin()
    lr, wd, eps = 0.1, 0.01, 1e-8
    run = tilegraph.trainingModel(model, optimizer=LAMB(model.parameters(), lr=lr,
                                                        weight_decay=wd, eps=eps))
    x = torch.tensor([[1.0, -2.0]])
    run(x)
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    p = torch.tensor([3.0, 4.0], dtype=torch.float64)
    m_hat, v_hat = g, g * g  # first step: bias correction undoes the (1-beta) factors
    r = m_hat / (v_hat.sqrt() + eps) + wd * p
    trust = p.norm() / r.norm()
    expected = p - lr * trust * r
    torch.testing.assert_close(model.w.detach().double(), expected, rtol=1e-6, atol=1e-6)
    assert math.isclose(float(trust), 5.0 / float(r.norm()))


def test_ipu_storage_arguments_warn_once_and_change_nothing():
    """velocity_scaling only scales IPU state (warns); accum_type chooses the state dtype of
    half-precision parameters, so float32 parameters train exactly as without it."""
    with pytest.warns(UserWarning, match=r"velocity_scaling=128.0.*no effect"):
        opt = tilegraph.optim.SGD(Net().parameters(), lr=0.1, momentum=0.9,
                                  accum_type=torch.float16, velocity_scaling=128.0)
    assert opt.ipu_storage == {"velocity_scaling": 128.0}
    assert opt.state_dtypes == {"accum_type": torch.float16}
    model, eager, _ = _train_both(lambda m: tilegraph.optim.SGD(
        m.parameters(), lr=0.1, momentum=0.9, accum_type=torch.float16), steps=5)
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


def test_features_not_built_say_so():
    with pytest.raises(ValueError, match="max_grad_norm must be > 0"):
        tilegraph.optim.Adam(Net().parameters(), max_grad_norm=0.0)
    with pytest.raises(ValueError, match="invalid"):
        LAMB(Net().parameters(), lr=-1.0)


_AMSGRAD_MAXIMIZE = {
    "adam_amsgrad": lambda m: torch.optim.Adam(m.parameters(), lr=2e-2, amsgrad=True,
                                               weight_decay=0.01),
    "adamw_amsgrad_maximize": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, amsgrad=True,
                                                          maximize=True),
    "sgd_maximize": lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9,
                                              maximize=True, weight_decay=0.01),
    "rmsprop_maximize": lambda m: torch.optim.RMSprop(m.parameters(), lr=1e-3, maximize=True),
    "poptorch_adam_amsgrad": lambda m: tilegraph.optim.Adam(m.parameters(), lr=2e-2,
                                                            amsgrad=True),
}


@pytest.mark.parametrize("kind", sorted(_AMSGRAD_MAXIMIZE))
def test_amsgrad_and_maximize_train_like_eager(kind):
    """torch's amsgrad (the running max of the second moment in the denominator, kept as
    optimizer state max_exp_avg_sq) and maximize (gradient ascent): 20 steps against eager,
    the weights and, for torch's optimizers, the state their `state[p]` shows."""
    optimizers = []

    def make(m):
        optimizers.append(_AMSGRAD_MAXIMIZE[kind](m))
        return optimizers[-1]
    model, eager, _ = _train_both(make)
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    eager_opt, opt = optimizers
    if "amsgrad" in kind and not kind.startswith("poptorch"):
        for p, q in zip(model.parameters(), eager.parameters()):
            torch.testing.assert_close(opt.state[p]["max_exp_avg_sq"],
                                       eager_opt.state[q]["max_exp_avg_sq"], rtol=1e-5,
                                       atol=1e-8)


_CLIPPED = {
    "sgd_momentum": lambda m, c: tilegraph.optim.SGD(m.parameters(), lr=0.1, momentum=0.9,
                                                     max_grad_norm=c),
    "adam": lambda m, c: tilegraph.optim.Adam(m.parameters(), lr=1e-2, max_grad_norm=c),
    "adamw": lambda m, c: tilegraph.optim.AdamW(m.parameters(), lr=1e-2, max_grad_norm=c),
    "rmsprop": lambda m, c: tilegraph.optim.RMSprop(m.parameters(), lr=1e-2, max_grad_norm=c),
    "lamb": lambda m, c: LAMB(m.parameters(), lr=1e-2, max_grad_norm=c),
}


@pytest.mark.parametrize("kind", sorted(_CLIPPED))
def test_max_grad_norm_clips_like_the_eager_reference(kind):
    """Clipping by the global norm, compiled, against the optimizer's own step() (which clips
    .grad first) over twenty steps; 0.05 is below every step's gradient norm here, so each
    step is clipped, and training without the clip ends elsewhere."""
    norms = []

    def make(m):
        opt = _CLIPPED[kind](m, 0.05)
        clip = opt.clip_grad_norm
        opt.clip_grad_norm = lambda: norms.append(clip()) or norms[-1]
        return opt
    model, eager, _ = _train_both(make)
    assert len(norms) == 20 and min(norms) > 0.05, norms
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6, msg=name)
    unclipped, _, _ = _train_both(lambda m: _CLIPPED[kind](m, None))
    assert not torch.allclose(unclipped.a.weight, model.a.weight, rtol=1e-3, atol=1e-4)


def test_the_eager_clip_is_torchs_clip_grad_norm():
    """The eager reference's clipping against torch.nn.utils.clip_grad_norm_ (whose factor
    is max / (norm + 1e-6), capped at 1): the same gradients to float32 rounding."""
    torch.manual_seed(0)
    a, b = Net(), Net()
    b.load_state_dict(a.state_dict())
    x, t = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for m in (a, b):
        m(x, t)[1].mul(10).backward()
    opt = tilegraph.optim.SGD(a.parameters(), lr=0.1, max_grad_norm=0.3)
    norm = opt.clip_grad_norm()
    ref = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.3)
    assert norm > 0.3 and math.isclose(norm, float(ref), rel_tol=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-8)
    total = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in a.parameters()))
    assert math.isclose(total, 0.3, rel_tol=1e-5)


def test_max_grad_norm_under_loss_scaling_clips_the_unscaled_gradients():
    """The norm is of the true gradients: a loss scale of 1024 changes nothing."""
    make = lambda m: tilegraph.optim.SGD(m.parameters(), lr=0.1, momentum=0.9,  # noqa: E731
                                         max_grad_norm=0.05, loss_scaling=1024.0)
    model, eager, _ = _train_both(make, steps=10)
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


def test_max_grad_norm_changes_through_set_optimizer_without_recompiling():
    """The clip is a runtime value: a new one, then None (no clipping), with no new
    compilation; the engine follows the eager optimizer given the same changes. From None to
    a value would change the program, and is refused."""
    torch.manual_seed(0)
    model = Net()
    eager = copy.deepcopy(model)
    make = lambda m, c: tilegraph.optim.SGD(m.parameters(), lr=0.1, max_grad_norm=c)  # noqa
    eager_opt = make(eager, 0.05)
    run = tilegraph.trainingModel(model, optimizer=make(model, 0.05))
    g = torch.Generator().manual_seed(1)
    before = None
    for step in range(9):
        if step in (3, 6):
            clip = 0.02 if step == 3 else None
            run.setOptimizer(make(model, clip))
            eager_opt.max_grad_norm = clip
        x, t = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        run(x, t)
        before = tilegraph.compilation_count() if before is None else before
        eager_opt.zero_grad()
        eager(x, t)[1].backward()
        eager_opt.step()
    assert tilegraph.compilation_count() == before
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    plain = tilegraph.trainingModel(Net(), optimizer=tilegraph.optim.SGD(Net().parameters()))
    plain(x, t)
    with pytest.raises(ValueError, match="max_grad_norm"):
        plain.setOptimizer(make(plain.model, 1.0))


@pytest.mark.parametrize("config", [
    dict(),
    dict(momentum=0.9, weight_decay=0.01),
    dict(centered=True, momentum=0.5, eps=1e-3),
], ids=["plain", "momentum_wd", "centered_momentum"])
def test_rmsprop_tf_variant_matches_its_eager_reference(config):
    make = lambda m: tilegraph.optim.RMSprop(m.parameters(), lr=1e-2,  # noqa: E731
                                             use_tf_variant=True, **config)
    model, eager, _ = _train_both(make)
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6, msg=name)
    torch_rms, _, _ = _train_both(lambda m: torch.optim.RMSprop(m.parameters(), lr=1e-2,
                                                               **config))
    assert not torch.allclose(torch_rms.a.weight, model.a.weight, rtol=1e-3, atol=1e-4)


def test_one_rmsprop_tf_step_by_hand():
    """TensorFlow's RMSprop, first step from square_avg = 1: sq = alpha + (1-alpha) g^2,
    buf = lr * g / sqrt(sq + eps), p -= buf."""
    model = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    lr, alpha, eps = 0.1, 0.9, 1e-2
    run = tilegraph.trainingModel(_Squared(model), optimizer=tilegraph.optim.RMSprop(
        model.parameters(), lr=lr, alpha=alpha, eps=eps, momentum=0.5, use_tf_variant=True))
    p = model.weight.detach().double().clone()
    run(x)
    g = 2 * float(x.double() @ p.T) * x.double()  # d/dp (x.p)^2
    sq = alpha + (1 - alpha) * g * g
    expected = p - lr * g / torch.sqrt(sq + eps)
    torch.testing.assert_close(model.weight.detach().double(), expected, rtol=1e-6, atol=1e-6)


class _Squared(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return (self.inner(x) ** 2).sum()


def test_lamb_state_survives_export_and_load(tmp_path):
    model, _, run = _train_both(lambda m: LAMB(m.parameters(), lr=1e-2), steps=3)
    path = str(tmp_path / "lamb.tg")
    g = torch.Generator().manual_seed(9)
    x, t = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    run.compileAndExport(path, x, t)
    loaded = tilegraph.load(path)
    _, a = run(x, t)
    _, b = loaded(x, t)
    torch.testing.assert_close(a, b)
    for p, q in zip(model.parameters(), loaded.model.parameters()):
        torch.testing.assert_close(p.detach(), q.detach())


def test_variable_attributes_are_recorded_and_every_hyperparameter_is_runtime():
    opt = tilegraph.optim.SGD(Net().parameters(), lr=0.1, momentum=0.9)
    assert not opt.variable_attrs.isConstant("lr")
    opt.variable_attrs.markAsConstant("momentum")
    assert opt.variable_attrs.isConstant("momentum")
    with pytest.raises(ValueError, match="not an attribute"):
        opt.variable_attrs.markAsConstant("betas")


@pytest.mark.parametrize("placement", ["accumulation", "replicas", "pipeline"])
def test_max_grad_norm_over_accumulation_replicas_and_pipeline_stages(placement):
    """One global norm: of the accumulated (mean) gradient of the step, clipped once per
    optimizer step as PopART's; of the replicas' reduced gradients (two replicas, each half
    of the batch); or summed over the devices of two pipeline stages (each device holds one
    layer's gradients). Against eager on the whole batch in parts."""
    torch.manual_seed(0)
    model = Net()
    eager = copy.deepcopy(model)
    opts = tilegraph.Options()
    parts = 4 if placement == "pipeline" else 2
    if placement == "accumulation":
        opts.Training.gradientAccumulation(parts)
    elif placement == "replicas":
        opts.replicationFactor(2)
    else:
        opts.setExecutionStrategy(tilegraph.PipelinedExecution(
            tilegraph.AutoStage.AutoIncrement)).Training.gradientAccumulation(parts)
        tilegraph.BeginBlock(model.b, ipu_id=1)
    make = lambda m: tilegraph.optim.SGD(m.parameters(), lr=0.1, momentum=0.9,  # noqa: E731
                                         max_grad_norm=0.05)
    run = tilegraph.trainingModel(model, opts, optimizer=make(model))
    eager_opt = make(eager)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        x, t = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        run(x, t)
        eager_opt.zero_grad()
        for xs, ts in zip(x.chunk(parts), t.chunk(parts)):
            (eager(xs, ts)[1] / parts).backward()
        eager_opt.step()
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


class _Lin(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        y = self.lin(x)
        return y, tilegraph.identity_loss((y ** 2).sum(), reduction="sum")


_STATEFUL = {
    "sgd_momentum": (tilegraph.optim.SGD, dict(momentum=0.9), ["Accl"]),
    "adam": (tilegraph.optim.Adam, {}, ["Accl1", "Accl2"]),
    "adamw": (tilegraph.optim.AdamW, {}, ["Accl1", "Accl2"]),
    "rmsprop": (tilegraph.optim.RMSprop, dict(momentum=0.9), ["Accl1", "Accl3"]),
    "lamb": (LAMB, {}, ["Accl1", "Accl2"]),
}


@pytest.mark.parametrize("kind", sorted(_STATEFUL))
def test_optimizer_state_dict_checkpoints_the_engine_state(kind, tmp_path):
    """PopTorch's optimizer state_dict: "ipu_state" / "ipu_param" are None before compiling,
    then the engine's state (PopART's names) and each parameter's hyperparameters. A
    checkpoint (torch.save) loaded into a fresh optimizer, before its executor compiles,
    resumes training exactly; without it the momentum / moments restart and the weights
    differ."""
    cls, extra, prefixes = _STATEFUL[kind]
    make = lambda m: cls(m.parameters(), lr=0.05, weight_decay=0.025,  # noqa: E731
                         loss_scaling=0.75, **extra)
    torch.manual_seed(0)
    model = _Lin()
    opt = make(model)
    run = tilegraph.trainingModel(model, optimizer=opt)
    assert opt.state_dict()["ipu_state"] is None and opt.state_dict()["ipu_param"] is None
    x = torch.randn(3)
    for _ in range(3):
        run(x)
    saved = opt.state_dict()
    assert {f"{p}___model.lin.{w}" for p in prefixes for w in ("weight", "bias")} <= \
        set(saved["ipu_state"]), sorted(saved["ipu_state"])
    assert float(saved["ipu_param"]["lossScaling_FLOAT"]) == 0.75
    lr_key = ("scaledLearningRate0___specific___model.lin.bias" if kind == "sgd_momentum"
              else "learningRate___specific___model.lin.bias")
    want = 0.05 / 0.75 if kind == "sgd_momentum" else 0.05
    assert float(saved["ipu_param"][lr_key]) == pytest.approx(want)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optimizer": saved}, path)
    checkpoint = torch.load(path)

    def resumed(with_state):
        fresh = _Lin()
        fresh.load_state_dict(checkpoint["model"])
        fresh_opt = make(fresh)
        if with_state:
            fresh_opt.load_state_dict(checkpoint["optimizer"])
        again = tilegraph.trainingModel(fresh, optimizer=fresh_opt)
        for _ in range(2):
            again(x)
        return fresh.lin.weight.detach()

    for _ in range(2):
        run(x)
    assert torch.equal(resumed(True), model.lin.weight.detach())
    assert not torch.allclose(resumed(False), model.lin.weight.detach(), rtol=1e-4, atol=1e-6)


def test_optimizer_state_loads_into_a_compiled_executor_and_refuses_torchs():
    torch.manual_seed(0)
    model = _Lin()
    opt = tilegraph.optim.Adam(model.parameters(), lr=0.1)
    run = tilegraph.trainingModel(model, optimizer=opt)
    x = torch.randn(3)
    run(x)
    state = opt.state_dict()
    state["ipu_state"] = {k: torch.full_like(v, 0.5) for k, v in state["ipu_state"].items()}
    opt.load_state_dict(state)
    assert all(torch.equal(v, torch.full_like(v, 0.5))
               for v in opt.state_dict()["ipu_state"].values())
    # Written into the running engine: the next step continues from the loaded step count.
    state["ipu_state"]["optimizer.step"] = torch.tensor(100.0)
    opt.load_state_dict(state)
    run(x)
    assert float(opt.state_dict()["ipu_state"]["optimizer.step"]) == 101.0
    # A damaged state is refused whole, before anything is written.
    before = opt.state_dict()["ipu_state"]
    for bad, error in (({"Accl1___model.lin.weight": torch.zeros(5),
                         "optimizer.step": torch.tensor(7.0)}, ValueError),
                       ({"not.a.state": torch.zeros(3)}, ValueError),
                       ({"optimizer.step": "7"}, TypeError)):
        with pytest.raises(error):
            opt.load_state_dict(dict(state, ipu_state=bad))
        assert all(torch.equal(v, opt.state_dict()["ipu_state"][k]) for k, v in before.items())
    eager = nn.Linear(3, 3)
    torch_opt = torch.optim.Adam(eager.parameters())
    eager(x).sum().backward()
    torch_opt.step()
    with pytest.raises(RuntimeError, match="Only IPU optimizer states can be loaded"):
        tilegraph.optim.Adam(eager.parameters()).load_state_dict(torch_opt.state_dict())
    assert tilegraph.optim.SGD.__bases__[1] is torch.optim.SGD
    assert isinstance(opt, tilegraph.optim.Optimizer)
    # destroy() keeps the state on the optimizer: shown by state_dict, and the next executor
    # compiled with it continues from it (Adam's step counter goes on).
    run(x)
    kept = opt.state_dict()["ipu_state"]
    run.destroy()
    assert all(torch.equal(v, opt.state_dict()["ipu_state"][k]) for k, v in kept.items())
    tilegraph.trainingModel(model, optimizer=opt)(x)
    assert float(opt.state_dict()["ipu_state"]["optimizer.step"]) == \
        float(kept["optimizer.step"]) + 1


def test_momentum_given_as_zero_can_change_later_without_recompiling():
    """PopTorch: momentum=0.0 passed explicitly is a variable attribute. The program keeps
    momentum buffers (with momentum 0 the buffer is the gradient), so setOptimizer can raise
    it; the velocity then continues from the last gradient, as PopART's does (torch's eager
    SGD would start a fresh buffer). Left at its default, momentum stays out of the program
    and changing it is refused."""
    torch.manual_seed(0)
    model = _Lin()
    eager = copy.deepcopy(model)
    run = tilegraph.trainingModel(model, optimizer=tilegraph.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.0))
    x = torch.randn(3)
    bufs = {}

    def eager_step(momentum):
        eager.zero_grad()
        (eager(x)[0] ** 2).sum().backward()
        with torch.no_grad():
            for name, p in eager.named_parameters():
                bufs[name] = p.grad.clone() if name not in bufs else \
                    momentum * bufs[name] + p.grad
                p -= 0.01 * bufs[name]

    run(x)
    eager_step(0.0)
    before = tilegraph.compilation_count()
    run.setOptimizer(tilegraph.optim.SGD(model.parameters(), lr=0.01, momentum=0.5))
    for _ in range(2):
        run(x)
        eager_step(0.5)
    assert tilegraph.compilation_count() == before
    torch.testing.assert_close(model.lin.weight.detach(), eager.lin.weight.detach(), rtol=1e-5,
                               atol=1e-6)
    plain = tilegraph.trainingModel(_Lin(), optimizer=tilegraph.optim.SGD(_Lin().parameters(),
                                                                          lr=0.01))
    plain(x)
    with pytest.raises(ValueError, match="pass momentum=0.0 explicitly"):
        plain.setOptimizer(tilegraph.optim.SGD(plain.model.parameters(), lr=0.01,
                                               momentum=0.5))


@pytest.mark.parametrize("kind", ["torch_sgd_momentum", "tilegraph_adamw", "torch_adam_groups"])
def test_lr_schedulers_and_param_group_edits_apply_at_the_next_call(kind):
    """A learning-rate scheduler stepping the optimizer between calls (or a direct edit of
    param_groups) changes the next step's hyperparameters without setOptimizer, as the
    user's eager loop would; before, the engine kept the compiled values and drifted from
    eager silently (PopTorch needs setOptimizer for it, which still works: a no-op here)."""
    def make(m):
        if kind == "torch_sgd_momentum":
            opt = torch.optim.SGD(m.parameters(), lr=0.2, momentum=0.9)
        elif kind == "tilegraph_adamw":
            opt = tilegraph.optim.AdamW(m.parameters(), lr=0.05, weight_decay=0.1)
        else:
            opt = torch.optim.Adam([{"params": m.a.parameters()},
                                    {"params": m.b.parameters(), "lr": 0.02}], lr=0.05)
        schedules[opt] = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: 0.5 ** n)
        return opt

    def between_steps(step, run, opt, eager_opt):
        schedules[opt].step()
        schedules[eager_opt].step()
        if step == 2:  # PopTorch's way: still accepted
            run.setOptimizer(opt)
        if step == 3:  # an edit outside the scheduler
            for o in (opt, eager_opt):
                o.param_groups[0]["weight_decay"] = 0.01

    schedules = {}
    model, eager, run = _train_both(make, steps=6, between_steps=between_steps)
    run.copyWeightsToHost()
    assert run.optimizer.param_groups[0]["lr"] < 0.2 * 0.5 ** 5  # the schedule did move
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6, msg=name)


def _step_both(run, reference, optimizer, *args):
    """One eager optimizer step of `reference` and one call of the training executor."""
    optimizer.zero_grad()
    reference(*args).backward()
    optimizer.step()
    run(*args)


def _assert_same_parameters(model, reference):
    for got, want in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-5, atol=1e-6)


class WithIdleParameters(nn.Module):
    """A parameter the forward never uses (XLNet's mask_emb in a plain forward) and one it
    reads only detached: eager's grad is None for both, so its optimizers leave them alone."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.unused = nn.Parameter(torch.ones(3))
        self.detached = nn.Parameter(torch.full((2,), 0.5))

    def forward(self, x, y):
        return F.cross_entropy(self.fc(x) + self.detached.detach(), y)


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1),
], ids=["sgd", "adamw", "adam"])
def test_parameters_without_a_gradient_are_not_updated_as_in_eager(make):
    torch.manual_seed(0)
    model = WithIdleParameters()
    reference = copy.deepcopy(model)
    run = tilegraph.trainingModel(model, tilegraph.Options(), make(model.parameters()))
    optimizer = make(reference.parameters())
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    for _ in range(3):
        _step_both(run, reference, optimizer, x, y)
    assert reference.unused.grad is None and reference.detached.grad is None
    _assert_same_parameters(model, reference)


class TwoBranches(nn.Module):
    """The user picks a branch between calls (a Python attribute): the other branch's
    parameters get no gradient for a while."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(8, 4), nn.Linear(8, 4), nn.Linear(4, 4)
        self.use_b = False

    def forward(self, x, y):
        return F.cross_entropy(self.head((self.b if self.use_b else self.a)(x)), y)


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: torch.optim.Adam(ps, lr=1e-2),
    lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
], ids=["sgd_momentum", "adam", "adamw"])
def test_state_and_step_counts_survive_idle_and_frozen_stretches_as_in_eager(make):
    """Eager keeps a parameter's optimizer state (momentum, moments, its own step count for
    bias correction) while it has no gradient: a branch not taken, or a layer frozen with
    requires_grad_(False) and unfrozen later. Each switch recompiles; the state comes back."""
    torch.manual_seed(0)
    model = TwoBranches()
    reference = copy.deepcopy(model)
    run = tilegraph.trainingModel(model, tilegraph.Options(), make(model.parameters()))
    optimizer = make(reference.parameters())
    g = torch.Generator().manual_seed(1)
    schedule = [(False, True), (True, True), (True, True), (False, True), (False, False),
                (False, False), (False, True), (True, True)]  # (use_b, a trainable)
    for use_b, a_trainable in schedule:
        x, y = torch.randn(8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)
        for m in (model, reference):
            m.use_b = use_b
            m.a.requires_grad_(a_trainable)
        _step_both(run, reference, optimizer, x, y)
        _assert_same_parameters(model, reference)


def test_optimizer_settings_tilegraph_applies_per_optimizer_match_eager_or_are_refused():
    """Adam(decoupled_weight_decay=True) is AdamW; an SGD group without momentum ignores its
    dampening next to groups with momentum (as eager); nesterov / centered differing between
    groups is refused (one setting per program)."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    for make in (lambda m: torch.optim.Adam(m.parameters(), lr=1e-2, weight_decay=0.1,
                                            decoupled_weight_decay=True),
                 lambda m: torch.optim.SGD([{"params": m.fc.weight, "momentum": 0.0,
                                             "dampening": 0.5},
                                            {"params": m.fc.bias, "momentum": 0.9}], lr=0.1)):
        model = WithIdleParameters()
        reference = copy.deepcopy(model)
        run = tilegraph.trainingModel(model, tilegraph.Options(), make(model))
        optimizer = make(reference)
        for _ in range(4):
            _step_both(run, reference, optimizer, x, y)
        _assert_same_parameters(model, reference)
    model = WithIdleParameters()
    mixed = torch.optim.SGD([{"params": model.fc.weight, "nesterov": True},
                             {"params": model.fc.bias}], lr=0.1, momentum=0.9)
    with pytest.raises(NotImplementedError, match="mix nesterov True and False"):
        tilegraph.trainingModel(model, tilegraph.Options(), mixed)(x, y)


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: torch.optim.Adam(ps, lr=1e-2),
    lambda ps: torch.optim.RMSprop(ps, lr=1e-2, momentum=0.5, centered=True),
], ids=["sgd_momentum", "adam", "rmsprop"])
def test_a_torch_optimizers_state_is_eagers_and_checkpoints_resume_exactly(make, tmp_path):
    """A torch.optim optimizer shows the engine's state in `state[p]` (eager's keys and
    values: momentum buffers, moments, step counts) after tilegraph calls, so a checkpoint
    (model and optimizer state_dicts) resumes exactly in a fresh model; state that eager
    steps put in an optimizer before it is wrapped is where tilegraph starts from; pickling
    the training executor keeps it too."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g))
            for _ in range(6)]
    reference = WithIdleParameters()
    model = copy.deepcopy(reference)
    eager = make(reference.parameters())

    def eager_step(x, y):
        eager.zero_grad()
        reference(x, y).backward()
        eager.step()

    eager_step(*data[0])  # one eager step before wrapping: the state starts from it
    model.load_state_dict(reference.state_dict())
    optimizer = make(model.parameters())
    optimizer.load_state_dict(eager.state_dict())
    run = tilegraph.trainingModel(model, tilegraph.Options(), optimizer)
    for x, y in data[1:3]:
        run(x, y)
        eager_step(x, y)
    for p, q in zip(model.parameters(), reference.parameters()):
        for key, value in eager.state[q].items():
            torch.testing.assert_close(torch.as_tensor(optimizer.state[p][key]).float(),
                                       torch.as_tensor(value).float(), rtol=1e-5, atol=1e-6)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()},
               tmp_path / "ckpt.pt")
    pickled = tmp_path / "executor.pt"
    torch.save(run, pickled)
    run.destroy()
    checkpoint = torch.load(tmp_path / "ckpt.pt")
    resumed = WithIdleParameters()
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = make(resumed.parameters())
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    again = tilegraph.trainingModel(resumed, tilegraph.Options(), resumed_optimizer)
    unpickled = torch.load(pickled, weights_only=False)
    for x, y in data[3:]:
        again(x, y)
        unpickled(x, y)
        eager_step(x, y)
    for trained in (resumed, unpickled.model):
        _assert_same_parameters(trained, reference)


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: torch.optim.Adam(ps, lr=1e-2),
], ids=["sgd_momentum", "adam"])
def test_a_param_group_added_between_calls_trains_from_the_next_call(make):
    """Fine-tuning's unfreeze: the head trains first, then optimizer.add_param_group adds
    the body with its own learning rate; the next call compiles a program with it, the
    head's state carrying over, as eager's next step."""
    torch.manual_seed(0)
    model = TwoBranches()
    reference = copy.deepcopy(model)
    optimizer, eager = make(model.head.parameters()), make(reference.head.parameters())
    run = tilegraph.trainingModel(model, tilegraph.Options(), optimizer)
    g = torch.Generator().manual_seed(1)
    for step in range(5):
        if step == 2:
            optimizer.add_param_group({"params": model.a.parameters(), "lr": 0.05})
            eager.add_param_group({"params": reference.a.parameters(), "lr": 0.05})
        x, y = torch.randn(8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)
        _step_both(run, reference, eager, x, y)
        _assert_same_parameters(model, reference)


def test_set_optimizer_refuses_new_state_dtypes_once_compiled():
    """PopTorch's test_setOptimizer_frozen_options_broken: the state dtypes (accum_type, ...)
    shape the compiled program, so setOptimizer with other ones raises ValueError ("already
    compiled"); they were silently kept. Hyperparameters still change."""
    model = Net()
    opt = tilegraph.optim.Adam(model.parameters(), lr=0.5)
    run = tilegraph.trainingModel(model, optimizer=opt)
    run(torch.randn(8, 6), torch.randint(0, 3, (8,)))
    opt.param_groups[0]["lr"] = 0.01
    run.setOptimizer(opt)
    assert opt.accum_type == torch.float32
    opt.accum_type = torch.half
    with pytest.raises(ValueError, match="already compiled"):
        run.setOptimizer(opt)
    with pytest.raises(ValueError, match="expected torch.float32"):
        opt.accum_type = torch.int32


def test_loaded_ipu_param_shows_until_attached():
    """PopTorch's test_write_ipu_state_from_checkpoint: a fresh optimizer that loads a
    checkpoint shows its ipu_param before any executor compiles with it (it showed None);
    the learning rate trained with is the restored param groups'."""
    x, t = torch.randn(8, 6), torch.randint(0, 3, (8,))
    model = Net()
    opt = tilegraph.optim.Adam(model.parameters(), lr=1.0)
    run = tilegraph.trainingModel(model, optimizer=opt)
    run(x, t)
    opt.param_groups[0]["lr"] = 0.5
    run.setOptimizer(opt)
    saved = opt.state_dict()
    fresh = tilegraph.optim.Adam(model.parameters(), lr=0.1)
    fresh.load_state_dict(saved)
    shown = fresh.state_dict()["ipu_param"]
    assert shown is not None and set(shown) == set(saved["ipu_param"])
    run.setOptimizer(fresh)
    run(x, t)
    after = fresh.state_dict()
    assert after["param_groups"][0]["lr"] == 0.5
    assert float(after["ipu_param"]["learningRate___specific___model.b.bias"]) == 0.5


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_per_parameter_ipu_param_values_train_as_their_own_groups(kind):
    """PopTorch's test_write_ipu_state: ipu_param values edited per parameter and loaded are
    applied (that parameter updates with its own learning rate / weight decay, as an eager
    optimizer with it in a group of its own), state_dict() gives the loaded dicts back as
    loaded until the next run (names left out stay out), and the loaded values after it; a
    value no learning rate and weight decay can express is refused at load."""
    x, t = torch.randn(8, 6), torch.randint(0, 3, (8,))
    model = Net()
    reference = copy.deepcopy(model)
    make = (lambda ps, **kw: tilegraph.optim.SGD(ps, lr=0.1, **kw)) if kind == "sgd" else \
        (lambda ps, **kw: tilegraph.optim.Adam(ps, lr=0.01, **kw))
    opt = make(model.parameters())
    run = tilegraph.trainingModel(model, optimizer=opt)
    run.compile(x, t)
    edited = opt.state_dict()
    if kind == "sgd":  # lr 0.05 and weight decay 0.2 for b.weight: PopART's SGD0 folding
        edited["ipu_param"]["scaledLearningRate0___specific___model.b.weight"] = \
            torch.tensor(0.05)
        edited["ipu_param"]["weightDecayScaleFactor0___specific___model.b.weight"] = \
            torch.tensor(1 - 0.05 * 0.2)
    else:
        edited["ipu_param"]["learningRate___specific___model.b.weight"] = torch.tensor(0.05)
        edited["ipu_param"]["weightDecay___specific___model.b.weight"] = torch.tensor(0.2)
    del edited["ipu_state"][next(iter(edited["ipu_state"]))]
    opt.load_state_dict(edited)
    shown = opt.state_dict()
    assert set(shown["ipu_state"]) == set(edited["ipu_state"])
    for name, value in edited["ipu_param"].items():
        assert torch.equal(shown["ipu_param"][name], value), name
    others = [p for n, p in reference.named_parameters() if n != "b.weight"]
    eager_cls = torch.optim.SGD if kind == "sgd" else torch.optim.Adam
    eager = eager_cls([{"params": others},
                       {"params": [reference.b.weight], "lr": 0.05, "weight_decay": 0.2}],
                      lr=0.1 if kind == "sgd" else 0.01)
    for _ in range(3):
        loss = run(x, t)[1]
        eager.zero_grad()
        ref_loss = reference(x, t)[1]
        ref_loss.backward()
        eager.step()
        torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    after = opt.state_dict()
    assert len(after["ipu_state"]) > len(edited["ipu_state"])  # all of the engine's again
    for name, value in edited["ipu_param"].items():
        assert torch.equal(after["ipu_param"][name], value), name
    if kind == "sgd":
        bad = opt.state_dict()
        bad["ipu_param"]["scaledLearningRate0___specific___model.a.bias"] = torch.tensor(0.0)
        bad["ipu_param"]["weightDecayScaleFactor0___specific___model.a.bias"] = \
            torch.tensor(0.5)
        with pytest.raises(ValueError, match="cannot express"):
            opt.load_state_dict(bad)


class _SignSGD(torch.optim.SGD):
    """An optimizer whose own step() is its point (the sign of the gradient)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])


class _RenamedSGD(torch.optim.SGD):
    """A subclass that only adds to the constructor: SGD's update."""


def test_an_optimizer_that_overrides_step_is_refused_and_a_plain_subclass_trains():
    """The program runs the base class's update, never Python's step(): a SignSGD trained
    as SGD (weights 0.29 apart after 3 steps, no warning). Refused, naming the method; a
    subclass that keeps the base step trains as eager."""
    model = nn.Linear(4, 2)
    x = torch.randn(8, 4)

    class Loss(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).pow(2).mean()

    with pytest.raises(NotImplementedError, match="_SignSGD overrides step"):
        tilegraph.trainingModel(Loss(model), optimizer=_SignSGD(model.parameters(), lr=0.1))(x)
    trained, reference = Loss(copy.deepcopy(model)), Loss(copy.deepcopy(model))
    trainer = tilegraph.trainingModel(trained, optimizer=_RenamedSGD(trained.parameters(),
                                                                      lr=0.1, momentum=0.9))
    eager = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        trainer(x)
        eager.zero_grad()
        reference(x).backward()
        eager.step()
    trainer.copyWeightsToHost()
    torch.testing.assert_close(trained.inner.weight, reference.inner.weight)


def test_half_gradient_accumulators_report_the_running_mean_strategy():
    """PopTorch's test_setOptimizer_frozen_options_ok / _broken: half gradient accumulators
    (accum_type=torch.half) switch the model's options from the Post to the Running mean
    reduction strategy, even when set explicitly and frozen by a DataLoader; float ones keep
    Post."""
    x, t = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for accum_type, want in ((torch.half, tilegraph.MeanReductionStrategy.Running),
                             (None, tilegraph.MeanReductionStrategy.Post)):
        opts = tilegraph.Options()
        opts.Training.setMeanAccumulationAndReplicationReductionStrategy(
            tilegraph.MeanReductionStrategy.Post)
        tilegraph.DataLoader(opts, [(x, t)])  # freezes opts
        model = Net()
        opt = tilegraph.optim.Adam(model.parameters(), lr=0.5, accum_type=accum_type)
        run = tilegraph.trainingModel(model, optimizer=opt, options=opts)
        run.compile(x, t)
        assert run.options.Training.meanAccumulationAndReplicationReductionStrategy == want
