"""The auto-partitioner: places a model that does not fit one IPU over several emulated IPUs
(the IPU Model, Options().useIpuModel), choosing the pipeline stage boundaries itself.

Graphcore's users place stages by hand (BeginBlock(layer, ipu_id=k), or layers_per_ipu in
their configurations). autoPartition does it from the compiler's own estimates:

1. units: the model's layers in forward order (find_units: modules expanded from the root,
   largest first, until there are about `granularity` units per IPU; containers that never
   run themselves, like ModuleList, are looked through);
2. measure: a copy of the model with every unit on its own emulated IPU is compiled once
   (allow_out_of_memory, sharded): the estimate gives each unit's cycles (forward and
   backward: autodiff places every gradient on its forward node's device) and its bytes on
   every tile;
3. plan: dynamic programming in the core (src/tiles/auto_partition.h) cuts the sequence
   into contiguous stages so every stage fits its tiles and the slowest stage is fastest;
4. verify: a fresh copy placed by the plan is compiled on the IPU Model, and the plan
   reports that compile's per-IPU memory and cycles (what the user will get); when the
   compile does not confirm a fitting plan, the plan's (summed, pessimistic) memory bound is
   scaled by what the compile found and the plan made again (up to 3 compiles), keeping the
   best verified plan.

plan.apply(model) then puts BeginBlock on the first unit of every stage.
"""
import copy

import torch

from . import _core
from ._blocks import BeginBlock, ShardedExecution, removeBlocks


class PartitionPlan:
    """Stages of units (module names) per IPU, with the estimates behind the choice."""

    def __init__(self, units, unit_cycles, first_unit, planned, target, num_ipus):
        self.units = list(units)
        self.unit_cycles = list(unit_cycles)
        self.num_ipus = num_ipus
        bounds = list(first_unit) + [len(units)]
        self.stages = [self.units[bounds[s]:bounds[s + 1]] for s in range(len(first_unit))]
        self.fits_estimate = bool(planned["fits"])  # the planner's (additive) estimate
        self.stage_cycles = list(planned["stage_cycles"])
        self.stage_max_tile_bytes = list(planned["stage_max_tile_bytes"])
        self.balance = float(planned["balance"])
        self.target = target
        self.verified = None  # the compile of the placed model: per IPU memory and cycles
        self.calibration = 1.0  # planned bytes were scaled by this to match a compile

    def stage_of(self, unit):
        for s, names in enumerate(self.stages):
            if unit in names:
                return s
        raise KeyError(unit)

    def apply(self, model):
        """Puts BeginBlock(first unit of stage s, ipu_id=s) on `model` (its blocks removed
        first); returns the model."""
        removeBlocks(model)
        for s, names in enumerate(self.stages):
            BeginBlock(model.get_submodule(names[0]), ipu_id=s)
        return model

    def __str__(self):
        lines = [f"auto-partition over {self.num_ipus} emulated {self.target} IPUs "
                 f"(estimates; balance {self.balance:.2f} = slowest / mean stage):"]
        for s, names in enumerate(self.stages):
            mem = self.stage_max_tile_bytes[s] / 1024
            line = (f"  IPU {s}: {len(names)} units ({names[0]} .. {names[-1]}), "
                    f"{self.stage_cycles[s]:,.0f} cycles, fullest tile {mem:,.0f} KiB (planned)")
            if self.verified:
                v = self.verified["ipus"][s]
                line += (f"; compiled: fullest tile {v['max_tile_bytes'] / 1024:,.0f} KiB, "
                         f"{v['cycles']:,.0f} cycles")
            lines.append(line)
        if self.verified is not None:
            lines.append("  compiled placement " + ("fits" if self.verified["fits"] else
                                                    "does NOT fit"))
        return "\n".join(lines)


def find_units(model, example_inputs, num_ipus, granularity=4):
    """The model's layers in forward order: modules expanded from the root, the one with the
    most parameters first, until there are `granularity` per IPU (or nothing to expand)."""
    order = {}

    def record(name):
        def hook(module, args):  # returns None: the inputs stay as they are
            order.setdefault(name, len(order))
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules()]
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    modules = dict(model.named_modules())

    def size(name):
        return sum(p.numel() for p in modules[name].parameters())

    def ran_children(name):
        """The children that ran, looking through containers that never run themselves."""
        out = []
        for child, _ in modules[name].named_children():
            full = f"{name}.{child}" if name else child
            if full in order:
                out.append(full)
            else:
                out.extend(ran_children(full))
        return out

    units = ran_children("")
    if not units:
        raise ValueError("autoPartition: the model has no submodules to place on IPUs")
    wanted = granularity * num_ipus
    while len(units) < wanted:
        expandable = [u for u in units if ran_children(u)]
        if not expandable:
            break
        largest = max(expandable, key=size)
        i = units.index(largest)
        units[i:i + 1] = ran_children(largest)
    return sorted(units, key=order.get)


def _executor(model, options, optimizer):
    from ._executor import inferenceModel, trainingModel
    if optimizer is None:
        return inferenceModel(model, options)
    # The same optimizer over the copy's parameters: its constructor's own arguments, from
    # the defaults it recorded (which may hold more keys than it accepts) and, for
    # tilegraph's optimizers, PopTorch's extras (state dtypes such as accum_type change what
    # the IPUs hold; loss scaling).
    import inspect
    accepted = inspect.signature(type(optimizer).__init__).parameters
    given = dict(optimizer.defaults)
    given.update(getattr(optimizer, "state_dtypes", {}))
    given.update(getattr(optimizer, "ipu_storage", {}))
    if getattr(optimizer, "loss_scaling", 1.0) != 1.0:
        given["loss_scaling"] = optimizer.loss_scaling
    if "momentum" in given and not given["momentum"] and \
            not getattr(optimizer, "_momentum_given", True):
        del given["momentum"]  # left at its default: no momentum buffers (optim.SGD's rule)
    kwargs = {k: v for k, v in given.items() if k in accepted}
    return trainingModel(model, options, type(optimizer)(model.parameters(), **kwargs))


def _compile_report(model, example_inputs, options, optimizer):
    executor = _executor(model, options, optimizer)
    try:
        executor.compile(*example_inputs)
        return executor.ipuModelReport()
    finally:
        executor.destroy()


def autoPartition(model, num_ipus, example_inputs, optimizer=None, options=None,
                  target="GC200", units=None, granularity=4, verify=True):
    """Chooses pipeline stages for `model` over `num_ipus` emulated IPUs (training when an
    `optimizer` is given, inference otherwise). `model` itself is not changed: the returned
    PartitionPlan's apply(model) places it. `options` (a tilegraph Options) sets what the
    measurement and verification compiles share with the user's run (precision, available
    memory proportion, ...); the device is always the IPU Model of `target`."""
    from ._options import Options
    if int(num_ipus) < 1:
        raise ValueError(f"autoPartition: num_ipus must be >= 1, got {num_ipus}")
    example_inputs = tuple(example_inputs)
    base = options.clone() if options is not None else Options()
    base.useIpuModel(True, target=target, allow_out_of_memory=True).autoRoundNumIPUs(True)
    if units is None:
        units = find_units(model, example_inputs, num_ipus, granularity)

    measured = copy.deepcopy(model)
    removeBlocks(measured)
    for k, name in enumerate(units):
        BeginBlock(measured.get_submodule(name), ipu_id=k)
    opts = base.clone().setExecutionStrategy(ShardedExecution())
    report = _compile_report(measured, example_inputs, opts, optimizer)
    del measured
    # A unit's bytes per tile: all but its code, plus its share of the control program.
    # Code is shared within a stage (the same codelets serve every layer): the stage is
    # charged once for the largest code any of its units needs outside its control program.
    # With recomputation a stage recomputes its activations for its backward; with a
    # recomputationCheckpoint at each unit's output (Graphcore's BERT has one after every
    # layer) one unit's activations and temporaries are alive at a time, so they count once
    # per stage (the largest unit's) instead of being summed. Without recomputation a
    # stage's forward keeps every unit's activations for the backward: they are summed.
    one_at_a_time = optimizer is not None and base._Popart.recompute_stages
    tiles = report["target"]["tiles_per_ipu"]
    shared_code = float(report["target"]["base_code_bytes"])
    cycles, tile_bytes, peak_bytes = [], [], []
    for k in range(len(units)):
        if k < len(report["ipus"]):
            ipu, memory = report["ipus"][k], report["tile_memory"][k]
            control = float(ipu["control_code_bytes"])
            categories = memory["categories"]
            code = categories["code"]
            cycles.append(float(ipu["cycles"]))
            resident = [total - c + control for total, c in zip(memory["total"], code)]
            if one_at_a_time:
                peak = [a + x for a, x in zip(categories["activations"], categories["exchange"])]
                resident = [r - p for r, p in zip(resident, peak)]
                peak_bytes.append(peak)
            tile_bytes.append(resident)
            shared_code = max(shared_code, max(code) - control)
        else:  # a unit with no work of its own
            cycles.append(0.0)
            tile_bytes.append([0.0] * tiles)
            if one_at_a_time:
                peak_bytes.append([0.0] * tiles)
    capacity = float(report["target"]["bytes_per_tile"])

    def plan_with(scale):
        scaled = [[b * scale for b in unit] for unit in tile_bytes]
        peaks = [[b * scale for b in unit] for unit in peak_bytes]
        planned = _core.auto_partition(list(units), cycles, scaled, int(num_ipus), capacity,
                                       shared_code * scale, peaks)
        return PartitionPlan(units, cycles, planned["first_unit"], planned, target,
                             int(num_ipus))

    plan = plan_with(1.0)
    if not verify:
        return plan
    # The planned memory is a bound (summed peaks); the compile is the judge. Calibrate the
    # bound by what the compile found and plan again, keeping the best verified plan: one
    # that fits, then the fastest slowest stage.
    strategy = base.execution_strategy if getattr(base, "execution_strategy", None) \
        else ShardedExecution()
    best, scale = None, 1.0
    for _ in range(3):
        placed = plan.apply(copy.deepcopy(model))
        plan.verified = _compile_report(placed, example_inputs,
                                        base.clone().setExecutionStrategy(strategy), optimizer)
        del placed
        if best is None or _better(plan, best):
            best = plan
        if plan.verified["fits"] and plan.fits_estimate:
            break  # the bound and the compile agree that it fits
        # Scale the bound so that it matches the compile on the worst stage, and plan again
        # (a compile that does not fit may fit with other cuts under the calibrated bound).
        ratios = [v["max_tile_bytes"] / p for v, p in
                  zip(plan.verified["ipus"], plan.stage_max_tile_bytes) if p > 0]
        if not ratios:
            break
        scale *= max(ratios)
        replanned = plan_with(scale)
        if replanned.stages == plan.stages:
            break
        plan = replanned
    best.calibration = scale
    return best


def _better(a, b):
    """Whether verified plan `a` beats `b`: fitting first, then the slowest stage."""
    if a.verified["fits"] != b.verified["fits"]:
        return a.verified["fits"]
    slowest = [max(v["cycles"] for v in p.verified["ipus"]) for p in (a, b)]
    return slowest[0] < slowest[1]
