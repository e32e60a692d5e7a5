"""poptorch.enums: PopTorch's enumerations, with PopTorch's member names and numbers.

Where an enum chooses something tilegraph does (OutputMode, ReductionType,
MeanReductionStrategy, DataLoaderMode, AutoStage, ...) the choice is honoured; enums that
only steer IPU hardware (SyncPattern, ConnectionType, Liveness, OverlapMode, ...) are
accepted by the options that take them, which say what they would do on an IPU
(docs/POPTORCH.md lists each).
"""
import enum

__all__ = ["AnchorMode", "AutoStage", "CommGroupType", "ConnectionType", "DataLoaderMode",
           "HalfFloatCastingBehavior", "Liveness", "MatMulSerializationMode",
           "MeanReductionStrategy", "MultiConvPartialsType", "MultiConvPlanType", "OptimizerType",
           "OutputMode",
           "OverlapMode", "RecomputationType", "ReductionType", "SharingStrategy",
           "SyncPattern", "VariableRetrievalMode"]


class Compiler(enum.IntEnum):
    """PopTorch's compiler choice for its dispatcher (IPUScope / IPUContext), which
    tilegraph does not build: the names exist so that code naming them reaches the
    refusal."""
    PopART = 0
    MLIR = 1


class OutputMode(enum.IntEnum):
    """Which steps' outputs a call returns: Final (the last step's), EveryN (every N-th
    step's), All (every step's), Sum (summed over steps), Default (All for inference,
    Final for training)."""
    Final = 0
    EveryN = 1
    All = 2
    Sum = 3
    Default = 4


AnchorMode = OutputMode  # PopTorch's older name


class ReductionType(enum.IntEnum):
    """How gradients are combined over accumulation steps and replicas."""
    Sum = 0
    Mean = 1
    NoReduction = 2


class MeanReductionStrategy(enum.IntEnum):
    """When a mean reduction divides: Running (a running mean), Post (sum, then divide
    once), PostAndLoss (deprecated in PopTorch). tilegraph sums then divides once (Post);
    in fp32 the three agree to rounding."""
    Running = 0
    Post = 1
    PostAndLoss = 2


class DataLoaderMode(enum.IntEnum):
    """Sync: load in the calling thread; Async: worker processes and an
    AsynchronousDataAccessor; AsyncRebatched: workers load single samples and the accessor
    batches them (no samples dropped per worker for iterable datasets)."""
    Sync = 0
    Async = 1
    AsyncRebatched = 2


class SharingStrategy(enum.IntEnum):
    """How data-loading worker processes are started and share data."""
    SharedMemory = 0
    FileSystem = 1
    Fork = 2
    ForkServer = 3


class ConnectionType(enum.IntEnum):
    """When PopTorch attaches to IPU hardware. tilegraph's devices are always attached."""
    Always = 0
    OnDemand = 1
    Never = 2


class HalfFloatCastingBehavior(enum.IntEnum):
    """Casting of an op's mixed float16/float32 operands: FloatDowncastToHalf casts them all to
    float16; HalfUpcastToFloat and Default follow torch's promotion (float32), as PopTorch 3
    did (tilegraph/autocasting.py applies it at capture)."""
    FloatDowncastToHalf = 0
    HalfUpcastToFloat = 1
    Default = 2


class SyncPattern(enum.IntEnum):
    """How IPUs synchronise with each other and the host (IPU hardware only)."""
    Full = 0
    SinglePipeline = 1
    ReplicaAndLadder = 2


class MatMulSerializationMode(enum.Enum):
    """Which dimension serializedMatMul splits."""
    InputChannels = "input_channels"
    ReducingDim = "reducing_dim"
    OutputChannels = "output_channels"
    Disabled = "none"


class Liveness(enum.IntEnum):
    """Phased execution: when tensors leave the IPU (IPU memory placement only)."""
    AlwaysLive = 0
    OffChipAfterFwd = 1
    OffChipAfterFwdNoOverlap = 2
    OffChipAfterEachPhase = 3


class OverlapMode(enum.Enum):
    """Overlap of host IO with compute through IPU IO tiles."""
    NoOverlap = "no_overlap"
    OverlapAccumulationLoop = "overlap_accumulation_loop"
    OverlapDeviceIterationLoop = "overlap_device_iteration_loop"


class AutoStage(enum.IntEnum):
    """How blocks map to pipeline stages without explicit Stages: SameAsIpu (a stage per
    IPU id) or AutoIncrement (a new stage for every new block, in forward order)."""
    SameAsIpu = 0
    AutoIncrement = 1


class MultiConvPartialsType(enum.IntEnum):
    """A MultiConv convolution's partials type (PopTorch 1's; deprecated there in 2.0, where
    torch.float / torch.half name it): accepted by MultiConv.partialsTypes."""
    Float = 0
    Half = 1


class MultiConvPlanType(enum.IntEnum):
    """How a MultiConv's convolutions are planned (IPU only)."""
    Parallel = 0
    Serial = 1


class CommGroupType(enum.IntEnum):
    """Replica grouping of an input or a per-replica variable."""
    All = 0
    Consecutive = 1
    Orthogonal = 2
    NoGrouping = 3


class VariableRetrievalMode(enum.IntEnum):
    """Which replicas' values of a grouped variable are read back."""
    OnePerGroup = 0
    AllReplicas = 2


class OptimizerType(enum.IntEnum):
    """The optimizer kinds PopTorch compiles."""
    SGD = 0
    ADAMW = 1
    RMSPROP = 2
    RMSPROP_CENTERED = 3
    LAMB = 4
    LAMB_NO_BIAS = 5


class RecomputationType(enum.IntEnum):
    """PopART's autoRecomputation values (Options()._Popart.set("autoRecomputation", n)):
    Pipeline (3) is the one tilegraph builds (each stage recomputes from its inputs)."""
    NoRecompute = 0
    Standard = 1
    NormOnly = 2
    Pipeline = 3
    RecomputeAll = 4
