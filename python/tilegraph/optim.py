"""tilegraph.optim: torch.optim optimizers with PopTorch's extra arguments.

They are ordinary torch.optim optimizers (so the same object drives eager PyTorch), plus
`loss_scaling` (and PopTorch's accum_type / velocity_scaling, accepted). tilegraph reads
their param_groups; the update itself is generated in C++ (src/autodiff/optimizer.cc).
"""
import torch


class _PopTorchArgs:
    def _init_extra(self, loss_scaling, **unused):
        self.loss_scaling = 1.0 if loss_scaling is None else float(loss_scaling)


class SGD(torch.optim.SGD, _PopTorchArgs):
    def __init__(self, params, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, loss_scaling=None, velocity_scaling=None,
                 use_combined_accum=None, accum_type=None, max_grad_norm=None):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov)
        self._init_extra(loss_scaling)


class Adam(torch.optim.Adam, _PopTorchArgs):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, loss_scaling=None, accum_type=None, first_order_momentum_accum_type=None,
                 second_order_momentum_accum_type=None, max_grad_norm=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)
        self._init_extra(loss_scaling)


class AdamW(torch.optim.AdamW, _PopTorchArgs):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, loss_scaling=None, accum_type=None, first_order_momentum_accum_type=None,
                 second_order_momentum_accum_type=None, bias_correction=True, max_grad_norm=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)
        self._init_extra(loss_scaling)


class RMSprop(torch.optim.RMSprop, _PopTorchArgs):
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, loss_scaling=None, accum_type=None, first_order_momentum_accum_type=None,
                 second_order_momentum_accum_type=None, use_tf_variant=False):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered)
        self._init_extra(loss_scaling)


def describe(optimizer):
    """(kind, structural flags, per-group hyperparameters) of a torch or tilegraph optimizer."""
    if isinstance(optimizer, torch.optim.AdamW):
        kind = "adamw"
    elif isinstance(optimizer, torch.optim.Adam):
        kind = "adam"
    elif isinstance(optimizer, torch.optim.RMSprop):
        kind = "rmsprop"
    elif isinstance(optimizer, torch.optim.SGD):
        kind = "sgd"
    else:
        raise NotImplementedError(
            f"tilegraph supports SGD, Adam, AdamW and RMSprop; got {type(optimizer).__name__}")
    groups = []
    flags = dict(use_momentum=False, nesterov=False, centered=False)
    for g in optimizer.param_groups:
        if g.get("amsgrad"):
            raise NotImplementedError("amsgrad is not supported by tilegraph yet")
        if g.get("maximize"):
            raise NotImplementedError("maximize=True is not supported by tilegraph yet")
        h = dict(lr=float(g["lr"]), weight_decay=float(g.get("weight_decay", 0.0)))
        if kind == "sgd":
            h.update(momentum=float(g["momentum"]), dampening=float(g["dampening"]))
            flags["use_momentum"] |= g["momentum"] != 0
            flags["nesterov"] |= bool(g["nesterov"])
        elif kind in ("adam", "adamw"):
            h.update(beta1=float(g["betas"][0]), beta2=float(g["betas"][1]), eps=float(g["eps"]))
        else:
            h.update(alpha=float(g["alpha"]), eps=float(g["eps"]), momentum=float(g["momentum"]))
            flags["use_momentum"] |= g["momentum"] != 0
            flags["centered"] |= bool(g["centered"])
        groups.append((list(g["params"]), h))
    loss_scaling = getattr(optimizer, "loss_scaling", 1.0)
    return kind, flags, groups, loss_scaling


# ---- descriptions for export files (JSON, no pickle) --------------------------------------
_CLASSES = {"tilegraph.SGD": SGD, "tilegraph.Adam": Adam, "tilegraph.AdamW": AdamW,
            "tilegraph.RMSprop": RMSprop, "torch.SGD": torch.optim.SGD,
            "torch.Adam": torch.optim.Adam, "torch.AdamW": torch.optim.AdamW,
            "torch.RMSprop": torch.optim.RMSprop}


def spec_of(optimizer, model):
    """A JSON description of `optimizer` over `model`'s parameters (by name)."""
    cls = next(name for name, c in _CLASSES.items() if type(optimizer) is c) \
        if type(optimizer) in _CLASSES.values() else None
    if cls is None:
        describe(optimizer)  # raises for unsupported kinds
        base = next(c for c in (torch.optim.AdamW, torch.optim.Adam, torch.optim.RMSprop,
                                torch.optim.SGD) if isinstance(optimizer, c))
        cls = "torch." + base.__name__
    names = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for g in optimizer.param_groups:
        group = {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()
                 if k != "params" and (v is None or isinstance(v, (bool, int, float, tuple)))}
        group["params"] = [names[id(p)] for p in g["params"] if id(p) in names]
        groups.append(group)
    return dict(cls=cls, groups=groups, loss_scaling=getattr(optimizer, "loss_scaling", 1.0))


def from_spec(spec, model):
    """The optimizer a spec_of() description names, over `model`'s parameters."""
    try:
        cls = _CLASSES[spec["cls"]]
        params = dict(model.named_parameters())
        groups = []
        for g in spec["groups"]:
            group = {k: (tuple(v) if k == "betas" else v) for k, v in g.items() if k != "params"}
            group["params"] = [params[n] for n in g["params"]]
            groups.append(group)
        opt = cls(groups, lr=groups[0].get("lr", 0.01))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(f"corrupt optimizer description ({e})") from None
    if isinstance(opt, _PopTorchArgs):
        opt.loss_scaling = float(spec.get("loss_scaling", 1.0))
    return opt
