"""PopTorch's optimizer state_dict on tilegraph: the engine's optimizer state (momentum,
moments, accumulated gradients, step counters) read into and written from
`optimizer.state_dict()["ipu_state"]`, under PopART's names, and the hyperparameters each
parameter's update uses as `["ipu_param"]` (derived from the optimizer's param groups, as
PopART derives its optimizer tensors). Checkpoints of a training run then hold the state
that resumes it: `torch.save(optimizer.state_dict())`, later `load_state_dict` (before or
after compiling) writes it into the engine.

PopART's names: per-parameter state "<kind>___model.<parameter>" with Accl (SGD momentum),
Accl1 / Accl2 (Adam, AdamW, LAMB first and second moments; RMSprop mean square and mean
gradient), Accl3 (RMSprop momentum), Accum (accumulated gradients); state of the whole step
(optimizer.step, loss-scaling counters) under tilegraph's variable names."""
import numpy as np
import torch

from ._engine_io import from_engine, to_engine

# (optimizer kind, tilegraph's state name) -> PopART's prefix
_PREFIX = {
    ("sgd", "momentum_buffer"): "Accl",
    ("adam", "exp_avg"): "Accl1", ("adam", "exp_avg_sq"): "Accl2",
    ("adamw", "exp_avg"): "Accl1", ("adamw", "exp_avg_sq"): "Accl2",
    # amsgrad's running max of exp_avg_sq (PopART has none: torch's name)
    ("adam", "max_exp_avg_sq"): "max_exp_avg_sq", ("adamw", "max_exp_avg_sq"): "max_exp_avg_sq",
    ("lamb", "exp_avg"): "Accl1", ("lamb", "exp_avg_sq"): "Accl2",
    ("rmsprop", "square_avg"): "Accl1", ("rmsprop", "grad_avg"): "Accl2",
    ("rmsprop", "momentum_buffer"): "Accl3",
}
_SUFFIXES = sorted({what for _, what in _PREFIX} | {"grad_accum"}, key=len, reverse=True)


def state_names(executor, kind):
    """PopART-style name -> engine variable, for every optimizer state variable."""
    cap = executor._cap
    param_of = {}
    for fqn, var in cap.params.items():
        param_of.setdefault(var, fqn)
    own = set(cap.params.values()) | set(cap.buffers.values())
    names = {}
    for var in executor._exe.variables:
        if var in own:
            continue
        name = var
        for what in _SUFFIXES:
            base = var[:-len(what) - 1]
            if var.endswith("." + what) and base in param_of:
                prefix = "Accum" if what == "grad_accum" else _PREFIX.get((kind, what), what)
                name = f"{prefix}___model.{param_of[base]}"
                break
        names[name] = var
    return names


# Automatic loss scaling keeps log2 of the scale over its base (the loss_scale
# hyperparameter) in this variable; PopART's state holds "lossScaleUpdateFactor", the scale
# over the optimizer's loss_scaling (scale = loss_scaling x factor).
LOSS_SCALE_LOG2 = "optimizer.loss_scale_log2"
UPDATE_FACTOR = "lossScaleUpdateFactor"


def _factor_base(executor):
    """The loss_scale hyperparameter over the optimizer's loss_scaling (the factor at
    log2 = 0)."""
    from .optim import describe
    loss_scaling = describe(executor.optimizer)[3]
    return executor._initial_loss_scale(loss_scaling) / loss_scaling


def read_state(executor, kind):
    """{PopART name: tensor} of the engine's optimizer state (copies)."""
    out = {}
    for name, var in state_names(executor, kind).items():
        value = from_engine(np.array(executor._exe.read_variable(var)))
        if name == LOSS_SCALE_LOG2:
            name = UPDATE_FACTOR
            value = (_factor_base(executor) * torch.exp2(value.double())).to(torch.float32)
        out[name] = value
    return out


def write_state(executor, kind, state):
    """Writes `state` ({PopART name: tensor}, as read_state gives) into the engine; names it
    lacks keep their values. Everything is checked before anything is written: an unknown
    name or a tensor of another shape is a ValueError and the engine's state is unchanged."""
    names = state_names(executor, kind)
    if LOSS_SCALE_LOG2 in names:  # PopART's name and value for it
        names[UPDATE_FACTOR] = names.pop(LOSS_SCALE_LOG2)
        if UPDATE_FACTOR in state:
            factor = torch.as_tensor(state[UPDATE_FACTOR], dtype=torch.float64)
            if not bool((factor > 0).all()):
                raise ValueError(f"optimizer state {UPDATE_FACTOR}: expected a positive "
                                 f"factor, got {factor.tolist()}")
            state = {**state, UPDATE_FACTOR: torch.log2(factor / _factor_base(executor))}
    unknown = sorted(set(state) - set(names))
    if unknown:
        raise ValueError(f"optimizer state: {unknown} are not state of this program; it "
                         f"holds {sorted(names)}")
    values = {}
    for name, value in state.items():
        held = executor._exe.variable_view(names[name])
        value = torch.as_tensor(value)
        if tuple(value.shape) != tuple(held.shape):
            raise ValueError(f"optimizer state {name}: shape {list(value.shape)}, the "
                             f"program's is {list(held.shape)}")
        values[names[name]] = to_engine(value.to(from_engine(held).dtype))
    for var, value in values.items():
        executor._exe.write_variable(var, value)


def hyperparameters(optimizer, kind, executor, overridden=True):
    """{PopART name: scalar tensor}: the learning rate and weight decay each parameter's
    update uses, and the loss scaling, from the optimizer's param groups (SGD as PopART's
    SGD0 folds them: scaledLearningRate0 = lr (1 - dampening) / loss_scaling,
    weightDecayScaleFactor0 = 1 - lr (1 - dampening) wd), and the values loaded per
    parameter where they differ (`overridden`: applied through their own groups, see
    resolve_overrides; shown as loaded)."""
    from .optim import effective_param_groups
    names = {id(p): n for n, p in executor.model.named_parameters()}
    ls = float(getattr(optimizer, "loss_scaling", 1.0))
    out = {}
    groups = effective_param_groups(optimizer) if overridden else optimizer.param_groups
    for group in groups:
        lr, wd = float(group["lr"]), float(group.get("weight_decay", 0.0))
        dm = float(group.get("dampening", 0.0))
        for p in group["params"]:
            if id(p) not in names:
                continue
            fqn = names[id(p)]
            if kind == "sgd":
                out[f"scaledLearningRate0___specific___model.{fqn}"] = lr * (1 - dm) / ls
                out[f"weightDecayScaleFactor0___specific___model.{fqn}"] = 1 - lr * (1 - dm) * wd
            else:
                out[f"learningRate___specific___model.{fqn}"] = lr
                out[f"weightDecay___specific___model.{fqn}"] = wd
    out["lossScaling_FLOAT"] = ls
    out = {k: torch.tensor(v, dtype=torch.float32) for k, v in out.items()}
    if overridden:
        out.update({k: v.clone() for k, v in getattr(optimizer, "_shown_overrides", {}).items()
                    if k in out})
    return out


_SPECIFIC = "___specific___model."


def resolve_overrides(optimizer, kind, executor, loaded):
    """PopTorch's per-parameter hyperparameters from a loaded "ipu_param": the entries that
    differ from what the param groups imply become {id(parameter): {"lr": .., "weight_decay":
    ..}} (each such parameter then updates as a group of its own: effective_param_groups),
    and a loaded lossScaling_FLOAT sets optimizer.loss_scaling. Returns (per parameter,
    {PopART name: the loaded tensor} to show). A name this program does not have, or a value
    no learning rate and weight decay can express (SGD's weightDecayScaleFactor0 != 1 at a
    learning rate of 0), is a ValueError before anything changes."""
    implied = hyperparameters(optimizer, kind, executor, overridden=False)
    unknown = sorted(k for k in loaded if k not in implied)
    if unknown:
        raise ValueError(f"load_state_dict: ipu_param {unknown[:4]} are not hyperparameters "
                         f"of this program; it has {sorted(implied)[:6]}...")
    values = {k: torch.as_tensor(v, dtype=torch.float32).reshape(()) for k, v in loaded.items()}
    differ = {k: v for k, v in values.items() if not torch.equal(v, implied[k])}
    ls = float(values.get("lossScaling_FLOAT", getattr(optimizer, "loss_scaling", 1.0)))
    if not (ls == ls and abs(ls) not in (0.0, float("inf"))):
        raise ValueError(f"load_state_dict: ipu_param lossScaling_FLOAT {ls} is not a usable "
                         "loss scaling (zero or not finite)")
    params = dict(executor.model.named_parameters())
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    per_param = {}
    for name, v in differ.items():
        if name == "lossScaling_FLOAT":
            continue
        field, _, fqn = name.partition(_SPECIFIC)
        per_param.setdefault(fqn, {})[field] = float(v)
    resolved = {}
    for fqn, fields in per_param.items():
        p = params[fqn]
        group = group_of[id(p)]
        lr, wd = float(group["lr"]), float(group.get("weight_decay", 0.0))
        if kind == "sgd":
            keep = 1.0 - float(group.get("dampening", 0.0))
            slr = fields.get("scaledLearningRate0")
            lr = lr if slr is None else slr * ls / keep
            factor = fields.get("weightDecayScaleFactor0")
            if factor is not None:
                if lr * keep == 0.0 and factor != 1.0:
                    raise ValueError(f"load_state_dict: ipu_param weightDecayScaleFactor0 of "
                                     f"{fqn} ({factor}) at a learning rate of 0: tilegraph's SGD "
                                     "takes a learning rate and a weight decay, which cannot "
                                     "express it")
                wd = wd if lr * keep == 0.0 else (1.0 - factor) / (lr * keep)
        else:
            lr = fields.get("learningRate", lr)
            wd = fields.get("weightDecay", wd)
        resolved[id(p)] = {"lr": lr, "weight_decay": wd}
    optimizer.loss_scaling = ls
    return resolved, differ
