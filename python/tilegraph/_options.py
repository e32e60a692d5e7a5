"""tilegraph.Options: PopTorch's poptorch.Options, with its names, chainable setters and
checks.

- Every setter checks its argument's type and value as PopTorch does (TypeError for a wrong
  type, ValueError for a wrong value) and returns the Options, so calls chain.
- Options are frozen once a model is wrapped with them (or a DataLoader is made with them):
  a later change raises AttributeError, as in PopTorch, because the compiled program was
  built from them; `clone()` gives an unfrozen copy to change. Executors work on their own
  clone.
- Options that steer only IPU hardware (IPU memory placement, IO tiles, sync patterns,
  connection types, ...) are recorded and warn once, saying what they do on an IPU and why
  they have no effect here. docs/POPTORCH.md lists every option and what tilegraph does.
"""
import ast
import enum
import copy
import json
import os
import warnings

import torch

from . import enums
from ._blocks import UnsupportedError
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


def _no_effect(option, why="it is not built in tilegraph yet"):
    if option not in _warned:
        _warned.add(option)
        warnings.warn(f"tilegraph: option {option} is accepted but has no effect: {why}",
                      stacklevel=3)


# The emulated IPU's targets (src/tiles/ipu_target.cc spells the same names).
_IPU_TARGETS = {"GC200", "ipu2", "mk2", "GC2", "ipu1", "mk1"}


def _engine_option(name):
    """A Poplar engine option from POPLAR_ENGINE_OPTIONS (a JSON object), as a lower-case
    string, or None."""
    import json
    text = os.environ.get("POPLAR_ENGINE_OPTIONS")
    if not text:
        return None
    try:
        value = json.loads(text).get(name)
    except (ValueError, AttributeError):
        raise ValueError(f"POPLAR_ENGINE_OPTIONS: expected a JSON object, got {text!r}")
    return None if value is None else str(value).lower()


def _ipu_only(option, on_ipu):
    """A one-time warning for an option that only steers IPU hardware."""
    _no_effect(option, f"on an IPU it {on_ipu}; tilegraph's devices have no such "
                       "hardware setting")


_MAX_COUNT = 2 ** 31 - 1  # iterations, replicas, accumulation: the engine counts in int32


_MAX_THREADS = 1024  # setThreads' bound (a file's too)


def threads_to_run(num_threads):
    """The thread count a program runs with: setThreads' value, at most 4 per logical CPU
    here (0 stays 0: OpenMP's default)."""
    return min(num_threads, 4 * (os.cpu_count() or 1))


def _check_int(name, value, minimum=None, maximum=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def _seed(name, value):
    """A random seed as torch.manual_seed takes it (-2^63 .. 2^64 - 1), kept as the engine's
    unsigned 64-bit seed (negative seeds wrap, as torch's do)."""
    _check_int(name, value, -2 ** 63, 2 ** 64 - 1)
    return value % 2 ** 64


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return value


def _check_enum(name, value, enum_type):
    if not isinstance(value, enum_type):
        raise TypeError(f"{name}: expected a {enum_type.__module__.replace('tilegraph.', '')}"
                        f".{enum_type.__name__}, got {value!r}")
    return value


class _Group:
    """A part of Options (Training, Precision, ...): frozen with its Options."""

    def __init__(self, root):
        object.__setattr__(self, "_root", root)

    def __setattr__(self, name, value):
        self._root._check_not_frozen(f"{type(self).__name__.strip('_')}.{name}")
        object.__setattr__(self, name, value)

    def _values(self):
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self):
        return f"{type(self).__name__.strip('_')}({self._values()})"


class _TrainingOptions(_Group):
    """Options().Training: gradient accumulation and how gradients are reduced."""

    def __init__(self, root):
        super().__init__(root)
        self.gradient_accumulation = 1
        self.reduction = ReductionType.Mean
        self.mean_reduction_strategy = enums.MeanReductionStrategy.Post
        self.automatic_loss_scaling = False
        self.loss_scaling_settings = dict(growth_factor=2.0, backoff_factor=0.5,
                                          growth_interval=2000)
        self.convolution_dithering = False

    def gradientAccumulation(self, gradient_accumulation):
        self.gradient_accumulation = _check_int("gradientAccumulation", gradient_accumulation, 1,
                                                _MAX_COUNT)
        return self._root

    def accumulationAndReplicationReductionType(self, reduction_type):
        _check_enum("accumulationAndReplicationReductionType", reduction_type, ReductionType)
        if reduction_type not in (ReductionType.Sum, ReductionType.Mean):
            raise ValueError("accumulationAndReplicationReductionType: expected "
                             f"ReductionType.Sum or ReductionType.Mean, got {reduction_type}")
        self.reduction = reduction_type
        return self._root

    def setMeanAccumulationAndReplicationReductionStrategy(self, mean_reduction_strategy):
        """tilegraph sums, then divides once (Post); Running and PostAndLoss give the same
        mean up to rounding in fp32, so they are accepted and noted."""
        _check_enum("setMeanAccumulationAndReplicationReductionStrategy",
                    mean_reduction_strategy, enums.MeanReductionStrategy)
        if mean_reduction_strategy != enums.MeanReductionStrategy.Post:
            _no_effect(f"Training.setMeanAccumulationAndReplicationReductionStrategy("
                       f"{mean_reduction_strategy.name})", "tilegraph sums the gradients and "
                       "divides once (Post); in fp32 the strategies agree up to rounding")
        self.mean_reduction_strategy = mean_reduction_strategy
        return self._root

    @property
    def meanAccumulationAndReplicationReductionStrategy(self):
        """PopTorch's attribute name for the strategy set above."""
        return self.mean_reduction_strategy

    def setAutomaticLossScaling(self, enabled):
        """Automatic loss scaling, in the engine: a step whose gradients hold an inf or NaN
        changes no weight or optimizer state, halves the scale and is counted; after
        `growth_interval` finite steps the scale doubles (setAutomaticLossScalingSettings).
        The scale starts at the optimizer's loss_scaling, or 2**16 when that is not set.
        The trained model reports it: `model.lossScalingState()`."""
        self.automatic_loss_scaling = _check_bool("setAutomaticLossScaling", enabled)
        return self._root

    def setAutomaticLossScalingSettings(self, growth_factor=2.0, backoff_factor=0.5,
                                        growth_interval=2000):
        """tilegraph: the factors and interval of automatic loss scaling (torch.amp.GradScaler's
        defaults)."""
        if not growth_factor > 1 or not 0 < backoff_factor < 1:
            raise ValueError("setAutomaticLossScalingSettings: expected growth_factor > 1 and "
                             f"0 < backoff_factor < 1, got {growth_factor}, {backoff_factor}")
        self.loss_scaling_settings = dict(
            growth_factor=float(growth_factor), backoff_factor=float(backoff_factor),
            growth_interval=_check_int("growth_interval", growth_interval, 1))
        return self._root

    def setConvolutionDithering(self, enabled):
        if _check_bool("setConvolutionDithering", enabled):
            _ipu_only("Training.setConvolutionDithering", "spreads convolutions' tile "
                      "mappings to balance IPU memory")
        self.convolution_dithering = enabled
        return self._root


class _PrecisionOptions(_Group):
    """Options().Precision: half-precision behaviour (the mixed-precision issue builds it;
    these record the choice and say what is not built)."""

    def __init__(self, root):
        super().__init__(root)
        self.partials_type = torch.float32
        self.stochastic_rounding = False
        self.floating_point_exceptions = False
        self.autocast_enabled = True
        self.autocast_policy = None
        self.half_float_casting = enums.HalfFloatCastingBehavior.Default
        self.running_statistics_always_float = True
        self.mixed_precision = None  # (torch dtype, IR op names, min_rows, min_depth)

    def setPartialsType(self, dtype):
        if dtype not in (torch.float, torch.float32, torch.half, torch.float16):
            raise ValueError(f"setPartialsType: expected torch.float32 or torch.float16, got "
                             f"{dtype!r}")
        if dtype in (torch.half, torch.float16):
            _no_effect("Precision.setPartialsType(torch.half)", "matmul and convolution "
                       "partial sums are fp32 here")
        self.partials_type = dtype
        return self._root

    def enableStochasticRounding(self, enabled):
        """Half-precision parameters' updates (computed in f32) are rounded to the parameter's
        dtype stochastically: unbiased, so updates smaller than half a unit in the last place
        are not lost; keyed by the session's random seed, so runs repeat. f32 parameters are
        not rounded."""
        self.stochastic_rounding = _check_bool("enableStochasticRounding", enabled)
        return self._root

    def enableFloatingPointExceptions(self, enabled):
        if _check_bool("enableFloatingPointExceptions", enabled):
            _ipu_only("Precision.enableFloatingPointExceptions", "traps on floating-point "
                      "overflow, invalid operations and division by zero")
        self.floating_point_exceptions = enabled
        return self._root

    def autocastEnabled(self, autocast_enabled):
        """False: autocast regions (tilegraph.autocast, module.autocast()) cast nothing when
        this model is compiled."""
        self.autocast_enabled = _check_bool("autocastEnabled", autocast_enabled)
        return self._root

    def autocastPolicy(self, autocast_policy):
        """The autocasting.Policy that autocast regions follow (None: torch.autocast's own
        float16 op lists). tilegraph/autocasting.py says what a region casts."""
        from .autocasting import Policy
        if autocast_policy is not None and not isinstance(autocast_policy, Policy):
            raise TypeError("autocastPolicy: expected a tilegraph.autocasting.Policy (or "
                            f"None), got {type(autocast_policy).__name__}")
        self.autocast_policy = autocast_policy
        return self._root

    def setMixedPrecision(self, dtype=torch.bfloat16, ops=None, min_rows=None, min_depth=None):
        """tilegraph: automatic mixed precision for a float32 model, the standard AMP recipe.
        The policy's ops (IR op names; default matmul, conv2d, attention: every linear layer,
        convolution and scaled-dot-product attention) compute in `dtype` (torch.bfloat16 or
        torch.float16); everything else (softmax, norms, losses, reductions, elementwise,
        the optimizer) stays float32, and so do the weights (master weights) and the
        optimizer state; so do depthwise convolutions and the matmuls and convolutions with
        fewer than `min_rows` result rows (default 32) or fewer than `min_depth` products per
        result element (default 64: a convolution's input channels x kernel size, a
        matmul's contracted dimension): their time would go to the casts. 0 puts every
        one in half, as torch.autocast does. Pair float16 with loss scaling
        (Training.setAutomaticLossScaling).
        `dtype=None` turns it off."""
        if dtype is None:
            self.mixed_precision = None
            return self._root
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"setMixedPrecision: expected torch.bfloat16 or torch.float16, got "
                             f"{dtype!r}")
        if ops is not None and (isinstance(ops, str) or
                                not all(isinstance(o, str) for o in ops)):
            raise TypeError("setMixedPrecision: ops must be a list of IR op names, e.g. "
                            "['matmul', 'conv2d']")
        for name, value in (("min_rows", min_rows), ("min_depth", min_depth)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise ValueError(f"setMixedPrecision: {name} must be an int >= 0, got {value!r}")
        self.mixed_precision = (dtype, None if ops is None else sorted(ops), min_rows, min_depth)
        return self._root

    def halfFloatCasting(self, half_float_casting):
        """FloatDowncastToHalf: every op whose operands mix float16 and float32 runs in
        float16 (cast at capture); Default / HalfUpcastToFloat: torch's promotion."""
        self.half_float_casting = _check_enum("halfFloatCasting", half_float_casting,
                                              enums.HalfFloatCastingBehavior)
        return self._root

    def runningStatisticsAlwaysFloat(self, value):
        self.running_statistics_always_float = _check_bool("runningStatisticsAlwaysFloat",
                                                           value)
        return self._root


class _GraphProcessingOptions:
    """PopTorch 2.0's Options().GraphProcessing: its one setter moved to Precision."""

    def __init__(self, root):
        self._root = root

    def runningVarianceAlwaysFloat(self, value):
        """Precision.runningStatisticsAlwaysFloat(value), PopTorch's later name."""
        return self._root.Precision.runningStatisticsAlwaysFloat(value)


class _PopartOptions(_Group):
    """PopTorch's `Options._Popart.set(key, value)`: PopART session options. tilegraph reads
    `autoRecomputation` (0: none; 3, RecomputationType.Pipeline: each pipeline stage keeps
    only its inputs and recomputes its activations in its backward) and records the others,
    warning that they have no effect."""

    PIPELINE_RECOMPUTATION = int(enums.RecomputationType.Pipeline)

    def __init__(self, root):
        super().__init__(root)
        self.values = {}
        self.engine_options = {}
        self.patterns = {}

    def set(self, key, value):
        self._root._check_not_frozen(f"_Popart.{key}")
        if not isinstance(key, str):
            raise TypeError(f"_Popart.set: expected a str key, got {key!r}")
        if not isinstance(value, (bool, int, float, str, list, set, tuple, dict)) and \
                not hasattr(value, "value"):
            raise TypeError(f"_Popart.set({key!r}): expected an int, float, str, list, set or "
                            f"dict value, got {type(value).__name__}")
        if key == "autoRecomputation":
            value = int(getattr(value, "value", value))
            if value not in (0, self.PIPELINE_RECOMPUTATION):
                _no_effect(f"_Popart autoRecomputation={value}", "only 0 and 3 (Pipeline) are "
                           "built; use recomputationCheckpoint for others")
        else:
            _no_effect(f"_Popart.{key}", "it is a PopART session option")
        self.values[key] = value
        return self._root

    def setEngineOptions(self, engine_options):
        if not isinstance(engine_options, dict):
            raise TypeError("setEngineOptions: expected a dict of Poplar engine options")
        _ipu_only("_Popart.setEngineOptions", "configures the Poplar engine")
        self.engine_options = dict(engine_options)
        return self._root

    def setPatterns(self, patterns, level=2):
        if not isinstance(patterns, dict) or not isinstance(level, int):
            raise TypeError("setPatterns: expected a dict of pattern names to bools and an int "
                            "level")
        _no_effect("_Popart.setPatterns", "PopART graph patterns; tilegraph runs its own "
                   "passes (docs/ARCHITECTURE.md)")
        self.patterns = dict(patterns)
        return self._root

    @property
    def recompute_stages(self):
        return self.values.get("autoRecomputation") == self.PIPELINE_RECOMPUTATION


class _DistributedOptions(_Group):
    """PopTorch's Options().Distributed: which process of a multi-process run this is.

    Read from Open MPI's environment (OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE) when the
    script was started by mpirun or `python -m tilegraph.run`; set by hand with
    configureProcessId (it must then agree with the MPI launch)."""

    def __init__(self, root):
        super().__init__(root)
        self.env_names = ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")
        self.explicit = None
        self.stages_on_processes = 0

    def configureProcessId(self, process_id, num_processes):
        _check_int("configureProcessId: process_id", process_id, 0)
        _check_int("configureProcessId: num_processes", num_processes, 1)
        if process_id >= num_processes:
            raise ValueError(f"expected 0 <= process_id < num_processes, got {process_id}, "
                             f"{num_processes}")
        self.explicit = (process_id, num_processes)
        return self._root

    def IPUoFConfigFiles(self, files):
        """PopTorch: where IPU-over-fabric configuration files are (IPU hardware only);
        recorded, with a warning."""
        if not isinstance(files, str):
            raise TypeError(f"IPUoFConfigFiles: expected a path pattern (str), got "
                            f"{type(files).__name__}")
        self.ipuof_config_files = files
        _ipu_only("Distributed.IPUoFConfigFiles", "points Poplar at the IPU-over-fabric "
                  "configuration of the IPUs to attach to")
        return self._root

    def disable(self):
        """One process (PopTorch: leave distributed execution)."""
        self.explicit = (0, 1)
        return self._root

    def placeStagesOnProcesses(self, stages):
        """tilegraph: every device (pipeline stage) of a pipelined model runs in its own
        process. Process p runs device p % stages of pipeline p // stages; the pipelines are
        data-parallel replicas of each other (as N replicas of a 4-IPU model were)."""
        self.stages_on_processes = _check_int("placeStagesOnProcesses", stages, 2)
        return self._root

    @property
    def dataParallelId(self):
        """Which data-parallel part of the run this process computes (its pipeline when the
        stages are on processes, else its process id)."""
        return self.processId // max(1, self.stages_on_processes)

    @property
    def numDataParallel(self):
        return self.numProcesses // max(1, self.stages_on_processes)

    def setEnvVarNames(self, var_num_processes, var_process_id):
        if not isinstance(var_num_processes, str) or not isinstance(var_process_id, str):
            raise TypeError("setEnvVarNames: expected two environment variable names")
        self.env_names = (var_num_processes, var_process_id)
        return self._root

    @property
    def processId(self):
        if self.explicit is not None:
            return self.explicit[0]
        return int(os.environ.get(self.env_names[1], "0"))

    @property
    def numProcesses(self):
        if self.explicit is not None:
            return self.explicit[1]
        return int(os.environ.get(self.env_names[0], "1"))


class TensorLocationSettings:
    """PopTorch's TensorLocationSettings (chainable). On tilegraph's devices only replicated
    tensor sharding of the optimizer state has an effect; the IPU's on-chip/streaming-memory
    and IO-tile choices are recorded and warned about once."""

    def __init__(self):
        self.replicated_tensor_sharding = False
        self.ignored = {}

    def __repr__(self):
        # by value (equal settings print equally, as Options' printout needs)
        return (f"TensorLocationSettings(replicated_tensor_sharding="
                f"{self.replicated_tensor_sharding}, {self.ignored})")

    def __eq__(self, other):
        return isinstance(other, TensorLocationSettings) and \
            (self.replicated_tensor_sharding, self.ignored) == \
            (other.replicated_tensor_sharding, other.ignored)

    __hash__ = None

    def useReplicatedTensorSharding(self, use=True):
        self.replicated_tensor_sharding = _check_bool("useReplicatedTensorSharding", use)
        return self

    def _ignore(self, name, value):
        self.ignored[name] = value
        _ipu_only(f"TensorLocationSettings.{name}", "places tensors in on-chip or streaming "
                  "memory, or loads and stores them through IO tiles")
        return self

    def useOnChipStorage(self, use=True):
        return self._ignore("useOnChipStorage", _check_bool("useOnChipStorage", use))

    def useIOTilesToLoad(self, use=True):
        return self._ignore("useIOTilesToLoad", _check_bool("useIOTilesToLoad", use))

    def useIOTilesToStore(self, use=True):
        return self._ignore("useIOTilesToStore", _check_bool("useIOTilesToStore", use))

    def minElementsForOffChip(self, min_elements):
        return self._ignore("minElementsForOffChip",
                            _check_int("minElementsForOffChip", min_elements, 0))

    def minElementsForReplicatedTensorSharding(self, min_elements):
        return self._ignore("minElementsForReplicatedTensorSharding", _check_int(
            "minElementsForReplicatedTensorSharding", min_elements, 0))


class _TensorLocationOptions(_Group):
    """Options().TensorLocations: setOptimizerLocation(TensorLocationSettings()
    .useReplicatedTensorSharding(True)) shards the optimizer state across the replicas of
    all processes (ZeRO stage 1: each keeps 1/R, gradients are reduce-scattered, updated
    weights all-gathered). The other locations are IPU memory placement: no effect here."""

    def __init__(self, root):
        super().__init__(root)
        self.optimizer = TensorLocationSettings()
        self.io_tiles = 0

    def _location(self, what, location):
        if not isinstance(location, TensorLocationSettings):
            raise TypeError(f"{what}: expected a TensorLocationSettings, got {location!r}")
        return location

    def setOptimizerLocation(self, location):
        self.optimizer = self._location("setOptimizerLocation", location)
        return self._root

    def setWeightLocation(self, location):
        self._location("setWeightLocation", location)
        _ipu_only("TensorLocations.setWeightLocation", "places weights in on-chip or "
                  "streaming memory")
        return self._root

    def setAccumulatorLocation(self, location):
        self._location("setAccumulatorLocation", location)
        _ipu_only("TensorLocations.setAccumulatorLocation", "places gradient accumulators in "
                  "on-chip or streaming memory")
        return self._root

    def setActivationLocation(self, location):
        self._location("setActivationLocation", location)
        _ipu_only("TensorLocations.setActivationLocation", "places activations in on-chip or "
                  "streaming memory")
        return self._root

    def numIOTiles(self, num_tiles):
        _check_int("numIOTiles", num_tiles)
        if num_tiles % 2 or not 32 <= num_tiles <= 192:
            raise _OptionAssertion("numIOTiles must be an even number between 32 and 192, "
                                   f"got {num_tiles}")
        _ipu_only("TensorLocations.numIOTiles", "reserves tiles for overlapping host IO with "
                  "compute")
        self.io_tiles = num_tiles
        return self._root

    @property
    def shard_optimizer_state(self):
        return self.optimizer.replicated_tensor_sharding


class _JitOptions(_Group):
    """Options().Jit.traceModel: PopTorch 2's choice between torch.jit.trace and its
    dispatcher. tilegraph always captures with torch.export; both values are accepted."""

    def __init__(self, root):
        super().__init__(root)
        self.trace_model = False

    def traceModel(self, trace_model):
        self.trace_model = _check_bool("traceModel", trace_model)
        return self._root


class _OptionAssertion(ValueError, AssertionError):
    """An out-of-range option value where PopTorch asserts (its tests expect an
    AssertionError; tilegraph raised ValueError): both."""


class ConfigFileError(Exception):
    """A line of an Options().loadFromFile file that is not an option call."""


class Options:
    """Execution options, mirroring poptorch.Options (see the module comment)."""

    def __init__(self):
        self._frozen = False
        self.device_iterations = 1
        self.replication_factor = 1
        self.input_group_size = 1
        self.output_mode = OutputMode.Default
        self.output_return_period = 1
        self.random_seed = None
        self.synthetic_data = False  # enableSyntheticData: inputs drawn once, not the caller's
        self.cache_dir = os.environ.get("POPTORCH_CACHE_DIR") or None
        self.num_threads = 0
        self.profiling_dir = None
        self.execution_strategy = None
        self.log_cycle_count = False
        self.anchored_tensors = {}  # short name -> (long name, output mode or None, period)
        self.updatable_buffers = []
        self.model_name = None
        self.log_dir = "."
        self.broadcast_buffers = True
        self.available_memory_proportion = {}
        self.source_location_excludes = ["site-packages/torch", "site-packages/poptorch"]
        self.show_progress_bar = True
        self.relax_optimizer_checks = False
        self.ipu_settings = {}  # IPU-only options as given (recorded, no effect)
        self.ipu_model = False  # useIpuModel: the emulated IPU device (tiles/ in the core)
        self.ipu_model_target = "GC200"
        self.ipu_allow_out_of_memory = False
        self.Training = _TrainingOptions(self)
        self.Precision = _PrecisionOptions(self)
        self.Jit = _JitOptions(self)
        self.Distributed = _DistributedOptions(self)
        self.TensorLocations = _TensorLocationOptions(self)
        self._Popart = _PopartOptions(self)
        if os.environ.get("POPTORCH_IPU_MODEL") == "1":
            self.useIpuModel(True)
        self._apply_environment_defaults()

    @property
    def GraphProcessing(self):
        return _GraphProcessingOptions(self)

    # ---- freezing ------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if name != "_frozen":
            self._check_not_frozen(name)
        object.__setattr__(self, name, value)

    def _check_not_frozen(self, what):
        if self.__dict__.get("_frozen"):
            raise AttributeError(f"Can't modify frozen Options ({what}): a model was wrapped, "
                                 "or a DataLoader made, with these options. Change a copy: "
                                 "opts = opts.clone()")

    def _freeze(self):
        object.__setattr__(self, "_frozen", True)
        return self

    def checkIsFrozen(self, option=None):
        """Raises AttributeError if these options are frozen (PopTorch's check)."""
        self._check_not_frozen(option or "checkIsFrozen")

    def clone(self):
        """An unfrozen deep copy."""
        return copy.deepcopy(self)

    def __deepcopy__(self, memo):
        """copy.deepcopy gives an unfrozen copy, as in PopTorch (its sub-objects' _root
        becomes the copy through the memo)."""
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        for key, value in self.__dict__.items():
            object.__setattr__(copied, key, copy.deepcopy(value, memo))
        object.__setattr__(copied, "_frozen", False)
        return copied

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
        """The options of a compileAndExport file, each checked as its setter checks it (a
        crafted file gets a clear error, not a crash in the compiler)."""
        o = cls()
        o.device_iterations = _check_int("device_iterations", d["device_iterations"], 1,
                                         _MAX_COUNT)
        o.replication_factor = _check_int("replication_factor", d["replication_factor"], 1,
                                          _MAX_COUNT)
        o.output_mode = _OUTPUT_MODE_OF[d["output_mode"]]
        o.output_return_period = _check_int("output_return_period", d["output_return_period"], 1,
                                            _MAX_COUNT)
        o.random_seed = None if d["random_seed"] is None else _seed("random_seed",
                                                                    d["random_seed"])
        o.num_threads = _check_int("num_threads", d["num_threads"], 0, _MAX_THREADS)
        o.Training.gradient_accumulation = _check_int(
            "gradient_accumulation", d["gradient_accumulation"], 1, _MAX_COUNT)
        o.Training.reduction = _REDUCTION_OF[d["reduction"]]
        o.TensorLocations.optimizer.replicated_tensor_sharding = _check_bool(
            "shard_optimizer_state", d.get("shard_optimizer_state", False))
        return o

    def toDict(self):
        """Every option's value, by name (PopTorch's toDict, for logging)."""
        out = {k: v for k, v in vars(self).items() if not k.startswith("_") and
               not isinstance(v, _Group)}
        for name in ("Training", "Precision", "Jit", "Distributed", "TensorLocations"):
            out[name] = getattr(self, name)._values()
        out["_Popart"] = dict(self._Popart.values)
        return out

    def __repr__(self):
        return f"Options({self.toDict()})"

    # ---- batches and steps ---------------------------------------------------------------
    def deviceIterations(self, device_iterations):
        self.device_iterations = _check_int("deviceIterations", device_iterations, 1,
                                            _MAX_COUNT)
        return self

    def replicationFactor(self, replication_factor):
        """Data-parallel replicas in this process (PopTorch: replicas per process)."""
        self.replication_factor = _check_int("replicationFactor", replication_factor, 1,
                                             _MAX_COUNT)
        return self

    def inputReplicaGrouping(self, input_group_size, input_group_type):
        """PopTorch 3: replicas in a group read the same input. Only groups of one (every
        replica its own micro-batch, the default) are built."""
        _check_int("inputReplicaGrouping", input_group_size, 1)
        _check_enum("inputReplicaGrouping", input_group_type, enums.CommGroupType)
        if input_group_size != 1:
            raise NotImplementedError("inputReplicaGrouping with groups of more than one replica "
                                      "is not built in tilegraph yet")
        self.input_group_size = input_group_size
        return self

    def outputMode(self, output_mode, output_return_period=None):
        _check_enum("outputMode", output_mode, OutputMode)
        if output_mode == OutputMode.EveryN:
            if output_return_period is None or isinstance(output_return_period, bool) or \
                    not isinstance(output_return_period, int) or output_return_period < 1:
                raise ValueError("OutputMode.EveryN needs output_return_period >= 1, got "
                                 f"{output_return_period!r}")
            self.output_return_period = output_return_period
        self.output_mode = output_mode
        return self

    def anchorMode(self, anchor_mode, anchor_return_period=None):
        """PopTorch 2's name of outputMode (and of its return period)."""
        return self.outputMode(anchor_mode, anchor_return_period)

    def defaultOutputMode(self):
        """True while no output mode was chosen (Default: All for inference, Final for
        training)."""
        return self.output_mode == OutputMode.Default

    def anchorTensor(self, short_name, long_name, output_mode=None, output_return_period=1):
        """Returns the program's tensor `long_name` from every call, as
        executor.getAnchoredTensor(short_name). tilegraph's names: "Gradient___<param>"
        (the parameter's gradient, as PopART names it), "<param>" (its value after the
        step), or any name getTensorNames() lists. The tensor comes back with `output_mode`
        (every `output_return_period`-th step's for EveryN), or with the executor's output
        mode where that is None. Returns None, as PopTorch's does."""
        if not isinstance(short_name, str) or not isinstance(long_name, str):
            raise TypeError("anchorTensor: expected a short name and a tensor name (str)")
        if output_mode is not None:
            _check_enum("anchorTensor: output_mode", output_mode, OutputMode)
        _check_int("anchorTensor: output_return_period", output_return_period, 1, _MAX_COUNT)
        self.anchored_tensors = {**self.anchored_tensors,
                                 short_name: (long_name, output_mode, output_return_period)}

    def updatableNamedBuffers(self, buffers):
        """Buffers (by module name) that executor.copyNamedBuffersToDevice() writes into
        the engine by themselves, without copying the whole model."""
        if not isinstance(buffers, (list, tuple)) or not all(isinstance(b, str)
                                                              for b in buffers):
            raise TypeError("updatableNamedBuffers: expected a list of buffer names")
        self.updatable_buffers = list(buffers)
        return self

    def randomSeed(self, random_seed):
        """The seed of the engine's random stream (dropout, ...); also seeds torch, as
        PopTorch's does."""
        self.random_seed = _seed("randomSeed", random_seed)
        torch.manual_seed(random_seed)
        return self

    # ---- tilegraph's runtime -------------------------------------------------------------
    def enableExecutableCaching(self, path):
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"enableExecutableCaching: expected a directory path or None, got "
                            f"{path!r}")
        self.cache_dir = None if path is None else os.fspath(path)
        return self

    def setThreads(self, n):
        """tilegraph-specific: intra-op threads (0: OpenMP's default). At most 1024; a
        program runs on at most 4 threads per logical CPU of the machine it runs on (more
        only oversubscribes, and thousands made OpenMP abort the process)."""
        self.num_threads = _check_int("setThreads", n, 0, _MAX_THREADS)
        return self

    def enableProfiling(self, profile_dir=None):
        """tilegraph writes profile.json (time, bytes and FLOPs per op) to the directory
        after every call; executor.profile() / profileReport() read it in Python."""
        self.profiling_dir = "." if profile_dir is None else os.fspath(profile_dir)
        return self

    def setExecutionStrategy(self, strategy):
        """PipelinedExecution(...) or ShardedExecution(...) (tilegraph._blocks)."""
        from ._blocks import PipelinedExecution, ShardedExecution
        if not isinstance(strategy, (PipelinedExecution, ShardedExecution)):
            raise TypeError(f"setExecutionStrategy: expected PipelinedExecution or "
                            f"ShardedExecution, got {strategy!r} (phased execution is not "
                            "built in tilegraph)")
        self.execution_strategy = strategy
        return self

    @property
    def _execution_strategy(self):
        """PopTorch's attribute: the strategy set, else its default (pipelined, a stage per
        IPU; tilegraph runs an unset strategy's stages one after another, PopTorch's pipeline
        rules applying)."""
        from ._blocks import PipelinedExecution
        return self.execution_strategy if self.execution_strategy is not None else \
            PipelinedExecution()

    def logCycleCount(self, log_cycle_count):
        """Enables executor.cycleCount(), which on tilegraph's CPU device explains that it
        counts time, not cycles (getPerfCounters, profile)."""
        self.log_cycle_count = _check_bool("logCycleCount", log_cycle_count)
        return self

    def logDir(self, log_dir):
        self.log_dir = os.fspath(log_dir)
        return self

    def modelName(self, name):
        if not isinstance(name, str):
            raise TypeError(f"modelName: expected a str, got {name!r}")
        self.model_name = name
        return self

    def broadcastBuffers(self, broadcast_buffers=True):
        """Buffers (batch-norm statistics) are the same on every replica: tilegraph keeps
        one copy per replica group, updated by replica 0's values. Accepted for both."""
        self.broadcast_buffers = _check_bool("broadcastBuffers", broadcast_buffers)
        return self

    def sourceLocationExcludes(self, excludes):
        if not isinstance(excludes, (list, tuple)) or not all(isinstance(e, str)
                                                              for e in excludes):
            raise TypeError("sourceLocationExcludes: expected a list of path fragments")
        self.source_location_excludes = list(excludes)
        return self

    def appendToLocationExcludes(self, *excludes):
        return self.sourceLocationExcludes(self.source_location_excludes + list(excludes))

    def showCompilationProgressBar(self, show=True):
        self.show_progress_bar = _check_bool("showCompilationProgressBar", show)
        return self

    def relaxOptimizerAttributesChecks(self, relax=True):
        self.relax_optimizer_checks = _check_bool("relaxOptimizerAttributesChecks", relax)
        return self

    def disableModuleNamescope(self):
        self.ipu_settings = {**self.ipu_settings, "module_namescope": False}
        return self

    # ---- IPU hardware: recorded, warned about once -----------------------------------------
    def _ipu_setting(self, name, value, on_ipu):
        self.ipu_settings = {**self.ipu_settings, name: value}
        _ipu_only(name, on_ipu)
        return self

    def useIpuModel(self, use_model, target=None, allow_out_of_memory=None):
        """Runs on tilegraph's emulated IPU, the IPU Model: the CPU kernels compute (so the
        numbers are the CPU device's) and the compiler lays the program onto the tiles of
        `target` ("GC200" / "ipu2", the default, or "GC2" / "ipu1"; the environment's
        POPTORCH_IPU_MODEL_VERSION when not given). A program that overflows a tile fails at
        compile with what overflows and what would help, unless `allow_out_of_memory` (or
        POPLAR_ENGINE_OPTIONS='{"debug.allowOutOfMemory": "true"}'). Estimates: cycleCount(),
        ipuModelReport(), writeIpuModelReport(path)."""
        self.ipu_model = _check_bool("useIpuModel", use_model)
        if target is None:
            target = os.environ.get("POPTORCH_IPU_MODEL_VERSION", "GC200")
        if target not in _IPU_TARGETS:
            raise ValueError(f"useIpuModel: unknown target {target!r}; expected one of "
                             f"{sorted(_IPU_TARGETS)}")
        self.ipu_model_target = target
        if allow_out_of_memory is None:
            allow_out_of_memory = _engine_option("debug.allowOutOfMemory") == "true"
        self.ipu_allow_out_of_memory = _check_bool("useIpuModel(allow_out_of_memory)",
                                                   bool(allow_out_of_memory))
        self.ipu_settings = {**self.ipu_settings, "useIpuModel": use_model}
        return self

    def useIpuId(self, ipu_id):
        return self._ipu_setting("useIpuId", _check_int("useIpuId", ipu_id, 0),
                                 "selects which IPU (or multi-IPU device) to attach to")

    def useOfflineIpuTarget(self, ipu_version=2):
        return self._ipu_setting("useOfflineIpuTarget", _check_int("useOfflineIpuTarget",
                                                                   ipu_version, 1),
                                 "compiles for an IPU version without attaching to hardware")

    def connectionType(self, connection_type):
        _check_enum("connectionType", connection_type, enums.ConnectionType)
        return self._ipu_setting("connectionType", connection_type,
                                 "says when to attach to IPU hardware")

    def syncPattern(self, sync_pattern):
        _check_enum("syncPattern", sync_pattern, enums.SyncPattern)
        return self._ipu_setting("syncPattern", sync_pattern, "sets how IPUs synchronise "
                                 "with each other and the host")

    @property
    def connection_type(self):
        """PopTorch's attribute: the connectionType set (recorded; IPU hardware only)."""
        return self.ipu_settings.get("connectionType", enums.ConnectionType.Always)

    @property
    def sync_pattern(self):
        """PopTorch's attribute: the syncPattern set (recorded; IPU hardware only)."""
        return self.ipu_settings.get("syncPattern", enums.SyncPattern.Full)

    @property
    def auto_round_num_ipus(self):
        """PopTorch's attribute: whether autoRoundNumIPUs is on."""
        return bool(self.ipu_settings.get("autoRoundNumIPUs", False))

    def autoRoundNumIPUs(self, auto_round_num_ipus=True):
        """IPU Model: a model needing a count of IPUs that is not a power of two attaches
        the next power of two (without it, such a model is refused, as on IPUs)."""
        value = _check_bool("autoRoundNumIPUs", auto_round_num_ipus)
        self.ipu_settings = {**self.ipu_settings, "autoRoundNumIPUs": value}
        return self

    def setAvailableMemoryProportion(self, available_memory_proportion):
        if not isinstance(available_memory_proportion, dict) or not all(
                isinstance(k, str) and k.startswith("IPU") and isinstance(v, (int, float))
                for k, v in available_memory_proportion.items()):
            raise ValueError("setAvailableMemoryProportion: expected a dict like "
                             "{'IPU0': 0.5}")
        values = {int(k[3:]): float(v) for k, v in available_memory_proportion.items()}
        for ipu, value in values.items():
            if not 0.0 < value <= 1.0:
                raise ValueError(f"setAvailableMemoryProportion: IPU{ipu}: expected a "
                                 f"proportion in (0, 1], got {value}")
        self.available_memory_proportion = values  # honoured by the IPU Model only
        return self

    def enableStableNorm(self, enabled):
        return self._ipu_setting("enableStableNorm", _check_bool("enableStableNorm", enabled),
                                 "selects a more stable variance computation for norms "
                                 "(tilegraph's norms are always computed the stable way)")

    def enableSyntheticData(self, enabled):
        """PopTorch's benchmarking mode without host I/O: the arguments of each call are
        checked (shapes, dtypes) but not read; every run uses synthetic inputs of the same
        shapes instead, drawn once per input (floating point from a standard normal, seeded by
        randomSeed; integers zero, so indices stay in range; booleans False). Outputs are the
        model's on that data; in-place updates of inputs are not copied back."""
        self.synthetic_data = _check_bool("enableSyntheticData", enabled)
        return self

    # ---- loading options from a file, without running it --------------------------------
    def loadFromFile(self, filepath):
        """Applies option calls, one per line ("deviceIterations(4)",
        "Training.gradientAccumulation(2)", "outputMode(poptorch.OutputMode.All)"; '#'
        starts a comment). Each line is parsed, never executed: only calls of Options'
        own methods with literal arguments, enum members or execution strategies built from
        them ("setExecutionStrategy(poptorch.ShardedExecution())") are accepted, anything
        else is a ConfigFileError naming the line."""
        with open(filepath) as f:
            lines = f.read().splitlines()
        calls = 0  # PopTorch numbers the option lines (blank and comment lines left out)
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            calls += 1
            try:
                self._apply_line(text)
            except ConfigFileError as e:
                raise ConfigFileError(f"{filepath}:{number} (option line {calls}): {e}: "
                                      f"{line.strip()!r}") from None
        return self

    def _apply_line(self, text):
        try:  # (nesting deep enough to exhaust the parser is not an option call either)
            call = ast.parse(text, mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            raise ConfigFileError("not an option call") from None
        if not isinstance(call, ast.Call) or call.keywords and any(k.arg is None
                                                                   for k in call.keywords):
            raise ConfigFileError("not an option call")
        path = _dotted(call.func)
        if path is None:
            raise ConfigFileError("not an option call")
        try:
            args = [_literal(a) for a in call.args]
            kwargs = {k.arg: _literal(k.value) for k in call.keywords}
        except (RecursionError, MemoryError):
            raise ConfigFileError("argument nested too deeply") from None
        self._apply_call(path, args, kwargs)

    def _apply_call(self, path, args, kwargs):
        """Calls the option method named by `path` (["Training", "gradientAccumulation"]):
        Options' own public setters only, never an arbitrary attribute."""
        if path[0] in ("options", "opts"):
            path = path[1:]
        target = self
        for part in path[:-1]:
            if part not in ("Training", "Precision", "Jit", "Distributed", "TensorLocations",
                            "_Popart"):
                raise ConfigFileError(f"unknown option group {part!r}")
            target = getattr(target, part)
        method = path[-1]
        if method.startswith("_") or method in ("loadFromFile", "clone", "toDict") or \
                not callable(getattr(type(target), method, None)):
            raise ConfigFileError(f"unknown option {method!r}")
        getattr(target, method)(*args, **kwargs)

    def _apply_environment_defaults(self):
        """POPTORCH_DEFAULT_OPTIONS (PopTorch's): a JSON object of option calls applied to
        every new Options, {"deviceIterations": 2, "Training.gradientAccumulation": 4}; a
        list value is the call's arguments. Parsed as JSON, never executed."""
        text = os.environ.get("POPTORCH_DEFAULT_OPTIONS")
        if not text:
            return
        try:
            calls = json.loads(text)
        except ValueError as e:
            raise ConfigFileError(f"POPTORCH_DEFAULT_OPTIONS is not JSON: {e}") from None
        if not isinstance(calls, dict):
            raise ConfigFileError("POPTORCH_DEFAULT_OPTIONS must be a JSON object of option "
                                  "calls")
        for name, value in calls.items():
            args = [_json_enum(v) for v in (value if isinstance(value, list) else [value])]
            try:
                self._apply_call(name.split("."), args, {})
            except ConfigFileError as e:
                raise ConfigFileError(f"POPTORCH_DEFAULT_OPTIONS: {e}: {name!r}") from None


def _json_enum(value):
    """A JSON string naming an enum member ("OutputMode.All", "poptorch.ConnectionType.OnDemand",
    as PopTorch's POPTORCH_DEFAULT_OPTIONS takes them) as the member; other values as given."""
    if isinstance(value, str) and value.count(".") >= 1:
        try:
            member = _literal(ast.parse(value, mode="eval").body)
        except (SyntaxError, ConfigFileError):
            return value
        return member if isinstance(member, enum.Enum) else value
    return value


def _dotted(node):
    """["a", "b", "c"] for the expression a.b.c, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


_STRATEGIES = ("ShardedExecution", "PipelinedExecution")


def _literal(node):
    """A literal, an enum member named as [poptorch.|tilegraph.][enums.]Enum.Member, or an
    execution strategy built from those (poptorch.ShardedExecution(),
    poptorch.PipelinedExecution(poptorch.AutoStage.AutoIncrement))."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    if isinstance(node, ast.Call) and not node.keywords:
        path = _dotted(node.func)
        if path and path[0] in ("poptorch", "tilegraph") and len(path) == 2 and \
                path[1] in _STRATEGIES:
            from . import _blocks
            return getattr(_blocks, path[1])(*[_literal(a) for a in node.args])
    path = _dotted(node)
    if path and path[0] in ("poptorch", "tilegraph"):
        path = path[1:]
    if path and path[0] == "enums":
        path = path[1:]
    if path and len(path) == 2:
        enum_type = getattr(enums, path[0], None)
        if isinstance(enum_type, type) and path[1] in getattr(enum_type, "__members__", {}):
            return enum_type[path[1]]
    if path and len(path) == 2 and path[0] == "torch" and path[1] in ("float16", "float32",
                                                                      "half", "float"):
        return getattr(torch, path[1])
    raise ConfigFileError("arguments must be literals or enum members")


def _replica_grouping(parameter, comm_group_type, shards, variable_retrieval_mode):
    """PopTorch 3's Parameter.replicaGrouping (PopTorch 2's perReplica; per-replica variables):
    refused clearly, where
    without it the call is an AttributeError on torch.nn.Parameter."""
    _check_enum("replicaGrouping", comm_group_type, enums.CommGroupType)
    _check_enum("replicaGrouping", variable_retrieval_mode, enums.VariableRetrievalMode)
    raise UnsupportedError("Parameter.replicaGrouping: per-replica variables are not built in "
                           "tilegraph yet (every replica holds the same weights)")


if not hasattr(torch.nn.Parameter, "replicaGrouping"):
    torch.nn.Parameter.replicaGrouping = _replica_grouping
if not hasattr(torch.nn.Parameter, "perReplica"):  # its PopTorch 2 name
    torch.nn.Parameter.perReplica = _replica_grouping
