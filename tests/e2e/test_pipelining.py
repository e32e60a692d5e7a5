"""Pipelined model parallelism (issue 12): PipelinedExecution runs every device (stage) on
its own thread with micro-batches in flight (1F1B), ShardedExecution runs them one after
another; both train like the unannotated model with the same gradient accumulation: losses
and every weight after 10 optimizer steps, for an MLP, a CNN with batch norm and a BERT-style
encoder whose embedding is tied to its decoder across devices, with SGD-momentum and AdamW."""
import copy

import pytest
import torch
import torch.nn.functional as F

import tilegraph

ACCUMULATION = 8  # >= 2 x 4 - 1
MICRO = 2         # samples per micro-batch
STEPS = 10        # optimizer steps


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in
                                          [(12, 24), (24, 24), (24, 24), (24, 5)])

    def forward(self, x, t):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else torch.tanh(layer(x))
        return x, F.cross_entropy(x, t)

    def blocks(self):
        return list(self.layers)

    @staticmethod
    def data(n, g):
        return torch.randn(n, 12, generator=g), torch.randint(0, 5, (n,), generator=g)


class CNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        def unit(a, b):
            return torch.nn.Sequential(torch.nn.Conv2d(a, b, 3, padding=1),
                                       torch.nn.BatchNorm2d(b), torch.nn.ReLU())
        self.units = torch.nn.ModuleList([unit(3, 6), unit(6, 8), unit(8, 8)])
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x, t):
        for u in self.units:
            x = u(x)
        out = self.head(x.mean(dim=(2, 3)))
        return out, F.cross_entropy(out, t)

    def blocks(self):
        return [*self.units, self.head]

    @staticmethod
    def data(n, g):
        return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


class TiedEncoder(torch.nn.Module):
    """BERT-style: the decoder reuses the word embedding's weight (on another device)."""
    VOCAB = 30

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(self.VOCAB, 16)
        self.layers = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
            for _ in range(2))
        self.norm = torch.nn.LayerNorm(16)
        self.decoder = torch.nn.Linear(16, self.VOCAB)
        self.decoder.weight = self.embed.weight  # tied

    def forward(self, ids, labels):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        logits = self.decoder(self.norm(x))
        return logits, F.cross_entropy(logits.reshape(-1, self.VOCAB), labels.reshape(-1))

    def blocks(self):
        return [self.embed, self.layers[0], self.layers[1], self.norm]

    @staticmethod
    def data(n, g):
        ids = torch.randint(0, TiedEncoder.VOCAB, (n, 6), generator=g)
        return ids, torch.randint(0, TiedEncoder.VOCAB, (n, 6), generator=g)


def _optimizer(kind, model):
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)


def _annotate(model, stages):
    """Block i of the model's 4 goes to device i * stages // 4."""
    for i, block in enumerate(model.blocks()):
        device = i * stages // 4
        if device > 0:
            tilegraph.BeginBlock(block, f"block{i}", ipu_id=device)


def _train(model, optimizer_kind, strategy, data):
    opts = tilegraph.Options()
    opts.Training.gradientAccumulation(ACCUMULATION)
    if strategy is not None:
        opts.setExecutionStrategy(strategy)
    trainer = tilegraph.trainingModel(model, opts, _optimizer(optimizer_kind, model))
    losses = torch.stack([trainer(*batch)[1] for batch in data])
    return trainer, losses


@pytest.mark.parametrize("family", [MLP, CNN, TiedEncoder], ids=["mlp", "cnn_bn", "bert_tied"])
@pytest.mark.parametrize("optimizer_kind", ["sgd", "adamw"])
def test_pipelined_and_sharded_training_equal_unpipelined_training(family, optimizer_kind):
    torch.manual_seed(0)
    reference = family()
    g = torch.Generator().manual_seed(1)
    data = [family.data(ACCUMULATION * MICRO, g) for _ in range(STEPS)]
    _, ref_losses = _train(reference, optimizer_kind, None, data)
    for stages, strategy in [(2, tilegraph.PipelinedExecution()),
                             (4, tilegraph.PipelinedExecution()),
                             (4, tilegraph.ShardedExecution())]:
        torch.manual_seed(0)
        model = family()
        _annotate(model, stages)
        trainer, losses = _train(model, optimizer_kind, strategy, data)
        exe = trainer.executable
        pipelined = isinstance(strategy, tilegraph.PipelinedExecution)
        assert exe.pipelined == pipelined, exe.pipeline_fallback_reason
        assert len(exe.memory_stats["device_arena_bytes"]) == stages
        if pipelined:  # every device ran its share of every micro-batch on its own thread
            stats = exe.pipeline_stats()
            assert stats["waves"] == STEPS and stats["micro_batches"] == STEPS * ACCUMULATION
            assert len(stats["busy_seconds"]) == stages and min(stats["busy_seconds"]) > 0
        what = f"{stages} stages, {type(strategy).__name__}"
        torch.testing.assert_close(losses, ref_losses, rtol=1e-4, atol=1e-5, msg=what)
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=f"{name}, {what}")
        for (name, b), c in zip(model.named_buffers(), reference.buffers()):
            torch.testing.assert_close(b, c, rtol=1e-4, atol=1e-5, msg=f"{name}, {what}")


def test_pipelined_inference_matches_and_overlaps_the_stages():
    torch.manual_seed(0)
    model = MLP()
    reference = copy.deepcopy(model)
    _annotate(model, 4)
    opts = tilegraph.Options().deviceIterations(6)
    opts.setExecutionStrategy(tilegraph.PipelinedExecution())
    infer = tilegraph.inferenceModel(model, opts)
    x, t = MLP.data(6 * 3, torch.Generator().manual_seed(2))
    out, loss = infer(x, t)
    assert infer.executable.pipelined
    with torch.no_grad():
        want = reference(x, t)[0]
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    assert infer.executable.pipeline_stats()["micro_batches"] == 6


def test_pipelined_training_runs_whole_optimizer_steps_per_call():
    torch.manual_seed(0)
    model = MLP()
    _annotate(model, 2)
    opts = tilegraph.Options().deviceIterations(2)
    opts.Training.gradientAccumulation(3)
    opts.setExecutionStrategy(tilegraph.PipelinedExecution())
    trainer = tilegraph.trainingModel(model, opts, _optimizer("sgd", model))
    x, t = MLP.data(2 * 3 * 2, torch.Generator().manual_seed(3))
    trainer(x, t)
    assert trainer.executable.pipeline_stats()["waves"] == 2  # 2 optimizer steps of 3
    # A call with the wrong number of samples is refused before anything runs.
    with pytest.raises(ValueError):
        trainer(x[:6], t[:6])


def test_a_failure_in_one_stage_stops_the_pipeline_with_the_users_line():
    class Bad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Embedding(5, 4)

        def forward(self, x, ids):
            return (self.a(x) + self.b(ids)).sum()

    model = Bad()
    tilegraph.BeginBlock(model.b, ipu_id=1)
    opts = tilegraph.Options()
    opts.Training.gradientAccumulation(3)
    opts.setExecutionStrategy(tilegraph.PipelinedExecution())
    trainer = tilegraph.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=0.1))
    before = [p.detach().clone() for p in model.parameters()]
    ids = torch.tensor([0, 1, 2, 3, 4, 9])  # 9 is out of range: found by device 1's kernel
    with pytest.raises(Exception) as info:
        trainer(torch.randn(6, 4), ids.reshape(6))
    text = str(info.value) + "".join(getattr(info.value, "__notes__", []))
    assert "test_pipelining.py" in text and "device 1" in text, text
    assert "0 of the 3 steps" in text, text
    for p, q in zip(model.parameters(), before):  # nothing was applied
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_pipeline_recomputation_keeps_the_numbers_and_lowers_the_planned_peak():
    """PopART's autoRecomputation = Pipeline (3): each device keeps only what it receives
    and recomputes its activations in its backward."""
    class Deep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Linear(64, 64) for _ in range(8))

        def forward(self, x):
            for layer in self.layers:
                x = F.gelu(layer(x))
            return x, (x * x).mean()

    x = torch.randn(4 * 256, 64, generator=torch.Generator().manual_seed(4))
    peaks, weights, losses = {}, {}, {}
    for recompute in (False, True):
        torch.manual_seed(0)
        model = Deep()
        tilegraph.BeginBlock(model.layers[4], "second", ipu_id=1)
        opts = tilegraph.Options().setExecutionStrategy(tilegraph.PipelinedExecution())
        opts.Training.gradientAccumulation(4)
        if recompute:
            opts._Popart.set("autoRecomputation", 3)
        trainer = tilegraph.trainingModel(model, opts, _optimizer("adamw", model))
        losses[recompute] = torch.stack([trainer(x)[1] for _ in range(3)])
        assert trainer.executable.pipelined
        stats = trainer.executable.memory_stats
        # 2 micro-batches in flight, each with its arena, plus each device's working arena.
        peaks[recompute] = 2 * stats["arena_bytes"] + sum(stats["device_working_bytes"])
        weights[recompute] = [p.detach().clone() for p in model.parameters()]
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-6, atol=1e-7)
    for p, q in zip(weights[True], weights[False]):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert peaks[True] < 0.75 * peaks[False], peaks
    print(f"planned pipeline memory: {peaks[False]} B -> {peaks[True]} B with recomputation")


def test_a_device_without_parameters_pipelines_too():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.act, self.b = torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5)

        def forward(self, x, t):
            out = self.b(self.act(self.a(x)))
            return out, F.cross_entropy(out, t)

    torch.manual_seed(0)
    reference = Net()
    model = copy.deepcopy(reference)
    tilegraph.BeginBlock(model.act, "middle", ipu_id=1)  # no parameters on device 1
    tilegraph.BeginBlock(model.b, "last", ipu_id=2)
    g = torch.Generator().manual_seed(5)
    data = [MLP.data(ACCUMULATION * MICRO, g) for _ in range(3)]
    _, ref_losses = _train(reference, "adamw", None, data)
    trainer, losses = _train(model, "adamw", tilegraph.PipelinedExecution(), data)
    assert trainer.executable.pipelined, trainer.executable.pipeline_fallback_reason
    torch.testing.assert_close(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", [tilegraph.OutputMode.All, tilegraph.OutputMode.Sum,
                                  tilegraph.OutputMode.Final])
def test_pipelined_outputs_follow_the_output_mode_in_step_order(mode):
    results = {}
    for strategy in (tilegraph.ShardedExecution(), tilegraph.PipelinedExecution()):
        torch.manual_seed(0)
        model = MLP()
        _annotate(model, 4)
        opts = tilegraph.Options().deviceIterations(2).outputMode(mode)
        opts.Training.gradientAccumulation(ACCUMULATION)
        opts.setExecutionStrategy(strategy)
        trainer = tilegraph.trainingModel(model, opts, _optimizer("sgd", model))
        x, t = MLP.data(2 * ACCUMULATION * MICRO, torch.Generator().manual_seed(6))
        results[type(strategy).__name__] = trainer(x, t)
    sharded, pipelined = results["ShardedExecution"], results["PipelinedExecution"]
    for a, b in zip(pipelined, sharded):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if mode == tilegraph.OutputMode.All:  # one loss per micro-batch, in order, all distinct
        assert sharded[1].numel() == 2 * ACCUMULATION and len(set(sharded[1].tolist())) > 1


class CastAfterTheLastBlock(torch.nn.Module):
    """`mask.to(x.dtype)` after the last BeginBlock: torch.export leaves an
    _assert_tensor_metadata node with no block, which must not become a stage of its own."""

    def __init__(self):
        super().__init__()
        self.first = tilegraph.BeginBlock(torch.nn.Linear(4, 4), ipu_id=0)
        self.second = tilegraph.BeginBlock(torch.nn.Linear(4, 4), ipu_id=1)

    def forward(self, x, mask, y):
        x = self.second(torch.relu(self.first(x))) * mask.to(x.dtype)
        return x, F.mse_loss(x, y)


def test_a_dtype_cast_in_a_block_adds_no_stage():
    torch.manual_seed(0)
    model = CastAfterTheLastBlock()
    reference = copy.deepcopy(model)
    options = tilegraph.Options()
    options.Training.gradientAccumulation(4)
    options.setExecutionStrategy(tilegraph.PipelinedExecution(tilegraph.AutoStage.AutoIncrement))
    run = tilegraph.trainingModel(model, options, torch.optim.SGD(model.parameters(), lr=0.1))
    x, y, mask = torch.randn(16, 4), torch.randn(16, 4), torch.randint(0, 2, (16, 4))
    _, loss = run(x, mask, y)  # 2 stages: accumulation 4 >= 2 * 2 - 1 (3 stages would refuse)
    last = slice(12, 16)  # the returned loss: the last micro-batch's (OutputMode.Final)
    want = F.mse_loss(reference.second(torch.relu(reference.first(x[last]))) *
                      mask[last].float(), y[last])
    torch.testing.assert_close(loss, want.detach(), rtol=1e-5, atol=1e-6)


def test_begin_block_takes_poptorchs_keyword():
    layer = tilegraph.BeginBlock(layer_to_call=torch.nn.Linear(2, 2), ipu_id=1)
    assert isinstance(layer, torch.nn.Linear)
