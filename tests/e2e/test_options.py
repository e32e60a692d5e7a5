"""tilegraph.Options as PopTorch's documentation describes poptorch.Options: chainable
setters, arguments checked (wrong types and values raise), options frozen once a model is
wrapped with them, clone(), IPU-only options accepted with a warning that says what they do
on an IPU, and loadFromFile that parses (never runs) its file."""
import copy
import os
import warnings

import pytest
import torch

import tilegraph
from tilegraph import enums


def test_setters_chain_and_set_what_they_name():
    opts = (tilegraph.Options().deviceIterations(3).replicationFactor(2).randomSeed(7)
            .outputMode(tilegraph.OutputMode.EveryN, 2).Training.gradientAccumulation(4)
            .Training.accumulationAndReplicationReductionType(tilegraph.ReductionType.Sum)
            .Precision.runningStatisticsAlwaysFloat(True).Jit.traceModel(False))
    assert isinstance(opts, tilegraph.Options)
    assert (opts.device_iterations, opts.replication_factor, opts.random_seed) == (3, 2, 7)
    assert opts.output_mode == tilegraph.OutputMode.EveryN and opts.output_return_period == 2
    assert opts.Training.gradient_accumulation == 4
    assert opts.Training.reduction == tilegraph.ReductionType.Sum
    assert not opts.defaultOutputMode() and tilegraph.Options().defaultOutputMode()
    d = opts.toDict()
    assert d["device_iterations"] == 3 and d["Training"]["gradient_accumulation"] == 4


@pytest.mark.parametrize("call, error", [
    (lambda o: o.deviceIterations(2.0), TypeError),
    (lambda o: o.deviceIterations(0), ValueError),
    (lambda o: o.replicationFactor("2"), TypeError),
    (lambda o: o.Training.gradientAccumulation(0), ValueError),
    (lambda o: o.Training.accumulationAndReplicationReductionType("mean"), TypeError),
    (lambda o: o.Training.accumulationAndReplicationReductionType(
        tilegraph.ReductionType.NoReduction), ValueError),
    (lambda o: o.outputMode("all"), TypeError),
    (lambda o: o.outputMode(tilegraph.OutputMode.EveryN), ValueError),
    (lambda o: o.Precision.setPartialsType(torch.int32), ValueError),
    (lambda o: o.Precision.runningStatisticsAlwaysFloat(1), TypeError),
    (lambda o: o.TensorLocations.numIOTiles(33), ValueError),
    (lambda o: o.TensorLocations.setOptimizerLocation({"sharded": True}), TypeError),
    (lambda o: o.connectionType(0), TypeError),
    (lambda o: o.Distributed.configureProcessId(2, 2), ValueError),
    (lambda o: o.setAvailableMemoryProportion({"0": 0.5}), ValueError),
    (lambda o: o.randomSeed(None), TypeError),
    (lambda o: o._Popart.set(3, 1), TypeError),
])
def test_wrong_types_and_values_raise(call, error):
    with pytest.raises(error):
        call(tilegraph.Options())


def test_options_are_frozen_once_a_model_is_wrapped_and_clone_unfreezes():
    opts = tilegraph.Options().deviceIterations(2)
    model = torch.nn.Linear(3, 3)
    run = tilegraph.inferenceModel(model, opts)
    for change in (lambda: opts.deviceIterations(4), lambda: opts.Training.gradientAccumulation(2),
                   lambda: opts._Popart.set("autoRecomputation", 3),
                   lambda: opts.Distributed.disable()):
        with pytest.raises(AttributeError, match="Can't modify frozen Options"):
            change()
    assert opts.device_iterations == 2
    other = opts.clone().deviceIterations(4)
    assert other.device_iterations == 4 and opts.device_iterations == 2
    out = run(torch.randn(4, 3))  # the executor's own copy: still 2 iterations of 2
    assert out.shape == (4, 3)
    tilegraph.DataLoader(other, list(range(8)), batch_size=1)
    with pytest.raises(AttributeError, match="frozen"):
        other.deviceIterations(1)
    # copy.deepcopy, as PopTorch's, is an unfrozen copy too (sub-options included)
    copied = copy.deepcopy(other)
    copied.deviceIterations(1).Training.gradientAccumulation(3)
    assert copied.device_iterations == 1 and other.device_iterations == 4
    assert copied.Training.gradient_accumulation == 3 and other.Training.gradient_accumulation == 1


def test_an_inference_model_refuses_gradient_accumulation_and_wrong_option_types():
    with pytest.raises(tilegraph.Error, match="gradientAccumulation to 1"):
        tilegraph.inferenceModel(torch.nn.Linear(2, 2),
                                 tilegraph.Options().Training.gradientAccumulation(2))
    with pytest.raises(tilegraph.Error, match="expected tilegraph.Options"):
        tilegraph.inferenceModel(torch.nn.Linear(2, 2), {"deviceIterations": 2})


def test_ipu_only_options_warn_once_saying_what_they_do_on_an_ipu():
    opts = tilegraph.Options()
    with pytest.warns(UserWarning, match="on an IPU it sets how IPUs synchronise"):
        opts.syncPattern(enums.SyncPattern.SinglePipeline)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opts.useIpuModel(True)  # a device of tilegraph's (tests/e2e/test_ipu_model.py)
        opts.syncPattern(enums.SyncPattern.Full)  # once only
    assert opts.ipu_settings["syncPattern"] == enums.SyncPattern.Full
    # They change nothing: the model runs and matches eager PyTorch.
    model = torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)
    torch.testing.assert_close(tilegraph.inferenceModel(model, opts)(x), model(x))


def test_every_enum_has_poptorchs_members():
    assert [m.name for m in enums.OutputMode] == ["Final", "EveryN", "All", "Sum", "Default"]
    assert int(enums.OutputMode.All) == 2 and tilegraph.OutputMode is enums.OutputMode
    assert [m.name for m in enums.MeanReductionStrategy] == ["Running", "Post", "PostAndLoss"]
    assert [m.name for m in enums.CommGroupType] == ["All", "Consecutive", "Orthogonal",
                                                     "NoGrouping"]
    assert enums.OverlapMode.OverlapAccumulationLoop.value == "overlap_accumulation_loop"
    assert enums.VariableRetrievalMode.AllReplicas == 2
    assert tilegraph.AutoStage is enums.AutoStage
    assert tilegraph.DataLoaderMode is enums.DataLoaderMode


def test_mean_reduction_strategies_give_the_same_training():
    """Post is what tilegraph computes; Running is accepted (with a note) and trains to
    the same weights, as it does in exact arithmetic."""
    results = []
    for strategy in (enums.MeanReductionStrategy.Post, enums.MeanReductionStrategy.Running):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3))
        opts = tilegraph.Options().Training.gradientAccumulation(2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opts.Training.setMeanAccumulationAndReplicationReductionStrategy(strategy)

        class WithLoss(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = model

            def forward(self, x):
                return self.m(x).pow(2).mean()

        run = tilegraph.trainingModel(WithLoss(), opts,
                                      torch.optim.SGD(model.parameters(), lr=0.1))
        run(torch.ones(4, 4))
        results.append(model[0].weight.detach().clone())
    torch.testing.assert_close(results[0], results[1])


def test_load_from_file_applies_option_calls_and_never_runs_code(tmp_path):
    good = tmp_path / "opts.txt"
    good.write_text("# tilegraph options\n"
                    "deviceIterations(4)\n"
                    "Training.gradientAccumulation(2)  # accumulate\n"
                    "outputMode(poptorch.OutputMode.All)\n"
                    "Precision.setPartialsType(torch.float32)\n"
                    "setExecutionStrategy(poptorch.PipelinedExecution("
                    "poptorch.AutoStage.AutoIncrement))\n")
    opts = tilegraph.Options().loadFromFile(str(good))
    assert opts.device_iterations == 4 and opts.Training.gradient_accumulation == 2
    assert opts.output_mode == tilegraph.OutputMode.All
    assert isinstance(opts.execution_strategy, tilegraph.PipelinedExecution)
    assert opts.execution_strategy.auto == tilegraph.AutoStage.AutoIncrement
    marker = tmp_path / "ran"
    for line in (f"__import__('os').system('touch {marker}')",
                 f"deviceIterations(__import__('os').system('touch {marker}'))",
                 "loadFromFile('/etc/passwd')", "_Popart.__init__(None)", "deviceIterations = 3",
                 "setExecutionStrategy(poptorch.Block('x'))",
                 f"setExecutionStrategy(poptorch.ShardedExecution(open('{marker}', 'w')))",
                 # nesting deep enough to exhaust the parser or the literal reader
                 "deviceIterations(" + "(" * 200000 + "1" + ")" * 200000 + ")",
                 "deviceIterations(" + "[" * 5000 + "]" * 5000 + ")"):
        bad = tmp_path / "bad.txt"
        bad.write_text("deviceIterations(2)\n" + line + "\n")
        with pytest.raises(tilegraph.ConfigFileError, match="bad.txt:2"):
            tilegraph.Options().loadFromFile(str(bad))
    assert not marker.exists()


def test_a_run_pins_its_threads_and_gives_the_caller_its_cpus_back():
    """The CPU device pins a run's OpenMP threads to distinct CPUs (kernels/cpu/parallel.h):
    the calling thread's CPU set is the same after the call as before it, so threads and
    processes the caller starts later are not confined to one CPU."""
    import os
    allowed = os.sched_getaffinity(0)
    model = tilegraph.inferenceModel(torch.nn.Linear(64, 64),
                                     tilegraph.Options().setThreads(min(2, len(allowed))))
    x = torch.randn(256, 64)
    torch.testing.assert_close(model(x), model.model(x))
    assert os.sched_getaffinity(0) == allowed


def test_poptorch_default_options_environment_variable(monkeypatch):
    monkeypatch.setenv("POPTORCH_DEFAULT_OPTIONS",
                       '{"deviceIterations": 2, "Training.gradientAccumulation": 3, '
                       '"outputMode": ["poptorch.OutputMode.Sum"]}')
    # an enum member named in a JSON string is the member (PopTorch's test_enum_conversion)
    opts = tilegraph.Options()
    assert opts.output_mode == tilegraph.OutputMode.Sum and opts.device_iterations == 2
    monkeypatch.setenv("POPTORCH_DEFAULT_OPTIONS", '{"connectionType": "ConnectionType.OnDemand"}')
    tilegraph.Options()
    monkeypatch.setenv("POPTORCH_DEFAULT_OPTIONS", '{"outputMode": "OutputMode.Nonsense"}')
    with pytest.raises(TypeError, match="expected a enums.OutputMode"):
        tilegraph.Options()  # not a member: a string, which the setter refuses
    monkeypatch.setenv("POPTORCH_DEFAULT_OPTIONS",
                       '{"deviceIterations": 2, "Training.gradientAccumulation": 3}')
    opts = tilegraph.Options()
    assert opts.device_iterations == 2 and opts.Training.gradient_accumulation == 3
    for bad, why in [('{"clone": 1}', "unknown option"), ('{"os.system": "x"}', "unknown option"),
                     ("[1]", "JSON object"), ("{", "not JSON")]:
        monkeypatch.setenv("POPTORCH_DEFAULT_OPTIONS", bad)
        with pytest.raises(tilegraph.ConfigFileError, match=why):
            tilegraph.Options()


def test_popart_options_take_dicts():
    opts = tilegraph.Options()
    with pytest.warns(UserWarning):
        opts._Popart.set("engineOptions", {"debug.allowOutOfMemory": "true"})
    assert opts._Popart.values["engineOptions"] == {"debug.allowOutOfMemory": "true"}


def test_per_replica_variables_are_refused_clearly():
    """PopTorch 3's Parameter.replicaGrouping: a tilegraph.Error saying it is not built, not
    an AttributeError (PopTorch's replicated_graph_test); its arguments are still checked."""
    w = torch.nn.Parameter(torch.randn(4, 6))
    with pytest.raises(tilegraph.Error, match="per-replica variables are not built"):
        w.replicaGrouping(enums.CommGroupType.NoGrouping, 0,
                          enums.VariableRetrievalMode.OnePerGroup)
    with pytest.raises(TypeError, match="CommGroupType"):
        w.replicaGrouping("NoGrouping", 0, enums.VariableRetrievalMode.OnePerGroup)


def test_synthetic_data_runs_on_drawn_inputs_and_checks_the_arguments():
    """enableSyntheticData: the arguments' values are not read (two different inputs give the
    same outputs, those of the model on normal data drawn from randomSeed's generator, with
    integer inputs zero); their shapes are still checked; a training step trains on the
    synthetic batch."""
    torch.manual_seed(0)

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x, labels):
            out = self.fc(x)
            return out, torch.nn.functional.cross_entropy(out, labels)

    model = Classifier()
    reference = copy.deepcopy(model)
    opts = tilegraph.Options().enableSyntheticData(True).randomSeed(3)
    run = tilegraph.inferenceModel(model, opts)
    a, _ = run(torch.zeros(5, 4), torch.full((5,), 2))
    b, _ = run(torch.ones(5, 4), torch.full((5,), 1))
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, reference.fc(x).detach(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="expected shape"):
        run(torch.ones(5, 3), torch.full((5,), 1))
    trainer = tilegraph.trainingModel(model, tilegraph.Options().enableSyntheticData(True)
                                      .randomSeed(3),
                                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    _, loss = trainer(torch.zeros(5, 4), torch.full((5,), 2))
    ref_loss = torch.nn.functional.cross_entropy(reference.fc(x), torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-5, atol=1e-6)
    ref_loss.backward()
    with torch.no_grad():
        expected = reference.fc.weight - 0.1 * reference.fc.weight.grad
    torch.testing.assert_close(model.fc.weight.detach(), expected, rtol=1e-5, atol=1e-6)


def test_poptorch_attribute_names_read_back_the_settings():
    """Attributes PopTorch's own code and tests read: the execution strategy (PopTorch's
    default, pipelined, when none is set), the mean-reduction strategy; IPUoFConfigFiles is
    an IPU-only setting (recorded, warns)."""
    opts = tilegraph.Options()
    assert isinstance(opts._execution_strategy, tilegraph.PipelinedExecution)
    opts.setExecutionStrategy(tilegraph.ShardedExecution())
    assert isinstance(opts._execution_strategy, tilegraph.ShardedExecution)
    opts.Training.setMeanAccumulationAndReplicationReductionStrategy(
        tilegraph.MeanReductionStrategy.Post)
    assert opts.Training.meanAccumulationAndReplicationReductionStrategy == \
        tilegraph.MeanReductionStrategy.Post
    from tilegraph import _options
    _options._warned.clear()
    with pytest.warns(UserWarning, match="IPUoFConfigFiles"):
        assert opts.Distributed.IPUoFConfigFiles("~/.ipuof.conf.d/*") is opts


def test_poptorch_options_module_and_small_attributes():
    """PopTorch's options_test: the `poptorch.options` module (ConfigFileError,
    _DistributedOptions, which popdist wraps), Options.auto_round_num_ipus, and numIOTiles's
    out-of-range value as an AssertionError (also a ValueError, as before)."""
    assert tilegraph.options.ConfigFileError is tilegraph.ConfigFileError
    assert isinstance(tilegraph.Options().Distributed, tilegraph.options._DistributedOptions)
    opts = tilegraph.Options()
    assert opts.auto_round_num_ipus is False
    assert opts.autoRoundNumIPUs(True).auto_round_num_ipus is True
    with pytest.raises(AssertionError, match="numIOTiles must be an even number"):
        tilegraph.Options().TensorLocations.numIOTiles(10)


def test_executors_report_the_output_mode_they_resolved():
    """PopTorch's options_test::test_preserving_options_intact: an executor's options show
    the output mode Default resolved to (Final for training, All for inference); the user's
    options keep Default."""
    model = torch.nn.Linear(2, 2)
    opts = tilegraph.Options()
    train = tilegraph.trainingModel(torch.nn.Sequential(model), opts,
                                    torch.optim.SGD(model.parameters(), lr=0.1))
    infer = tilegraph.inferenceModel(model, opts)
    assert train.options.output_mode == tilegraph.OutputMode.Final
    assert infer.options.output_mode == tilegraph.OutputMode.All
    assert opts.output_mode == tilegraph.OutputMode.Default


def test_thread_counts_are_bounded():
    """setThreads (and an export file's num_threads) took any count: thousands made OpenMP
    abort the process (libgomp's thread creation failed) or crash it. At most 1024, and a
    program runs on at most 4 per logical CPU."""
    with pytest.raises(ValueError, match="setThreads must be <= 1024"):
        tilegraph.Options().setThreads(100000)
    opts = tilegraph.Options().setThreads(1024)
    model = torch.nn.Linear(3, 2)
    out = tilegraph.inferenceModel(model, opts)(torch.ones(4, 3))
    torch.testing.assert_close(out, model(torch.ones(4, 3)))
    from tilegraph._options import threads_to_run
    assert threads_to_run(1024) == min(1024, 4 * os.cpu_count()) and threads_to_run(0) == 0
