"""Training in half precision, PopTorch style (model.half() / model.bfloat16()).

Semantics: forward and backward ops compute in float and round each result to the half type
(as torch's CPU kernels do); the optimizer reads the half weights and gradients, computes the
update in float32 with float32 state (PopTorch's accum types choose otherwise) and rounds the
new weight once, to nearest or stochastically (Precision.enableStochasticRounding). Loss
scaling: static (the optimizer's loss_scaling) or automatic (Training.setAutomaticLossScaling).
The eager reference for parity is the same recipe written in plain PyTorch: half model,
float32 optimizer on float32 copies, weights rounded back after each step."""
import copy
import math
import os
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tilegraph

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

EPS = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}  # the formats' unit roundoff x 2


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x, y):
        h = F.max_pool2d(F.gelu(self.bn(self.conv(x))), 2).flatten(1)
        out = self.fc(h)
        return out, F.cross_entropy(out.float(), y)


def eager_half_training(model, make_optimizer, batches):
    """The recipe in plain PyTorch: float32 master copies drive a torch optimizer, the half
    model computes forward and backward, its weights are the rounded masters."""
    masters = [p.detach().float().clone().requires_grad_() for p in model.parameters()]
    optimizer = make_optimizer(masters)
    losses = []
    for x, y in batches:
        for p in model.parameters():
            p.grad = None
        loss = model(x, y)[1]
        loss.backward()
        losses.append(loss.item())
        for master, p in zip(masters, model.parameters()):
            master.grad = p.grad.float()
        optimizer.step()
        with torch.no_grad():
            for master, p in zip(masters, model.parameters()):
                p.copy_(master.to(p.dtype))
                master.copy_(p.float())
    return losses


def _batches(dtype, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 16, 16, generator=g).to(dtype),
             torch.randint(0, 10, (8,), generator=g)) for _ in range(steps)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_training_matches_the_eager_recipe(dtype):
    """5 SGD-momentum steps. Half-precision runs drift apart by rounding (each op rounds, and
    the two engines' kernels round differently inside), so the judge is float64: every weight
    of tilegraph's run is at least as close to the float64 run of the same steps as eager
    PyTorch's half run is (within 25% and half a unit in the last place); losses agree to a few
    units in the last place."""
    torch.manual_seed(0)
    model = ConvNet().to(dtype)
    reference, exact = copy.deepcopy(model), copy.deepcopy(model).double()
    batches = _batches(dtype, 5)

    def make(params):
        return torch.optim.SGD(params, lr=0.01, momentum=0.9)

    trained = tilegraph.trainingModel(model, optimizer=make(model.parameters()))
    losses = [trained(x, y)[1].item() for x, y in batches]
    expected = eager_half_training(reference, make, batches)
    optimizer = make(exact.parameters())
    for x, y in batches:
        optimizer.zero_grad()
        exact(x.double(), y)[1].backward()
        optimizer.step()
    for got, want in zip(losses, expected):
        assert abs(got - want) <= 4 * EPS[dtype] * (1 + abs(want))
    for (name, p), q, r in zip(model.named_parameters(), reference.parameters(),
                               exact.parameters()):
        assert p.dtype == dtype, name  # the weights stay in the model's precision
        scale = r.detach().abs().max()
        ours = float((p.detach().double() - r.detach()).abs().max() / scale)
        eager = float((q.detach().double() - r.detach()).abs().max() / scale)
        assert ours <= 1.25 * eager + EPS[dtype] / 2, (name, ours, eager)


def test_half_adam_state_dtypes_follow_the_accum_types():
    torch.manual_seed(0)
    model = ConvNet().half()
    optimizer = tilegraph.optim.Adam(model.parameters(), lr=1e-3,
                                     first_order_momentum_accum_type=torch.float16,
                                     second_order_momentum_accum_type=torch.float32)
    trained = tilegraph.trainingModel(model, optimizer=optimizer)
    x, y = _batches(torch.float16, 1)[0]
    first = trained(x, y)[1].item()
    for _ in range(5):
        last = trained(x, y)[1].item()
    assert math.isfinite(last) and last < first  # it trains on one batch
    exe = trained._exe
    assert exe.read_variable("fc.weight.exp_avg").dtype.name == "float16"
    assert exe.read_variable("fc.weight.exp_avg_sq").dtype.name == "float32"
    # float32 parameters keep float32 state whatever the accum types say
    single = ConvNet()
    f32 = tilegraph.trainingModel(single, optimizer=tilegraph.optim.Adam(
        single.parameters(), first_order_momentum_accum_type=torch.float16))
    f32(*_batches(torch.float32, 1)[0])
    assert f32._exe.read_variable("fc.weight.exp_avg").dtype.name == "float32"


class Tiny(nn.Module):
    """loss = sum(w * c): the gradient of w is c, whatever w is."""

    def __init__(self, n, dtype, value=1.0):
        super().__init__()
        self.w = nn.Parameter(torch.full((n,), value, dtype=dtype))

    def forward(self, c):
        return (self.w.float() * c).sum()


def test_static_loss_scaling_rescues_gradients_below_fp16_range():
    # Gradients of 1e-8 are below fp16's smallest subnormal (6e-8): unscaled they round to
    # zero and nothing trains; scaled by 2^16 they survive the half backward and are divided
    # out in float32 by the optimizer.
    c = torch.full((4,), 1e-8)
    plain = Tiny(4, torch.float16)
    tilegraph.trainingModel(plain, optimizer=tilegraph.optim.SGD(plain.parameters(), lr=1e4))(c)
    assert torch.equal(plain.w.detach(), torch.ones(4, dtype=torch.float16))
    scaled = Tiny(4, torch.float16)
    tilegraph.trainingModel(scaled, optimizer=tilegraph.optim.SGD(
        scaled.parameters(), lr=1e4, loss_scaling=2.0 ** 16))(c)
    # w - lr * 1e-8 = 1 - 1e-4, rounded to fp16 (within half a unit in the last place)
    assert abs(scaled.w[0].item() - (1 - 1e-4)) <= 2.0 ** -12


def test_automatic_loss_scaling_skips_an_overflowing_step_and_adapts_the_scale():
    torch.manual_seed(0)
    model = ConvNet().half()
    opts = tilegraph.Options()
    opts.Training.setAutomaticLossScaling(True)
    opts.Training.setAutomaticLossScalingSettings(growth_interval=2)
    trained = tilegraph.trainingModel(model, opts, optimizer=tilegraph.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9))
    x, y = _batches(torch.float16, 1)[0]
    trained(x, y)
    assert trained.lossScalingState() == dict(scale=2.0 ** 16, skipped_steps=0, growth_tracker=1)
    trained(x, y)  # two finite steps in a row: the scale grows
    assert trained.lossScalingState() == dict(scale=2.0 ** 17, skipped_steps=0, growth_tracker=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    momentum = trained._exe.read_variable("fc.weight.momentum_buffer").copy()
    bad = x.clone()
    bad[0, 0, 0, 0] = 60000.0  # its gradients overflow fp16 at this scale
    trained(bad, y)
    assert trained.lossScalingState() == dict(scale=2.0 ** 16, skipped_steps=1, growth_tracker=0)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n  # the step changed nothing ...
    assert (trained._exe.read_variable("fc.weight.momentum_buffer") == momentum).all()
    trained(x, y)  # ... and training goes on
    assert trained.lossScalingState()["skipped_steps"] == 1
    assert not torch.equal(model.fc.weight.detach(), before["fc.weight"])


def _steps_through_an_overflow(trained, model, sample):
    """Four fp16 steps on one batch, the third with an outlier in `sample` whose gradients
    overflow at the loss scale: the loss-scaling state and the weights after each step."""
    x, y = _batches(torch.float16, 1)[0]
    bad = x.clone()
    bad[sample, 0, 0, 0] = 60000.0
    states, weights = [], []
    for batch in (x, x, bad, x):
        trained(batch, y)
        states.append(trained.lossScalingState())
        weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
    return states, weights


@pytest.mark.parametrize("strategy", ["sharded", "pipelined"])
def test_automatic_loss_scaling_on_several_devices_skips_the_step_on_every_device(strategy):
    # The overflow happens in device 1's gradients (the fc layer's input): device 0's updates
    # must skip the step too. A pipelined program runs sharded (every device's update waits
    # for every device's gradients) and says why.
    def train(stages):
        torch.manual_seed(0)
        model = ConvNet().half()
        opts = tilegraph.Options()
        opts.Training.setAutomaticLossScaling(True)
        opts.Training.setAutomaticLossScalingSettings(growth_interval=2)
        opts.Training.gradientAccumulation(4)  # pipelined training needs >= 2 x 2 - 1
        if stages > 1:
            tilegraph.BeginBlock(model.fc, "head", ipu_id=1)
            opts.setExecutionStrategy(tilegraph.PipelinedExecution() if strategy == "pipelined"
                                      else tilegraph.ShardedExecution())
        trained = tilegraph.trainingModel(model, opts, optimizer=tilegraph.optim.SGD(
            model.parameters(), lr=0.05, momentum=0.9, loss_scaling=2.0 ** 12))
        return trained, *_steps_through_an_overflow(trained, model, sample=0)

    _, want_states, want_weights = train(1)
    trained, states, weights = train(2)
    exe = trained.executable
    assert len(exe.memory_stats["device_arena_bytes"]) == 2
    assert not exe.pipelined
    if strategy == "pipelined":
        assert exe.pipeline_fallback_reason
    assert states == want_states
    assert [s["skipped_steps"] for s in states] == [0, 0, 1, 1]
    for n in want_weights[1]:
        assert torch.equal(weights[2][n], weights[1][n]), n  # skipped on both devices
        torch.testing.assert_close(weights[3][n], want_weights[3][n], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_models_train_on_replicas_like_one_replica(dtype):
    # Two replicas on two copies of one batch compute the same gradients, whose mean is
    # each of them: the weights after three steps are a single replica's on that batch,
    # exactly. (Half gradients are combined in f32 and rounded once; the replicas' threads
    # run oneDNN's convolutions concurrently, each on its own scratchpad.) One thread per
    # replica in both runs (replicas share the device's threads), so that the kernels sum
    # in the same order.
    x, y = _batches(dtype, 1)[0]
    x, y = x[:4], y[:4]
    runs = []
    for replicas in (1, 2):
        torch.manual_seed(0)
        model = ConvNet().to(dtype)
        opts = tilegraph.Options().replicationFactor(replicas).setThreads(replicas)
        trained = tilegraph.trainingModel(model, opts, optimizer=tilegraph.optim.SGD(
            model.parameters(), lr=0.05, momentum=0.9))
        for _ in range(3):
            trained(torch.cat([x] * replicas), torch.cat([y] * replicas))
        runs.append({n: p.detach().clone() for n, p in model.named_parameters()})
    for n in runs[0]:
        assert torch.equal(runs[1][n], runs[0][n]), n


def test_automatic_loss_scaling_with_sharded_optimizer_state_skips_on_every_replica():
    # Two replicas, the optimizer state sharded between them (each updates half of every
    # parameter from its reduce-scattered gradient shard). The outlier sits in replica 1's
    # half of the batch; the replicas agree on the overflow (an all-reduce of their shards'
    # check), skip together and stay identical: the same scales, skipped steps and weights
    # as unsharded replicas.
    def train(shard):
        torch.manual_seed(0)
        model = ConvNet().half()
        opts = tilegraph.Options().replicationFactor(2)
        opts.Training.setAutomaticLossScaling(True)
        opts.Training.setAutomaticLossScalingSettings(growth_interval=2)
        opts.TensorLocations.setOptimizerLocation(
            tilegraph.TensorLocationSettings().useReplicatedTensorSharding(shard))
        trained = tilegraph.trainingModel(model, opts, optimizer=tilegraph.optim.Adam(
            model.parameters(), lr=1e-3))
        return trained, *_steps_through_an_overflow(trained, model, sample=-1)  # replica 1's

    _, want_states, want_weights = train(False)
    trained, states, weights = train(True)
    assert any(v.endswith(".exp_avg") for v in trained.executable.variables)
    assert states == want_states
    assert [s["skipped_steps"] for s in states] == [0, 0, 1, 1]
    for n in want_weights[1]:
        assert torch.equal(weights[2][n], weights[1][n]), n  # the overflowing step skipped
        torch.testing.assert_close(weights[3][n], want_weights[3][n], rtol=1e-3, atol=1e-4)


def test_stochastic_rounding_keeps_updates_smaller_than_half_an_ulp():
    # bf16 weights of 1.0 (spacing 2^-7 above 1, 2^-8 below), update -1e-3 per step: nearest
    # rounding loses it, stochastic rounding keeps it in expectation.
    n, lr = 8192, 1e-3
    c = torch.ones(n)
    nearest = Tiny(n, torch.bfloat16)
    tilegraph.trainingModel(nearest, optimizer=tilegraph.optim.SGD(nearest.parameters(), lr=lr))(c)
    assert torch.equal(nearest.w.detach(), torch.ones(n, dtype=torch.bfloat16))

    def stochastic(seed):
        model = Tiny(n, torch.bfloat16)
        opts = tilegraph.Options().randomSeed(seed)
        opts.Precision.enableStochasticRounding(True)
        tilegraph.trainingModel(model, opts, optimizer=tilegraph.optim.SGD(
            model.parameters(), lr=lr))(c)
        return model.w.detach().float()

    w = stochastic(1)
    assert set(w.unique().tolist()) == {1.0, 1.0 - 2.0 ** -8}  # the two neighbours only
    # E[w] = 1 - 1e-3; one draw per element has std 2^-8 * sqrt(p(1-p)), p = 0.256
    sigma = 2.0 ** -8 * math.sqrt(0.256 * 0.744) / math.sqrt(n)
    assert abs(w.mean().item() - (1 - lr)) < 5 * sigma
    assert torch.equal(stochastic(1), w)  # reproducible with the seed
    assert not torch.equal(stochastic(2), w)


def _mnist_losses(dtype, steps, batch=16):
    from mnist_poptorch import Network, SyntheticMNIST
    torch.manual_seed(0)
    model = Network().to(dtype)
    data = SyntheticMNIST(steps * batch, train=True)
    trained = tilegraph.trainingModel(model, optimizer=tilegraph.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9))
    losses = []
    for i in range(steps):
        x = data.images[i * batch:(i + 1) * batch].to(dtype)
        y = data.labels[i * batch:(i + 1) * batch]
        losses.append(trained(x, y)[1].float().item())
    return losses


def _windows(losses, width=20):
    return [sum(losses[i:i + width]) / width for i in range(0, len(losses), width)]


def test_mnist_in_bf16_converges_like_fp32():
    """The main job's network and data, 200 SGD steps in bf16 and in fp32. Criterion: every
    20-step window's mean loss in bf16 within 0.1 + 10% of fp32's, and both end below a
    quarter of their start."""
    fp32, bf16 = _mnist_losses(torch.float32, 200), _mnist_losses(torch.bfloat16, 200)
    for a, b in zip(_windows(fp32), _windows(bf16)):
        assert abs(a - b) <= 0.1 + 0.1 * a, (_windows(fp32), _windows(bf16))
    for losses in (fp32, bf16):
        assert _windows(losses)[-1] < 0.25 * _windows(losses)[0]


def _bert_pretraining_losses(dtype, steps, batch=8, seq=32):
    tf = pytest.importorskip("transformers")
    cfg = tf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, vocab_size=64, max_position_embeddings=seq,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)

    class MaskedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = tf.BertForMaskedLM(cfg)

        def forward(self, ids, labels):
            return self.bert(input_ids=ids, labels=labels).loss

    model = MaskedLM().to(dtype)
    trained = tilegraph.trainingModel(model, optimizer=tilegraph.optim.AdamW(
        model.parameters(), lr=2e-3, weight_decay=0.01))
    # A learnable language: token t+1 = (token t * 3 + 1) mod 60; 15% masked (token 63).
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        start = torch.randint(0, 60, (batch, 1), generator=g)
        ids = [start]
        for _ in range(seq - 1):
            ids.append((ids[-1] * 3 + 1) % 60)
        ids = torch.cat(ids, 1)
        mask = torch.rand(batch, seq, generator=g) < 0.15
        labels = torch.where(mask, ids, torch.full_like(ids, -100))
        losses.append(trained(torch.where(mask, torch.full_like(ids, 63), ids), labels).item())
    return losses


def test_bert_small_pretraining_in_bf16_converges_like_fp32():
    """A 2-layer BERT (Hugging Face BertForMaskedLM) pretraining with masked-token loss and
    AdamW, 200 steps in bf16 and in fp32. Criterion: every 20-step window's mean loss in bf16
    within 0.15 + 15% of fp32's, and both learn (last window below half the first)."""
    fp32 = _bert_pretraining_losses(torch.float32, 200)
    bf16 = _bert_pretraining_losses(torch.bfloat16, 200)
    for a, b in zip(_windows(fp32), _windows(bf16)):
        assert abs(a - b) <= 0.15 + 0.15 * a, (_windows(fp32), _windows(bf16))
    for losses in (fp32, bf16):
        assert _windows(losses)[-1] < 0.5 * _windows(losses)[0]


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 6 * 6, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x, y):
        h = F.relu(self.bn(self.conv(x))).flatten(1)
        out = self.fc2(self.fc1(h))  # back-to-back linears: no f32 round trip between them
        return out, F.cross_entropy(out, y)


class AutocastClassifier(Classifier):
    def forward(self, x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().forward(x, y)


def _train_steps(model, opts, x, y, steps=3):
    trained = tilegraph.trainingModel(model, opts, optimizer=torch.optim.SGD(
        model.parameters(), lr=0.1))
    return [trained(x, y)[1].item() for _ in range(steps)]


def _assert_trains_like_eager(losses, model, reference, x, y, ulps, atol):
    """`losses`: tilegraph's, one per _train_steps step of `model`; `reference` (an autocast
    model with the same starting weights) takes the same SGD steps in eager PyTorch. Each loss
    agrees to `ulps` bf16 units of eager's, every (f32 master) weight to `atol`."""
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for got in losses:
        optimizer.zero_grad()
        loss = reference(x, y)[1]
        loss.backward()
        optimizer.step()
        assert abs(got - loss.item()) <= ulps * EPS[torch.bfloat16] * (1 + loss.item())
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert p.dtype == torch.float32  # master weights
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=atol, msg=name)


def test_torch_autocast_inside_forward_trains_like_eager():
    torch.manual_seed(0)
    model = AutocastClassifier()
    reference = copy.deepcopy(model)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
    losses = _train_steps(model, tilegraph.Options(), x, y)
    _assert_trains_like_eager(losses, model, reference, x, y, ulps=2, atol=2e-3)


def test_set_mixed_precision_is_the_amp_recipe():
    """Precision.setMixedPrecision(bf16) on a float32 model computes as torch.autocast does for
    its linear layers and convolutions (tilegraph returns their results to f32 at once, torch
    keeps them in bf16 until an op promotes them: both within bf16 rounding of each other), and
    differs from plain float32 by more than that: the half computation really happens."""
    torch.manual_seed(0)
    base = Classifier()
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
    opts = tilegraph.Options()
    # Every product in half, as autocast (this small model's are below the size rules).
    opts.Precision.setMixedPrecision(torch.bfloat16, min_rows=0, min_depth=0)
    mixed_model = copy.deepcopy(base)
    mixed = _train_steps(mixed_model, opts, x, y)
    autocast_model = AutocastClassifier()
    autocast_model.load_state_dict(base.state_dict())
    autocast = _train_steps(autocast_model, tilegraph.Options(), x, y)
    fp32 = _train_steps(copy.deepcopy(base), tilegraph.Options(), x, y)
    assert mixed_model.fc1.weight.dtype == torch.float32
    for m, a, f in zip(mixed, autocast, fp32):
        assert abs(m - a) <= 4 * EPS[torch.bfloat16] * (1 + a)
    assert max(abs(m - f) for m, f in zip(mixed, fp32)) > 1e-4  # not silently f32


def test_set_mixed_precision_training_sees_host_weight_edits(monkeypatch):
    """Under setMixedPrecision the engine keeps a bf16 copy of each f32 weight that is read in
    bf16, written by the optimizer's update (passes/half_weight_shadows.cc). A weight edited
    on the host and pushed with copyWeightsToDevice must reach that copy: the losses after
    the edit are those of the same program without the copies (which casts every weight on
    every step), bit for bit."""
    def run(disable):
        if disable:
            monkeypatch.setenv("TILEGRAPH_DISABLE_PASSES", "half-weight-shadows")
        else:
            monkeypatch.delenv("TILEGRAPH_DISABLE_PASSES", raising=False)
        torch.manual_seed(0)
        model = Classifier()
        x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
        opts = tilegraph.Options()
        opts.Precision.setMixedPrecision(torch.bfloat16)
        trained = tilegraph.trainingModel(model, opts, optimizer=torch.optim.SGD(
            model.parameters(), lr=0.1, momentum=0.9))
        losses = [trained(x, y)[1].item() for _ in range(2)]
        with torch.no_grad():
            model.fc1.weight.mul_(-0.5)
            model.conv.weight.add_(0.25)
        trained.copyWeightsToDevice()
        losses += [trained(x, y)[1].item() for _ in range(2)]
        names = trained.executable.variables
        return losses, {n: p.detach().clone() for n, p in model.named_parameters()}, names

    losses, weights, names = run(disable=False)
    plain_losses, plain_weights, plain_names = run(disable=True)
    assert not any(n.endswith(".bf16") for n in names)  # the copies are not user state
    assert names == plain_names
    assert losses == plain_losses
    assert abs(losses[2] - losses[1]) > 1e-3  # the edit changed the model
    for n, w in weights.items():
        assert torch.equal(w, plain_weights[n]), n


def test_set_mixed_precision_policy_is_data():
    """Only the listed ops compute in half: with ops=['conv2d'] the linear layers stay f32,
    so the result sits between full mixed precision and float32. The size rules are data too:
    by default this small model's products (4 rows, 27 or 16 terms) all stay f32, exactly the
    float32 result; min_rows=0, min_depth=0 put them in half."""
    torch.manual_seed(0)
    base = Classifier()
    x = torch.randn(4, 3, 8, 8)

    def infer(ops, **sizes):
        opts = tilegraph.Options()
        if ops != "fp32":
            opts.Precision.setMixedPrecision(torch.float16, ops=ops, **sizes)
        return tilegraph.inferenceModel(copy.deepcopy(base).eval(), opts)(
            x, torch.zeros(4, dtype=torch.long))[0]

    every = dict(min_rows=0, min_depth=0)
    full, conv_only, fp32 = infer(None, **every), infer(["conv2d"], **every), infer("fp32")
    assert full.dtype == conv_only.dtype == torch.float32
    assert 0 < (conv_only - fp32).abs().max() < (full - fp32).abs().max() + 1e-3
    assert (full - fp32).abs().max() < 10 * EPS[torch.float16]
    assert torch.equal(infer(None), fp32)  # the default size rules keep every product f32
    assert 0 < (infer(None, min_rows=0) - fp32).abs().max()  # the 288-deep fc1 turns half
    with pytest.raises(ValueError, match="bfloat16 or torch.float16"):
        tilegraph.Options().Precision.setMixedPrecision(torch.float64)
    with pytest.raises(ValueError, match="min_depth must be an int >= 0"):
        tilegraph.Options().Precision.setMixedPrecision(torch.float16, min_depth=-1)


def test_poptorch_autocast_region_runs_matmuls_in_float16():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            with tilegraph.autocast():
                y = self.fc(x)
            return y, y.float().sum()

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(3, 8)
    got, ref = tilegraph.inferenceModel(net)(x), net(x)
    assert got[0].dtype == ref[0].dtype == torch.float16
    torch.testing.assert_close(got[0], ref[0])
    torch.testing.assert_close(got[1].reshape(ref[1].shape), ref[1])


def test_half_model_with_float_batch_norm_trains_like_eager():
    """A common PopTorch pattern: model.half() with the batch norms kept in float32. Half and
    float parameters train side by side (each rounded in its own dtype), as in eager."""
    torch.manual_seed(0)
    model = ConvNet().half()
    model.bn.float()
    reference = copy.deepcopy(model)
    trained = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    for x, y in _batches(torch.float16, 3):
        got = trained(x, y)[1].item()
        optimizer.zero_grad()
        loss = reference(x, y)[1]
        loss.backward()
        optimizer.step()
        assert abs(got - loss.item()) <= 4 * EPS[torch.float16] * (1 + loss.item())
    assert model.bn.weight.dtype == torch.float32 and model.conv.weight.dtype == torch.float16
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        scale = q.detach().float().abs().max()
        err = float((p.detach().float() - q.detach().float()).abs().max() / scale)
        assert err <= 4 * EPS[p.dtype if p.dtype in EPS else torch.float16], (name, err)
    torch.testing.assert_close(model.bn.running_mean, reference.bn.running_mean)


class SqueezeExciteNet(nn.Module):
    """ResNet / EfficientNet-style inference blocks: conv-BN-ReLU pairs handing over directly,
    a residual add, a squeeze-excite gate (biased 1x1 convolutions) and a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
                                  nn.SiLU(), nn.Conv2d(32, 32, 1, bias=False), nn.BatchNorm2d(32))
        self.squeeze = nn.Conv2d(32, 8, 1)
        self.excite = nn.Conv2d(8, 32, 1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        h = self.stem(x)
        h = F.relu(self.body(h) + h)
        gate = torch.sigmoid(self.excite(F.silu(self.squeeze(h.mean((2, 3), keepdim=True)))))
        return self.head((h * gate).mean((2, 3)))


def test_mixed_precision_cnn_inference_folds_batch_norm_into_the_bf16_convolutions():
    """setMixedPrecision(bf16) in inference: each bf16 convolution runs with its batch norm and
    activation fused (the folded weight rounded once to bf16, f32 result), conv -> conv
    hand-offs through the bf16 cast in the blocked layout. The result stays within bf16's
    error of the float32 model, no further from it than eager autocast's, and is not f32."""
    torch.manual_seed(0)
    net = SqueezeExciteNet()
    for m in net.modules():  # running statistics away from (0, 1): the fold matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    net.eval()
    x = torch.randn(4, 3, 16, 16)
    opts = tilegraph.Options()
    opts.Precision.setMixedPrecision(torch.bfloat16)
    got = tilegraph.inferenceModel(copy.deepcopy(net), opts)(x)
    with torch.no_grad():
        fp32 = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = net(x).float()
    assert got.dtype == torch.float32
    scale = fp32.abs().max().item()
    ours, eager = (got - fp32).abs().max().item(), (autocast - fp32).abs().max().item()
    assert 1e-5 * scale < ours < 4 * EPS[torch.bfloat16] * scale, (ours, scale)
    assert ours <= 1.5 * eager, (ours, eager)


class SmallMapConvNet(nn.Module):
    """Convolutions with few output positions in the batch (4 x 4 and 2 x 2 maps at batch 4:
    64 and 16), each followed by its bias and an activation: under setMixedPrecision they are
    mixed conv2d_epilogue nodes that run as one GEMM over the batch's columns
    (kernels/cpu/conv_im2col_kernels.h, Conv2dGemmEpilogue)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 48, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(48, 32, 1)
        self.fc = nn.Linear(32 * 2 * 2, 4)

    def forward(self, x, y):
        h = F.silu(self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))))
        out = self.fc(h.flatten(1))
        return out, F.cross_entropy(out, y)


class AutocastSmallMapConvNet(SmallMapConvNet):
    def forward(self, x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().forward(x, y)


def test_mixed_precision_small_map_convolutions_train_and_infer_like_autocast():
    """Training re-rounds each changed weight every step and inference keeps the rounded
    weight: 4 SGD steps agree with eager autocast's losses to bf16's rounding, the weights stay
    within bf16's error of autocast's, and the trained model's inference output is within
    bf16's error of its float32 output (no further from it than autocast's), not f32."""
    torch.manual_seed(0)
    base = SmallMapConvNet()
    x, y = torch.randn(4, 16, 4, 4), torch.randint(0, 4, (4,))
    opts = tilegraph.Options()
    opts.Precision.setMixedPrecision(torch.bfloat16)
    mixed_model = copy.deepcopy(base)
    mixed = _train_steps(mixed_model, opts, x, y, steps=4)
    autocast_model = AutocastSmallMapConvNet()
    autocast_model.load_state_dict(base.state_dict())
    _assert_trains_like_eager(mixed, mixed_model, autocast_model, x, y, ulps=4, atol=4e-3)
    # Inference on the trained weights.
    net = copy.deepcopy(mixed_model).eval()
    got = tilegraph.inferenceModel(copy.deepcopy(net), opts)(x, y)[0]
    with torch.no_grad():
        fp32 = net(x, y)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = net(x, y)[0].float()
    scale = fp32.abs().max().item()
    ours, eager = (got - fp32).abs().max().item(), (autocast - fp32).abs().max().item()
    assert 1e-5 * scale < ours < 4 * EPS[torch.bfloat16] * scale, (ours, scale)
    assert ours <= 1.5 * eager, (ours, eager)
