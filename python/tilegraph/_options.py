"""tilegraph.Options: PopTorch's option names, with chainable setters.

Options that have no effect on tilegraph's devices yet are accepted and warn once.
"""
import os
import warnings


from .enums import OutputMode, ReductionType

AnchorMode = OutputMode  # PopTorch's older name
# The engine's name of each output mode (Executable.run's `mode`; export files).
ENGINE_OUTPUT_MODE = {OutputMode.All: "all", OutputMode.Final: "final", OutputMode.Sum: "sum",
                      OutputMode.EveryN: "every_n", OutputMode.Default: "default"}
_OUTPUT_MODE_OF = {v: k for k, v in ENGINE_OUTPUT_MODE.items()}
_REDUCTION_NAME = {ReductionType.Sum: "sum", ReductionType.Mean: "mean",
                   ReductionType.NoReduction: "none"}
_REDUCTION_OF = {v: k for k, v in _REDUCTION_NAME.items()}


_warned = set()


def _no_effect(option):
    if option not in _warned:
        _warned.add(option)
        warnings.warn(f"tilegraph: option {option} is accepted but has no effect yet",
                      stacklevel=3)


class _TrainingOptions:
    def __init__(self, parent):
        self._parent = parent
        self.gradient_accumulation = 1
        self.reduction = ReductionType.Mean

    def gradientAccumulation(self, n):
        if int(n) < 1:
            raise ValueError(f"gradientAccumulation must be >= 1, got {n}")
        self.gradient_accumulation = int(n)
        return self._parent

    def accumulationAndReplicationReductionType(self, reduction):
        if reduction not in (ReductionType.Sum, ReductionType.Mean):
            raise ValueError(f"expected ReductionType.Sum or ReductionType.Mean, got {reduction}")
        self.reduction = reduction
        return self._parent

    def setAutomaticLossScaling(self, enabled):
        if enabled:
            _no_effect("Training.setAutomaticLossScaling")
        return self._parent


class _PrecisionOptions:
    def __init__(self, parent):
        self._parent = parent

    def setPartialsType(self, dtype):
        _no_effect("Precision.setPartialsType")
        return self._parent

    def enableStochasticRounding(self, enabled):
        if enabled:
            _no_effect("Precision.enableStochasticRounding")
        return self._parent

    def enableFloatingPointExceptions(self, enabled):
        if enabled:
            _no_effect("Precision.enableFloatingPointExceptions")
        return self._parent


class _PopartOptions:
    """PopTorch's `Options._Popart.set(key, value)`: PopART session options. tilegraph reads
    `autoRecomputation` (0: none; 3, PopART's RecomputationType.Pipeline: each pipeline stage
    keeps only its inputs and recomputes its activations in its backward) and records the
    others, warning that they have no effect."""

    PIPELINE_RECOMPUTATION = 3

    def __init__(self, parent):
        self._parent = parent
        self.values = {}

    def set(self, key, value):
        if key == "autoRecomputation":
            value = int(getattr(value, "value", value))
            if value not in (0, self.PIPELINE_RECOMPUTATION):
                _no_effect(f"_Popart autoRecomputation={value} (only 0 and 3, Pipeline, "
                           "are built; use recomputationCheckpoint for others)")
        else:
            _no_effect(f"_Popart.{key}")
        self.values[key] = value
        return self._parent

    @property
    def recompute_stages(self):
        return self.values.get("autoRecomputation") == self.PIPELINE_RECOMPUTATION


class _DistributedOptions:
    """PopTorch's Options().Distributed: which process of a multi-process run this is.

    Read from Open MPI's environment (OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE) when the
    script was started by mpirun or `python -m tilegraph.run`; set by hand with
    configureProcessId (it must then agree with the MPI launch)."""

    def __init__(self, parent):
        self._parent = parent
        self._env = ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")
        self._explicit = None

    def configureProcessId(self, process_id, num_processes):
        if not 0 <= int(process_id) < int(num_processes):
            raise ValueError(f"expected 0 <= process_id < num_processes, got {process_id}, "
                             f"{num_processes}")
        self._explicit = (int(process_id), int(num_processes))
        return self._parent

    def placeStagesOnProcesses(self, stages):
        """tilegraph: every device (pipeline stage) of a pipelined model runs in its own
        process. Process p runs device p % stages of pipeline p // stages; the pipelines are
        data-parallel replicas of each other (as N replicas of a 4-IPU model were)."""
        if int(stages) < 2:
            raise ValueError(f"placeStagesOnProcesses needs >= 2 stages, got {stages}")
        self.stages_on_processes = int(stages)
        return self._parent

    stages_on_processes = 0

    @property
    def dataParallelId(self):
        """Which data-parallel part of the run this process computes (its pipeline when the
        stages are on processes, else its process id)."""
        return self.processId // max(1, self.stages_on_processes)

    @property
    def numDataParallel(self):
        return self.numProcesses // max(1, self.stages_on_processes)

    def setEnvVarNames(self, var_num_processes, var_process_id):
        self._env = (var_num_processes, var_process_id)
        return self._parent

    @property
    def processId(self):
        if self._explicit is not None:
            return self._explicit[0]
        return int(os.environ.get(self._env[1], "0"))

    @property
    def numProcesses(self):
        if self._explicit is not None:
            return self._explicit[1]
        return int(os.environ.get(self._env[0], "1"))


class TensorLocationSettings:
    """PopTorch's TensorLocationSettings (chainable). On tilegraph's devices only replicated
    tensor sharding of the optimizer state has an effect; the IPU's on-chip/streaming-memory
    and IO-tile choices are recorded and warned about once."""

    def __init__(self):
        self.replicated_tensor_sharding = False
        self.ignored = {}

    def useReplicatedTensorSharding(self, enabled=True):
        self.replicated_tensor_sharding = bool(enabled)
        return self

    def _ignore(self, name, value):
        self.ignored[name] = value
        _no_effect(f"TensorLocationSettings.{name} (IPU memory placement)")
        return self

    def useOnChipStorage(self, enabled=True):
        return self._ignore("useOnChipStorage", enabled)

    def useIOTilesToLoad(self, enabled=True):
        return self._ignore("useIOTilesToLoad", enabled)

    def useIOTilesToStore(self, enabled=True):
        return self._ignore("useIOTilesToStore", enabled)

    def minElementsForOffChip(self, n):
        return self._ignore("minElementsForOffChip", n)

    def minElementsForReplicatedTensorSharding(self, n):
        return self._ignore("minElementsForReplicatedTensorSharding", n)


class _TensorLocationOptions:
    """Options().TensorLocations: setOptimizerLocation(TensorLocationSettings()
    .useReplicatedTensorSharding(True)) shards the optimizer state across the replicas of
    all processes (ZeRO stage 1: each keeps 1/R, gradients are reduce-scattered, updated
    weights all-gathered). The other locations are IPU memory placement: no effect here."""

    def __init__(self, parent):
        self._parent = parent
        self.optimizer = TensorLocationSettings()

    def setOptimizerLocation(self, settings):
        self.optimizer = settings
        return self._parent

    def setWeightLocation(self, settings):
        _no_effect("TensorLocations.setWeightLocation")
        return self._parent

    def setAccumulatorLocation(self, settings):
        _no_effect("TensorLocations.setAccumulatorLocation")
        return self._parent

    def setActivationLocation(self, settings):
        _no_effect("TensorLocations.setActivationLocation")
        return self._parent

    @property
    def shard_optimizer_state(self):
        return self.optimizer.replicated_tensor_sharding


class _JitOptions:
    def __init__(self, parent):
        self._parent = parent

    def traceModel(self, trace):
        return self._parent


class Options:
    """Execution options, mirroring poptorch.Options."""

    def __init__(self):
        self.device_iterations = 1
        self.replication_factor = 1
        self.output_mode = OutputMode.Default
        self.output_return_period = 1
        self.random_seed = None
        self.cache_dir = None
        self.num_threads = 0
        self.profiling_dir = None
        self.execution_strategy = None
        self.Training = _TrainingOptions(self)
        self.Precision = _PrecisionOptions(self)
        self.Jit = _JitOptions(self)
        self.Distributed = _DistributedOptions(self)
        self.TensorLocations = _TensorLocationOptions(self)
        self._Popart = _PopartOptions(self)

    # ---- serialization (export files): the options that shape a compiled program ----
    def to_dict(self):
        return dict(device_iterations=self.device_iterations,
                    replication_factor=self.replication_factor,
                    output_mode=ENGINE_OUTPUT_MODE[self.output_mode],
                    output_return_period=self.output_return_period,
                    random_seed=self.random_seed, num_threads=self.num_threads,
                    gradient_accumulation=self.Training.gradient_accumulation,
                    reduction=_REDUCTION_NAME[self.Training.reduction],
                    shard_optimizer_state=self.TensorLocations.shard_optimizer_state)

    @classmethod
    def from_dict(cls, d):
        o = cls()
        o.device_iterations = int(d["device_iterations"])
        o.replication_factor = int(d["replication_factor"])
        o.output_mode = _OUTPUT_MODE_OF[d["output_mode"]]
        o.output_return_period = int(d["output_return_period"])
        o.random_seed = None if d["random_seed"] is None else int(d["random_seed"])
        o.num_threads = int(d["num_threads"])
        o.Training.gradient_accumulation = int(d["gradient_accumulation"])
        o.Training.reduction = _REDUCTION_OF[d["reduction"]]
        o.TensorLocations.optimizer.replicated_tensor_sharding = bool(
            d.get("shard_optimizer_state", False))
        return o

    def deviceIterations(self, n):
        if int(n) < 1:
            raise ValueError(f"deviceIterations must be >= 1, got {n}")
        self.device_iterations = int(n)
        return self

    def replicationFactor(self, n):
        """Data-parallel replicas in this process (PopTorch: replicas per process)."""
        if int(n) < 1:
            raise ValueError(f"replicationFactor must be >= 1, got {n}")
        self.replication_factor = int(n)
        return self

    def outputMode(self, mode, output_return_period=None):
        if not isinstance(mode, OutputMode):
            raise ValueError(f"expected a tilegraph.OutputMode, got {mode!r}")
        if mode == OutputMode.EveryN:
            if not output_return_period or output_return_period < 1:
                raise ValueError("OutputMode.EveryN needs output_return_period >= 1")
            self.output_return_period = int(output_return_period)
        self.output_mode = mode
        return self

    anchorMode = outputMode

    def randomSeed(self, seed):
        self.random_seed = int(seed)
        return self

    def enableExecutableCaching(self, path):
        self.cache_dir = path
        return self

    def setThreads(self, n):
        """tilegraph-specific: intra-op threads (0: OpenMP's default)."""
        self.num_threads = int(n)
        return self

    def enableProfiling(self, directory):
        self.profiling_dir = directory
        return self

    def useIpuModel(self, enabled):
        if enabled:
            _no_effect("useIpuModel")
        return self

    def setExecutionStrategy(self, strategy):
        """PipelinedExecution(...) or ShardedExecution(...) (tilegraph._blocks)."""
        from ._blocks import PipelinedExecution, ShardedExecution
        if not isinstance(strategy, (PipelinedExecution, ShardedExecution)):
            raise ValueError(f"expected PipelinedExecution or ShardedExecution, got {strategy!r}")
        self.execution_strategy = strategy
        return self

    def logCycleCount(self, enabled):
        return self

    def connectionType(self, kind):
        return self

    def autoRoundNumIPUs(self, enabled):
        return self
