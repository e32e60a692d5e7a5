"""Model parallelism, first part (issue 12): PopTorch's block annotations place every
operation (and its gradient) on a device; sharded execution runs the stages in order with
the numbers of the unannotated model; bad configurations get clear errors."""
import copy

import pytest
import torch
import torch.nn.functional as F

import tilegraph
from models import batches


class Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = (torch.nn.Linear(20, 32), torch.nn.Linear(32, 32),
                                     torch.nn.Linear(32, 5))

    def forward(self, x, t):
        out = self.l3(F.relu(self.l2(F.relu(self.l1(x)))))
        return out, F.cross_entropy(out, t)


def _train(model, opts, x, t, calls=5):
    trainer = tilegraph.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=0.1,
                                                                   momentum=0.9))
    losses = [trainer(x, t)[1] for _ in range(calls)]
    return trainer, torch.stack(losses)


def test_begin_block_returns_the_module_and_places_operations_and_gradients():
    torch.manual_seed(0)
    model = Two()
    reference = copy.deepcopy(model)
    model.l2 = tilegraph.BeginBlock(model.l2, "second", ipu_id=1)  # assignable as a child
    model.l3 = tilegraph.BeginBlock(model.l3, ipu_id=2)
    assert isinstance(model.l2, torch.nn.Linear)
    x, t = batches("mlp", 2, 4, torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(x[:4], t[:4])[0], reference(x[:4], t[:4])[0])  # eager
    opts = tilegraph.Options().deviceIterations(2)
    opts.setExecutionStrategy(tilegraph.ShardedExecution())
    trainer, losses = _train(model, opts, x, t)
    _, ref_losses = _train(reference, tilegraph.Options().deviceIterations(2), x, t)
    torch.testing.assert_close(losses, ref_losses, rtol=0, atol=0)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    ir = trainer.executable.optimized_ir
    assert " @1" in ir and " @2" in ir
    # Activations (forward) and gradients (backward) cross devices through explicit copies.
    assert "stage_copy" in ir and "from_stage = 0, to_stage = 1" in ir
    assert "from_stage = 2, to_stage = 1" in ir
    per_device = trainer.executable.memory_stats["device_arena_bytes"]
    assert len(per_device) == 3 and all(b > 0 for b in per_device)
    # Gradients run on their forward's device: the loss (after l3) is on 2, so is its backward.
    assert any("log_softmax_backward" in line and "@2 loc" in line for line in ir.splitlines())


def test_block_context_and_block_function_place_regions():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

        @tilegraph.BlockFunction("tail", ipu_id=1)
        def tail(self, h):
            return self.b(h).sum()

        def forward(self, x):
            with tilegraph.Block("head", ipu_id=0):
                h = F.relu(self.a(x))
            return self.tail(h)

    net = Net()
    # Sharded: PopTorch's default (pipelined) inference needs deviceIterations >= 2 here.
    sharded = tilegraph.Options().setExecutionStrategy(tilegraph.ShardedExecution())
    infer = tilegraph.inferenceModel(net, sharded)
    torch.testing.assert_close(infer(torch.ones(2, 8)).reshape(()), net(torch.ones(2, 8)))
    assert " @1" in infer.executable.optimized_ir


def test_pipelined_training_needs_enough_gradient_accumulation():
    model = Two()
    model.l3 = tilegraph.BeginBlock(model.l3, ipu_id=1)
    opts = tilegraph.Options().setExecutionStrategy(tilegraph.PipelinedExecution(
        tilegraph.AutoStage.SameAsIpu))
    opts.Training.gradientAccumulation(2)
    x, t = batches("mlp", 2, 4, torch.Generator().manual_seed(1))
    trainer = tilegraph.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"2 stages needs gradientAccumulation >= 2 x 2 - 1 = 3, "
                                         r"got 2"):
        trainer(x, t)


def test_pipeline_stages_out_of_order_and_a_block_on_two_devices_are_errors():
    model = Two()
    model.l2 = tilegraph.BeginBlock(model.l2, ipu_id=1)
    model.l3 = tilegraph.BeginBlock(model.l3, ipu_id=0)
    opts = tilegraph.Options().setExecutionStrategy(tilegraph.PipelinedExecution())
    x, t = batches("mlp", 1, 4, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="stages out of order"):
        tilegraph.inferenceModel(model, opts)(x, t)
    model = Two()
    model.l2 = tilegraph.BeginBlock(model.l2, "shared", ipu_id=1)
    model.l3 = tilegraph.BeginBlock(model.l3, "shared", ipu_id=2)
    with pytest.raises(ValueError, match="block 'shared' is used on two devices"):
        tilegraph.inferenceModel(model)(x, t)
    model = Two()
    model.l3 = tilegraph.BeginBlock(model.l3, ipu_id=2)  # device 1 would be an empty stage
    with pytest.raises(ValueError, match=r"device\(s\) \[1\] hold no block"):
        tilegraph.inferenceModel(model, opts)(x, t)
    with pytest.raises(ValueError, match="ipu_id must be >= 0"):
        tilegraph.BeginBlock(torch.nn.Linear(2, 2), ipu_id=-1)


def test_stages_map_blocks_to_devices():
    model = Two()
    model.l2 = tilegraph.BeginBlock(model.l2, "b2")
    model.l3 = tilegraph.BeginBlock(model.l3, "b3")
    strategy = tilegraph.ShardedExecution(tilegraph.Stage("b2").ipu(1), tilegraph.Stage("b3").ipu(3))
    x, t = batches("mlp", 1, 4, torch.Generator().manual_seed(1))
    infer = tilegraph.inferenceModel(model, tilegraph.Options().setExecutionStrategy(strategy))
    torch.testing.assert_close(infer(x, t)[0], model(x, t)[0])
    ir = infer.executable.optimized_ir
    assert " @1" in ir and " @3" in ir


def test_recomputation_checkpoints_keep_the_numbers_and_lower_the_planned_peak():
    class Deep(torch.nn.Module):
        def __init__(self, checkpoints):
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Linear(64, 64) for _ in range(6))
            self.checkpoints = checkpoints

        def forward(self, x, t):
            for i, layer in enumerate(self.layers):
                x = F.gelu(layer(x))
                if self.checkpoints and i % 2 == 1:
                    x = tilegraph.recomputationCheckpoint(x)
            return x, F.mse_loss(x, t)

    torch.manual_seed(0)
    plain = Deep(False)
    marked = copy.deepcopy(plain)
    marked.checkpoints = True
    x, t = torch.randn(1024, 64), torch.randn(1024, 64)
    torch.testing.assert_close(marked(x[:8], t[:8])[1], plain(x[:8], t[:8])[1])  # eager: identity
    peaks, losses = {}, {}
    for name, model in (("plain", plain), ("checkpoints", marked)):
        opts = tilegraph.Options().deviceIterations(2)
        trainer = tilegraph.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=0.1))
        losses[name] = torch.stack([trainer(x, t)[1] for _ in range(5)])
        peaks[name] = trainer.executable.memory_stats["arena_bytes"]
    torch.testing.assert_close(losses["checkpoints"], losses["plain"], rtol=1e-6, atol=0)
    for p, q in zip(marked.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert peaks["checkpoints"] < 0.75 * peaks["plain"], peaks
    print(f"planned peak: {peaks['plain']} B without checkpoints, {peaks['checkpoints']} B with")


@pytest.mark.parametrize("strategy, accumulation", [(tilegraph.ShardedExecution, 2),
                                                     (tilegraph.PipelinedExecution, 3)])
def test_two_stages_times_two_replicas_in_one_process_match_eager(strategy, accumulation):
    torch.manual_seed(0)
    model = Two()
    reference = copy.deepcopy(model)
    model.l3 = tilegraph.BeginBlock(model.l3, ipu_id=1)
    opts = (tilegraph.Options().replicationFactor(2).deviceIterations(2)
            .setExecutionStrategy(strategy()))
    opts.Training.gradientAccumulation(accumulation)
    trainer = tilegraph.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=0.1,
                                                                   momentum=0.9))
    eager = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(2)
    micro_steps = 2 * accumulation
    for _ in range(3):
        x, t = batches("mlp", micro_steps * 2, 3, g)  # [micro-steps, replicas 2, micro 3]
        trainer(x, t)
        xs, ts = x.reshape(micro_steps, 6, 20), t.reshape(micro_steps, 6)
        for s in range(2):
            eager.zero_grad()
            for a in range(accumulation):
                k = accumulation * s + a
                (reference(xs[k], ts[k])[1] / accumulation).backward()
            eager.step()
    assert trainer.executable.pipelined == (strategy is tilegraph.PipelinedExecution)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_the_pipelined_bert_example_trains_like_the_unannotated_model():
    import os
    import subprocess
    import sys
    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "pipelined_bert.py")
    proc = subprocess.run([sys.executable, example, "--calls", "2"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "schedule: pipelined (1F1B)" in proc.stdout
    worst = float(proc.stdout.split("largest weight difference from the unannotated model:")[1])
    assert worst < 1e-5, proc.stdout
    assert "one after another" not in proc.stderr


class Times(torch.nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x * self.k


def test_auto_increment_makes_each_block_a_stage_even_on_a_repeated_ipu():
    """PopTorch's AutoStage.AutoIncrement: a new stage per block, in forward order, so a
    block may return to an IPU used before (ipus 0, 1, 2, 1 -> stages 0..3)."""
    class Inline(torch.nn.Module):
        def forward(self, x):
            tilegraph.Block.useAutoId()
            for k, ipu in ((2, 0), (3, 1), (4, 2), (5, 1)):
                with tilegraph.Block(ipu_id=ipu):
                    x = x * k
            return x

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2, self.l3, self.l4 = Times(2), Times(3), Times(4), Times(5)

        def forward(self, x):
            return self.l4(self.l3(self.l2(self.l1(x))))

    wrapped = Wrapped()
    for name, ipu in (("l2", 1), ("l3", 2), ("l4", 1)):
        setattr(wrapped, name, tilegraph.BeginBlock(getattr(wrapped, name), ipu_id=ipu))
    x = torch.randn(4, 5)
    for model in (Inline(), wrapped):
        opts = tilegraph.Options().deviceIterations(4).autoRoundNumIPUs(True)
        opts.setExecutionStrategy(tilegraph.PipelinedExecution(tilegraph.AutoStage.AutoIncrement))
        infer = tilegraph.inferenceModel(model, opts)
        torch.testing.assert_close(infer(x), x * 120)
        assert infer.executable.pipelined
        assert len(infer.executable.memory_stats["device_arena_bytes"]) == 4


def test_pipelined_inference_needs_a_batch_per_ipu():
    """PopTorch's rule: deviceIterations >= the pipeline's IPUs (4 blocks on 4 IPUs need 4);
    AutoIncrement blocks that share an IPU count once (3 blocks on 2 IPUs run with 2)."""
    def tower(ipus):
        model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in ipus])
        for layer, ipu in zip(model, ipus):
            tilegraph.BeginBlock(layer, ipu_id=ipu)
        return model

    opts = tilegraph.Options().deviceIterations(2)
    with pytest.raises(tilegraph.Error, match="deviceIterations must be greater than or "
                                              r"equal to the number of pipeline stages \(4\)"):
        tilegraph.inferenceModel(tower([0, 1, 2, 3]), opts)(torch.randn(2, 4))
    auto = tilegraph.Options().deviceIterations(2)
    auto.setExecutionStrategy(tilegraph.PipelinedExecution(tilegraph.AutoStage.AutoIncrement))
    model = tower([0, 0, 1])
    torch.testing.assert_close(tilegraph.inferenceModel(model, auto)(torch.ones(2, 4)),
                               model(torch.ones(2, 4)))


def test_auto_increment_refuses_an_operation_outside_every_block():
    """With AutoIncrement each block is a stage; an operation after a block closes belongs
    to none (PopTorch: "No active Block")."""
    class Model(torch.nn.Module):
        def forward(self, x):
            tilegraph.Block.useAutoId()
            with tilegraph.Block(ipu_id=0):
                x = x * 4
            return x * 4

    opts = tilegraph.Options().deviceIterations(2)
    opts.setExecutionStrategy(tilegraph.PipelinedExecution(tilegraph.AutoStage.AutoIncrement))
    with pytest.raises(tilegraph.Error, match="No active Block"):
        tilegraph.inferenceModel(Model(), opts).compile(torch.randn(2, 5))


def test_block_start_switches_blocks_inside_forward():
    class Model(torch.nn.Module):
        def forward(self, x):
            tilegraph.Block.start(ipu_id=0)
            x = x * 4
            tilegraph.Block.start(ipu_id=1)
            return x * 2

    infer = tilegraph.inferenceModel(Model(), tilegraph.Options().deviceIterations(2))
    torch.testing.assert_close(infer(torch.ones(2, 5)), torch.full((2, 5), 8.0))
    assert " @1" in infer.executable.optimized_ir


def test_module_repr_shows_where_blocks_begin():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), Times(2))
    assert tilegraph.module_repr(model) == repr(model)  # unannotated: torch's own repr
    tilegraph.BeginBlock(model[1], ipu_id=1)
    text = tilegraph.module_repr(model)
    assert "(1): BeginBlock(user_id=None, ipu_id=1) ReLU()" in text
    assert "(0): Linear(in_features=2, out_features=3, bias=True)" in text
    assert "BeginBlock(user_id=None, ipu_id=1)" in repr(tilegraph.inferenceModel(model))
    # The block module's own repr shows it too (PopTorch's test_begin_block_copy).
    assert tilegraph.module_repr(model[1]) == "BeginBlock(user_id=None, ipu_id=1) ReLU()"


def test_blocks_survive_saving_copying_and_can_be_removed(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    names = [n for n, _ in model.named_parameters()]
    tilegraph.BeginBlock(model[2], user_id=1, ipu_id=2)
    assert [n for n, _ in model.named_parameters()] == names  # the module is unchanged
    torch.save(model, tmp_path / "m.pt")  # the block's hook is picklable
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    assert "BeginBlock(user_id=1, ipu_id=2)" in tilegraph.module_repr(loaded)
    assert "BeginBlock(user_id=1, ipu_id=2)" in tilegraph.module_repr(copy.deepcopy(model))
    with pytest.raises(tilegraph.Error, match="already been assigned to a block"):
        tilegraph.BeginBlock(model[2], ipu_id=1)
    x = torch.randn(2, 3)
    infer = tilegraph.inferenceModel(model, tilegraph.Options().setExecutionStrategy(
        tilegraph.ShardedExecution()))  # device 1 holds no block: not a pipeline
    infer(x)
    assert " @2" in infer.executable.optimized_ir
    tilegraph.removeBlocks(model)
    assert "BeginBlock" not in tilegraph.module_repr(model)
    infer = tilegraph.inferenceModel(model)
    torch.testing.assert_close(infer(x), model(x))
    assert " @2" not in infer.executable.optimized_ir


def _plus_one(x):
    return x + 1.0


def test_begin_block_on_a_function_is_a_block_to_call():
    block = tilegraph.BeginBlock(_plus_one, 1, 2)
    assert block._user_id == 1 and block._ipu_id == 2
    torch.testing.assert_close(block(torch.zeros(2)), torch.ones(2))
