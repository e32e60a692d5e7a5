"""The IPU Model device: Options().useIpuModel(True) compiles a program for tilegraph's
emulated Graphcore IPU (GC200 by default, GC2 with target="GC2" / "ipu1").

How it is meant to be used, and what is checked here:
  - the numbers are the CPU device's: the program runs with the CPU kernels, so training on
    the IPU Model gives bit-identical losses and weights to the CPU device (MLP, CNN with
    batch norm + residual + max-pool, transformer encoder layer; inference too), and both
    match eager PyTorch within fp32 tolerance;
  - cycleCount() (Options().logCycleCount(True)) is the estimate of the last call: per-step
    cycles x steps run; bigger models cost more cycles;
  - ipuModelReport() is the compiler's layout on the tiles: memory per tile by category,
    compute sets that point at the user's file:line, overflows;
  - a program that does not fit a tile fails at its first call, saying where and what would
    help; allow_out_of_memory=True compiles it anyway and the report says it does not fit;
  - setAvailableMemoryProportion steers the GEMM planner;
  - BeginBlock over several ipu_ids: one emulated IPU per ipu_id, in powers of two;
  - POPTORCH_IPU_MODEL / POPTORCH_IPU_MODEL_VERSION / POPLAR_ENGINE_OPTIONS;
  - the HTML + JSON report files.
Models are small (2-core machine); the out-of-memory model is sized for GC2 (304 MiB).
"""
import copy
import json
import os
import re
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tilegraph as poptorch
from models import MLP, Encoder, batches

THIS_FILE = os.path.abspath(__file__)
CATEGORIES = ["variables", "activations", "exchange", "vertex_state", "code"]
REPORT_KEYS = {"format", "version", "estimate", "target", "num_ipus", "fits", "total_cycles",
               "seconds_per_step", "samples_per_second", "ipus", "tile_memory", "liveness",
               "compute_sets", "overflows", "largest", "ipus_attached"}
GC200_TILES, GC200_TILE_BYTES = 1472, 624 * 1024
GC2_TILES, GC2_TILE_BYTES = 1216, 256 * 1024


def line_of(marker):
    """The line number in this file of the (only) line ending in the comment `# marker`."""
    with open(THIS_FILE) as f:
        lines = [i for i, text in enumerate(f, 1) if text.rstrip().endswith(f"# {marker}")]
    assert len(lines) == 1, f"marker {marker!r} on lines {lines}"
    return lines[0]


def where(marker):
    return f"{THIS_FILE}:{line_of(marker)}"


def ipu_options(**use_ipu_model):
    """Options for the IPU Model with cycle counting on (the usual way to start)."""
    return poptorch.Options().useIpuModel(True, **use_ipu_model).logCycleCount(True)


# ---- models (defined here, so the report's sources point into this file) -------------------

class SmallMLP(nn.Module):
    def __init__(self, din=20, hidden=32, dout=5):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(din, hidden), nn.Linear(hidden, dout)

    def forward(self, x, t):
        h = F.relu(self.fc1(x))  # mlp-fc1
        out = self.fc2(h)  # mlp-fc2
        return out, F.cross_entropy(out, t)


class ResCNN(nn.Module):
    """conv-BN-ReLU, max-pool, a residual block (two conv-BN, identity skip), a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x, t):
        h = F.max_pool2d(F.relu(self.bn0(self.stem(x))), 2)
        r = F.relu(self.bn1(self.conv1(h)))
        h = F.relu(h + self.bn2(self.conv2(r)))
        out = self.head(h.mean(dim=(2, 3)))
        return out, F.cross_entropy(out, t)


def rescnn_batches(steps, batch, generator):
    n = steps * batch
    return (torch.randn(n, 3, 8, 8, generator=generator),
            torch.randint(0, 4, (n,), generator=generator))


class BigLinear(nn.Module):
    """256 MiB of fp32 weights in one Linear: more than a GC2 (1216 x 256 KiB) holds once
    its gradient and the weight update are laid out too."""
    WIDTH = 8192

    def __init__(self):
        super().__init__()
        self.big = nn.Linear(self.WIDTH, self.WIDTH)
        self.out = nn.Linear(self.WIDTH, 4)

    def forward(self, x, t):
        h = F.relu(self.big(x))  # big-linear
        out = self.out(h)
        return out, F.cross_entropy(out, t)


class MatMul(nn.Module):
    """One big product of two activations (neither operand is a resident weight)."""

    def forward(self, a, b):
        return a @ b  # big-matmul


class Deep(nn.Module):
    """Four blocks (three tanh layers and a head) to place on IPUs with BeginBlock."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(16, 16) for _ in range(3))
        self.head = nn.Linear(16, 4)

    def forward(self, x, t):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        out = self.head(x)
        return out, F.cross_entropy(out, t)

    def blocks(self):
        return [*self.layers, self.head]


PARITY_CASES = {
    # name: (model factory, data(steps, batch, generator), device iterations)
    "mlp": (MLP, lambda s, b, g: batches("mlp", s, b, g), 4),
    "rescnn_bn_maxpool": (ResCNN, rescnn_batches, 2),
    "transformer_encoder": (Encoder, lambda s, b, g: batches("encoder", s, b, g), 1),
}
CALLS, MICRO, LR, MOMENTUM = 5, 4, 0.05, 0.9


def _train(factory, data, device_iterations, options):
    """Trains a fresh model (seed 0) for CALLS calls of device_iterations steps each."""
    torch.manual_seed(0)
    model = factory()
    options.deviceIterations(device_iterations).outputMode(poptorch.OutputMode.All)
    trainer = poptorch.trainingModel(model, options, torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM))
    per_call = MICRO * device_iterations
    losses = []
    for c in range(CALLS):
        _, loss = trainer(*(d[c * per_call:(c + 1) * per_call] for d in data))
        losses.append(loss.reshape(-1))
    return model, trainer, torch.cat(losses)


def _eager_train(factory, data, steps):
    torch.manual_seed(0)
    model = factory()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    losses = []
    for s in range(steps):
        opt.zero_grad()
        _, loss = model(*(d[s * MICRO:(s + 1) * MICRO] for d in data))
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return model, torch.stack(losses)


def _assert_states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), \
            f"{key}: differs by {(sa[key].double() - sb[key].double()).abs().max().item()}"


def _assert_states_close(a, b, rtol=1e-4, atol=1e-5):
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa:
        torch.testing.assert_close(sa[key].float(), sb[key].float(), rtol=rtol, atol=atol,
                                   msg=lambda m, key=key: f"{key}: {m}")


# ---- 1. parity: the IPU Model computes what the CPU device computes --------------------------

@pytest.mark.parametrize("name", list(PARITY_CASES))
def test_training_on_the_ipu_model_is_bit_identical_to_the_cpu_device(name):
    factory, make_data, device_iterations = PARITY_CASES[name]
    steps = CALLS * device_iterations
    data = make_data(steps, MICRO, torch.Generator().manual_seed(1))
    cpu_model, _, cpu_losses = _train(factory, data, device_iterations, poptorch.Options())
    ipu_model, trainer, ipu_losses = _train(factory, data, device_iterations, ipu_options())

    assert ipu_losses.shape == (steps,)
    assert torch.equal(ipu_losses, cpu_losses), (ipu_losses - cpu_losses).abs().max()
    _assert_states_equal(ipu_model, cpu_model)  # weights, BN running stats, step counters
    assert trainer.cycleCount() > 0
    assert trainer.ipuModelReport()["fits"] is True

    eager_model, eager_losses = _eager_train(factory, data, steps)
    torch.testing.assert_close(ipu_losses, eager_losses, rtol=1e-4, atol=1e-5)
    _assert_states_close(ipu_model, eager_model)


def test_inference_on_the_ipu_model_is_bit_identical_to_the_cpu_device():
    torch.manual_seed(0)
    model = ResCNN()
    with torch.no_grad():  # running statistics that are not the initial ones
        for bn in (model.bn0, model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    x, t = rescnn_batches(3, MICRO, torch.Generator().manual_seed(2))
    cpu_out, cpu_loss = poptorch.inferenceModel(model, poptorch.Options().deviceIterations(3))(x, t)
    ipu = poptorch.inferenceModel(model, ipu_options().deviceIterations(3))
    ipu_out, ipu_loss = ipu(x, t)
    assert torch.equal(ipu_out, cpu_out) and torch.equal(ipu_loss, cpu_loss)
    with torch.no_grad():
        eager = [model(x[i * MICRO:(i + 1) * MICRO], t[i * MICRO:(i + 1) * MICRO])
                 for i in range(3)]
    torch.testing.assert_close(ipu_out, torch.cat([o for o, _ in eager]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ipu_loss, torch.stack([l for _, l in eager]), rtol=1e-4,
                               atol=1e-5)
    assert ipu.cycleCount() > 0


# ---- 2. estimates and the report ------------------------------------------------------------

def _mlp_trainer(device_iterations=1, hidden=32, micro=8, calls=1):
    torch.manual_seed(0)
    model = SmallMLP(hidden=hidden)
    trainer = poptorch.trainingModel(model, ipu_options().deviceIterations(device_iterations),
                                     torch.optim.SGD(model.parameters(), lr=0.1))
    g = torch.Generator().manual_seed(3)
    n = micro * device_iterations
    for _ in range(calls):
        trainer(torch.randn(n, 20, generator=g), torch.randint(0, 5, (n,), generator=g))
    return trainer


def _assert_cycles_are_per_step_times_steps(cycles, report, steps):
    # total_cycles is the per-step estimate (the JSON keeps 6 significant digits).
    expected = report["total_cycles"] * steps
    assert abs(cycles - expected) <= 1 + 1e-5 * expected, (cycles, report["total_cycles"], steps)


def test_cycle_count_is_the_per_step_estimate_times_the_steps_run():
    one = _mlp_trainer(device_iterations=1, calls=2)
    four = _mlp_trainer(device_iterations=4, calls=2)
    c1, c4 = one.cycleCount(), four.cycleCount()
    assert isinstance(c1, int) and c1 > 0
    r1, r4 = one.ipuModelReport(), four.ipuModelReport()
    # Same micro-batch, same program per step: the same per-step estimate.
    assert r1["total_cycles"] == r4["total_cycles"]
    _assert_cycles_are_per_step_times_steps(c1, r1, 1)
    _assert_cycles_are_per_step_times_steps(c4, r4, 4)
    assert abs(c4 - 4 * c1) <= 2, (c1, c4)
    assert r1["seconds_per_step"] == pytest.approx(r1["total_cycles"] / r1["target"]["clock_hz"],
                                                   rel=1e-4)


def test_throughput_counts_the_samples_of_one_step():
    """samples_per_second = samples of one step (the micro-batch) / seconds_per_step, whatever
    the number of steps (device iterations) a call runs."""
    micro = 8
    for device_iterations in (1, 4):
        report = _mlp_trainer(device_iterations, micro=micro).ipuModelReport()
        assert report["samples_per_second"] == pytest.approx(
            micro / report["seconds_per_step"], rel=1e-4), \
            f"deviceIterations({device_iterations}): {report['samples_per_second']} samples/s " \
            f"for a {micro}-sample step of {report['seconds_per_step']} s"


def test_a_wider_model_costs_more_cycles_and_memory():
    small = _mlp_trainer(hidden=32)
    wide = _mlp_trainer(hidden=1024)
    assert wide.cycleCount() > small.cycleCount() > 0
    rs, rw = small.ipuModelReport(), wide.ipuModelReport()
    assert rw["total_cycles"] > rs["total_cycles"]
    assert rw["ipus"][0]["total_bytes"] > rs["ipus"][0]["total_bytes"]


def test_report_of_a_small_model():
    trainer = _mlp_trainer(device_iterations=2)
    r = trainer.ipuModelReport()
    assert REPORT_KEYS <= r.keys(), REPORT_KEYS - r.keys()
    assert r["format"] == "tilegraph-ipu-report" and r["version"] == 1 and r["estimate"] is True
    target = r["target"]
    assert target["name"] == "GC200"
    assert target["tiles_per_ipu"] == GC200_TILES and target["bytes_per_tile"] == GC200_TILE_BYTES
    assert r["num_ipus"] == 1 and r["ipus_attached"] == 1
    assert r["fits"] is True and r["overflows"] == []
    assert r["total_cycles"] > 0 and r["seconds_per_step"] > 0 and r["samples_per_second"] > 0

    assert len(r["ipus"]) == len(r["tile_memory"]) == 1
    ipu, memory = r["ipus"][0], r["tile_memory"][0]
    assert set(memory["categories"]) == set(CATEGORIES)
    total = memory["total"]
    assert len(total) == GC200_TILES
    for category in CATEGORIES:
        assert len(memory["categories"][category]) == GC200_TILES
        assert min(memory["categories"][category]) >= 0
    for tile in range(GC200_TILES):  # every entry is rounded to a byte on its own
        parts = sum(memory["categories"][c][tile] for c in CATEGORIES)
        assert abs(parts - total[tile]) <= 3, (tile, parts, total[tile])
    assert ipu["max_tile_bytes"] == max(total) and total[ipu["max_tile"]] == max(total)
    assert ipu["max_tile_bytes"] <= target["bytes_per_tile"]
    assert ipu["overflowing_tiles"] == 0 and ipu["cycles"] > 0
    assert abs(ipu["total_bytes"] - sum(total)) <= GC200_TILES
    assert sum(memory["categories"]["variables"]) >= 4 * sum(
        p.numel() for p in trainer.model.parameters())
    assert r["liveness"] and all(step["live_bytes"] >= 0 for step in r["liveness"])

    sets = r["compute_sets"]
    assert len(sets) > 0
    for cs in sets:
        assert cs["ipu"] == 0 and cs["tiles_used"] >= 1
        assert cs["sync_cycles"] >= 0 and cs["exchange_cycles"] >= 0 and cs["compute_cycles"] >= 0
    gemms = [cs for cs in sets if cs["kind"] == "gemm"]
    # Forward: two matmuls; backward: the input gradient of fc2 and both weight gradients.
    assert len(gemms) >= 4, [cs["name"] for cs in sets]
    fc1, fc2 = where("mlp-fc1"), where("mlp-fc2")
    for cs in gemms:
        assert cs["source"] in (fc1, fc2), (cs["name"], cs["source"])
    assert {cs["source"] for cs in gemms} == {fc1, fc2}


# ---- 3. out of memory -----------------------------------------------------------------------

def _big_data():
    g = torch.Generator().manual_seed(4)
    return (torch.randn(2, BigLinear.WIDTH, generator=g), torch.randint(0, 4, (2,), generator=g))


def test_a_program_that_does_not_fit_fails_at_its_first_call_and_says_what_would_help():
    torch.manual_seed(0)
    model = BigLinear()
    before = copy.deepcopy(model.state_dict())
    x, t = _big_data()
    with torch.no_grad():
        eager_loss = model(x, t)[1]
    trainer = poptorch.trainingModel(model, ipu_options(target="GC2"),
                                     torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError) as info:
        trainer(x, t)
    assert isinstance(info.value, poptorch.Error)
    message = str(info.value)
    assert "the program does not fit the emulated GC2 IPU" in message
    overflow = re.search(r"tile (\d+) needs ([\d.]+) KiB", message)
    assert overflow, message
    assert f"exceed their {GC2_TILE_BYTES / 1024:.1f} KiB" in message
    assert where("big-linear") in message, message  # a contributor at the user's file:line
    assert "what would help" in message
    for remedy in ("pipeline the model over", "micro-batch", "recomputation",
                   "setAvailableMemoryProportion", "half precision"):
        assert remedy in message, remedy
    # Nothing ran: the module is unchanged and still usable eagerly; calling again fails
    # the same way (the program is not run half-compiled).
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    with torch.no_grad():
        assert torch.equal(model(x, t)[1], eager_loss)
    with pytest.raises(RuntimeError, match="does not fit"):
        trainer(x, t)
    del trainer

    # allow_out_of_memory=True: compiles, runs (the CPU kernels' numbers), and reports it.
    allowed = poptorch.trainingModel(model, ipu_options(target="GC2", allow_out_of_memory=True),
                                     torch.optim.SGD(model.parameters(), lr=0.1))
    _, loss = allowed(x, t)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert allowed.cycleCount() > 0
    r = allowed.ipuModelReport()
    assert r["fits"] is False and r["target"]["name"] == "GC2"
    assert r["overflows"] and r["ipus"][0]["overflowing_tiles"] >= len(r["overflows"])
    for o in r["overflows"]:
        assert o["bytes"] > GC2_TILE_BYTES and o["over_by"] == pytest.approx(
            o["bytes"] - GC2_TILE_BYTES, abs=1)
    assert r["ipus"][0]["max_tile_bytes"] > r["target"]["bytes_per_tile"]
    assert any(c["source"] == where("big-linear") for c in r["largest"]), r["largest"]
    # Worst first; tiles that overflow by the same bytes in tile order (as the HTML report's
    # schema has them), so the list is deterministic and starts with the fullest tile.
    order = [(-o["over_by"], o["ipu"], o["tile"]) for o in r["overflows"]]
    assert order == sorted(order), order[:6]
    worst = r["overflows"][0]
    # The same program: the tile the error named is the report's fullest tile, listed first.
    named = int(overflow.group(1))
    assert named == r["ipus"][0]["max_tile"]
    assert worst["bytes"] / 1024 == pytest.approx(float(overflow.group(2)), abs=0.05)
    assert worst["tile"] == named, (named, r["overflows"][:3])
    del allowed


def test_out_of_memory_on_the_default_gc200():
    """A product whose result alone (1 GiB of f32) exceeds a GC200's ~900 MB, however it is
    split (serial steps included)."""
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(8192, 64, generator=g), torch.randn(64, 32768, generator=g)
    model = poptorch.inferenceModel(MatMul(), ipu_options())
    with pytest.raises(RuntimeError) as info:
        model(a, b)
    message = str(info.value)
    assert "the program does not fit the emulated GC200 IPU" in message
    assert re.search(r"IPU 0: \d+ of 1472 tiles exceed their 624\.0 KiB; tile \d+ needs", message)
    assert where("big-matmul") in message, message
    assert "what would help" in message


def test_poplar_engine_options_allow_out_of_memory(monkeypatch):
    monkeypatch.setenv("POPLAR_ENGINE_OPTIONS", '{"debug.allowOutOfMemory": "true"}')
    torch.manual_seed(0)
    model = BigLinear()
    trainer = poptorch.trainingModel(model, ipu_options(target="GC2"),
                                     torch.optim.SGD(model.parameters(), lr=0.1))
    trainer(*_big_data())
    assert trainer.ipuModelReport()["fits"] is False


# ---- 4. available memory proportion ---------------------------------------------------------

def _matmul_report(proportion, ipu_model_first=True):
    if ipu_model_first:
        opts = ipu_options().setAvailableMemoryProportion({"IPU0": proportion})
    else:  # options may be given in any order
        opts = poptorch.Options().setAvailableMemoryProportion({"IPU0": proportion})
        opts.useIpuModel(True)
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(512, 2048, generator=g), torch.randn(2048, 512, generator=g)
    model = poptorch.inferenceModel(MatMul(), opts)
    out = model(a, b)
    return out, model.ipuModelReport()


def test_a_lower_available_memory_proportion_never_increases_matmul_temporaries():
    out_hi, hi = _matmul_report(0.6)
    out_lo, lo = _matmul_report(0.1)
    assert torch.equal(out_hi, out_lo)  # the plan changes the estimate, never the numbers
    exchange_hi = max(hi["tile_memory"][0]["categories"]["exchange"])
    exchange_lo = max(lo["tile_memory"][0]["categories"]["exchange"])
    assert exchange_lo <= exchange_hi
    gemm_hi = [cs for cs in hi["compute_sets"] if cs["kind"] == "gemm"]
    gemm_lo = [cs for cs in lo["compute_sets"] if cs["kind"] == "gemm"]
    assert len(gemm_hi) == len(gemm_lo) == 1
    assert gemm_hi[0]["source"] == where("big-matmul")
    # The GEMM plan's effect shows: another split (cycles) or fewer temporaries.
    plan = lambda cs: (cs["exchange_cycles"], cs["compute_cycles"], cs["tiles_used"])
    assert plan(gemm_hi[0]) != plan(gemm_lo[0]) or exchange_lo < exchange_hi
    assert hi["total_cycles"] != lo["total_cycles"] or exchange_lo < exchange_hi
    # Fewer bytes per tile to receive costs more cycles overall, never fewer.
    assert lo["total_cycles"] >= hi["total_cycles"]


def test_available_memory_proportion_may_be_set_before_use_ipu_model():
    _, after = _matmul_report(0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, before = _matmul_report(0.1, ipu_model_first=False)
    assert before["compute_sets"] == after["compute_sets"]
    assert before["tile_memory"] == after["tile_memory"]
    # It takes effect, so nothing may say it has none.
    assert not [w for w in caught if "setAvailableMemoryProportion" in str(w.message)], \
        [str(w.message) for w in caught]


class HintedMatMuls(torch.nn.Module):
    """Two equal products; PopTorch's set_available_memory bounds the first one only."""

    def __init__(self, proportion):
        super().__init__()
        self.proportion = proportion

    def forward(self, a, b):
        first = poptorch.set_available_memory(a @ b, self.proportion)
        return first, a @ b


def test_set_available_memory_bounds_the_one_product_it_is_given():
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(1024, 1024, generator=g), torch.randn(1024, 1024, generator=g)
    model = poptorch.inferenceModel(HintedMatMuls(0.05), ipu_options())
    hinted, plain = model(a, b)
    # Numbers are the eager ones (to fp32 summation order over k = 1024: oneDNN's AVX-512
    # kernel adds in another order than torch's, ~1e-4 absolute on entries of size ~30);
    # the hint only changes the IPU plan.
    torch.testing.assert_close(hinted, a @ b, rtol=1e-5, atol=1e-4)
    assert torch.equal(hinted, plain)
    gemms = [cs for cs in model.ipuModelReport()["compute_sets"] if cs["kind"] == "gemm"]
    assert len(gemms) == 2
    first, second = gemms
    # Less memory for temporaries: another split, more cycles than the unhinted twin.
    cycles = lambda cs: cs["sync_cycles"] + cs["exchange_cycles"] + cs["compute_cycles"]
    assert cycles(first) > cycles(second)
    # On the CPU the hint changes nothing (and says nothing).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cpu = poptorch.inferenceModel(HintedMatMuls(0.05))
        torch.testing.assert_close(cpu(a, b)[0], a @ b, rtol=1e-5, atol=1e-4)


def test_set_available_memory_checks_its_argument_and_its_tensor():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        poptorch.set_available_memory(torch.ones(2), 1.5)

    class NotDense(torch.nn.Module):
        def forward(self, x):
            return poptorch.set_available_memory(x + 1, 0.3)

    model = poptorch.inferenceModel(NotDense(), ipu_options())
    with pytest.warns(UserWarning, match="matmul or convolution"):
        out = model(torch.ones(3))
    assert torch.equal(out, torch.full((3,), 2.0))


# ---- 5. several IPUs ------------------------------------------------------------------------

ACCUMULATION = 4  # >= 2 x stages - 1 micro-batches in flight for a 2-stage pipeline


def _deep_trainer(stages, strategy, ipu_model, auto_round=False, accumulation=ACCUMULATION):
    torch.manual_seed(0)
    model = Deep()
    if stages > 1:
        for i, block in enumerate(model.blocks()):  # block i on IPU i * stages // 4
            if i * stages // 4 > 0:
                poptorch.BeginBlock(block, f"block{i}", ipu_id=i * stages // 4)
    opts = ipu_options() if ipu_model else poptorch.Options()
    opts.Training.gradientAccumulation(accumulation)
    if strategy is not None:
        opts.setExecutionStrategy(strategy)
    if auto_round:
        opts.autoRoundNumIPUs(True)
    trainer = poptorch.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=0.05,
                                                                  momentum=0.9))
    return model, trainer


def _deep_data(calls, accumulation=ACCUMULATION):
    g = torch.Generator().manual_seed(6)
    n = accumulation * MICRO
    return [(torch.randn(n, 16, generator=g), torch.randint(0, 4, (n,), generator=g))
            for _ in range(calls)]


@pytest.mark.parametrize("strategy", [poptorch.ShardedExecution, poptorch.PipelinedExecution],
                         ids=["sharded", "pipelined"])
def test_two_ipus(strategy):
    data = _deep_data(3)
    results = {}
    for kind in ("unsplit_cpu", "cpu", "ipu_model"):
        stages = 1 if kind == "unsplit_cpu" else 2
        model, trainer = _deep_trainer(stages, None if stages == 1 else strategy(),
                                       ipu_model=kind == "ipu_model")
        losses = torch.stack([trainer(*batch)[1] for batch in data])
        results[kind] = (model, trainer, losses)
    model, trainer, losses = results["ipu_model"]
    cpu_model, _, cpu_losses = results["cpu"]
    assert torch.equal(losses, cpu_losses)
    _assert_states_equal(model, cpu_model)
    ref_model, _, ref_losses = results["unsplit_cpu"]
    torch.testing.assert_close(losses, ref_losses, rtol=1e-4, atol=1e-5)
    _assert_states_close(model, ref_model)

    r = trainer.ipuModelReport()
    assert r["num_ipus"] == 2 and r["ipus_attached"] == 2
    assert r["pipelined"] is (strategy is poptorch.PipelinedExecution)
    assert [i["ipu"] for i in r["ipus"]] == [0, 1]
    assert all(i["cycles"] > 0 for i in r["ipus"]), r["ipus"]
    assert len(r["tile_memory"]) == 2 and r["fits"] is True
    assert {cs["ipu"] for cs in r["compute_sets"]} == {0, 1}
    # One call runs ACCUMULATION micro-batches.
    _assert_cycles_are_per_step_times_steps(trainer.cycleCount(), r, ACCUMULATION)


def test_pipelining_overlaps_the_ipus():
    """The same 2-IPU split: pipelined, the IPUs work on different micro-batches at once, so
    a step is estimated shorter than sharded (one IPU after the other), and no shorter than
    the busiest IPU."""
    x, t = _deep_data(1)[0]
    per_step = {}
    for strategy in (poptorch.ShardedExecution, poptorch.PipelinedExecution):
        _, trainer = _deep_trainer(2, strategy(), ipu_model=True)
        trainer(x, t)
        r = trainer.ipuModelReport()
        per_step[strategy] = r["total_cycles"]
        assert r["total_cycles"] >= max(i["cycles"] for i in r["ipus"])
    assert per_step[poptorch.PipelinedExecution] < per_step[poptorch.ShardedExecution], per_step


def test_a_number_of_ipus_that_is_not_a_power_of_two_is_refused():
    accumulation = 6  # >= 2 x 3 - 1 for a 3-stage pipeline
    x, t = _deep_data(1, accumulation)[0]
    model, trainer = _deep_trainer(3, poptorch.PipelinedExecution(), ipu_model=True,
                                   accumulation=accumulation)
    before = copy.deepcopy(model.state_dict())
    refused = r"needs 3 IPUs.*powers of two.*autoRoundNumIPUs"
    with pytest.raises(poptorch.Error, match=refused):
        trainer(x, t)
    # Refused at every call, not only the first: the program is still for 3 IPUs.
    with pytest.raises(poptorch.Error, match=refused):
        trainer(x, t)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_auto_round_num_ipus_attaches_the_next_power_of_two():
    accumulation = 6
    x, t = _deep_data(1, accumulation)[0]
    _, rounded = _deep_trainer(3, poptorch.PipelinedExecution(), ipu_model=True,
                               auto_round=True, accumulation=accumulation)
    rounded(x, t)
    r = rounded.ipuModelReport()
    assert r["num_ipus"] == 3 and len(r["ipus"]) == 3
    assert r["ipus_attached"] == 4


# ---- 6. environment variables ---------------------------------------------------------------

def _tiny_inference(options):
    model = poptorch.inferenceModel(nn.Linear(8, 4), options)
    model(torch.randn(4, 8))
    return model


def test_poptorch_ipu_model_environment_variables(monkeypatch):
    monkeypatch.delenv("POPTORCH_IPU_MODEL_VERSION", raising=False)
    monkeypatch.setenv("POPTORCH_IPU_MODEL", "1")
    model = _tiny_inference(poptorch.Options().logCycleCount(True))
    assert model.cycleCount() > 0
    assert model.ipuModelReport()["target"]["name"] == "GC200"

    monkeypatch.setenv("POPTORCH_IPU_MODEL_VERSION", "ipu1")
    model = _tiny_inference(poptorch.Options().logCycleCount(True))
    r = model.ipuModelReport()
    assert r["target"]["name"] == "GC2"
    assert r["target"]["tiles_per_ipu"] == GC2_TILES
    assert r["target"]["bytes_per_tile"] == GC2_TILE_BYTES
    assert len(r["tile_memory"][0]["total"]) == GC2_TILES

    monkeypatch.delenv("POPTORCH_IPU_MODEL")
    model = _tiny_inference(poptorch.Options())  # the CPU device again
    with pytest.raises(poptorch.Error, match="useIpuModel"):
        model.ipuModelReport()


# ---- 7. report files ------------------------------------------------------------------------

def test_write_ipu_model_report_writes_html_and_json(tmp_path):
    trainer = _mlp_trainer()
    path = trainer.writeIpuModelReport(tmp_path / "r.html")
    assert os.path.samefile(path, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "GC200" in html
    with open(tmp_path / "r.json") as f:
        assert json.load(f) == trainer.ipuModelReport()


def test_enable_profiling_writes_the_ipu_model_report(tmp_path):
    profile_dir = tmp_path / "profile"
    _tiny_inference(ipu_options().enableProfiling(str(profile_dir)))
    assert (profile_dir / "ipu_model_report.html").is_file()
    assert (profile_dir / "ipu_model_report.json").is_file()


# ---- 8. cycleCount where there is nothing to count ------------------------------------------

def test_cycle_count_on_the_cpu_device_names_the_ipu_model():
    model = _tiny_inference(poptorch.Options().logCycleCount(True))
    with pytest.raises(poptorch.Error, match=r"useIpuModel"):
        model.cycleCount()


def test_cycle_count_needs_log_cycle_count():
    model = _tiny_inference(poptorch.Options().useIpuModel(True))
    with pytest.raises(poptorch.Error, match=r"logCycleCount\(True\)"):
        model.cycleCount()


def test_cycle_count_before_the_first_call_on_the_ipu_model():
    model = poptorch.inferenceModel(nn.Linear(8, 4), ipu_options())
    with pytest.raises(poptorch.Error) as info:
        model.cycleCount()
    # The executor is on the IPU Model: the error is that nothing has run yet, not that
    # "the CPU device has no IPU cycle counter".
    assert "has not run" in str(info.value), str(info.value)
    assert "CPU device" not in str(info.value), str(info.value)
    model(torch.randn(4, 8))
    assert model.cycleCount() > 0
