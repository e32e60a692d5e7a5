"""tilegraph.autoPartition: a model too big for one emulated IPU is placed over several,
in contiguous stages of its layers that each fit their tiles, checked by compiling the
placed model on the IPU Model (docs/IPU_MODEL.md)."""
import pytest
import torch

import tilegraph
from tilegraph.auto_partition import find_units


class Tower(torch.nn.Module):
    """Eight wide layers (~75M parameters, ~300 MB in f32): more than one GC2's 304 MiB."""

    def __init__(self, width=3072, depth=8):
        super().__init__()
        self.inp = torch.nn.Linear(64, width)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(depth))
        self.out = torch.nn.Linear(width, 10)

    def forward(self, x, y):
        h = self.inp(x)
        for layer in self.layers:
            h = torch.relu(layer(h))
        logits = self.out(h)
        return logits, torch.nn.functional.cross_entropy(logits, y)


def _example():
    torch.manual_seed(0)
    return Tower(), (torch.randn(4, 64), torch.randint(0, 10, (4,)))


def test_units_are_the_layers_in_forward_order():
    model, args = _example()
    units = find_units(model, args, num_ipus=2, granularity=4)
    assert units == ["inp"] + [f"layers.{i}" for i in range(8)] + ["out"]


def test_a_model_that_does_not_fit_one_ipu_is_placed_on_four_that_fit():
    model, args = _example()
    opt = tilegraph.optim.SGD(model.parameters(), lr=0.01)
    one = tilegraph.trainingModel(
        Tower(), tilegraph.Options().useIpuModel(True, target="GC2", allow_out_of_memory=True),
        tilegraph.optim.SGD(Tower().parameters(), lr=0.01))
    one.compile(*args)
    assert not one.ipuModelReport()["fits"]
    one.destroy()

    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = tilegraph.autoPartition(model, 4, args, optimizer=opt, target="GC2")
    # The user's model is untouched until the plan is applied.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not hasattr(model.layers[0], "_tilegraph_block")

    flat = [u for stage in plan.stages for u in stage]
    assert flat == plan.units and len(plan.stages) == 4 and all(plan.stages)
    report = plan.verified
    assert report["fits"], str(plan)
    assert len(report["ipus"]) == 4
    assert all(i["cycles"] > 0 for i in report["ipus"])
    assert all(i["max_tile_bytes"] <= report["target"]["bytes_per_tile"] for i in report["ipus"])
    # Balanced: no stage more than twice the mean (the layers are equal).
    assert 1.0 <= plan.balance < 2.0
    assert "IPU 3" in str(plan)

    plan.apply(model)
    for s, stage in enumerate(plan.stages):
        assert model.get_submodule(stage[0])._tilegraph_block[1] == s


def test_the_placed_model_trains_like_the_unplaced_one():
    torch.manual_seed(0)
    small = Tower(width=64, depth=4)
    reference = Tower(width=64, depth=4)
    reference.load_state_dict(small.state_dict())
    args = (torch.randn(4, 64), torch.randint(0, 10, (4,)))
    plan = tilegraph.autoPartition(small, 2, args, target="GC2",
                                   optimizer=tilegraph.optim.SGD(small.parameters(), lr=0.1))
    plan.apply(small)
    opts = tilegraph.Options().useIpuModel(True, target="GC2")
    opts.setExecutionStrategy(tilegraph.ShardedExecution())
    placed = tilegraph.trainingModel(small, opts, tilegraph.optim.SGD(small.parameters(), lr=0.1))
    plain = tilegraph.trainingModel(reference, tilegraph.Options(),
                                    tilegraph.optim.SGD(reference.parameters(), lr=0.1))
    for _ in range(3):
        _, a = placed(*args)
        _, b = plain(*args)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert placed.ipuModelReport()["num_ipus"] == 2


def _checkpoint_output(module, args, output):
    return tilegraph.recomputationCheckpoint(output)


def test_a_pipelined_recomputed_half_model_keeps_the_optimizers_state_dtypes():
    """Graphcore's recipe for big models: model.half(), PipelinedExecution with gradient
    accumulation, autoRecomputation and a checkpoint after every layer, gradients accumulated
    in fp16 (accum_type). The measurement and verification compiles use the same optimizer
    settings as the user's run: fp16 accumulators take half the tile memory of fp32 ones."""
    torch.manual_seed(0)
    model = Tower(width=1024, depth=8).half()
    for layer in model.layers:
        layer.register_forward_hook(_checkpoint_output)
    args = (torch.randn(4 * 8, 64).half(), torch.randint(0, 10, (4 * 8,)))
    opts = tilegraph.Options()
    opts.Training.gradientAccumulation(8)  # PopTorch: at least 2 x stages - 1
    opts._Popart.set("autoRecomputation", int(tilegraph.RecomputationType.Pipeline))
    opts.setExecutionStrategy(tilegraph.PipelinedExecution())
    variables = {}
    for accum in (torch.float16, None):
        opt = tilegraph.optim.SGD(model.parameters(), lr=0.01, accum_type=accum)
        plan = tilegraph.autoPartition(model, 4, args, optimizer=opt, options=opts, target="GC2")
        report = plan.verified
        assert report["pipelined"] and report["fits"], str(plan)
        assert len(report["ipus"]) == 4 and 1.0 <= plan.balance < 2.0
        variables[accum] = sum(sum(m["categories"]["variables"]) for m in report["tile_memory"])
    # fp16 weights (2 bytes) + fp16 accumulators (2) vs fp16 weights + fp32 accumulators (4).
    assert variables[torch.float16] / variables[None] == pytest.approx(4 / 6, rel=0.05)
