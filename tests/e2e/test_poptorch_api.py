"""docs/POPTORCH.md stays true: every PopTorch name in the table exists on tilegraph (a
PopTorch script never meets an AttributeError), every public tilegraph name is in the table
or listed as tilegraph's own, names marked "warns" warn and names marked "refused" raise
(for the ones callable without arguments), and the document matches the table."""
import os
import warnings

import pytest

import tilegraph
from tilegraph import poptorch_api

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("name", [n for n, _, _ in poptorch_api.API])
def test_every_poptorch_name_exists(name):
    if name.startswith("PoplarExecutor.") and name.split(".")[1] in ("model", "options",
                                                                     "load_state_dict",
                                                                     "state_dict",
                                                                     "named_parameters"):
        # Instance attributes or passed through to the module: checked on an executor.
        import torch
        run = tilegraph.inferenceModel(torch.nn.Linear(2, 2))
        assert getattr(run, name.split(".")[1]) is not None
        return
    assert poptorch_api.resolve(name) is not None


def test_every_public_tilegraph_name_is_documented():
    table = {n.split(".")[0] for n, _, _ in poptorch_api.API}
    table |= {n.split(".")[1] for n, _, _ in poptorch_api.API if n.startswith("enums.")}
    missing = [n for n in tilegraph.__all__ if n not in table and
               n not in poptorch_api.TILEGRAPH_ONLY]
    assert not missing, f"add these to python/tilegraph/poptorch_api.py: {missing}"


def test_the_document_is_current():
    with open(os.path.join(ROOT, "docs", "POPTORCH.md")) as f:
        assert f.read() == poptorch_api.render(), \
            "regenerate: python3 -m tilegraph.poptorch_api > docs/POPTORCH.md"


# Calls that exercise a "warns" or "refused" entry with arguments that are otherwise valid.
_EXAMPLES = {
    "Options.useIpuModel": lambda o: o.useIpuModel(True),
    "Options.useIpuId": lambda o: o.useIpuId(1),
    "Options.useOfflineIpuTarget": lambda o: o.useOfflineIpuTarget(2),
    "Options.connectionType": lambda o: o.connectionType(tilegraph.ConnectionType.OnDemand),
    "Options.syncPattern": lambda o: o.syncPattern(tilegraph.SyncPattern.ReplicaAndLadder),
    "Options.autoRoundNumIPUs": lambda o: o.autoRoundNumIPUs(True),
    "Options.setAvailableMemoryProportion": lambda o: o.setAvailableMemoryProportion(
        {"IPU0": 0.3}),
    "Options.enableStableNorm": lambda o: o.enableStableNorm(True),
    "Options.enableSyntheticData": lambda o: o.enableSyntheticData(True),
    "Options.inputReplicaGrouping": lambda o: o.inputReplicaGrouping(
        2, tilegraph.CommGroupType.Consecutive),
    "Options.Training.setConvolutionDithering": lambda o: o.Training.setConvolutionDithering(
        True),
    "Options.Precision.enableFloatingPointExceptions":
        lambda o: o.Precision.enableFloatingPointExceptions(True),
    "Options._Popart.setEngineOptions": lambda o: o._Popart.setEngineOptions({"a": "1"}),
    "Options._Popart.setPatterns": lambda o: o._Popart.setPatterns({"p": True}),
    "Options.TensorLocations.setWeightLocation": lambda o: o.TensorLocations
    .setWeightLocation(tilegraph.TensorLocationSettings()),
    "Options.TensorLocations.setAccumulatorLocation": lambda o: o.TensorLocations
    .setAccumulatorLocation(tilegraph.TensorLocationSettings()),
    "Options.TensorLocations.setActivationLocation": lambda o: o.TensorLocations
    .setActivationLocation(tilegraph.TensorLocationSettings()),
    "Options.TensorLocations.numIOTiles": lambda o: o.TensorLocations.numIOTiles(32),
    "TensorLocationSettings.useOnChipStorage":
        lambda o: tilegraph.TensorLocationSettings().useOnChipStorage(False),
    "TensorLocationSettings.useIOTilesToLoad":
        lambda o: tilegraph.TensorLocationSettings().useIOTilesToLoad(True),
    "TensorLocationSettings.useIOTilesToStore":
        lambda o: tilegraph.TensorLocationSettings().useIOTilesToStore(True),
    "TensorLocationSettings.minElementsForOffChip":
        lambda o: tilegraph.TensorLocationSettings().minElementsForOffChip(10),
    "TensorLocationSettings.minElementsForReplicatedTensorSharding":
        lambda o: tilegraph.TensorLocationSettings().minElementsForReplicatedTensorSharding(10),
    "Options.setExecutionStrategy": None,
    "ParallelPhasedExecution": lambda o: o.setExecutionStrategy(
        tilegraph.ParallelPhasedExecution(["a"])),
    "SerialPhasedExecution": lambda o: o.setExecutionStrategy(
        tilegraph.SerialPhasedExecution(["a"])),
    "custom_op": lambda o: tilegraph.custom_op([], "op", "dom", 1, []),
    "IPUScope": lambda o: tilegraph.IPUScope([], compile_using=tilegraph.enums.Compiler.MLIR),
    "experimental.IPUContext": lambda o: tilegraph.experimental.IPUContext(lambda x: x),
    "PoplarExecutor.cycleCount": lambda o: tilegraph.inferenceModel(
        __import__("torch").nn.Linear(1, 1)).cycleCount(),
}


@pytest.mark.parametrize("name", [n for n, s, _ in poptorch_api.API
                                  if s != poptorch_api.IMPLEMENTED and _EXAMPLES.get(n)])
def test_warns_and_refused_entries_do_what_the_table_says(name):
    status = next(s for n, s, _ in poptorch_api.API if n == name)
    from tilegraph import _options
    _options._warned.clear()
    call = _EXAMPLES[name]
    if status == poptorch_api.WARNS:
        with pytest.warns(UserWarning, match="tilegraph"):
            call(tilegraph.Options())
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises((tilegraph.Error, NotImplementedError, TypeError)):
                call(tilegraph.Options())
