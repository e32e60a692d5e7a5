"""What tilegraph changes in torch while it captures a model (torch.export), and why.

Each patch makes a piece of ordinary eager code traceable into one static graph with the
same values eager computes; every one is undone when capture ends (`applied`). One
registration stays: Hugging Face's cache classes as pytree nodes (`register_hf_caches`),
which the outputs of later calls are rebuilt with."""
import contextlib
import math
import operator
import sys

import torch
from torch.utils import _pytree as pytree


@contextlib.contextmanager
def applied():
    """All the patches below, for the duration of one capture."""
    register_hf_caches()
    with _static_ctc_shapes(), _causal_mask_detection_off(), _tensor_data_as_detach(), \
            _cross_map_lrn2d_functional(), _no_partial_graph_dump(), _quiet_unbacked_symbols(), \
            _one_hot_needs_num_classes(), value_checks_as_assertions(), \
            _positive_definite_check_without_branch(), _random_fill_as_randint():
        yield


@contextlib.contextmanager
def _no_partial_graph_dump():
    """torch.export prints the partial graph of a failed capture to stderr (`print(
    e.partial_fx_graph, file=sys.stderr)`): 240 KB for a torchvision detection model, ahead
    of tilegraph's error, which names the op and the line. What torch writes to stderr while
    capturing is held and written after it, without that graph; everything else (warnings)
    is kept."""
    import io
    real, held = sys.stderr, io.StringIO()
    sys.stderr = held
    try:
        yield
    except BaseException as e:
        text = held.getvalue()
        # The error itself, or the one tilegraph's message replaced (raise ... from None).
        for error in (e, e.__cause__, e.__context__):
            graph = getattr(error, "partial_fx_graph", None)
            if graph is not None:
                text = text.replace(f"{graph}\n", "")  # printed at each nested export level
        held = io.StringIO(text)
        raise
    finally:
        sys.stderr = real
        real.write(held.getvalue())


# Functions of libraries users bring whose backward is their forward's true gradient (read
# and checked against autograd of the forward), so differentiating the forward trains as
# eager does: BLOOM's GeLUFunction (the tanh GeLU; its backward is that formula's
# derivative, constants rounded as in the forward).
_EXACT_BACKWARD_FUNCTIONS = frozenset({
    "transformers.models.bloom.modeling_bloom.GeLUFunction",
})


@contextlib.contextmanager
def custom_autograd_functions():
    """Records every torch.autograd.Function defined outside torch that the model applies
    while it is captured: (class name, the innermost user / library file:line of the call).
    torch.export traces a Function's forward into the graph and drops its backward, so
    tilegraph's autodiff would differentiate the forward instead: for a straight-through
    estimator (round in the forward, identity backward), a gradient-reversal layer or a
    surrogate gradient that trains something else than eager, silently. The capture refuses
    them in training (see _capture.export) unless the class sets
    `tilegraph_differentiate_forward = True` (its backward is the forward's true gradient,
    e.g. a hand-written fused kernel), or is one of _EXACT_BACKWARD_FUNCTIONS."""
    Function = torch.autograd.Function
    original = Function.__dict__["apply"]
    used = []

    def apply(cls, *args, **kwargs):
        module = getattr(cls, "__module__", "") or ""
        own = module == "torch" or module.startswith("torch.")
        exact = getattr(cls, "tilegraph_differentiate_forward", False) or \
            f"{module}.{cls.__qualname__}" in _EXACT_BACKWARD_FUNCTIONS
        if not own and not exact:
            used.append((f"{module}.{cls.__qualname__}", _stack_user_frame()))
        return original.__get__(None, cls)(*args, **kwargs)

    Function.apply = classmethod(apply)
    try:
        yield used
    finally:
        Function.apply = original


@contextlib.contextmanager
def gradient_hooks(model):
    """Records the gradient hooks a training capture would drop: Tensor.register_hook calls
    the forward makes (a gradient reversal, scaling or clipping on an activation), and hooks
    already on the model (a parameter's register_hook or post-accumulate-grad hook, a
    module's full backward (pre-)hook, global backward hooks). torch.export keeps none of
    them, and tilegraph's autodiff differentiates the forward: such a model would train
    differently from eager, silently. Each entry says what and where; the capture refuses
    them in training (inference programs have no gradients to hook)."""
    from torch.nn.modules import module as nn_module
    found = []
    for name, p in model.named_parameters():
        if getattr(p, "_backward_hooks", None) or getattr(p, "_post_accumulate_grad_hooks", None):
            found.append(f"a gradient hook on parameter {name!r}")
    for name, m in model.named_modules():
        if m._backward_hooks or m._backward_pre_hooks:
            found.append(f"a backward hook on module {name or type(m).__name__!r}")
    if nn_module._global_backward_hooks or nn_module._global_backward_pre_hooks:
        found.append("a global module backward hook (register_module_full_backward_hook)")
    original = torch.Tensor.register_hook

    def register_hook(self, hook):
        found.append(f"Tensor.register_hook at {_stack_user_frame() or '<unknown>'}")
        return original(self, hook)

    torch.Tensor.register_hook = register_hook
    try:
        yield found
    finally:
        torch.Tensor.register_hook = original


@contextlib.contextmanager
def value_checks_as_assertions():
    """A model that checks its data in Python and raises (`if labels.max() >= vocab: raise
    ValueError(...)`, Hugging Face's CTC heads; `assert torch.isfinite(x).all()`) makes
    torch.export stop: the condition's value is the data's, which a traced graph does not
    have. While capturing, such a `bool(tensor)` is answered with the value that does not
    raise, when the statement at the caller's line is exactly that shape (an `if` whose body
    is only a `raise`, or an `assert`), and the graph gets a run-time assertion of that value
    (aten._assert_async, compiled to `assert_all`): a call whose data would have raised in
    eager fails with the check's line instead of computing on. Any other data-dependent
    `bool` (a branch that computes) still stops the capture."""
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
    original = torch.Tensor.__bool__

    def checked_bool(self):
        try:
            return original(self)
        except GuardOnDataDependentSymNode:
            frame = sys._getframe(1)
            assumed = _non_raising_value(frame.f_code.co_filename, frame.f_lineno)
            if assumed is None:
                raise
        import linecache
        where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        source = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
        truth = self if self.dtype == torch.bool else self != 0
        torch._assert_async(truth if assumed else torch.logical_not(truth),
                            f"the model's data check at {where} failed ({source}): eager "
                            "PyTorch raises there")
        return assumed

    original_item = torch.Tensor.item

    def checked_item(self):
        # `assert torch.all(x >= 0).item(), ...` (ProphetNet's label check): the value of a
        # bool tensor read with .item() in such a check, answered the same way.
        value = original_item(self)
        if self.dtype != torch.bool or not isinstance(value, torch.SymBool):
            return value
        try:
            return bool(value)
        except GuardOnDataDependentSymNode:
            # (torch-function modes may stand between the user's line and this call)
            filename, _, line = _stack_user_frame().rpartition(":")
            assumed = _non_raising_value(filename, int(line)) if filename else None
            if assumed is None:
                raise
        import linecache
        where = f"{filename}:{line}"
        source = linecache.getline(filename, int(line)).strip()
        torch._assert_async(self if assumed else torch.logical_not(self),
                            f"the model's data check at {where} failed ({source}): eager "
                            "PyTorch raises there")
        return assumed

    torch.Tensor.__bool__ = checked_bool
    torch.Tensor.item = checked_item
    try:
        yield
    finally:
        torch.Tensor.__bool__ = original
        torch.Tensor.item = original_item


def _non_raising_value(filename, lineno):
    """The value a tensor's bool must take at filename:lineno for the statement there not to
    raise: False for `if <t>: raise ...` (also `if a and <t>`, `if a or <t>`), True for
    `if not <t>: raise ...` and for `assert <t>`; None for any other statement."""
    import ast
    import linecache
    tree = _parsed(filename, "".join(linecache.getlines(filename)))
    if tree is None:
        return None
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) != lineno:
            continue
        if isinstance(node, ast.If) and not node.orelse and len(node.body) == 1 and \
                isinstance(node.body[0], ast.Raise):
            wanted = False  # the test must be false
        elif isinstance(node, ast.Assert):
            wanted = True  # the test must be true
        else:
            continue
        test = node.test
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and \
                not isinstance(test.operand, (ast.BoolOp, ast.UnaryOp)):
            return not wanted
        if isinstance(test, ast.BoolOp):
            # `a and t` / `a or t`: t is reached only while the test is still undecided, so
            # t's value decides it (for `if`, false; for `assert`, true); `a and not t`
            # (`x is not None and not torch.all(...)`): t's value is the opposite. Operands
            # that are Python bools whatever they test (`is` / `is not`, isinstance) are
            # not the tensor.
            maybe_tensor = [v for v in test.values if not _python_bool(v)]
            if len(maybe_tensor) == 1 and _negated_plain(maybe_tensor[0]):
                return not wanted
            plain = all(not isinstance(v, (ast.BoolOp, ast.UnaryOp)) for v in test.values)
            return wanted if plain else None
        if not isinstance(test, ast.UnaryOp):
            return wanted
    return None


def _python_bool(expr):
    """Whether an expression's truth is a Python bool whatever its operands: `x is None`,
    `x is not None`, isinstance / hasattr / callable, a constant."""
    import ast
    if isinstance(expr, ast.Constant):
        return True
    if isinstance(expr, ast.Compare):
        return all(isinstance(op, (ast.Is, ast.IsNot)) for op in expr.ops)
    return isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and \
        expr.func.id in ("isinstance", "hasattr", "callable")


def _negated_plain(expr):
    import ast
    return isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not) and \
        not isinstance(expr.operand, (ast.BoolOp, ast.UnaryOp))


_PARSED = {}


def _parsed(filename, text):
    import ast
    key = (filename, hash(text))
    if key not in _PARSED:
        try:
            _PARSED[key] = ast.parse(text) if text else None
        except SyntaxError:
            _PARSED[key] = None
    return _PARSED[key]


_HF_CACHES_REGISTERED = False


def register_hf_caches():
    """A Hugging Face decoder in eval mode returns its key / value cache (past_key_values: a
    DynamicCache, or an EncoderDecoderCache of two) unless called with use_cache=False;
    torch.export refuses outputs of types pytree does not know. Registered as pytree nodes
    (transformers' own registration for DynamicCache, ours for EncoderDecoderCache: its two
    caches), the cache's tensors are program outputs and come back as the same class. Only
    when transformers is already imported; once (it runs before every call is bound)."""
    global _HF_CACHES_REGISTERED
    if _HF_CACHES_REGISTERED or "transformers" not in sys.modules:
        return
    _HF_CACHES_REGISTERED = True
    import torch.utils._pytree as pytree
    try:
        from transformers.cache_utils import EncoderDecoderCache
        from transformers.integrations.executorch import register_dynamic_cache_export_support
    except ImportError:  # another transformers version: its caches stay unsupported
        return
    register_dynamic_cache_export_support()
    if EncoderDecoderCache not in pytree.SUPPORTED_NODES:
        names = ("self_attention_cache", "cross_attention_cache")
        pytree.register_pytree_node(
            EncoderDecoderCache,
            lambda cache: ([getattr(cache, n) for n in names], None),
            lambda caches, _: EncoderDecoderCache(caches[0], caches[1]),
            serialized_type_name="transformers.cache_utils.EncoderDecoderCache",
            # (torch.export needs the keyed form for a cache passed in as an input)
            flatten_with_keys_fn=lambda cache: (
                [(pytree.GetAttrKey(n), getattr(cache, n)) for n in names], None))


@contextlib.contextmanager
def _static_ctc_shapes():
    """F.ctc_loss with tensor lengths: torch's fake kernel for aten._ctc_loss.Tensor refuses
    to trace (its second result, log_alpha [B, T, 2*max(target_lengths)+1], has a
    data-dependent shape). tilegraph never uses log_alpha (its ctc_loss op recomputes the
    recursion in the backward), so while exporting, the fake kernel sizes it from the padded
    targets [B, S] instead."""
    from torch._subclasses import fake_impls
    op = torch.ops.aten._ctc_loss.Tensor
    if fake_impls._is_op_registered_to_fake_rule(op):  # someone else's rule: leave it
        yield
        return

    def fake(fake_mode, func, log_probs, targets, input_lengths, target_lengths, blank=0,
             zero_infinity=False):
        frames, batch = log_probs.shape[0], log_probs.shape[1]
        width = 2 * (targets.shape[-1] if targets.dim() == 2 else targets.shape[0]) + 1
        return log_probs.new_empty((batch,)), log_probs.new_empty((batch, frames, width))

    fake_impls.register_op_impl(op)(fake)
    try:
        yield
    finally:
        fake_impls._deregister_op_impl(op)


@contextlib.contextmanager
def _positive_definite_check_without_branch():
    """torch.distributions' symmetric and positive_definite constraints (MultivariateNormal's
    and Wishart's covariance / precision validation) return early on their data (`if not
    square_check.all(): return square_check`, the same for symmetry): branches that compute,
    which no graph holds. While capturing, squareness is decided from the shape (what it
    depends on) and positive definiteness is the branch-free `symmetric & cholesky_ex(...)
    .info == 0`, whose all() (what the distribution checks before raising) is the
    original's."""
    from torch.distributions import constraints
    patched = {constraints._Symmetric: constraints._Symmetric.check,
               constraints._PositiveDefinite: constraints._PositiveDefinite.check}

    def symmetric(self, value):
        if value.shape[-2] != value.shape[-1]:
            return torch.zeros(value.shape[:-2], dtype=torch.bool, device=value.device)
        return torch.isclose(value, value.mT, atol=1e-6).all(-2).all(-1)

    def positive_definite(self, value):
        if value.shape[-2] != value.shape[-1]:
            return symmetric(self, value)
        return symmetric(self, value) & torch.linalg.cholesky_ex(value).info.eq(0)

    constraints._Symmetric.check = symmetric
    constraints._PositiveDefinite.check = positive_definite
    try:
        yield
    finally:
        for cls, check in patched.items():
            cls.check = check


@contextlib.contextmanager
def _random_fill_as_randint():
    """Tensor.random_(from, to) does not trace (torch.export writes its `from` keyword into
    generated Python: a SyntaxError). While capturing it is the same draw spelled
    `self.copy_(torch.randint_like(self, from, to))`: integers uniform on [from, to); one
    argument is `to`; none, eager's default range [0, 2^mantissa] for floats and [0, max]
    for integers."""
    original = torch.Tensor.random_

    def random_(self, *args, generator=None, **kwargs):
        low, high = 0, None
        if len(args) == 1:
            high = args[0]
        elif len(args) >= 2:
            low, high = args[0], args[1]
        low = kwargs.get("from", low)
        high = kwargs.get("to", high)
        if high is None:
            if self.dtype.is_floating_point:
                mantissa = round(-math.log2(torch.finfo(self.dtype).eps))
                high = 2 ** (mantissa + 1) + 1
            else:
                high = torch.iinfo(self.dtype).max if self.dtype != torch.bool else 2
        extra = {} if generator is None else {"generator": generator}
        return self.copy_(torch.randint_like(self, int(low), int(high), **extra))

    torch.Tensor.random_ = random_
    try:
        yield
    finally:
        torch.Tensor.random_ = original


@contextlib.contextmanager
def _quiet_unbacked_symbols():
    """A data check that becomes a run-time assertion (value_checks_as_assertions) leaves an
    unbacked symbol in torch.export's shape environment, and torch logs a warning for each
    ("Unable to find user code corresponding to {u0}"): a torch.distributions object made in
    the forward validates its arguments that way, so a VAE printed seven of them. Those
    warnings are held back while capturing; errors still show."""
    import logging
    logger = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def _causal_mask_detection_off():
    """nn.Transformer / TransformerEncoder / Decoder compare a given mask with a causal one
    to set an is_causal hint (a branch on tensor values). The hint only picks a faster kernel
    for the same result: while capturing, a mask is taken as given (is_causal stays as the
    caller set it), so the standard tgt_mask=generate_square_subsequent_mask(n) compiles."""
    from torch.nn.modules import transformer
    detect = transformer._detect_is_causal_mask

    def as_given(mask, is_causal=None, size=None):
        return is_causal is True
    transformer._detect_is_causal_mask = as_given
    try:
        yield
    finally:
        transformer._detect_is_causal_mask = detect


@contextlib.contextmanager
def _tensor_data_as_detach():
    """`x.data` read in a forward is `x.detach()` while capturing: the same values with no
    gradient, which is what eager autograd gives. torch.export otherwise takes the new
    tensor for a constant it cannot hold ("fake tensor in the exported program constant's
    list"); torch's own test models write `weight.type_as(input.data)`. Assigning
    `x.data = y` keeps torch's meaning."""
    plain = torch._C.TensorBase.data
    torch.Tensor.data = property(lambda self: self.detach(),
                                 lambda self, value: plain.__set__(self, value))
    try:
        yield
    finally:
        del torch.Tensor.data


@contextlib.contextmanager
def _one_hot_needs_num_classes():
    """F.one_hot(x) without num_classes sizes its result by x's largest value, which a
    compiled program cannot: refused by name (PopTorch's words), not as torch.export's
    data-dependent .item()."""
    from ._blocks import UnsupportedError
    functional = torch.nn.functional
    original = functional.one_hot

    def one_hot(tensor, num_classes=-1):
        if num_classes < 0:
            raise UnsupportedError(
                "OneHot num classes must be specified and must be constant: one_hot(x) "
                "without num_classes takes its size from the data's largest value; pass "
                "num_classes=")
        return original(tensor, num_classes)
    functional.one_hot = one_hot
    try:
        yield
    finally:
        functional.one_hot = original


@contextlib.contextmanager
def _cross_map_lrn2d_functional():
    """nn.CrossMapLRN2d runs a legacy autograd.Function that fills tensors in place
    (resize_as_, select(...).add_), which torch.export cannot trace. While capturing it is
    the functional form of the same computation (cross_map_lrn2d), with its gradient from
    tilegraph's autodiff."""
    from torch.nn.modules import normalization
    legacy = normalization._cross_map_lrn2d
    normalization._cross_map_lrn2d = _FunctionalCrossMapLRN2d
    try:
        yield
    finally:
        normalization._cross_map_lrn2d = legacy


class _FunctionalCrossMapLRN2d:
    """Stands in for torch.nn.modules._functions.CrossMapLRN2d (its `apply`)."""

    @staticmethod
    def apply(input, size, alpha=1e-4, beta=0.75, k=1):
        return cross_map_lrn2d(input, size, alpha, beta, k)


def cross_map_lrn2d(input, size, alpha, beta, k):
    """output = input * (k + alpha / size * window_sum(input^2))^-beta, with the window of
    torch's legacy loop: channel c sums the squares of channels [lo(c), min(c + pre - 1,
    C - 1)], where pre = (size - 1) // 2 + 1 and the running window never drops channel 0
    (lo(c) = 0 and channels 1 .. c - pre left out once c > pre). Prefix sums over the
    channels give every window at once."""
    if input.dim() != 4:
        raise ValueError(f"CrossMapLRN2d: Expected input to be 4D, got {input.dim()}D instead.")
    channels = input.shape[1]
    pre = int((size - 1) / 2 + 1)
    square = input * input
    prefix = torch.cumsum(square, dim=1)
    top = torch.tensor([min(c + pre - 1, channels - 1) for c in range(channels)])
    window = prefix.index_select(1, top)
    dropped = [c for c in range(channels) if c > pre]
    if dropped:  # channels 1 .. c - pre: prefix[c - pre] - square[0]
        ends = torch.tensor([c - pre for c in dropped])
        removed = prefix.index_select(1, ends) - square[:, :1]
        window = torch.cat([window[:, :dropped[0]], window[:, dropped[0]:] - removed], dim=1)
    scale = window * (alpha / size) + k
    return scale.pow(-beta) * input


# Dropout in an inference program: the functions nn.Dropout* modules and models' functional
# calls reach, all (input, p=0.5, training, inplace).
_DROPOUTS = frozenset({torch.nn.functional.dropout, torch.nn.functional.dropout1d,
                       torch.nn.functional.dropout2d, torch.nn.functional.dropout3d,
                       torch.nn.functional.alpha_dropout,
                       torch.nn.functional.feature_alpha_dropout})


class _DropoutAsIdentity(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.dropped = False  # a dropout that would have dropped in eager was made identity

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _DROPOUTS:
            training = kwargs.get("training", args[2] if len(args) > 2 else True)
            p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            self.dropped |= bool(training) and p > 0
            return args[0] if args else kwargs["input"]
        if func is torch.nn.functional.scaled_dot_product_attention:
            if len(args) > 4 and args[4] > 0:
                self.dropped = True
                args = args[:4] + (0.0,) + tuple(args[5:])
            elif kwargs.get("dropout_p", 0.0) > 0:
                self.dropped = True
                kwargs = dict(kwargs, dropout_p=0.0)
        return func(*args, **kwargs)


@contextlib.contextmanager
def dropout_as_identity():
    """An inference program's dropout is the identity, whatever the module's train/eval mode:
    PopTorch's inference models run dropout as identity (PopART's inference sessions replace
    it), and PopTorch code calls inferenceModel(model) on a model still in training mode (its
    own MNIST example does) expecting plain inference. Eager PyTorch would drop at random
    there, so the first such capture warns. Training programs keep their dropout."""
    mode = _DropoutAsIdentity()
    with mode:
        yield
    if mode.dropped:
        import warnings
        warnings.warn("inferenceModel: the model applies dropout in training mode; tilegraph's "
                      "inference programs run dropout as the identity, as PopTorch's do "
                      "(eager PyTorch would drop at random: call model.eval() before "
                      "inferenceModel to make the two agree)", stacklevel=3)


class _TensorBoundSlices(torch.overrides.TorchFunctionMode):
    """`t[a:b]` whose bounds are one-element integer tensors (PopTorch's tracer turned these
    into dynamic slices): torch reads each bound with .item(), which an ahead-of-time program
    cannot. While capturing, this mode keeps, for every integer one-element tensor made by
    adding or subtracting a Python int (or cast to another integer type), the tensor it came
    from and the total offset; a
    slice whose stop is its start plus a constant becomes poptorch.dynamic_slice of that
    constant span (the start read at run time). A span that is zero, negative or not
    provably constant is refused in PopTorch's words."""

    _SHIFT = {"__add__": 1, "__radd__": 1, "add": 1, "__iadd__": 1, "__sub__": -1,
              "sub": -1, "__isub__": -1}
    _CASTS = ("to", "int", "long", "short", "type")  # integer to integer: the same value
    # Constructors whose value the forward's own constants fix (no random, no input).
    _CONSTANT_SOURCES = ("tensor", "as_tensor", "scalar_tensor")
    _KNOWN_NUMEL = 64  # values followed for tensors this small (slice bounds)
    _RANDOM = ("rand", "bernoulli", "multinomial", "normal", "poisson", "dropout", "uniform",
               "exponential", "cauchy", "geometric", "empty")

    def __init__(self):
        super().__init__()
        self.origin = {}  # id(tensor) -> (tensor, base tensor, offset from it)
        self.known = {}   # id(tensor) -> (tensor, its value): small tensors made of constants
        self.numbers = {}  # id(tensor) -> its value as a Python number (one-element integers)

    def _value(self, t):
        """The value of a tensor the forward made from constants only, else None."""
        entry = self.known.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else None

    def _follow_constants(self, func, args, kwargs, result):
        """PopTorch's tracer folded constants: `torch.sum(torch.tensor([1, 2, 3])) // 3 - 2`
        is a number there. A small tensor made by a deterministic op from such tensors (or
        from Python values by a constant constructor) is computed here on real values too,
        outside the trace, so that a slice bounded by it is static. Only tensors of static
        size are looked at (a symbolic size compared here would become a guard of the
        export)."""
        name = getattr(func, "__name__", "")
        if not isinstance(result, torch.Tensor) or any(w in name for w in self._RANDOM) or \
                name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
            return
        numel = result.numel()
        if not isinstance(numel, int) or numel > self._KNOWN_NUMEL:
            return
        leaves = [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
        if not leaves and name not in self._CONSTANT_SOURCES:
            return
        real = {id(x): self._value(x) for x in leaves}
        if any(v is None for v in real.values()):
            return
        from torch._subclasses.fake_tensor import FakeTensor
        from torch.utils._python_dispatch import _disable_current_modes
        with _disable_current_modes():  # real values, outside the trace's fake / proxy modes
            swap = lambda x: real[id(x)] if isinstance(x, torch.Tensor) else x  # noqa: E731
            try:
                value = func(*pytree.tree_map(swap, args), **pytree.tree_map(swap, kwargs))
            except Exception:  # noqa: BLE001 - not foldable: the slice takes the other paths
                return
            if not isinstance(value, torch.Tensor) or isinstance(value, FakeTensor) or \
                    value.numel() != numel:
                return
            self.known[id(result)] = (result, value)
            if numel == 1 and not value.is_floating_point():
                self.numbers[id(result)] = value.item()

    def _bound(self, t):
        entry = self.origin.get(id(t))
        return (entry[1], entry[2]) if entry is not None and entry[0] is t else (t, 0)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        self._follow_constants(func, args, kwargs, result)
        sign = self._SHIFT.get(name)
        if sign and not kwargs and len(args) == 2 and isinstance(result, torch.Tensor):
            t, c = args
            if isinstance(c, torch.Tensor) and sign > 0:
                t, c = c, t
            if isinstance(t, torch.Tensor) and isinstance(c, int) and \
                    not isinstance(c, bool) and not t.is_floating_point() and \
                    t.numel() == 1 and result.numel() == 1:
                base, offset = self._bound(t)
                self.origin[id(result)] = (result, base, offset + sign * c)
        elif name in self._CASTS and args and isinstance(args[0], torch.Tensor) and \
                isinstance(result, torch.Tensor) and _one_element(args[0]) and \
                _one_element(result) and not args[0].is_floating_point() and \
                not result.is_floating_point() and result.dtype != torch.bool:
            # e.to(torch.int32) twice is one bound: the same base and offset
            self.origin[id(result)] = (result, *self._bound(args[0]))
        return result

    def _getitem(self, t, index):
        items = index if isinstance(index, tuple) else (index,)
        if not any(isinstance(i, slice) and any(isinstance(b, torch.Tensor)
                                                for b in (i.start, i.stop))
                   for i in items):
            return None
        if not all(isinstance(i, (slice, int)) and not isinstance(i, bool) for i in items):
            return None  # with None / Ellipsis / index tensors: torch's own path
        if all(_known_value(b) for i in items if isinstance(i, slice)
               for b in (i.start, i.stop, i.step) if isinstance(b, torch.Tensor)):
            return None  # bounds made from constants (DeBERTa's torch.tensor(span)): torch's
        bounds = [b for i in items if isinstance(i, slice) for b in (i.start, i.stop, i.step)
                  if isinstance(b, torch.Tensor)]
        if all(self._value(b) is not None and id(b) in self.numbers for b in bounds):
            # every tensor bound folded from the forward's constants: a static slice
            as_int = lambda b: self.numbers[id(b)] if isinstance(b, torch.Tensor) else b  # noqa
            return t[tuple(slice(as_int(i.start), as_int(i.stop), as_int(i.step))
                           if isinstance(i, slice) else i for i in items)]
        out, dim = t, 0
        for item in items:
            if isinstance(item, int):
                out = out.select(dim, item)
                continue
            if any(isinstance(b, torch.Tensor) for b in (item.start, item.stop)):
                out = self._dynamic(out, dim, item)
            else:
                out = out[(slice(None),) * dim + (item,)]
            dim += 1
        return out

    def _dynamic(self, t, dim, item):
        from ._blocks import Error
        from .ops import dynamic_slice
        step = 1 if item.step is None else item.step
        start, stop = item.start, item.stop
        constant = isinstance(start, torch.Tensor) and isinstance(stop, torch.Tensor) and \
            self._bound(start)[0] is self._bound(stop)[0]
        if not constant or not isinstance(step, int) or step < 1:
            raise Error("The size of the sliced tensor must be a constant for each execution "
                        "of the model when running on the IPU: tilegraph slices with tensor "
                        "bounds when the end is the start plus a Python int "
                        "(t[s:s + 4]); or use poptorch.dynamic_slice")
        span = self._bound(stop)[1] - self._bound(start)[1]
        if span == 0:
            raise Error("The start and end of a slice must be different.")
        if span < 0:
            raise Error("Taking a slice of a tensor with the end less than the start is not "
                        "supported.")
        return dynamic_slice(t, dim, start, span, step)


def _one_element(t):
    """t has one element, by a size known while tracing (a symbolic size is not compared:
    that would add a guard to the export)."""
    numel = t.numel()
    return isinstance(numel, int) and numel == 1


def _known_value(t):
    """Whether the trace knows tensor t's value: a real tensor, or a fake one torch made from
    constants (torch.tensor(3) + 2 in the forward), which torch's own slicing reads."""
    from torch._subclasses.fake_tensor import FakeTensor
    return not isinstance(t, FakeTensor) or getattr(t, "constant", None) is not None


@contextlib.contextmanager
def tensor_bound_slices():
    """Slices with tensor bounds as dynamic slices, for the duration of one trace. Indexing
    is patched on the class as well: torch reads 0-d tensor bounds with .item() before any
    torch-function mode sees the indexing."""
    mode = _TensorBoundSlices()
    original = torch.Tensor.__getitem__

    def getitem(self, index):
        rewritten = mode._getitem(self, index)
        return original(self, index) if rewritten is None else rewritten
    torch.Tensor.__getitem__ = getitem
    try:
        with mode:
            yield
    finally:
        torch.Tensor.__getitem__ = original


class _BufferDecisions(torch.overrides.TorchFunctionMode):
    """Python decisions on a one-element buffer (`if self.initted:`, `if self.step == 0:`,
    `self.scale.item()`): torch.export cannot read a tensor's value while tracing. Where the
    tensor is one of the module's one-element buffers (or a comparison of one with a Python
    number, its negation, .all() / .any()), this mode answers with the buffer's value at
    capture time, as PopTorch's tracer bakes it in, and records the buffer in `decisions`
    (name -> value): the executor recompiles when the value changes, and refuses a program
    that updates such a buffer itself (the decision could change between its steps)."""

    _READS = {"__bool__": bool, "item": lambda v: v, "__int__": int, "__float__": float,
              "__index__": int}
    _COMPARISONS = {"__eq__": operator.eq, "eq": operator.eq, "__ne__": operator.ne,
                    "ne": operator.ne, "__lt__": operator.lt, "lt": operator.lt,
                    "__le__": operator.le, "le": operator.le, "__gt__": operator.gt,
                    "gt": operator.gt, "__ge__": operator.ge, "ge": operator.ge}
    _UNARY = {"logical_not": lambda v: not v, "all": bool, "any": bool,
              "__invert__": lambda v: not v if isinstance(v, bool) else ~v}

    def __init__(self, model):
        super().__init__()
        self.model = model
        # Python values, read before the trace (inside it, tensors are fake).
        self.values = {name: b.item() for name, b in model.named_buffers(remove_duplicate=False)
                       if b.numel() == 1 and not b.is_complex()}
        self.decisions = {}  # buffer name -> value the program is specialized on
        self.where = {}      # buffer name -> "path:line" of its first decision
        self.derived = {}    # id(tensor) -> (tensor, buffer name, value -> value)
        self.updated = set()  # buffers the trace has updated in place so far

    def _source(self, t):
        """(buffer name, function of its value) that tensor t stands for, or None."""
        entry = self.derived.get(id(t))
        if entry is not None and entry[0] is t:
            return entry[1], entry[2]
        for name, b in self.model.named_buffers(remove_duplicate=False):
            if b is t and name in self.values:
                return name, lambda v: v
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # (Tensor.__bool__ and .item may be value_checks_as_assertions' wrappers of them.)
        name = "__bool__" if func is torch.Tensor.__bool__ else \
            "item" if func is torch.Tensor.item else getattr(func, "__name__", "")
        watched = name in self._READS or name in self._COMPARISONS or name in self._UNARY
        in_place = name.endswith("_") and not name.startswith("__") or \
            name.startswith("__i") and name not in ("__index__", "__int__")
        source = self._source(args[0]) if (watched or in_place) and not kwargs and args and \
            isinstance(args[0], torch.Tensor) and _one_element(args[0]) else None
        if source is None:
            return func(*args, **kwargs)
        buffer, of_value = source
        if in_place:
            self.updated.add(buffer)
            return func(*args, **kwargs)
        if name in self._READS and len(args) == 1:
            if buffer in self.updated:  # its value here is not the one captured
                from ._capture import decision_on_updated_buffer
                raise decision_on_updated_buffer(buffer, _stack_user_frame())
            self.decisions.setdefault(buffer, self.values[buffer])
            self.where.setdefault(buffer, _stack_user_frame())
            return self._READS[name](of_value(self.values[buffer]))
        result = func(*args, **kwargs)
        if not isinstance(result, torch.Tensor) or not _one_element(result):
            return result
        if name in self._COMPARISONS and len(args) == 2 and \
                isinstance(args[1], (bool, int, float)):
            compare, other = self._COMPARISONS[name], args[1]
            self.derived[id(result)] = (result, buffer, lambda v: compare(of_value(v), other))
        elif name in self._UNARY and len(args) == 1:
            unary = self._UNARY[name]
            self.derived[id(result)] = (result, buffer, lambda v: unary(of_value(v)))
        return result


def _one_element(t):
    """Whether t has one element, without a guard on a size the trace computed from data."""
    n = t.numel()
    return type(n) is int and n == 1


def _stack_user_frame():
    """"path:line" of the innermost frame of the current stack in the user's code."""
    import traceback
    from ._capture import _is_user_file
    best = ""
    for frame in traceback.extract_stack():
        if _is_user_file(frame.filename):
            best = f"{frame.filename}:{frame.lineno}"
    return best


@contextlib.contextmanager
def buffer_decisions(model):
    """_BufferDecisions for the duration of one trace; yields the mode (its `decisions`)."""
    mode = _BufferDecisions(model)
    if not mode.values:
        yield mode
        return
    with mode:
        yield mode
