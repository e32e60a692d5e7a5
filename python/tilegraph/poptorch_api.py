"""PopTorch's public API, name by name, and what tilegraph does with each.

`python -m tilegraph.poptorch_api` prints docs/POPTORCH.md from this table;
tests/e2e/test_poptorch_api.py checks that every name resolves on tilegraph (no
AttributeError for any PopTorch name), that every public tilegraph name is in the table or
listed as tilegraph's own, and that the document is current. Behaviour is tested per area
(test_options.py, test_poptorch_ops.py, test_structured_io.py, test_optimizers.py,
test_dataloader.py, test_model_parallel.py, test_system_api.py).

Statuses:
- implemented: does what PopTorch's does, on tilegraph's devices.
- warns: accepted and checked, no effect here; warns once saying what it does on an IPU.
- refused: raises an error that says why (IPU software, or not built yet).
"""
IMPLEMENTED, WARNS, REFUSED = "implemented", "warns", "refused"

# (name, status, note). Names are attribute paths from the `tilegraph` module; "Options."
# paths are looked up on an Options() instance.
API = [
    # ---- wrapping and running ---------------------------------------------------------
    ("trainingModel", IMPLEMENTED, "accepts a module or an executor"),
    ("inferenceModel", IMPLEMENTED, "keeps the module's train/eval modes of its creation; dropout runs as the identity, as PopTorch's"),
    ("PoplarExecutor.__call__", IMPLEMENTED, "any structure of inputs and outputs, kwargs"),
    ("PoplarExecutor.compile", IMPLEMENTED, ""),
    ("PoplarExecutor.compileAndExport", IMPLEMENTED, "pickle-free checksummed file"),
    ("PoplarExecutor.save", IMPLEMENTED, "same file format as compileAndExport"),
    ("PoplarExecutor.loadExecutable", IMPLEMENTED, "options must match the file's"),
    ("load", IMPLEMENTED, "tilegraph export files (not PopTorch's)"),
    ("PoplarExecutor.model", IMPLEMENTED, ""),
    ("PoplarExecutor.options", IMPLEMENTED, "the executor's frozen copy"),
    ("PoplarExecutor.load_state_dict", IMPLEMENTED, "via the module; pushed before the next "
                                                    "call"),
    ("PoplarExecutor.state_dict", IMPLEMENTED, "via the module (current after every call)"),
    ("PoplarExecutor.named_parameters", IMPLEMENTED, "attribute access passes to the module"),
    ("PoplarExecutor.rng_state", IMPLEMENTED, "[seed, step]; setting it replays the stream"),
    ("PoplarExecutor.getTensorNames", IMPLEMENTED, "inputs, variables, outputs; Gradient___, UpdatedVar___, scaledLearningRate___ names"),
    ("PoplarExecutor.getAnchoredTensor", IMPLEMENTED, "see Options.anchorTensor"),
    ("PoplarExecutor.copyWeightsToHostIfNeeded", IMPLEMENTED, "always False: the module "
                                                              "views the engine's weights, or "
                                                              "they are copied as a call "
                                                              "returns"),
    ("PoplarExecutor.copyWeightsToHost", IMPLEMENTED, ""),
    ("PoplarExecutor.copyWeightsToDevice", IMPLEMENTED, ""),
    ("PoplarExecutor.setOptimizer", IMPLEMENTED, "new hyperparameters, no recompilation"),
    ("PoplarExecutor.copyNamedBuffersToDevice", IMPLEMENTED, "only the named buffers"),
    ("PoplarExecutor.cycleCount", IMPLEMENTED, "on the IPU Model: the estimated cycles of "
                                               "the last call; on the CPU device it raises, "
                                               "naming getPerfCounters / profile"),
    ("PoplarExecutor.getPerfCounters", IMPLEMENTED, "host times per call (every step of a "
                                                    "call shares them)"),
    ("PoplarExecutor.getLatency", IMPLEMENTED, ""),
    ("PoplarExecutor.getHostIpuLatency", IMPLEMENTED, "time to hand inputs to the engine"),
    ("PoplarExecutor.getComputeLatency", IMPLEMENTED, "engine time per call"),
    ("PoplarExecutor.getIpuHostLatency", IMPLEMENTED, "time to return results"),
    ("PoplarExecutor.destroy", IMPLEMENTED, "also as model.destroy() on the module a trainingModel wraps; a second live trainingModel of a module is refused, as in PopTorch"),
    ("PoplarExecutor.isAttachedToDevice", IMPLEMENTED, ""),
    ("PoplarExecutor.isCompiled", IMPLEMENTED, ""),
    ("PoplarExecutor.detachFromDevice", IMPLEMENTED, ""),
    ("PoplarExecutor.attachToDevice", IMPLEMENTED, ""),
    ("registerPreCompileHook", IMPLEMENTED, ""),
    ("registerPostCompileHook", IMPLEMENTED, ""),
    ("identity_loss", IMPLEMENTED, "marks the loss anywhere in the result"),
    ("isRunningOnIpu", IMPLEMENTED, "True while tilegraph compiles the model"),
    ("ipuHardwareIsAvailable", IMPLEMENTED, "False: no IPU hardware"),
    ("ipuHardwareVersion", IMPLEMENTED, "0: no IPU hardware"),
    ("hasMLIRSupportOnPlatform", IMPLEMENTED, "False: tilegraph's own IR, not MLIR"),
    ("hasMlirSupportOnPlatform", IMPLEMENTED, "PopTorch 2's spelling of the same"),
    ("IPUScope", REFUSED, "PopTorch's dispatcher is not built: use inferenceModel"),
    ("experimental.IPUContext", REFUSED, "PopTorch's dispatcher is not built: use inferenceModel"),
    ("enums.Compiler", IMPLEMENTED, "PopART, MLIR (for IPUScope's compile_using)"),
    ("setLogLevel", IMPLEMENTED, "the 'tilegraph' logger"),
    ("logger", IMPLEMENTED, "the 'tilegraph' logging.Logger (PopTorch's poptorch.logger)"),
    ("Error", IMPLEMENTED, ""),
    ("RecoverableError", IMPLEMENTED, ""),
    ("UnrecoverableError", IMPLEMENTED, ""),
    ("ConfigFileError", IMPLEMENTED, ""),
    ("ICustomArgParser", IMPLEMENTED, "user types as inputs and outputs"),
    ("registerCustomArgParser", IMPLEMENTED, ""),
    ("module_repr", IMPLEMENTED, "shows BeginBlocks"),
    # ---- options ----------------------------------------------------------------------
    ("Options", IMPLEMENTED, "checked setters; frozen once used; clone()"),
    ("Options.deviceIterations", IMPLEMENTED, ""),
    ("Options.replicationFactor", IMPLEMENTED, "replicas on this machine's cores"),
    ("Options.inputReplicaGrouping", REFUSED, "groups of one replica only"),
    ("Options.outputMode", IMPLEMENTED, "All, Final, Sum, EveryN, Default"),
    ("Options.defaultOutputMode", IMPLEMENTED, ""),
    ("Options.anchorTensor", IMPLEMENTED, "each anchor with its own output mode (or the executor's); PopTorch's model.-prefixed names"),
    ("Options.randomSeed", IMPLEMENTED, "also seeds torch, as PopTorch's; unset, the "
     "engine's random stream (dropout, random ops) is seeded from `torch.initial_seed()`, so "
     "it repeats under the same `torch.manual_seed` and changes with it"),
    ("Options.updatableNamedBuffers", IMPLEMENTED, "see copyNamedBuffersToDevice"),
    ("Options.enableExecutableCaching", IMPLEMENTED, "also POPTORCH_CACHE_DIR"),
    ("Options.enableProfiling", IMPLEMENTED, "profile.json per call"),
    ("Options.setExecutionStrategy", IMPLEMENTED, "pipelined or sharded"),
    ("Options.logCycleCount", IMPLEMENTED, "enables cycleCount (which raises: see above)"),
    ("Options.logDir", IMPLEMENTED, "recorded"),
    ("Options.modelName", IMPLEMENTED, "recorded"),
    ("Options.broadcastBuffers", IMPLEMENTED, "buffers are always consistent across replicas"),
    ("Options.sourceLocationExcludes", IMPLEMENTED, "recorded"),
    ("Options.appendToLocationExcludes", IMPLEMENTED, "recorded"),
    ("Options.showCompilationProgressBar", IMPLEMENTED, "recorded (no bar)"),
    ("Options.relaxOptimizerAttributesChecks", IMPLEMENTED, "recorded"),
    ("Options.disableModuleNamescope", IMPLEMENTED, "recorded (names only)"),
    ("Options.loadFromFile", IMPLEMENTED, "parses option calls; never executes the file"),
    ("Options.clone", IMPLEMENTED, ""),
    ("Options.toDict", IMPLEMENTED, ""),
    ("Options.checkIsFrozen", IMPLEMENTED, "AttributeError when frozen"),
    ("Options.useIpuModel", IMPLEMENTED, "the emulated IPU: CPU kernels (same numbers), "
                                         "tile memory fit and cycle estimates"),
    ("Options.useIpuId", WARNS, "IPU device selection"),
    ("Options.useOfflineIpuTarget", WARNS, "IPU compilation target"),
    ("Options.connectionType", WARNS, "IPU attach policy"),
    ("Options.syncPattern", WARNS, "IPU synchronisation"),
    ("Options.autoRoundNumIPUs", IMPLEMENTED, "IPU Model: attaches the next power of two"),
    ("Options.setAvailableMemoryProportion", IMPLEMENTED, "IPU Model: bounds the tile "
                                                          "memory of matmul / conv temporaries"),
    ("Options.enableStableNorm", WARNS, "norms are always computed the stable way"),
    ("Options.enableSyntheticData", IMPLEMENTED, "inputs drawn once (normal / zeros), arguments checked but not read"),
    ("Options.Training.gradientAccumulation", IMPLEMENTED, ""),
    ("Options.Training.accumulationAndReplicationReductionType", IMPLEMENTED, "Sum or Mean"),
    ("Options.Training.setMeanAccumulationAndReplicationReductionStrategy", IMPLEMENTED,
     "Post is computed; Running/PostAndLoss agree up to rounding (noted once); half gradient "
     "accumulators (accum_type=torch.half) switch the model's options to Running, as PopTorch"),
    ("Options.Training.setAutomaticLossScaling", IMPLEMENTED, "in the engine: overflow skips the step, backs off; grows"),
    ("Options.Training.setConvolutionDithering", WARNS, "IPU tile mapping"),
    ("Options.Precision.setPartialsType", IMPLEMENTED, "fp32 partials; half warns"),
    ("Options.Precision.enableStochasticRounding", IMPLEMENTED, "half weight updates, unbiased, seeded"),
    ("Options.Precision.enableFloatingPointExceptions", WARNS, "IPU floating-point traps"),
    ("Options.Precision.autocastEnabled", IMPLEMENTED, "False: regions cast nothing"),
    ("Options.Precision.autocastPolicy", IMPLEMENTED, "op and module lists, applied at capture"),
    ("Options.Precision.halfFloatCasting", IMPLEMENTED, "FloatDowncastToHalf casts mixed ops to half; Default: torch's promotion"),
    ("Options.Precision.runningStatisticsAlwaysFloat", IMPLEMENTED, "statistics are fp32"),
    ("Options.Jit.traceModel", IMPLEMENTED, "tilegraph always captures with torch.export"),
    ("Options._Popart.set", IMPLEMENTED, "autoRecomputation=3 built; other keys warn"),
    ("Options._Popart.setEngineOptions", WARNS, "Poplar engine options"),
    ("Options._Popart.setPatterns", WARNS, "PopART patterns"),
    ("Options.Distributed.configureProcessId", IMPLEMENTED, "checked against the MPI launch"),
    ("Options.Distributed.setEnvVarNames", IMPLEMENTED, ""),
    ("Options.Distributed.disable", IMPLEMENTED, ""),
    ("Options.Distributed.processId", IMPLEMENTED, ""),
    ("Options.Distributed.numProcesses", IMPLEMENTED, ""),
    ("Options.Distributed.IPUoFConfigFiles", WARNS, "IPU-over-fabric configuration: IPU hardware only"),
    ("Options.TensorLocations.setOptimizerLocation", IMPLEMENTED,
     "replicated tensor sharding of optimizer state"),
    ("Options.TensorLocations.setWeightLocation", WARNS, "IPU memory placement"),
    ("Options.TensorLocations.setAccumulatorLocation", WARNS, "IPU memory placement"),
    ("Options.TensorLocations.setActivationLocation", WARNS, "IPU memory placement"),
    ("Options.TensorLocations.numIOTiles", WARNS, "IPU IO tiles"),
    ("TensorLocationSettings", IMPLEMENTED, ""),
    ("TensorLocationSettings.useReplicatedTensorSharding", IMPLEMENTED, ""),
    ("TensorLocationSettings.useOnChipStorage", WARNS, "IPU memory placement"),
    ("TensorLocationSettings.useIOTilesToLoad", WARNS, "IPU IO tiles"),
    ("TensorLocationSettings.useIOTilesToStore", WARNS, "IPU IO tiles"),
    ("TensorLocationSettings.minElementsForOffChip", WARNS, "IPU memory placement"),
    ("TensorLocationSettings.minElementsForReplicatedTensorSharding", WARNS,
     "sharding applies to all optimizer state"),
    # ---- model parallelism ----------------------------------------------------------------
    ("BeginBlock", IMPLEMENTED, ""),
    ("Block", IMPLEMENTED, "useAutoId, start"),
    ("BlockFunction", IMPLEMENTED, ""),
    ("removeBlocks", IMPLEMENTED, ""),
    ("Stage", IMPLEMENTED, ""),
    ("PipelinedExecution", IMPLEMENTED, "1F1B schedule"),
    ("ShardedExecution", IMPLEMENTED, ""),
    ("AutoStage", IMPLEMENTED, "SameAsIpu, AutoIncrement"),
    ("recomputationCheckpoint", IMPLEMENTED, ""),
    ("set_available_memory", IMPLEMENTED, "IPU Model: bounds the producing matmul / conv's "
                                          "temporaries; no effect on the CPU"),
    ("Phase", REFUSED, "phased execution is not built"),
    ("ParallelPhasedExecution", REFUSED, "setExecutionStrategy refuses it"),
    ("SerialPhasedExecution", REFUSED, "setExecutionStrategy refuses it"),
    # ---- ops in a forward -----------------------------------------------------------------
    ("for_loop", IMPLEMENTED, "unrolled"),
    ("cond", IMPLEMENTED, "both branches, selected with where"),
    ("dynamic_slice", IMPLEMENTED, ""),
    ("dynamic_update", IMPLEMENTED, ""),
    ("serializedMatMul", IMPLEMENTED, "computed in one piece"),
    ("nop", IMPLEMENTED, ""),
    ("CPU", IMPLEMENTED, "captured into the program (it runs on the CPU anyway)"),
    ("NameScope", IMPLEMENTED, "names only"),
    ("ipu_print_tensor", WARNS, "prints only when run eagerly"),
    ("set_overlap_for_input", WARNS, "IPU IO overlap"),
    ("set_overlap_for_output", WARNS, "IPU IO overlap"),
    ("MultiConv", WARNS, "convolutions compile one by one; nested blocks refused as PopTorch"),
    ("Attribute", WARNS, "PopART op attributes"),
    ("autocast", IMPLEMENTED, "torch.autocast(\"cpu\", float16), or the policy's lists"),
    ("autocasting.Policy", IMPLEMENTED, "fp16 / fp32 / promote / demote; master weights stay"),
    ("autocasting.default", IMPLEMENTED, "PopTorch's lists + functional.linear"),
    ("custom_op", REFUSED, "PopART custom ops are Poplar code"),
    ("ctc_beam_search_decoder", IMPLEMENTED, "prefix beam search; log probabilities, int32 "
                                             "lengths and paths"),
    ("fps", IMPLEMENTED, "torch_cluster's algorithm and counts; random_start from the engine's "
                         "generator"),
    ("nearest", IMPLEMENTED, "batch vectors as tensors or lists"),
    # ---- data -------------------------------------------------------------------------
    ("DataLoader", IMPLEMENTED, "combined batches; sharded per process"),
    ("DataLoader.combinedBatchSize", IMPLEMENTED, ""),
    ("DataLoader.terminate", IMPLEMENTED, ""),
    ("DataLoaderMode", IMPLEMENTED, "Sync, Async, AsyncRebatched"),
    ("AsynchronousDataAccessor", IMPLEMENTED, "a loading thread (PopTorch: a process)"),
    ("options", IMPLEMENTED, "the module of option classes (ConfigFileError, _DistributedOptions, ...)"),
    # ---- optimizers -------------------------------------------------------------------
    ("optim.SGD", IMPLEMENTED, "accum types: half params' state dtype; velocity_scaling warns; max_grad_norm"),
    ("optim.Adam", IMPLEMENTED, "max_grad_norm; amsgrad"),
    ("optim.AdamW", IMPLEMENTED, "bias_correction=False too"),
    ("optim.RMSprop", IMPLEMENTED, "use_tf_variant, max_grad_norm"),
    ("optim.LAMB", IMPLEMENTED, "bias correction, max_weight_norm (None: 65500; a constant 0 takes Adam's step, as PopART), trust ratio"),
    ("optim.Optimizer", IMPLEMENTED, "base class; state_dict / load_state_dict carry the engine's state (ipu_state, ipu_param); per-parameter ipu_param values loaded are applied"),
    ("optim.VariableAttributes", IMPLEMENTED, "recorded; every hyperparameter is runtime"),
    # ---- enums ------------------------------------------------------------------------
    ("enums.OutputMode", IMPLEMENTED, ""),
    ("enums.ReductionType", IMPLEMENTED, ""),
    ("enums.MeanReductionStrategy", IMPLEMENTED, ""),
    ("enums.DataLoaderMode", IMPLEMENTED, ""),
    ("enums.SharingStrategy", IMPLEMENTED, "accepted by AsynchronousDataAccessor"),
    ("enums.ConnectionType", WARNS, "via Options.connectionType"),
    ("enums.HalfFloatCastingBehavior", IMPLEMENTED, "Default = HalfUpcastToFloat (PopTorch 3)"),
    ("enums.SyncPattern", WARNS, "via Options.syncPattern"),
    ("enums.MatMulSerializationMode", IMPLEMENTED, ""),
    ("enums.Liveness", REFUSED, "phased execution is not built"),
    ("enums.OverlapMode", WARNS, "via set_overlap_for_*"),
    ("enums.AutoStage", IMPLEMENTED, ""),
    ("enums.MultiConvPartialsType", WARNS, "via MultiConv (PopTorch 1's partials types)"),
    ("enums.MultiConvPlanType", WARNS, "via MultiConv"),
    ("enums.CommGroupType", REFUSED, "replica grouping is not built"),
    ("enums.VariableRetrievalMode", REFUSED, "replica grouping is not built"),
]

# Public tilegraph names that PopTorch does not have (or has under another name).
TILEGRAPH_ONLY = {
    "AnchorMode": "PopTorch 2's name for OutputMode",
    "ArchiveError": "a bad export or cache file",
    "Executable": "the C++ core's compiled program",
    "ExportedModule": "the module of an executor loaded from a file",
    "Graph": "the C++ core's graph builder",
    "PartitionPlan": "autoPartition's result: stages per emulated IPU, apply(model)",
    "autoPartition": "places a model over N emulated IPUs (stages that fit, balanced)",
    "OptimizerType": "PopTorch 2's optimizer enum",
    "RecomputationType": "PopART's autoRecomputation values",
    "compilation_count": "compilations in this process (tests)",
    "enums": "the enums module",
    "ops": "the ops module",
    "optim": "the optimizers module",
    "registered_ops": "the C++ core's op registry",
}


def resolve(name):
    """The object `name` names on tilegraph (AttributeError if it does not exist)."""
    import tilegraph
    parts = name.split(".")
    target = tilegraph.Options() if parts[0] == "Options" and len(parts) > 1 else tilegraph
    if target is not tilegraph:
        parts = parts[1:]
    for part in parts:
        target = getattr(target, part)
    return target


def render():
    """docs/POPTORCH.md."""
    lines = ["# PopTorch's API on tilegraph", "",
             "Every public name of PopTorch 3 (`import tilegraph as poptorch`) and what "
             "tilegraph does with it. Generated by `python -m tilegraph.poptorch_api` from "
             "`python/tilegraph/poptorch_api.py`; `tests/e2e/test_poptorch_api.py` checks "
             "that every name exists and that this file is current.", "",
             "- **implemented**: does what PopTorch's does, on tilegraph's devices.",
             "- **warns**: accepted and checked, no effect here; warns once, saying what it "
             "does on an IPU.",
             "- **refused**: raises an error that says why.", "",
             "| name | status | note |", "|---|---|---|"]
    for name, status, note in API:
        lines.append(f"| `{name}` | {status} | {note} |")
    counts = {s: sum(1 for _, st, _ in API if st == s) for s in (IMPLEMENTED, WARNS, REFUSED)}
    lines += ["", f"{len(API)} names: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".",
              "", "## tilegraph's own public names", "", "| name | what |", "|---|---|"]
    for name, what in sorted(TILEGRAPH_ONLY.items()):
        lines.append(f"| `{name}` | {what} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
