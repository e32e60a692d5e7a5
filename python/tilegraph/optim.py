"""tilegraph.optim: torch.optim optimizers with PopTorch's extra arguments.

They are ordinary torch.optim optimizers (so the same object drives eager PyTorch), plus
`loss_scaling` and PopTorch's state dtypes (accum_type, velocity_accum_type,
first/second_order_momentum_accum_type: how the optimizer state of half-precision
parameters is stored; f32 by default). tilegraph reads
their param_groups; the update itself is generated in C++ (src/autodiff/optimizer.cc).
"""
import inspect
import warnings

import torch


_warned = set()


def _given(arguments):
    """The constructor arguments given (not None), from its locals(): PopTorch's variable
    attributes (those left out are constant)."""
    return {k for k, v in arguments.items()
            if v is not None and k not in ("self", "params", "__class__")}


def _or(value, default):
    """PopTorch's optimizers take None for every argument: the default then applies."""
    return default if value is None else value


def _torch_flags(**flags):
    """torch.optim's own flags (maximize, foreach, differentiable, capturable, fused) that
    were given: passed on to the torch optimizer (maximize=True is refused when compiling)."""
    return {k: v for k, v in flags.items() if v is not None}


class VariableAttributes:
    """PopTorch's record of which optimizer attributes may change without recompiling
    (`optimizer.variable_attrs`): as in PopTorch, the constructor arguments given are
    variable and the others constant. In tilegraph every hyperparameter (lr, momentum,
    betas, weight decay, ...) is a runtime value of the compiled program, so all can change
    through setOptimizer; the one place constness changes the mathematics is PopART's:
    LAMB's max_weight_norm of 0 takes Adam's step where it is constant (no trust ratio) and
    freezes the parameter where it is variable."""

    def __init__(self, variable_attributes, allowed_attributes):
        # (PopTorch's attribute names: its tests set them directly)
        self._variable_attributes = set(variable_attributes)
        self._allowed_attributes = set(allowed_attributes)

    def _check(self, attr):
        if attr not in self._allowed_attributes:
            raise ValueError(f"{attr!r} is not an attribute of this optimizer; expected one "
                             f"of {sorted(self._allowed_attributes)}")

    def isConstant(self, attr):
        self._check(attr)
        return attr not in self._variable_attributes

    def markAsConstant(self, attr):
        self._check(attr)
        self._variable_attributes.discard(attr)

    def markAsVariable(self, attr):
        self._check(attr)
        self._variable_attributes.add(attr)


def effective_param_groups(optimizer):
    """The param groups the program updates with: the optimizer's, except that a parameter
    given its own hyperparameters by a loaded "ipu_param" (PopTorch's per-parameter values,
    _optimizer_state.resolve_overrides) is a group of its own, after its group."""
    per_param = getattr(optimizer, "_param_hypers", None)
    if not per_param:
        return optimizer.param_groups
    groups = []
    for g in optimizer.param_groups:
        groups.append({**g, "params": [p for p in g["params"] if id(p) not in per_param]})
        groups += [{**g, **per_param[id(p)], "params": [p]} for p in g["params"]
                   if id(p) in per_param]
    return groups


def momentum_variable(optimizer):
    """Whether the optimizer's momentum may change after compiling (PopTorch: a variable
    attribute, as a constructor argument given, even 0.0, makes it): the program then keeps
    momentum buffers even while the momentum is 0."""
    attrs = getattr(optimizer, "variable_attrs", None)
    if isinstance(attrs, VariableAttributes) and "momentum" in attrs._allowed_attributes:
        return not attrs.isConstant("momentum")
    return bool(getattr(optimizer, "_momentum_given", False))


class Optimizer:
    """The base of tilegraph.optim's optimizers (PopTorch's poptorch.optim.Optimizer): listed
    first in each class's bases, before the torch optimizer it extends.

    state_dict() is torch's plus PopTorch's "ipu_state" and "ipu_param": once a training
    executor has compiled with this optimizer, the engine's optimizer state and the
    hyperparameters each parameter's update uses, under PopART's names (_optimizer_state.py;
    None before). load_state_dict() writes "ipu_state" into the engine (now, or when the
    executor compiles) and restores the param groups as torch does; a state dict without
    "ipu_state" (a torch optimizer's) is refused, as PopTorch refuses it.

    PopTorch's extra optimizer arguments. loss_scaling: the engine's backward starts from
    loss x scale and the update divides the gradients by it (the same mathematics; it keeps
    half-precision gradients out of underflow). The accumulator dtypes choose how the state of
    half-precision parameters (model.half()) is stored: accum_type for accumulated gradients,
    velocity_accum_type / first_order_momentum_accum_type for momentum and first moments,
    second_order_momentum_accum_type for second moments; None means float32 (the update itself
    is computed in float32 and rounded to the parameter's dtype once). float32 parameters keep
    float32 state. velocity_scaling and use_combined_accum choose how an IPU scales optimizer
    state; they do not change the mathematics, so they are recorded and warn once when set.
    max_grad_norm clips by the global gradient norm (PopART's clipping): before each update
    every gradient is multiplied by min(1, max_grad_norm / ||all gradients||), the 2-norm of
    every parameter's gradient together (after gradient accumulation and the replicas'
    reduction in the compiled program; `step()` here does the same to `.grad`, so the object
    is also the eager reference). `optimizer.max_grad_norm = x` then setOptimizer changes it."""

    _STATE_DTYPES = ("accum_type", "velocity_accum_type", "first_order_momentum_accum_type",
                     "second_order_momentum_accum_type")

    def _init_extra(self, given, loss_scaling, max_grad_norm=None, **ipu_storage):
        self._executor = None       # the training executor compiled with it
        self._pending_state = None  # ipu_state loaded before that executor compiled
        self.loss_scaling = 1.0 if loss_scaling is None else float(loss_scaling)
        allowed = set(self.defaults) | {"loss_scaling"}
        self.variable_attrs = VariableAttributes(allowed & set(given), allowed)
        self.max_grad_norm = max_grad_norm
        self.state_dtypes = {}
        for name in self._STATE_DTYPES:
            dtype = ipu_storage.pop(name, None)
            if dtype is None:
                continue
            if dtype not in (torch.float32, torch.float16, torch.bfloat16):
                raise ValueError(f"{type(self).__name__}({name}={dtype!r}): expected "
                                 "torch.float32, torch.float16 or torch.bfloat16")
            self.state_dtypes[name] = dtype
        self.ipu_storage = {k: v for k, v in ipu_storage.items() if v not in (None, False)}
        for name, value in self.ipu_storage.items():
            if (name, value) not in _warned:
                _warned.add((name, value))
                warnings.warn(f"tilegraph: {type(self).__name__}({name}={value!r}) sets how an "
                              "IPU scales optimizer state; it does not change the mathematics "
                              "and has no effect here", stacklevel=3)

    def _state_dtype(name):  # noqa: N805 - a property factory used in the class body
        def get(self):
            return self.state_dtypes.get(name, torch.float32)

        def set_(self, dtype):
            if dtype not in (torch.float32, torch.float16, torch.bfloat16):
                raise ValueError(f"{type(self).__name__}.{name}: expected torch.float32, "
                                 f"torch.float16 or torch.bfloat16, got {dtype!r}")
            self.state_dtypes[name] = dtype
        return property(get, set_, doc=f"PopTorch's {name} (float32 unless set); "
                                        "setOptimizer refuses a change once compiled")

    accum_type = _state_dtype("accum_type")
    velocity_accum_type = _state_dtype("velocity_accum_type")
    first_order_momentum_accum_type = _state_dtype("first_order_momentum_accum_type")
    second_order_momentum_accum_type = _state_dtype("second_order_momentum_accum_type")
    del _state_dtype

    @property
    def max_grad_norm(self):
        """The clip of the global gradient norm (None: no clipping)."""
        return None if self._max_grad_norm == float("inf") else self._max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        v = float("inf") if value is None else float(value)
        if not v > 0:
            raise ValueError(f"{type(self).__name__}: max_grad_norm must be > 0 (or None), "
                             f"got {value}")
        self._max_grad_norm = v

    @torch.no_grad()
    def clip_grad_norm(self):
        """Clips every parameter's .grad by the global norm as the compiled update does:
        each gradient's squares summed in float32, the sums added in float64, the factor
        min(1, max_grad_norm / norm) rounded to float32 and multiplied in. Returns the norm
        (None without clipping or gradients)."""
        if self._max_grad_norm == float("inf"):
            return None
        grads = [p.grad for _, p, _ in self._stepped()]
        if not grads:
            return None
        total = 0.0
        for gr in grads:
            x = gr.float()
            total += float((x * x).sum())
        norm = total ** 0.5
        ratio = self._max_grad_norm / norm if norm > 0 else float("inf")
        factor = ratio if ratio < 1 else 1.0
        for gr in grads:
            gr.copy_(gr.float() * torch.tensor(factor, dtype=torch.float32))
        return norm

    def _attach(self, executor):
        """The training executor compiled with this optimizer (setOptimizer calls it):
        state_dict reads its engine, a pending loaded state is written into it."""
        # A strong reference: the optimizer's state lives in that engine, so it stays as long
        # as the optimizer does (or until another executor compiles with it, or destroy()).
        self._executor = executor
        loaded, self._loaded_param = getattr(self, "_loaded_param", None), None
        if loaded:  # per-parameter hyperparameters loaded before compiling: resolved now
            from . import _optimizer_state
            self._param_hypers, self._shown_overrides = _optimizer_state.resolve_overrides(
                self, describe(self)[0], executor, loaded)
        if self._pending_state is not None:
            from . import _optimizer_state
            state, self._pending_state = self._pending_state, None
            _optimizer_state.write_state(executor, describe(self)[0], state)

    def _keep_state(self, executor):
        """The engine's state, kept as if loaded (its executor is being destroyed): the
        next state_dict() shows it, the next executor compiled with this optimizer starts
        from it."""
        from . import _optimizer_state
        if self._compiled() is executor:
            self._pending_state = _optimizer_state.read_state(executor, describe(self)[0])
            self._executor = None

    def __getstate__(self):
        """torch's (defaults, state, param_groups) and tilegraph's own attributes (loss
        scaling, clipping, state dtypes); not the executor it was compiled with."""
        state = super().__getstate__()
        state.update({k: v for k, v in self.__dict__.items()
                      if k not in state and k != "_executor"})
        executor = self._compiled()
        if executor is not None and executor._exe is not None:
            # The engine's state, as if loaded: an unpickled optimizer resumes from it.
            from . import _optimizer_state
            state["_pending_state"] = _optimizer_state.read_state(executor, describe(self)[0])
        return state

    def __setstate__(self, state):
        # torch's load_state_dict goes through here too: the executor link must survive it
        # (unpickling starts from an empty __dict__: no executor).
        executor = self.__dict__.get("_executor")
        super().__setstate__(state)
        self.__dict__["_executor"] = executor

    def _compiled(self):
        executor = getattr(self, "_executor", None)
        return executor if executor is not None and executor._exe is not None else None

    def state_dict(self):
        from . import _optimizer_state
        out = super().state_dict()
        executor = self._compiled()
        if executor is None:
            out["ipu_state"] = dict(self._pending_state) if self._pending_state else None
            loaded = getattr(self, "_loaded_param", None)  # a checkpoint's, until attached
            out["ipu_param"] = dict(loaded) if loaded else None
            return out
        kind = describe(self)[0]
        shown = getattr(self, "_shown_as_loaded", None)
        if shown is not None and shown[0] is executor and shown[1] == executor.runs:
            # As PopTorch: until the engine has run with a loaded state, state_dict() gives it
            # back as loaded (names it left out stay out).
            out["ipu_state"] = {k: v.clone() for k, v in shown[2].items()}
            out["ipu_param"] = {k: torch.as_tensor(v).clone() for k, v in shown[3].items()} \
                if shown[3] else _optimizer_state.hyperparameters(self, kind, executor)
            return out
        with executor._lock:
            out["ipu_state"] = _optimizer_state.read_state(executor, kind)
        out["ipu_param"] = _optimizer_state.hyperparameters(self, kind, executor)
        return out

    def load_state_dict(self, state_dict):
        if "ipu_state" not in state_dict:
            raise RuntimeError("Only IPU optimizer states can be loaded onto the IPU: this "
                               "state dict has no 'ipu_state' (a torch optimizer's?); load it "
                               "into a torch optimizer, or save one from tilegraph.optim")
        state = state_dict["ipu_state"]
        if state is not None and (not isinstance(state, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
            raise TypeError("load_state_dict: 'ipu_state' must map names to tensors, as "
                            "state_dict() gives it")
        super().load_state_dict({k: v for k, v in state_dict.items()
                                 if k not in ("ipu_state", "ipu_param")})
        self._check_loaded_hyperparameters(state_dict.get("ipu_param"))
        self._shown_as_loaded = None
        if state is None:
            return
        executor = self._compiled()
        if executor is None:
            self._pending_state = dict(state)
            return
        from . import _optimizer_state
        with executor._lock:
            _optimizer_state.write_state(executor, describe(self)[0], state)
        params = state_dict.get("ipu_param")
        self._shown_as_loaded = (executor, executor.runs,
                                 {k: v.clone() for k, v in state.items()},
                                 dict(params) if isinstance(params, dict) else None)

    def _check_loaded_hyperparameters(self, params):
        """The "ipu_param" part of a loaded state dict (PopART's per-parameter learning rate,
        weight decay, loss scaling). A checkpoint's agree with the param groups that
        load_state_dict has just restored; values that differ (edited per parameter) are
        applied as PopTorch applies them: each such parameter updates with its own (its
        param group's other hyperparameters kept), until the next load_state_dict. Loaded
        before an executor compiles with this optimizer, they are resolved when it does."""
        self._param_hypers, self._shown_overrides = {}, {}
        if not isinstance(params, dict) or not params:
            self._loaded_param = None
            return
        executor = self._compiled()
        self._loaded_param = None if executor is not None else dict(params)
        if executor is not None:
            from . import _optimizer_state
            self._param_hypers, self._shown_overrides = _optimizer_state.resolve_overrides(
                self, describe(self)[0], executor, params)

    def _stepped(self):
        """(param group, parameter, its state) for each parameter with a gradient: the loop
        of the eager reference steps below."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield group, p, self.state[p]

    def _clipped_step(self, update, closure):
        """step(closure) for these optimizers: the closure's loss, clipping, the update."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.clip_grad_norm()
        update()
        return loss


class SGD(Optimizer, torch.optim.SGD):
    """torch's SGD with PopTorch's arguments. momentum given explicitly (even 0.0, as in
    PopTorch, where it then is a variable attribute) builds the momentum buffers, so that
    setOptimizer can later change it without recompiling."""

    def __init__(self, params, lr=0.01, momentum=None, dampening=None, weight_decay=None,
                 nesterov=None, maximize=None, foreach=None, differentiable=None,
                 loss_scaling=None, velocity_scaling=None, use_combined_accum=None,
                 accum_type=None, velocity_accum_type=None, max_grad_norm=None):
        given = _given(locals())
        super().__init__(params, lr=lr, momentum=_or(momentum, 0.0),
                         dampening=_or(dampening, 0.0), weight_decay=_or(weight_decay, 0.0),
                         nesterov=_or(nesterov, False),
                         **_torch_flags(maximize=maximize, foreach=foreach,
                                        differentiable=differentiable))
        self._momentum_given = momentum is not None
        self._init_extra(given, loss_scaling, max_grad_norm, velocity_scaling=velocity_scaling,
                         use_combined_accum=use_combined_accum, accum_type=accum_type,
                         velocity_accum_type=velocity_accum_type)

    def step(self, closure=None):
        return self._clipped_step(super().step, closure)


class Adam(Optimizer, torch.optim.Adam):
    def __init__(self, params, lr=None, betas=None, eps=None, weight_decay=None, amsgrad=None,
                 foreach=None, maximize=None, capturable=None, differentiable=None, fused=None,
                 loss_scaling=None, accum_type=None, first_order_momentum_accum_type=None,
                 second_order_momentum_accum_type=None, max_grad_norm=None):
        given = _given(locals())
        super().__init__(params, lr=_or(lr, 1e-3), betas=_or(betas, (0.9, 0.999)),
                         eps=_or(eps, 1e-8), weight_decay=_or(weight_decay, 0.0),
                         amsgrad=_or(amsgrad, False),
                         **_torch_flags(foreach=foreach, maximize=maximize, capturable=capturable,
                                        differentiable=differentiable, fused=fused))
        self._init_extra(given, loss_scaling, max_grad_norm, accum_type=accum_type,
                         first_order_momentum_accum_type=first_order_momentum_accum_type,
                         second_order_momentum_accum_type=second_order_momentum_accum_type)

    def step(self, closure=None):
        return self._clipped_step(super().step, closure)


class AdamW(Optimizer, torch.optim.AdamW):
    def __init__(self, params, lr=None, betas=None, eps=None, weight_decay=None, amsgrad=None,
                 foreach=None, maximize=None, capturable=None, differentiable=None, fused=None,
                 loss_scaling=None, accum_type=None, first_order_momentum_accum_type=None,
                 second_order_momentum_accum_type=None, bias_correction=None, max_grad_norm=None):
        given = _given(locals())
        super().__init__(params, lr=_or(lr, 1e-3), betas=_or(betas, (0.9, 0.999)),
                         eps=_or(eps, 1e-8), weight_decay=_or(weight_decay, 1e-2),
                         amsgrad=_or(amsgrad, False),
                         **_torch_flags(foreach=foreach, maximize=maximize, capturable=capturable,
                                        differentiable=differentiable, fused=fused))
        bias_correction = bool(_or(bias_correction, True))
        self.defaults["bias_correction"] = bias_correction
        for group in self.param_groups:
            group.setdefault("bias_correction", bias_correction)
        self._init_extra(given, loss_scaling, max_grad_norm, accum_type=accum_type,
                         first_order_momentum_accum_type=first_order_momentum_accum_type,
                         second_order_momentum_accum_type=second_order_momentum_accum_type)

    def step(self, closure=None):
        """torch's AdamW step; with bias_correction=False (PopTorch's option) the eager
        reference of the compiled update (src/autodiff/optimizer.cc): p *= 1 - lr*wd;
        m = lerp(m, g, 1-b1); v = v*b2 + (1-b2)*g*g; p += -lr * m / (sqrt(v) + eps)."""
        if all(g["bias_correction"] for g in self.param_groups):
            return self._clipped_step(super().step, closure)
        return self._clipped_step(self._update_without_bias_correction, closure)

    @torch.no_grad()
    def _update_without_bias_correction(self):
        if any(group["bias_correction"] for group in self.param_groups):
            raise NotImplementedError("AdamW: param groups that mix bias_correction True and "
                                      "False")
        for group, p, state in self._stepped():
            b1, b2 = group["betas"]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            g = p.grad
            state["step"] += 1
            p.mul_(1 - group["lr"] * group["weight_decay"])
            state["exp_avg"].lerp_(g, 1 - b1)
            state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
            p.add_((state["exp_avg"] * -group["lr"]) /
                   (state["exp_avg_sq"].sqrt() + group["eps"]))


class RMSprop(Optimizer, torch.optim.RMSprop):
    """torch's RMSprop, or with use_tf_variant=True TensorFlow's (PopTorch's option, as PopART
    computes it): square_avg starts at ones, eps goes inside the square root, and with
    momentum the buffer accumulates lr * g / avg (p -= buf). step() is then the eager
    reference of the compiled update (src/autodiff/optimizer.cc), in its operation order:
    g += wd*p; sq = sq*alpha + (1-alpha)*g*g; centered: ga = lerp(ga, g, 1-alpha),
    avg = sqrt(sq - ga*ga + eps) | avg = sqrt(sq + eps); momentum: buf = buf*momentum +
    lr*(g/avg), p -= buf | p += (-lr*g)/avg."""

    def __init__(self, params, lr=None, alpha=None, eps=None, weight_decay=None, momentum=None,
                 centered=None, foreach=None, maximize=None, differentiable=None,
                 capturable=None, loss_scaling=None, accum_type=None,
                 first_order_momentum_accum_type=None, second_order_momentum_accum_type=None,
                 use_tf_variant=None, max_grad_norm=None):
        given = _given(locals())
        super().__init__(params, lr=_or(lr, 1e-2), alpha=_or(alpha, 0.99), eps=_or(eps, 1e-8),
                         weight_decay=_or(weight_decay, 0.0), momentum=_or(momentum, 0.0),
                         centered=_or(centered, False),
                         **_torch_flags(foreach=foreach, maximize=maximize,
                                        differentiable=differentiable, capturable=capturable))
        self._momentum_given = momentum is not None  # as SGD's: buffers even at 0.0
        use_tf_variant = bool(_or(use_tf_variant, False))
        self.defaults["use_tf_variant"] = use_tf_variant
        for group in self.param_groups:
            group.setdefault("use_tf_variant", use_tf_variant)
        self._init_extra(given, loss_scaling, max_grad_norm, accum_type=accum_type,
                         first_order_momentum_accum_type=first_order_momentum_accum_type,
                         second_order_momentum_accum_type=second_order_momentum_accum_type)

    def step(self, closure=None):
        variants = {bool(g["use_tf_variant"]) for g in self.param_groups}
        if len(variants) > 1:
            raise NotImplementedError("RMSprop: param groups that mix use_tf_variant True and "
                                      "False")
        if variants == {False}:
            return self._clipped_step(super().step, closure)
        return self._clipped_step(self._tf_update, closure)

    @torch.no_grad()
    def _tf_update(self):
        for group, p, state in self._stepped():
            alpha, eps, lr = group["alpha"], group["eps"], group["lr"]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["square_avg"] = torch.ones_like(p)
                if group["momentum"] > 0:
                    state["momentum_buffer"] = torch.zeros_like(p)
                if group["centered"]:
                    state["grad_avg"] = torch.zeros_like(p)
            state["step"] += 1
            g = p.grad + p * group["weight_decay"]
            sq = state["square_avg"] * alpha + ((1 - alpha) * g) * g
            state["square_avg"] = sq
            if group["centered"]:
                ga = state["grad_avg"]
                ga = ga + (1 - alpha) * (g - ga)
                state["grad_avg"] = ga
                sq = sq - ga * ga
            avg = torch.sqrt(sq + eps)
            if group["momentum"] > 0:
                buf = state["momentum_buffer"] * group["momentum"] + lr * (g / avg)
                state["momentum_buffer"] = buf
                p.copy_(p - buf)
            else:
                p.copy_(p + (-lr * g) / avg)


class LAMB(Optimizer, torch.optim.Optimizer):
    """PopTorch's LAMB (layer-wise adaptive moments, You et al. 2019). Its step() is the
    eager reference, in the operation order of the compiled update (src/autodiff/
    optimizer.cc): m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; with bias correction
    m /= 1-b1^t, v /= 1-b2^t; r = m/(sqrt(v)+eps) + wd*p; trust = min(||p||,
    max_weight_norm) / ||r|| (1 where ||p|| or ||r|| is 0); p -= lr*trust*r.
    max_weight_norm defaults to 65500 (PopTorch's: float16's largest value). A group's
    max_weight_norm of 0 (PopART's rule): where the attribute is constant (not given to the
    constructor, or markAsConstant) there is no trust ratio, the group takes Adam's step
    (Graphcore's BERT uses it for biases); where it is variable, the trust ratio is 0 and the
    group's nonzero parameters stay (PopTorch's test of max_weight_norm=0)."""

    def __init__(self, params, lr=None, betas=None, eps=None, weight_decay=None,
                 bias_correction=None, loss_scaling=None, max_weight_norm=None, accum_type=None,
                 first_order_momentum_accum_type=None, second_order_momentum_accum_type=None,
                 use_combined_accum=None, max_grad_norm=None):
        given = _given(locals())
        lr, betas, eps = _or(lr, 1e-3), tuple(_or(betas, (0.9, 0.999))), _or(eps, 1e-8)
        weight_decay = _or(weight_decay, 1e-2)
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"LAMB: invalid lr={lr}, eps={eps}, weight_decay={weight_decay} or "
                             f"betas={betas}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        bias_correction=bool(_or(bias_correction, True)),
                        max_weight_norm=float(_or(max_weight_norm, _FP16_MAX)))
        super().__init__(params, defaults)
        self._init_extra(given, loss_scaling, max_grad_norm, accum_type=accum_type,
                         first_order_momentum_accum_type=first_order_momentum_accum_type,
                         second_order_momentum_accum_type=second_order_momentum_accum_type,
                         use_combined_accum=use_combined_accum)

    @property
    def max_weight_norm(self):
        """The clip of ||p|| in the trust ratio, for every param group: as in PopTorch,
        `optimizer.max_weight_norm = x` then setOptimizer changes it (None: 65500)."""
        return self.defaults["max_weight_norm"]

    @max_weight_norm.setter
    def max_weight_norm(self, value):
        v = float(_or(value, _FP16_MAX))
        self.defaults["max_weight_norm"] = v
        for group in self.param_groups:
            group["max_weight_norm"] = v

    def step(self, closure=None):
        return self._clipped_step(self._update, closure)

    @torch.no_grad()
    def _update(self):
        for group, p, state in self._stepped():
            b1, b2 = group["betas"]
            g = p.grad
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            m = state["exp_avg"] * b1 + g * (1 - b1)
            v = state["exp_avg_sq"] * b2 + (g * g) * (1 - b2)
            state["exp_avg"], state["exp_avg_sq"] = m, v
            state["step"] += 1
            if group["bias_correction"]:
                t = state["step"]
                m, v = m / (1 - b1 ** t), v / (1 - b2 ** t)
            r = m / (torch.sqrt(v) + group["eps"]) + p * group["weight_decay"]
            p_norm = torch.sqrt((p * p).sum())
            r1 = torch.clamp(p_norm, max=group["max_weight_norm"])
            r2 = torch.sqrt((r * r).sum())
            use = (p_norm > 0) & (r2 > 0) & bool(_trust_ratio(self, group))
            trust = torch.where(use, r1 / r2, torch.ones_like(r1))
            p.copy_(p - (trust * group["lr"]) * r)

_FP16_MAX = 65500.0


def _trust_ratio(optimizer, group):
    """LAMB's trust_ratio hyperparameter for a group: 0 (Adam's step) where max_weight_norm
    is 0 and constant, as PopART builds no trust ratio then; else 1."""
    constant = optimizer.variable_attrs.isConstant("max_weight_norm")
    return 0.0 if constant and float(group["max_weight_norm"]) == 0.0 else 1.0


def describe(optimizer):
    """(kind, structural flags, per-group hyperparameters) of a torch or tilegraph optimizer."""
    if isinstance(optimizer, LAMB):
        kind = "lamb"
    elif isinstance(optimizer, torch.optim.AdamW):
        kind = "adamw"
    elif isinstance(optimizer, torch.optim.Adam):
        # torch's Adam(decoupled_weight_decay=True) is AdamW.
        decoupled = {bool(g.get("decoupled_weight_decay", False)) for g in optimizer.param_groups}
        if len(decoupled) > 1:
            raise NotImplementedError("Adam: param groups that mix decoupled_weight_decay True "
                                      "and False (one setting per optimizer)")
        kind = "adamw" if decoupled == {True} else "adam"
    elif isinstance(optimizer, torch.optim.RMSprop):
        kind = "rmsprop"
    elif isinstance(optimizer, torch.optim.SGD):
        kind = "sgd"
    else:
        raise NotImplementedError(
            f"tilegraph supports SGD, Adam, AdamW, RMSprop and LAMB; got "
            f"{type(optimizer).__name__}")
    step = inspect.unwrap(type(optimizer).step)
    if not (step.__module__ or "").startswith(("torch.optim", "tilegraph.optim")):
        # The program runs the base class's update; Python's step() never runs.
        raise NotImplementedError(
            f"{type(optimizer).__name__} overrides step() ({step.__module__}."
            f"{step.__qualname__}): tilegraph compiles {kind}'s update into the program and "
            "would not run it, so the model would train differently from eager PyTorch. Use "
            "the base optimizer, or write the change into the model")
    groups = []
    flags = dict(use_momentum=False, nesterov=False, centered=False, bias_correction=True,
                 rmsprop_tf_variant=False, amsgrad=False, maximize=False,
                 max_grad_norm=float(getattr(optimizer, "_max_grad_norm", float("inf"))))
    for g in effective_param_groups(optimizer):
        if g.get("maximize") and kind == "lamb":
            raise NotImplementedError("LAMB with maximize=True")
        flags["maximize"] |= bool(g.get("maximize", False))
        flags["amsgrad"] |= kind in ("adam", "adamw") and bool(g.get("amsgrad", False))
        h = dict(lr=float(g["lr"]), weight_decay=float(g.get("weight_decay", 0.0)))
        given = momentum_variable(optimizer)
        if kind == "sgd":
            # Without momentum eager ignores dampening (the step is the gradient itself);
            # the program's momentum buffer, there for the other groups, must do the same.
            h.update(momentum=float(g["momentum"]),
                     dampening=float(g["dampening"]) if g["momentum"] != 0 else 0.0)
            flags["use_momentum"] |= g["momentum"] != 0 or given
            flags["nesterov"] |= bool(g["nesterov"])
        elif kind == "lamb":
            h.update(beta1=float(g["betas"][0]), beta2=float(g["betas"][1]), eps=float(g["eps"]),
                     max_weight_norm=float(g["max_weight_norm"]),
                     trust_ratio=_trust_ratio(optimizer, g))
            flags["bias_correction"] = bool(g["bias_correction"])
        elif kind in ("adam", "adamw"):
            h.update(beta1=float(g["betas"][0]), beta2=float(g["betas"][1]), eps=float(g["eps"]))
            flags["bias_correction"] = bool(g.get("bias_correction", True))
        else:
            h.update(alpha=float(g["alpha"]), eps=float(g["eps"]), momentum=float(g["momentum"]))
            flags["use_momentum"] |= g["momentum"] != 0 or given
            flags["centered"] |= bool(g["centered"])
            flags["rmsprop_tf_variant"] |= bool(g.get("use_tf_variant", False))
        groups.append((list(g["params"]), h))
    corrections = {bool(g.get("bias_correction", True)) for g in optimizer.param_groups}
    if len(corrections) > 1:
        raise NotImplementedError(f"{type(optimizer).__name__}: param groups that mix "
                                  "bias_correction True and False (one setting per optimizer)")
    for flag, name in (("nesterov", "SGD"), ("centered", "RMSprop")):
        # (nesterov means nothing where a group has no momentum)
        settings = {bool(g.get(flag, False)) for g in optimizer.param_groups
                    if flag != "nesterov" or g.get("momentum", 0) != 0}
        if len(settings) > 1:
            raise NotImplementedError(f"{name}: param groups that mix {flag} True and False "
                                      "(one setting per optimizer; eager applies each group's, "
                                      "a tilegraph program one for all)")
    for flag in ("amsgrad", "maximize"):
        if len({bool(g.get(flag, False)) for g in optimizer.param_groups}) > 1:
            raise NotImplementedError(f"{type(optimizer).__name__}: param groups that mix "
                                      f"{flag} True and False (one setting per optimizer)")
    variants = {bool(g.get("use_tf_variant", False)) for g in optimizer.param_groups}
    if len(variants) > 1:
        raise NotImplementedError("RMSprop: param groups that mix use_tf_variant True and False "
                                  "(one setting per optimizer)")
    loss_scaling = getattr(optimizer, "loss_scaling", 1.0)
    return kind, flags, groups, loss_scaling


def structure(flags):
    """The part of describe()'s flags that shapes the compiled program: max_grad_norm's
    value is a runtime hyperparameter, only whether it clips at all is structural."""
    out = dict(flags)
    out["max_grad_norm"] = out.get("max_grad_norm", float("inf")) != float("inf")
    return out


def runs_on(compiled, kind, flags, groups):
    """Whether a program compiled with structure `compiled` runs an optimizer of `kind`,
    `flags`, `groups` (describe()'s) with the same mathematics: the same structure, or a
    program with momentum buffers given momentum 0 (SGD without dampening, RMSprop: the
    buffer is then the plain update), or one that clips given no clip (inf)."""
    kind0, shape0 = compiled
    shape = structure(flags)
    if shape0.get("max_grad_norm"):
        shape["max_grad_norm"] = True
    if shape0.get("use_momentum") and not shape["use_momentum"] and \
            (kind == "rmsprop" or all(h.get("dampening", 0.0) == 0.0 for _, h in groups)):
        shape["use_momentum"] = True
    return kind == kind0 and shape == shape0


_TG_DTYPE = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


def state_dtypes(optimizer):
    """The dtypes of the optimizer state of half-precision parameters, as add_training_step
    takes them (f32 unless the PopTorch arguments say otherwise; torch.optim: f32)."""
    chosen = getattr(optimizer, "state_dtypes", {})
    first = chosen.get("velocity_accum_type", chosen.get("first_order_momentum_accum_type"))
    pick = lambda d: _TG_DTYPE[d] if d is not None else "f32"  # noqa: E731
    return dict(grad_accum_dtype=pick(chosen.get("accum_type")), first_moment_dtype=pick(first),
                second_moment_dtype=pick(chosen.get("second_order_momentum_accum_type")))


# ---- descriptions for export files (JSON, no pickle) --------------------------------------
_CLASSES = {"tilegraph.SGD": SGD, "tilegraph.Adam": Adam, "tilegraph.AdamW": AdamW,
            "tilegraph.RMSprop": RMSprop, "tilegraph.LAMB": LAMB, "torch.SGD": torch.optim.SGD,
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
    attrs = getattr(optimizer, "variable_attrs", None)
    constant = sorted(a for a in attrs._allowed_attributes if attrs.isConstant(a)) \
        if attrs else []
    return dict(cls=cls, groups=groups, loss_scaling=getattr(optimizer, "loss_scaling", 1.0),
                max_grad_norm=getattr(optimizer, "max_grad_norm", None), constant_attrs=constant)


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
    if isinstance(opt, Optimizer):
        opt.loss_scaling = float(spec.get("loss_scaling", 1.0))
        constant = spec.get("constant_attrs")
        if isinstance(constant, list):  # files before it: every attribute variable
            allowed = opt.variable_attrs._allowed_attributes
            opt.variable_attrs = VariableAttributes(
                {a for a in allowed if a not in constant}, allowed)
        try:
            opt.max_grad_norm = spec.get("max_grad_norm")
        except (TypeError, ValueError) as e:
            raise ValueError(f"corrupt optimizer description ({e})") from None
    return opt
