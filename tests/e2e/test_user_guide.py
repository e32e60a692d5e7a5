"""Behaviours PopTorch's user guide shows in its code (docs/user_guide/*.py of PopTorch),
with `import tilegraph as poptorch`: execution strategies' stages by block, the error
classes' fields, a plain tensor attribute updated in forward, and the names its snippets
call (hasMLIRSupportOnPlatform, Parameter.perReplica, Options.GraphProcessing)."""
import copy
import re

import pytest
import torch

import tilegraph as poptorch


class Counter(torch.nn.Module):
    """buffers.py's "wrong" counter: a tensor attribute, not a registered buffer."""

    def __init__(self):
        super().__init__()
        self.i = torch.tensor([0.0])

    def forward(self, x):
        self.i += 1
        return self.i * x


def test_a_tensor_attribute_updated_in_forward_carries_on_as_in_eager():
    eager, compiled = Counter(), Counter()
    model = poptorch.inferenceModel(compiled)
    x = torch.ones(2)
    with pytest.warns(UserWarning, match="non-persistent buffer"):
        first = model(x)
    assert torch.equal(first, eager(x))  # 1, not 2: the failed first trace's update undone
    assert torch.equal(model(x), eager(x))  # 2: the update carried on
    assert "i" not in compiled.state_dict()  # non-persistent: checkpoints unchanged


class TwoBlocks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = poptorch.BeginBlock(torch.nn.Linear(4, 8), "B1", ipu_id=0)
        self.fc2 = poptorch.BeginBlock(torch.nn.Linear(8, 2), "B2", ipu_id=0)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("strategy", [poptorch.ShardedExecution, poptorch.PipelinedExecution])
def test_a_strategy_gives_the_stage_of_a_block(strategy):
    """mnist.py: strategy = ShardedExecution("B1", "B2"); strategy.stage("B2").ipu(1)."""
    s = strategy("B1", "B2")
    assert s.stage("B2").ipu(1) is s.stage("B2") and s.stage("B2").device == 1
    assert s.device_of("B2", 0) == 1 and s.device_of("B1", 0) == 0
    with pytest.raises(KeyError, match="'B3'"):
        s.stage("B3")
    opts = poptorch.Options().deviceIterations(2).setExecutionStrategy(s)
    torch.manual_seed(0)
    model = TwoBlocks()
    x = torch.randn(4, 4)
    torch.testing.assert_close(poptorch.inferenceModel(copy.deepcopy(model), opts)(x), model(x))


def test_a_phased_strategy_gives_its_stages_and_is_refused_by_name():
    s = poptorch.SerialPhasedExecution(poptorch.Phase("B1"), poptorch.Phase("B2"))
    assert s.stage("B2").blocks == ["B2"]
    with pytest.raises(Exception, match="[Pp]hased execution"):
        poptorch.Options().setExecutionStrategy(s)


class Scalar(torch.nn.Module):
    def forward(self, x):
        return x * x.sum().item()


def test_errors_carry_message_type_and_location():
    """error_handling.py: `except poptorch.Error as e: e.message, e.type, e.location`, and
    `e.recovery_action` of a RecoverableError."""
    with pytest.raises(poptorch.Error) as info:
        poptorch.inferenceModel(Scalar())(torch.ones(2))
    e = info.value
    assert e.message == str(e) and e.type == "tilegraph"
    assert e.location.startswith(__file__) and e.location.split(":")[-1].isdigit()

    class Pick(torch.nn.Module):
        def forward(self, x, i):
            return torch.nn.functional.embedding(i, x)
    with pytest.raises(poptorch.RecoverableError) as info:
        poptorch.inferenceModel(Pick())(torch.ones(3, 2), torch.tensor([5]))
    assert info.value.recovery_action == "NONE"
    assert re.fullmatch(r".*test_user_guide\.py:\d+", info.value.location)


def test_the_names_the_guides_snippets_call():
    assert poptorch.hasMLIRSupportOnPlatform() is False
    assert poptorch.hasMlirSupportOnPlatform() is False  # (PopTorch 2's tests' spelling)
    w = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(poptorch.Error, match="replica-grouped|per-replica"):
        w.perReplica(poptorch.enums.CommGroupType.Orthogonal, 2,
                     poptorch.enums.VariableRetrievalMode.OnePerGroup)
    opts = poptorch.Options()
    assert opts.GraphProcessing.runningVarianceAlwaysFloat(False) is opts
    assert opts.Precision.running_statistics_always_float is False
