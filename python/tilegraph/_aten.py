"""The translation table: Core ATen ops -> tilegraph IR.

One entry per ATen overload. Each handler receives the translation context and the FX
node's arguments and returns the tilegraph value name(s) for the node's result(s). All
compiler logic (types, gradients, fusion, planning) lives in C++; a handler only maps
arguments and attributes, using the node's recorded shapes where ATen leaves them implicit.
"""
import math
import operator
import warnings

import numpy as np
import torch

aten = torch.ops.aten
TABLE = {}
_NUMPY_OF = {"f32": np.float32, "f64": np.float64}


def handles(*overloads):
    def register(fn):
        for o in overloads:
            TABLE[o] = fn
        return fn
    return register


# ---- elementwise -------------------------------------------------------------------------
def _unary(tg_op):
    # torch computes in the result dtype: exp/sqrt/sigmoid/... of an integer tensor are float.
    return lambda cx, n, x, *rest, **kw: cx.op(tg_op, [cx.cast(cx.v(x), cx.dtype_of(n))])


for _aten_op, _tg_op in [
        (aten.relu, "relu"), (aten.sigmoid, "sigmoid"), (aten.tanh, "tanh"), (aten.exp, "exp"),
        (aten.log, "log"), (aten.sqrt, "sqrt"), (aten.rsqrt, "rsqrt"), (aten.neg, "neg"),
        (aten.abs, "abs"), (aten.reciprocal, "reciprocal"), (aten.erf, "erf"), (aten.erfc, "erfc"),
        (aten.silu, "silu"), (aten.hardswish, "hardswish"), (aten.hardsigmoid, "hardsigmoid"),
        (aten.sign, "sign"), (aten.log1p, "log1p"), (aten.expm1, "expm1"), (aten.sin, "sin"),
        (aten.cos, "cos"), (aten.tan, "tan"), (aten.asin, "asin"), (aten.acos, "acos"),
        (aten.atan, "atan"), (aten.sinh, "sinh"), (aten.cosh, "cosh"), (aten.asinh, "asinh"),
        (aten.acosh, "acosh"), (aten.atanh, "atanh"), (aten.log2, "log2"),
        (aten.log10, "log10"), (aten.lgamma, "lgamma"), (aten.digamma, "digamma"),
        (aten.erfinv, "erfinv"), (aten.i0, "i0"), (aten.special_i0e, "i0e"),
        (aten.special_i1, "i1"), (aten.special_i1e, "i1e"), (aten.special_ndtri, "ndtri"),
        (aten.special_erfcx, "erfcx")]:
    TABLE[_aten_op.default] = _unary(_tg_op)


@handles(aten.neg.default)
def _neg(cx, n, x):
    if cx.dtype_of(x) == "bool":
        cx.unsupported(n, "Negation, the `-` operator, on a bool tensor is not supported (as "
                          "in eager PyTorch). Use the `~` or `logical_not()` operator instead")
    return cx.op("neg", [cx.cast(cx.v(x), cx.dtype_of(n))])


@handles(aten.sign.default)
def _sign(cx, n, x):
    if cx.dtype_of(x) == "bool":
        return cx.v(x)  # torch.sign of a bool tensor is itself
    return cx.op("sign", [cx.cast(cx.v(x), cx.dtype_of(n))])


def _not_for(cx, n, what, dtype):
    """Refused as eager refuses it (torch raises NotImplementedError; so does tilegraph's
    UnsupportedError)."""
    cx.unsupported(n, f"{what} is not implemented for {dtype} tensors (as in eager PyTorch)")


def _rounding(tg_op):
    def handler(cx, n, x):
        if cx.own_dtype(x) == "bool":
            _not_for(cx, n, tg_op, "bool")
        if cx.dtype_of(n) in _INTEGER:
            return cx.v(x)  # integers are already whole: torch returns them unchanged
        return cx.op(tg_op, [cx.v(x)])
    return handler


for _aten_op, _tg_op in [(aten.floor, "floor"), (aten.ceil, "ceil"), (aten.round, "round"),
                         (aten.trunc, "trunc")]:
    TABLE[_aten_op.default] = _rounding(_tg_op)


@handles(aten.round.decimals)
def _round_decimals(cx, n, x, decimals=0):
    scale = cx.scalar(10.0 ** decimals, n)
    scaled = cx.op("mul", [cx.v(x), scale])
    return cx.op("div", [cx.op("round", [scaled]), scale])


@handles(aten.frac.default)
def _frac(cx, n, x):
    if cx.dtype_of(x) in _INTEGER + ("bool",):
        _not_for(cx, n, "frac", "integer and bool")
    return cx.op("sub", [cx.v(x), cx.op("trunc", [cx.v(x)])])


@handles(aten.fmod.Tensor, aten.remainder.Tensor)
def _fmod_tensor(cx, n, a, b):
    a_, b_ = cx.operands(n, a, b)
    if cx.dtype_of(n) in _INTEGER:
        _check_divisor(cx, n, b)
    return cx.op("fmod" if n.target == aten.fmod.Tensor else "remainder", [a_, b_])


@handles(aten.remainder.Scalar_Tensor)
def _remainder_scalar_tensor(cx, n, a, b):
    """number % tensor (Python's %, with the divisor's sign)."""
    out = cx.dtype_of(n)
    if out in _INTEGER:
        _check_divisor(cx, n, b)
    return cx.op("remainder", [cx.scalar(a, None, out), cx.cast(cx.v(b), out)])


@handles(aten.hypot.default)
def _hypot(cx, n, a, b):
    """sqrt(a^2 + b^2) without overflow or underflow on the way: scaled by the larger
    magnitude (0 where both are 0, inf where either is infinite, as C's hypot)."""
    a_, b_ = cx.operands(n, a, b)
    dtype = cx.dtype_of(n)
    big = cx.op("maximum", [cx.op("abs", [a_]), cx.op("abs", [b_])])
    safe = cx.op("where", [cx.op("eq", [big, cx.scalar(0.0, None, dtype)]),
                           cx.scalar(1.0, None, dtype), big])
    ra, rb = cx.op("div", [a_, safe]), cx.op("div", [b_, safe])
    value = cx.op("mul", [big, cx.op("sqrt", [cx.op("add", [cx.op("mul", [ra, ra]),
                                                            cx.op("mul", [rb, rb])])])])
    infinite = cx.op("eq", [big, cx.scalar(math.inf, None, dtype)])
    return cx.op("where", [infinite, cx.scalar(math.inf, None, dtype), value])


@handles(aten.copysign.Tensor, aten.copysign.Scalar)
def _copysign(cx, n, a, b):
    """|a| with b's sign bit (-0.0 and negative NaNs count as negative)."""
    dtype = cx.dtype_of(n)
    magnitude = cx.op("abs", [cx.cast(cx.v(a), dtype)])
    sign = cx.cast(cx.v(b), dtype) if isinstance(b, torch.fx.Node) else \
        cx.scalar(b, None, dtype)
    return cx.op("where", [cx.op("signbit", [sign]), cx.op("neg", [magnitude]), magnitude])


@handles(aten.kthvalue.default)
def _kthvalue(cx, n, x, k, dim=-1, keepdim=False):
    """(values, indices) of the k-th smallest along dim, equal values resolved as eager's
    quickselect resolves them (topk's ties = "kthvalue": position k - 1 is the k-th)."""
    shape = cx.shape_of(x)
    if not shape:
        return [cx.v(x), cx.op("full", [], {"shape": [], "value": 0.0, "dtype": "dtype:i64"})]
    d = dim % len(shape)
    values, indices = cx.ops("topk", [cx.v(x)], {"k": int(k), "axis": d, "largest": 0,
                                                  "ties": "kthvalue"}, 2)
    picked = [cx.op("slice", [v], {"axis": d, "start": int(k) - 1, "end": int(k), "step": 1})
              for v in (values, indices)]
    if keepdim:
        return picked
    return [cx.op("reshape", [v], {"shape": list(o.shape)})
            for v, o in zip(picked, n.meta["val"])]


@handles(aten.atan2.default)
def _atan2(cx, n, a, b):
    a_, b_ = cx.operands(n, a, b)
    return cx.op("atan2", [a_, b_])


@handles(aten.isnan.default)
def _isnan(cx, n, x):
    return cx.op("ne", [cx.v(x), cx.v(x)])  # NaN is the one value unequal to itself


@handles(aten.isinf.default)
def _isinf(cx, n, x):
    if cx.dtype_of(x) not in ("f32", "f64", "f16", "bf16"):
        return cx.op("ne", [cx.v(x), cx.v(x)])  # integers are never infinite: all False
    return cx.op("eq", [cx.op("abs", [cx.v(x)]), cx.scalar(math.inf, x)])


_INTEGER = ("i64", "i32", "i16", "i8", "u8")


def _check_divisor(cx, n, divisor):
    """Integer division by zero fails the step, as torch raises ("ZeroDivisionError") instead
    of dividing (C++ would give an undefined value). `divisor` is an FX node or a number."""
    value = cx.v(divisor) if isinstance(divisor, torch.fx.Node) else cx.scalar(divisor, None,
                                                                                 "i64")
    zero = cx.scalar(0, None, cx.dtype_of(divisor) if isinstance(divisor, torch.fx.Node)
                     else "i64")
    cx.op("assert_all", [cx.op("ne", [value, zero])],
          {"message": "ZeroDivisionError", "runtime_error": 1})


@handles(aten.div.Tensor_mode, aten.div.Scalar_mode)
def _div_mode(cx, n, a, b, rounding_mode=None):
    """a / b rounded by `rounding_mode` ("trunc", "floor" or None). Integer operands divide
    in f64 (exact below 2**53) and round back, giving torch's integer division, and fail on a
    zero divisor as torch does. Floor division follows torch's rule (from fmod, so that
    1 // 0.1 is 9 and inf // 1 is NaN), not floor(a / b)."""
    out = cx.dtype_of(n)
    compute = "f64" if out in _INTEGER else out
    if out in _INTEGER and rounding_mode in ("trunc", "floor"):
        _check_divisor(cx, n, b)

    def operand(x):
        return cx.cast(cx.v(x), compute) if isinstance(x, torch.fx.Node) else \
            cx.scalar(x, None, compute)
    a_, b_ = operand(a), operand(b)
    q = cx.op("div", [a_, b_])
    if rounding_mode == "trunc":
        q = cx.op("trunc", [q])
    elif rounding_mode == "floor":
        q = _floor_division(cx, a_, b_, q, compute)
    return cx.cast(q, out)


def _floor_division(cx, a, b, quotient, dtype):
    """torch's floor division of floats (c10's div_floor_floating): the quotient of a - fmod(a,
    b) by b, one less where fmod's sign differs from b's, rounded to the nearest whole
    number below; a zero result carries the sign of a / b; a zero divisor gives a / b."""
    def k(v):
        return cx.scalar(v, None, dtype)
    mod = cx.op("fmod", [a, b])
    div = cx.op("div", [cx.op("sub", [a, mod]), b])
    signs_differ = cx.op("ne", [cx.op("lt", [b, k(0)]), cx.op("lt", [mod, k(0)])])
    adjust = cx.op("logical_and", [cx.op("ne", [mod, k(0)]), signs_differ])
    div = cx.op("where", [adjust, cx.op("sub", [div, k(1)]), div])
    floor = cx.op("floor", [div])
    floor = cx.op("where", [cx.op("gt", [cx.op("sub", [div, floor]), k(0.5)]),
                            cx.op("add", [floor, k(1)]), floor])
    negative = cx.op("lt", [cx.op("div", [k(1), quotient]), k(0)])  # -0.0 counts as negative
    signed_zero = cx.op("where", [negative, cx.op("neg", [k(0)]), k(0)])
    result = cx.op("where", [cx.op("ne", [div, k(0)]), floor, signed_zero])
    return cx.op("where", [cx.op("eq", [b, k(0)]), quotient, result])


def _as_bool(cx, n, x):
    """x != 0 for a non-bool tensor (torch's logical ops accept any dtype); a Python number
    (bool_tensor + True) as a bool constant."""
    if not isinstance(x, torch.fx.Node):
        return cx.scalar(bool(x), None, "bool")
    value = cx.v(x)
    if cx.dtype_of(x) == "bool":
        return value
    return cx.op("ne", [value, cx.scalar(0, x)])


@handles(aten.logical_not.default)
def _logical_not(cx, n, x):
    return cx.op("logical_not", [_as_bool(cx, n, x)])


@handles(aten.bitwise_not.default)
def _bitwise_not(cx, n, x):
    return cx.op("bitwise_not", [cx.v(x)])


@handles(aten.gelu.default)
def _gelu(cx, n, x, approximate="none"):
    return cx.op("gelu", [cx.v(x)], {"approximate": approximate})


# torch's arithmetic on bools: a sum or maximum is their `or`, a product or minimum their `and`.
_BOOL_ARITHMETIC = {"add": "logical_or", "maximum": "logical_or", "mul": "logical_and",
                    "minimum": "logical_and"}


def _binary(tg_op):
    def handler(cx, n, a, b, alpha=1):
        if tg_op == "sub" and cx.dtype_of(n) == "bool":
            cx.unsupported(n, "Subtraction, the `-` operator, with two bool tensors is not "
                              "supported (as in eager PyTorch). Use the `^` or `logical_xor()` "
                              "operator instead")
        if cx.dtype_of(n) == "bool" and tg_op in _BOOL_ARITHMETIC and alpha == 1:
            return cx.op(_BOOL_ARITHMETIC[tg_op], [_as_bool(cx, n, a), _as_bool(cx, n, b)])
        a_, b_ = cx.operands(n, a, b)
        if alpha != 1:
            b_ = cx.op("mul", [b_, cx.scalar(alpha, n)])
        return cx.op(tg_op, [a_, b_])
    return handler


for _name, _tg_op in [("add", "add"), ("sub", "sub"), ("mul", "mul"), ("maximum", "maximum"),
                      ("minimum", "minimum"), ("eq", "eq"), ("ne", "ne"), ("lt", "lt"),
                      ("le", "le"), ("gt", "gt"), ("ge", "ge")]:
    for _ov in ("Tensor", "Scalar", "default"):
        if hasattr(getattr(aten, _name), _ov):
            TABLE[getattr(getattr(aten, _name), _ov)] = _binary(_tg_op)


def _logical(tg_op):
    def handler(cx, n, a, b):
        return cx.op(tg_op, [_as_bool(cx, n, a), _as_bool(cx, n, b)])
    return handler


def _bitwise(tg_op):
    def handler(cx, n, a, b):
        if cx.dtype_of(n) not in ("bool", "i32", "i64"):
            cx.unsupported(n, f"{tg_op} on {cx.dtype_of(n)} tensors (integers and bools are)")
        a_, b_ = cx.operands(n, a, b)
        return cx.op(tg_op, [a_, b_])
    return handler


@handles(aten.logical_xor.default)
def _logical_xor(cx, n, a, b):
    return cx.op("ne", [_as_bool(cx, n, a), _as_bool(cx, n, b)])


for _name, _tg_op in [("logical_and", "logical_and"), ("logical_or", "logical_or")]:
    TABLE[getattr(aten, _name).default] = _logical(_tg_op)
for _name in ("bitwise_and", "bitwise_or", "bitwise_xor"):
    for _ov in ("Tensor", "Scalar"):
        TABLE[getattr(getattr(aten, _name), _ov)] = _bitwise(_name)


def _shift(tg_op):
    def handler(cx, n, a, b):
        if cx.dtype_of(n) not in ("i32", "i64"):
            cx.unsupported(n, f"{tg_op} on {cx.dtype_of(n)} tensors (integers are)")
        return cx.op(tg_op, list(cx.operands(n, a, b)))
    return handler


for _name in ("bitwise_left_shift", "bitwise_right_shift"):
    for _ov in ("Tensor", "Tensor_Scalar", "Scalar_Tensor"):
        if hasattr(getattr(aten, _name), _ov):
            TABLE[getattr(getattr(aten, _name), _ov)] = _shift(_name)
TABLE[aten.__lshift__.Scalar] = TABLE[aten.__lshift__.Tensor] = _shift("bitwise_left_shift")
TABLE[aten.gcd.default] = _shift("gcd")
TABLE[aten.lcm.default] = _shift("lcm")
TABLE[aten.__rshift__.Scalar] = TABLE[aten.__rshift__.Tensor] = _shift("bitwise_right_shift")


@handles(aten.div.Tensor, aten.div.Scalar)
def _div(cx, n, a, b):
    a_, b_ = cx.operands(n, a, b)
    return cx.op("div", [a_, b_])


@handles(aten.rsub.Scalar, aten.rsub.Tensor)
def _rsub(cx, n, a, b, alpha=1):
    a_, b_ = cx.operands(n, a, b)
    if alpha != 1:
        a_ = cx.op("mul", [a_, cx.scalar(alpha, n)])
    return cx.op("sub", [b_, a_])


@handles(aten.pow.Tensor_Scalar)
def _pow_scalar(cx, n, x, exponent):
    out = cx.dtype_of(n)
    if out in _INTEGER:
        if exponent < 0:
            cx.unsupported(n, "Integers to negative integer powers are not allowed (as torch "
                              "raises)")
        y = cx.op("pow_scalar", [cx.cast(cx.v(x), "f64")], {"exponent": float(exponent)})
        return cx.cast(y, out)
    return cx.op("pow_scalar", [cx.cast(cx.v(x), out)], {"exponent": float(exponent)})


@handles(aten.pow.Tensor_Tensor, aten.pow.Scalar)
def _pow(cx, n, a, b):
    """Integer powers are computed in f64 (exact below 2**53; torch's wrap past 2**63 is not
    reproduced), a negative exponent as torch's integer power defines it. A bool to a bool
    power is refused, as eager refuses it (bool_tensor ** True, which eager computes, is
    rewritten before translation: _capture._bool_powers_of_bools)."""
    if all((cx.own_dtype(v) if isinstance(v, torch.fx.Node) else type(v).__name__) == "bool"
           for v in (a, b)):
        _not_for(cx, n, "pow", "bool")
    out = cx.dtype_of(n)
    if out in _INTEGER:
        def f64(x):
            return cx.cast(cx.v(x), "f64") if isinstance(x, torch.fx.Node) else \
                cx.scalar(x, None, "f64")

        def k(v):
            return cx.scalar(v, None, "f64")
        base, exponent = f64(a), f64(b)
        power = cx.op("pow", [base, exponent])
        # A negative exponent: 1 for a base of 1, +-1 for -1 (by the exponent's parity), else
        # 0 (0 too: C's 1 / 0 is not an integer).
        odd = cx.op("ne", [cx.op("fmod", [exponent, k(2)]), k(0)])
        minus_one = cx.op("where", [odd, k(-1), k(1)])
        negative = cx.op("where", [cx.op("eq", [base, k(1)]), k(1),
                                   cx.op("where", [cx.op("eq", [base, k(-1)]), minus_one, k(0)])])
        power = cx.op("where", [cx.op("lt", [exponent, k(0)]), negative, power])
        return cx.cast(power, out)
    return cx.op("pow", list(cx.operands(n, a, b)))


@handles(aten.clamp.default)
def _clamp(cx, n, x, min=None, max=None):
    attrs = {}
    if min is not None:
        attrs["min"] = float(min)
    if max is not None:
        attrs["max"] = float(max)
    # clamp promotes with its bounds: an integer tensor clamped to 0.5 is float.
    return cx.op("clamp", [cx.cast(cx.v(x), cx.dtype_of(n))], attrs)


@handles(aten.clamp.Tensor)
def _clamp_tensor(cx, n, x, min=None, max=None):
    out = cx.dtype_of(n)
    y = cx.cast(cx.v(x), out)
    if min is not None:
        y = cx.op("maximum", [y, cx.cast(cx.v(min), out)])
    if max is not None:
        y = cx.op("minimum", [y, cx.cast(cx.v(max), out)])
    return y


@handles(aten.hardtanh.default)
def _hardtanh(cx, n, x, min_val=-1.0, max_val=1.0):
    return cx.op("clamp", [cx.v(x)], {"min": float(min_val), "max": float(max_val)})


def _mod_scalar(tg_op):
    def handler(cx, n, x, divisor):
        if isinstance(divisor, torch.fx.Node):
            cx.unsupported(n, f"{n.target} by a tensor (only by a number)")
        if cx.dtype_of(n) in _INTEGER:
            _check_divisor(cx, n, divisor)
        return cx.op(tg_op, [cx.cast(cx.v(x), cx.dtype_of(n))], {"divisor": float(divisor)})
    return handler


TABLE[aten.fmod.Scalar] = _mod_scalar("fmod_scalar")
TABLE[aten.remainder.Scalar] = _mod_scalar("remainder_scalar")


@handles(aten.constant_pad_nd.default)
def _constant_pad_nd(cx, n, x, pad, value=0):
    """torch's pad list runs from the last dimension backwards: (left, right, top, ...)."""
    rank = len(cx.shape_of(x))
    before, after = [0] * rank, [0] * rank
    for k in range(len(pad) // 2):
        before[rank - 1 - k], after[rank - 1 - k] = int(pad[2 * k]), int(pad[2 * k + 1])
    return cx.op("pad", [cx.v(x)], {"before": before, "after": after, "value": float(value)})


@handles(aten.leaky_relu.default)
def _leaky_relu(cx, n, x, negative_slope=0.01):
    return cx.op("leaky_relu", [cx.v(x)], {"negative_slope": float(negative_slope)})


@handles(aten.elu.default)  # selu and celu decompose to it
def _elu(cx, n, x, alpha=1.0, scale=1.0, input_scale=1.0):
    return cx.op("elu", [cx.v(x)], {"alpha": float(alpha), "scale": float(scale),
                                    "input_scale": float(input_scale)})


@handles(aten.rrelu_with_noise_functional.default)
def _rrelu(cx, n, x, noise, lower=0.125, upper=1.0 / 3.0, training=False, generator=None):
    """RReLU. Evaluation: a leaky ReLU with the mean slope, the noise passed through.
    Training: each negative element scaled by its own slope drawn from U[lower, upper)
    (tilegraph's Philox stream, not torch's bits); the noise output holds the slopes (1
    where x >= 0), as torch's does, and the gradient is the slope."""
    if not training:
        slope = (float(lower) + float(upper)) / 2
        return [cx.op("leaky_relu", [cx.v(x)], {"negative_slope": slope}), cx.v(noise)]
    if generator is not None:
        cx.unsupported(n, "rrelu with an explicit generator")
    dtype = cx.dtype_of(x)
    u = cx.cast(cx.op("uniform", [], {"shape": cx.shape_of(x), "dtype": "dtype:f32"}), dtype)
    slope = cx.op("add", [cx.op("mul", [u, cx.scalar(float(upper) - float(lower), x)]),
                          cx.scalar(float(lower), x)])
    x_ = cx.v(x)
    factor = cx.op("where", [cx.op("ge", [x_, cx.scalar(0.0, x)]), cx.scalar(1.0, x), slope])
    return [cx.op("mul", [x_, factor]), factor]


# Checks torch's own kernels make and raise a RuntimeError on, which their decompositions
# leave out: capture adds them back as aten._assert_async with the kernel's message
# (_capture._loss_range_checks), and they fail the call with a RuntimeError as eager does.
KERNEL_CHECK_MESSAGES = frozenset((
    "all elements of input should be between 0 and 1",
    "all elements of target should be between 0 and 1"))


@handles(aten._assert_async.msg)
def _assert_async(cx, n, condition, message):
    """A data check torch exports (one_hot's index range): fails the step with torch's
    message when false, instead of computing on bad data."""
    attrs = {"message": str(message)}
    if message in KERNEL_CHECK_MESSAGES:
        attrs["runtime_error"] = 1
    cx.op("assert_all", [_as_bool(cx, n, condition)], attrs)
    return None


@handles(aten.where.self)
def _where(cx, n, c, a, b):
    a_, b_ = cx.operands(n, a, b)
    return cx.op("where", [cx.v(c), a_, b_])


@handles(aten._to_copy.default, aten.to.dtype,
         # (left by PyTorch's decompositions of some half ops: torch.renorm in f16 / bf16)
         torch.ops.prims.convert_element_type.default)
def _to_copy(cx, n, x, *args, **kw):
    return cx.cast(cx.v(x), cx.dtype_of(n))


@handles(aten._assert_tensor_metadata.default)
def _assert_metadata(cx, n, *args, **kw):
    """A shape/dtype assertion torch.export leaves behind (e.g. for .float()): no value."""
    return None


def _checkpoint(cx, n, x):
    return cx.op("checkpoint", [cx.v(x)])


def _available_memory(cx, n, x, proportion):
    """set_available_memory: a hint on the dense op producing x (ops/memory_hint.h)."""
    value = cx.v(x)
    if not cx.g.hint_available_memory(value, float(proportion)):
        warnings.warn(f"{cx.source or '<unknown>'}: set_available_memory applies to the output "
                      "of a matmul or convolution; this tensor is not one, so the hint has no "
                      "effect", stacklevel=2)
    return value


def register_tilegraph_ops():
    """tilegraph's own torch ops (recomputationCheckpoint's, set_available_memory's), once
    torch knows them."""
    from . import _blocks, _poptorch_ops, _recurrent  # defines torch.ops.tilegraph.*
    _poptorch_ops.register(TABLE)
    _recurrent.register(TABLE)
    TABLE[torch.ops.tilegraph.checkpoint.default] = _checkpoint
    TABLE[torch.ops.tilegraph.available_memory.default] = _available_memory


@handles(aten.clone.default, aten.alias.default, aten.lift_fresh_copy.default,
         aten.contiguous.default)
def _identity(cx, n, x, *args, **kw):
    return cx.v(x)


@handles(aten.detach.default)
def _detach(cx, n, x):
    """x.detach(): the same values, no gradient through them."""
    return cx.op("stop_gradient", [cx.v(x)])


# ---- shapes ------------------------------------------------------------------------------
@handles(aten.view.default, aten._unsafe_view.default, aten.reshape.default,
         aten.squeeze.dims, aten.squeeze.dim, aten.squeeze.default, aten.unsqueeze.default,
         aten.flatten.using_ints)
def _reshape(cx, n, x, *args, **kw):
    if list(cx.shape_of(n)) == list(cx.shape_of(x)):
        # A view to the shape it has (torch's bmm decomposition writes them): no node, so
        # that a matmul's bias add or activation is its next node and fuses into it.
        return cx.v(x)
    return cx.op("reshape", [cx.v(x)], {"shape": cx.shape_of(n)})


@handles(aten.permute.default)
def _permute(cx, n, x, dims):
    return cx.op("permute", [cx.v(x)], {"perm": list(dims)})


@handles(aten.t.default)
def _t(cx, n, x):
    return cx.op("permute", [cx.v(x)], {"perm": [1, 0]})


@handles(aten.transpose.int)
def _transpose(cx, n, x, d0, d1):
    rank = len(cx.shape_of(n))
    perm = list(range(rank))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return cx.op("permute", [cx.v(x)], {"perm": perm})


@handles(aten.expand.default)
def _expand(cx, n, x, *args, **kw):
    return cx.op("expand", [cx.v(x)], {"shape": cx.shape_of(n)})


@handles(aten.slice.Tensor)
def _slice(cx, n, x, dim=0, start=None, end=None, step=1):
    big = 2 ** 62
    return cx.op("slice", [cx.v(x)], {"axis": dim, "start": 0 if start is None else start,
                                       "end": big if end is None else min(end, big),
                                       "step": step})


@handles(aten.select.int)
def _select(cx, n, x, dim, index):
    size = cx.shape_of(n.args[0])[dim]
    index = index + size if index < 0 else index
    s = cx.op("slice", [cx.v(x)], {"axis": dim, "start": index, "end": index + 1, "step": 1})
    return cx.op("reshape", [s], {"shape": cx.shape_of(n)})


@handles(aten.copy.default)
def _copy(cx, n, x, src, non_blocking=False):
    """copy(x, src): src broadcast to x's shape, in x's dtype (the functional form of
    x.copy_(src))."""
    value = cx.cast(cx.v(src), cx.dtype_of(n))
    return cx.op("expand", [value], {"shape": cx.shape_of(n)})


def _gather_constant(cx, n, x, flat_index, shape):
    """x's elements (row-major) at the constant `flat_index` positions, as `shape`: an
    index_select of the flattened x (differentiable: its gradient scatter-adds)."""
    flat = cx.op("reshape", [cx.v(x)], {"shape": [int(np.prod(cx.shape_of(x), dtype=np.int64))]})
    index = cx.g.add_constant(np.ascontiguousarray(flat_index.reshape(-1), dtype=np.int64))
    picked = cx.op("index_select", [flat, index], {"axis": 0})
    return cx.op("reshape", [picked], {"shape": list(shape)})


@handles(aten.as_strided.default)
def _as_strided(cx, n, x, size, stride, storage_offset=None):
    """A strided view of x's storage. The compiled program holds x row-major, so the view
    becomes a gather with a constant index: each viewed element's storage position, mapped
    back to x's element through x's own strides (x may itself be a view)."""
    flat_index = _strided_elements(cx, n, x, size, stride, storage_offset)
    return _gather_constant(cx, n, x, flat_index, [int(v) for v in size])


@handles(aten.as_strided_scatter.default)
def _as_strided_scatter(cx, n, x, src, size, stride, storage_offset=None):
    """x with the elements of its strided view (as_strided) replaced by src's: an update
    through an as_strided view. The positions are constants, so each written element of x
    takes src's element that writes it last (a constant index_select of src), the others
    keep x's."""
    flat_index = _strided_elements(cx, n, x, size, stride, storage_offset).reshape(-1)
    count = int(np.prod(cx.shape_of(x), dtype=np.int64))
    source = np.full(count, -1, dtype=np.int64)
    source[flat_index] = np.arange(flat_index.size, dtype=np.int64)  # (numpy: last wins)
    written = source >= 0
    flat_x = cx.op("reshape", [cx.v(x)], {"shape": [count]})
    flat_src = cx.op("reshape", [cx.cast(cx.v(src), cx.dtype_of(n))],
                     {"shape": [int(flat_index.size)]})
    picked = cx.op("index_select", [flat_src, cx.g.add_constant(np.where(written, source, 0))],
                   {"axis": 0})
    out = cx.op("where", [cx.g.add_constant(written), picked, flat_x])
    return cx.op("reshape", [out], {"shape": cx.shape_of(n)})


def _strided_elements(cx, n, x, size, stride, storage_offset):
    """For a strided view of x's storage: the element of x (row-major) at each viewed
    position, as an array of the view's shape."""
    meta = cx.meta(x)
    in_shape = [int(d) for d in meta.shape]
    in_index = np.arange(int(np.prod(in_shape, dtype=np.int64)), dtype=np.int64)
    positions = np.full_like(in_index, int(meta.storage_offset()))
    rest = in_index.copy()
    for d in range(len(in_shape) - 1, -1, -1):
        positions += (rest % in_shape[d]) * int(meta.stride()[d])
        rest //= in_shape[d]
    element_at = np.full(int(positions.max(initial=0)) + 1, -1, dtype=np.int64)
    element_at[positions] = in_index  # storage position -> x's element (-1: none)
    offset = int(meta.storage_offset()) if storage_offset is None else int(storage_offset)
    wanted = np.full([int(v) for v in size], offset, dtype=np.int64)
    for d, (extent, step) in enumerate(zip(size, stride)):
        shape = [1] * len(size)
        shape[d] = int(extent)
        wanted = wanted + np.arange(int(extent), dtype=np.int64).reshape(shape) * int(step)
    inside = (wanted >= 0) & (wanted < element_at.size)
    flat_index = np.where(inside, element_at[np.where(inside, wanted, 0)], -1)
    if (flat_index < 0).any():
        cx.unsupported(n, "as_strided reading storage outside its input's elements")
    return flat_index


@handles(aten.unfold.default)
def _unfold(cx, n, x, dimension, size, step):
    """Tensor.unfold: the windows of `size` elements every `step` along `dimension`, the
    window as a new last dim (torch's view) - a gather with a constant index."""
    shape = cx.shape_of(x)
    if not shape:
        cx.unsupported(n, "unfold of a 0-d tensor")
    d = dimension % len(shape)
    index = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)
    windows = np.lib.stride_tricks.sliding_window_view(index, int(size), axis=d)
    windows = np.take(windows, np.arange(0, windows.shape[d], int(step)), axis=d)
    return _gather_constant(cx, n, x, windows, list(windows.shape))


@handles(aten.repeat.default)
def _repeat(cx, n, x, repeats):
    """x tiled `repeats` times per dim: reshape to [1, s0, 1, s1, ...], expand to
    [r0, s0, r1, s1, ...], reshape to [r0*s0, r1*s1, ...] (expand's gradient sums)."""
    shape = [1] * (len(repeats) - len(cx.shape_of(x))) + cx.shape_of(x)
    interleaved = [v for s in shape for v in (1, s)]
    tiled = [v for r, s in zip(repeats, shape) for v in (int(r), s)]
    value = cx.op("reshape", [cx.v(x)], {"shape": interleaved})
    value = cx.op("expand", [value], {"shape": tiled})
    return cx.op("reshape", [value], {"shape": cx.shape_of(n)})


@handles(aten.flip.default)
def _flip(cx, n, x, dims):
    """x reversed along `dims`: an index_select with a constant reversed index per dim."""
    value = cx.v(x)
    shape = cx.shape_of(x)
    for d in sorted({d % len(shape) for d in dims}):
        index = cx.g.add_constant(np.arange(shape[d] - 1, -1, -1, dtype=np.int64))
        value = cx.op("index_select", [value, index], {"axis": d})
    return value


@handles(aten.select_scatter.default)
def _select_scatter(cx, n, x, src, dim, index):
    """x with src written at index `index` of dim: slice_scatter of src with dim restored."""
    shape = cx.shape_of(x)
    dim = dim % len(shape)
    index = index % shape[dim]
    src_shape = shape[:dim] + [1] + shape[dim + 1:]
    widened = cx.op("reshape", [cx.v(src)], {"shape": src_shape})
    return _slice_scatter_value(cx, n, x, widened, src_shape, dim, index, index + 1, 1)


@handles(aten.fill.Scalar)
def _fill(cx, n, x, value):
    return cx.op("expand", [cx.scalar(value, None, cx.dtype_of(n))],
                 {"shape": cx.shape_of(n)})


@handles(aten.diagonal.default)
def _diagonal(cx, n, x, offset=0, dim1=0, dim2=1):
    """The diagonal view as a constant-index gather (row-major positions of the elements)."""
    shape = cx.shape_of(x)
    rank = len(shape)
    dim1, dim2 = dim1 % rank, dim2 % rank
    strides = [int(np.prod(shape[d + 1:], dtype=np.int64)) for d in range(rank)]
    rest = [d for d in range(rank) if d not in (dim1, dim2)]
    length = max(0, min(shape[dim1] - max(-offset, 0), shape[dim2] - max(offset, 0)))
    index = np.zeros([shape[d] for d in rest] + [length], dtype=np.int64)
    for k, d in enumerate(rest):
        grid = [1] * (len(rest) + 1)
        grid[k] = shape[d]
        index += np.arange(shape[d], dtype=np.int64).reshape(grid) * strides[d]
    diag = np.arange(length, dtype=np.int64)
    index += (diag + max(-offset, 0)) * strides[dim1] + (diag + max(offset, 0)) * strides[dim2]
    return _gather_constant(cx, n, x, index, cx.shape_of(n))


def _index_pad(cx, n, x, pads, mode):
    """Reflection / replication padding: an index_select per padded dim with a constant
    index (pads as torch gives them: last dim first, (before, after) pairs)."""
    value = cx.v(x)
    shape = cx.shape_of(x)
    for k in range(len(pads) // 2):
        d = len(shape) - 1 - k
        before, after = pads[2 * k], pads[2 * k + 1]
        positions = np.arange(-before, shape[d] + after)
        if mode == "reflect":
            period = 2 * (shape[d] - 1)
            folded = np.mod(positions, period) if period else np.zeros_like(positions)
            positions = np.where(folded < shape[d], folded, period - folded)
        else:
            positions = np.clip(positions, 0, shape[d] - 1)
        index = cx.g.add_constant(np.ascontiguousarray(positions, dtype=np.int64))
        value = cx.op("index_select", [value, index], {"axis": d})
    return value


@handles(aten.reflection_pad1d.default, aten.reflection_pad2d.default,
         aten.reflection_pad3d.default)
def _reflection_pad(cx, n, x, padding):
    return _index_pad(cx, n, x, list(padding), "reflect")


@handles(aten.replication_pad1d.default, aten.replication_pad2d.default,
         aten.replication_pad3d.default)
def _replication_pad(cx, n, x, padding):
    return _index_pad(cx, n, x, list(padding), "replicate")


def _source_scale(in_size, out_size, align_corners, scale):
    """torch's area_pixel_compute_scale: input positions per output position."""
    if align_corners:
        return (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    return 1.0 / scale if scale is not None and scale > 0 else in_size / out_size


@handles(aten.upsample_nearest2d.vec)
def _upsample_nearest(cx, n, x, output_size, scale_factors):
    """Nearest: output row i reads input row floor(i * scale) (torch's "nearest"), an
    index_select per spatial dim (its gradient scatter-adds)."""
    shape, out = cx.shape_of(x), cx.shape_of(n)
    value = cx.v(x)
    for k, d in enumerate((2, 3)):
        scale = _source_scale(shape[d], out[d], False,
                              scale_factors[k] if scale_factors else None)
        positions = np.minimum(np.floor(np.arange(out[d]) * scale).astype(np.int64),
                               shape[d] - 1)
        index = cx.g.add_constant(np.ascontiguousarray(positions))
        value = cx.op("index_select", [value, index], {"axis": d})
    return value


@handles(aten.upsample_bilinear2d.vec)
def _upsample_bilinear(cx, n, x, output_size, align_corners, scale_factors):
    """Bilinear, separably: along each spatial dim, the two neighbouring rows (constant
    indices) mixed with constant weights, with torch's source-index rule."""
    shape, out = cx.shape_of(x), cx.shape_of(n)
    value = cx.v(x)
    dtype = cx.dtype_of(n)
    for k, d in enumerate((2, 3)):
        scale = _source_scale(shape[d], out[d], align_corners,
                              scale_factors[k] if scale_factors else None)
        i = np.arange(out[d], dtype=np.float64)
        src = i * scale if align_corners else np.maximum((i + 0.5) * scale - 0.5, 0.0)
        low = np.minimum(np.floor(src).astype(np.int64), shape[d] - 1)
        high = np.minimum(low + 1, shape[d] - 1)
        frac = (src - low).astype(_NUMPY_OF[dtype])
        weight_shape = [1] * len(shape)
        weight_shape[d] = out[d]
        lo = cx.op("index_select", [value, cx.g.add_constant(low)], {"axis": d})
        hi = cx.op("index_select", [value, cx.g.add_constant(high)], {"axis": d})
        w = cx.g.add_constant(np.ascontiguousarray(frac.reshape(weight_shape)))
        # lo + (hi - lo) * w, as torch's kernel mixes the two neighbours
        value = cx.op("add", [lo, cx.op("mul", [cx.op("sub", [hi, lo]), w])])
    return value


@handles(aten.slice_scatter.default)
def _slice_scatter(cx, n, x, src, dim=0, start=None, end=None, step=1):
    """x with src written into x[start:end:step] along dim: the written positions take
    src's elements (gathered by a constant index), the others keep x's (where)."""
    shape = cx.shape_of(x)
    dim = dim % len(shape)
    start, end, _ = slice(start, end, step).indices(shape[dim])
    return _slice_scatter_value(cx, n, x, cx.v(src), cx.shape_of(src), dim, start, end, step)


def _slice_scatter_value(cx, n, x, src_value, src_shape, dim, start, end, step):
    shape = cx.shape_of(x)
    length = shape[dim]
    positions = np.arange(length)
    written = (positions >= start) & (positions < end) & ((positions - start) % step == 0)
    if not written.any():  # an empty slice (x[2:2] = v, swin3d's zero shifts): x as it is
        return cx.cast(cx.v(x), cx.dtype_of(n))
    src_index = np.clip((positions - start) // step, 0, max(src_shape[dim] - 1, 0))
    index = cx.g.add_constant(np.ascontiguousarray(src_index, dtype=np.int64))
    placed = cx.op("index_select", [cx.cast(src_value, cx.dtype_of(n)), index], {"axis": dim})
    mask_shape = [1] * len(shape)
    mask_shape[dim] = length
    mask = cx.g.add_constant(np.ascontiguousarray(written.reshape(mask_shape)))
    return cx.op("where", [mask, placed, cx.cast(cx.v(x), cx.dtype_of(n))])


@handles(aten.prod.default, aten.prod.dim_int)
def _prod(cx, n, x, *args, **kwargs):
    """torch.prod over everything, or over one dim (keepdim restores it); integer and bool
    inputs multiply as int64, as torch promotes them."""
    value = cx.cast(cx.v(x), cx.dtype_of(n))
    if n.target == aten.prod.default:
        if not cx.shape_of(x):
            return value
        flat = cx.op("reshape", [value], {"shape": [_numel(cx.shape_of(x))]})
        return cx.op("prod", [flat], {"axis": 0})
    dim = args[0] if args else kwargs["dim"]
    if not cx.shape_of(x):
        return value
    result = cx.op("prod", [value], {"axis": dim})
    return cx.op("reshape", [result], {"shape": cx.shape_of(n)})


@handles(aten.cumsum.default)
def _cumsum(cx, n, x, dim, dtype=None):
    """torch promotes integer inputs to int64 (or casts to `dtype`); the node's dtype."""
    return cx.op("cumsum", [cx.cast(cx.v(x), cx.dtype_of(n))], {"axis": dim})


@handles(aten.cat.default)
def _cat(cx, n, xs, dim=0):
    # cat promotes: cat([f32, i64]) is f32. torch skips 1-D empty tensors whatever the rank
    # of the others (a legacy rule; HF's KV caches start as torch.tensor([])).
    rank = len(cx.shape_of(n))
    xs = [x for x in xs if not (rank != 1 and cx.shape_of(x) == [0])]
    if len(xs) == 1:
        return cx.cast(cx.v(xs[0]), cx.dtype_of(n))
    return cx.op("cat", [cx.cast(cx.v(x), cx.dtype_of(n)) for x in xs], {"axis": dim})


@handles(aten.split_with_sizes.default, aten.split.Tensor)
def _split(cx, n, x, sizes, dim=0):
    total = cx.shape_of(n.args[0])[dim]
    if isinstance(sizes, int):
        sizes = [min(sizes, total - s) for s in range(0, total, sizes)]
    outs, start = [], 0
    for size in sizes:
        outs.append(cx.op("slice", [cx.v(x)], {"axis": dim, "start": start,
                                                "end": start + size, "step": 1}))
        start += size
    return outs


# ---- matmul, conv, pooling ---------------------------------------------------------------
_SAME_SHAPE_VIEWS = (aten.view.default, aten._unsafe_view.default, aten.reshape.default)


def _broadcast_source(cx, arg):
    """t, where a matmul operand is expand(t) (through views that keep its shape) and the
    expand leaves t's two matrix dims as they are: matmul broadcasts batch dims itself, so
    t serves without the expanded copy. torch decomposes a 3-D input times a 2-D weight
    (nn.MultiheadAttention's in-projection, F.linear on a transposed input) into
    bmm(x, expand(w)); materialized, that copy was [seq, E, 3E] per attention layer (a
    constant in inference: 17 GiB for torchvision's ViT-B/16 at 224x224). None otherwise."""
    node = arg
    while (isinstance(node, torch.fx.Node) and node.target in _SAME_SHAPE_VIEWS
           and isinstance(node.args[0], torch.fx.Node)
           and cx.shape_of(node.args[0]) == cx.shape_of(node)):
        node = node.args[0]
    if not (isinstance(node, torch.fx.Node) and node.target == aten.expand.default):
        return None
    source = node.args[0]
    if not isinstance(source, torch.fx.Node):
        return None
    src_shape, out_shape = cx.shape_of(source), cx.shape_of(node)
    if len(src_shape) < 2 or list(src_shape[-2:]) != list(out_shape[-2:]):
        return None
    return source


@handles(aten.mm.default, aten.bmm.default, aten.matmul.default)
def _mm(cx, n, a, b):
    """Integer matrices multiply in f64 (exact while every sum stays below 2**53)."""
    operands = [_broadcast_source(cx, x) or x for x in (a, b)]
    out = cx.dtype_of(n)
    if out in _INTEGER:
        return cx.cast(cx.op("matmul", [cx.cast(cx.v(x), "f64") for x in operands]), out)
    return cx.op("matmul", [cx.v(x) for x in operands])


@handles(aten.addmm.default)
def _addmm(cx, n, bias, a, b, beta=1, alpha=1):
    y = cx.op("matmul", [cx.v(a), cx.v(b)])
    if alpha != 1:
        y = cx.op("mul", [y, cx.scalar(alpha, n)])
    bias_ = cx.v(bias)
    if beta != 1:
        bias_ = cx.op("mul", [bias_, cx.scalar(beta, n)])
    return cx.op("add", [y, bias_])


@handles(aten.convolution.default)
def _convolution(cx, n, x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    rank = len(cx.shape_of(n))
    # One value for every spatial dim (padding="valid" exports as [0]), as torch reads it.
    stride, padding, dilation = (list(v) * (rank - 2) if len(v) == 1 else list(v)
                                 for v in (stride, padding, dilation))
    if rank == 5:
        from ._aten_spatial import conv3d, conv_transpose3d
        y = (conv_transpose3d if transposed else conv3d)(cx, n, x, w, stride, padding,
                                                          dilation, groups)
    elif rank not in (3, 4):
        cx.unsupported(n, "convolution of rank other than 1-D, 2-D or 3-D")
    else:
        y = _conv_1d_2d(cx, n, x, w, stride, padding, dilation, transposed, groups)
    if b is None:
        return y
    bias = cx.op("reshape", [cx.v(b)], {"shape": [1, cx.shape_of(b)[0]] + [1] * (rank - 2)})
    return cx.op("add", [y, bias])


def _conv_1d_2d(cx, n, x, w, stride, padding, dilation, transposed, groups):
    rank = len(cx.shape_of(n))
    x_, w_ = cx.v(x), cx.v(w)
    stride, padding, dilation = list(stride), list(padding), list(dilation)
    out_shape = cx.shape_of(n)
    if rank == 3:  # conv1d [N, C, L] as conv2d over [N, C, 1, L]
        xs, ws = cx.shape_of(x), cx.shape_of(w)
        x_ = cx.op("reshape", [x_], {"shape": [xs[0], xs[1], 1, xs[2]]})
        w_ = cx.op("reshape", [w_], {"shape": [ws[0], ws[1], 1, ws[2]]})
        stride, padding, dilation = [1] + stride, [0] + padding, [1] + dilation
        out_shape = [out_shape[0], out_shape[1], 1, out_shape[2]]
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    if transposed:
        y = transposed_conv2d(cx, x_, w_, attrs, out_shape)
    else:
        y = cx.op("conv2d", [x_, w_], attrs)
    if rank == 3:
        y = cx.op("reshape", [y], {"shape": cx.shape_of(n)})
    return y


def transposed_conv2d(cx, x, w, attrs, out_shape):
    """ConvTranspose2d: the adjoint of conv2d in its input, whose weight layout
    [C_in, C_out / groups, kh, kw] is conv2d's [O, C / groups, ...] read the other way, at the
    output size `out_shape` (output_padding lengthens it). conv2d_backward_input takes the
    sizes a convolution maps back onto x's (output_padding < stride); torch allows it up to
    the dilation too: then the whole unpadded result is computed, the padding cropped, and
    the positions past every tap's reach are zeros."""
    in_sizes, kernel = cx.g.type_of(x)[1][2:], cx.g.type_of(w)[1][2:]
    full = [(in_sizes[i] - 1) * attrs["stride"][i] + attrs["dilation"][i] * (kernel[i] - 1) + 1
            for i in range(2)]  # the result before cropping the padding
    cropped = [full[i] - 2 * attrs["padding"][i] for i in range(2)]
    if all(out_shape[2 + i] - cropped[i] < attrs["stride"][i] for i in range(2)):
        return cx.op("conv2d_backward_input", [x, w], {**attrs, "input_shape": list(out_shape)})
    y = cx.op("conv2d_backward_input", [x, w], {**attrs, "padding": [0, 0],
                                                "input_shape": list(out_shape[:2]) + full})
    for i in range(2):
        start = attrs["padding"][i]
        end = min(full[i], start + out_shape[2 + i])
        y = cx.op("slice", [y], {"axis": 2 + i, "start": start, "end": end, "step": 1})
        if start + out_shape[2 + i] > end:
            after = [0, 0, 0, 0]
            after[2 + i] = start + out_shape[2 + i] - end
            y = cx.op("pad", [y], {"before": [0, 0, 0, 0], "after": after, "value": 0.0})
    return y


@handles(aten.max_pool2d_with_indices.default)
def _max_pool(cx, n, x, kernel_size, stride=(), padding=(0, 0), dilation=(1, 1),
              ceil_mode=False):
    dtype = cx.dtype_of(x)
    exact = dtype not in ("f32", "f64", "f16", "bf16")  # integers: maxima of f64, exactly
    y = cx.op("max_pool2d", [cx.cast(cx.v(x), "f64") if exact else cx.v(x)], {
        "kernel_size": _pair(kernel_size), "stride": _pair(stride) if stride else [],
        "padding": _pair(padding), "dilation": _pair(dilation), "ceil_mode": ceil_mode})
    if exact:
        y = cx.cast(y, dtype)
    if not any(u.target is operator.getitem and u.args[1] == 1 for u in n.users):
        return [y, cx.unavailable(n, "max_pool2d indices")]  # (not asked for: not built)
    from ._aten_spatial import max_pool_indices
    return [y, max_pool_indices(cx, n, x, _pair(kernel_size),
                                 _pair(stride) if stride else _pair(kernel_size),
                                 _pair(padding), _pair(dilation))]


@handles(aten.avg_pool2d.default)
def _avg_pool(cx, n, x, kernel_size, stride=(), padding=(0, 0), ceil_mode=False,
              count_include_pad=True, divisor_override=None):
    return cx.op("avg_pool2d", [cx.v(x)], {
        "kernel_size": _pair(kernel_size), "stride": _pair(stride) if stride else [],
        "padding": _pair(padding), "ceil_mode": ceil_mode,
        "count_include_pad": count_include_pad, "divisor_override": divisor_override or 0})


@handles(aten._adaptive_avg_pool2d.default, aten.adaptive_avg_pool2d.default)
def _adaptive_avg_pool(cx, n, x, output_size):
    return cx.op("adaptive_avg_pool2d", [cx.v(x)], {"output_size": _pair(output_size)})


def _pair(v):
    return list(v) * 2 if len(v) == 1 else list(v) if not isinstance(v, int) else [v, v]


# ---- normalization, softmax, dropout -----------------------------------------------------
@handles(aten._native_batch_norm_legit_functional.default)
def _batch_norm_train(cx, n, x, w, b, running_mean, running_var, training, momentum, eps):
    c = cx.shape_of(n.args[0])[1]
    w_, b_ = cx.affine(w, b, c, n)
    if not training:
        y = cx.op("batch_norm_inference", [cx.v(x), w_, b_, cx.v(running_mean),
                                           cx.v(running_var)], {"eps": eps})
        return [y, _no_saved_stat(cx, x), _no_saved_stat(cx, x), cx.v(running_mean),
                cx.v(running_var)]
    y, mean, invstd, var = cx.ops("batch_norm_train", [cx.v(x), w_, b_], {"eps": eps}, 4)
    shape = cx.shape_of(n.args[0])
    count = 1
    for i, d in enumerate(shape):
        if i != 1:
            count *= d
    # torch: running = momentum * batch_stat + (1 - momentum) * running (variance unbiased).
    m = cx.scalar(momentum, n.args[0])
    keep = cx.scalar(1.0 - momentum, n.args[0])
    new_mean = cx.op("add", [cx.op("mul", [mean, m]), cx.op("mul", [cx.v(running_mean), keep])])
    unbiased = cx.op("mul", [var, cx.scalar(count / max(count - 1, 1), n.args[0])])
    new_var = cx.op("add", [cx.op("mul", [unbiased, m]), cx.op("mul", [cx.v(running_var), keep])])
    return [y, mean, invstd, new_mean, new_var]


@handles(aten._native_batch_norm_legit.no_stats)
def _batch_norm_no_stats(cx, n, x, w, b, training, momentum, eps):
    """track_running_stats=False: batch statistics in training and in eval alike."""
    c = cx.shape_of(n.args[0])[1]
    w_, b_ = cx.affine(w, b, c, n)
    y, mean, invstd, _ = cx.ops("batch_norm_train", [cx.v(x), w_, b_], {"eps": eps}, 4)
    return [y, mean, invstd]


@handles(aten._native_batch_norm_legit_no_training.default)
def _batch_norm_eval(cx, n, x, w, b, running_mean, running_var, momentum, eps):
    c = cx.shape_of(n.args[0])[1]
    w_, b_ = cx.affine(w, b, c, n)
    y = cx.op("batch_norm_inference", [cx.v(x), w_, b_, cx.v(running_mean), cx.v(running_var)],
              {"eps": eps})
    return [y, _no_saved_stat(cx, x), _no_saved_stat(cx, x)]


def _no_saved_stat(cx, x):
    """The saved mean / invstd of a batch norm in eval mode: eager returns empty tensors."""
    return cx.op("full", [], {"shape": [0], "value": 0.0, "dtype": "dtype:" + cx.dtype_of(x)})


@handles(aten.native_layer_norm.default)
def _layer_norm(cx, n, x, normalized_shape, w, b, eps):
    k = len(normalized_shape)
    w_, b_ = cx.affine(w, b, list(normalized_shape), n)
    y, mean, rstd = cx.ops("layer_norm", [cx.v(x), w_, b_],
                           {"normalized_ndim": k, "eps": eps}, 3)
    stat_shape = list(cx.shape_of(n.args[0])[:-k]) + [1] * k
    return [y, cx.op("reshape", [mean], {"shape": stat_shape}),
            cx.op("reshape", [rstd], {"shape": stat_shape})]


@handles(aten.native_group_norm.default)
def _group_norm(cx, n, x, w, b, batch, channels, spatial, groups, eps):
    """Group norm as a layer norm over [N, G, C/G * spatial] (unit scale), then the
    per-channel affine: the existing layer_norm kernel and its gradient do the work."""
    shape = cx.shape_of(n.args[0])
    inner = channels // groups * spatial
    dtype = cx.dtype_of(n.args[0])
    grouped = cx.op("reshape", [cx.v(x)], {"shape": [batch, groups, inner]})
    ones = cx.g.add_constant(np.ones([inner], dtype=np.dtype(_np_dtype(dtype))))
    zeros = cx.g.add_constant(np.zeros([inner], dtype=np.dtype(_np_dtype(dtype))))
    y, mean, rstd = cx.ops("layer_norm", [grouped, ones, zeros],
                           {"normalized_ndim": 1, "eps": eps}, 3)
    y = cx.op("reshape", [y], {"shape": shape})
    per_channel = [channels] + [1] * (len(shape) - 2)
    if w is not None:
        y = cx.op("mul", [y, cx.op("reshape", [cx.v(w)], {"shape": per_channel})])
    if b is not None:
        y = cx.op("add", [y, cx.op("reshape", [cx.v(b)], {"shape": per_channel})])
    return [y, cx.op("reshape", [mean], {"shape": [batch, groups]}),
            cx.op("reshape", [rstd], {"shape": [batch, groups]})]


def _np_dtype(tg):
    return {"f32": "float32", "f64": "float64", "f16": "float16"}[tg]


@handles(aten._softmax.default)
def _softmax(cx, n, x, dim, half_to_float=False):
    return cx.op("softmax", [cx.v(x)], {"axis": dim})


@handles(aten._log_softmax.default)
def _log_softmax(cx, n, x, dim, half_to_float=False):
    return cx.op("log_softmax", [cx.v(x)], {"axis": dim})


@handles(aten.native_dropout.default)
def _dropout(cx, n, x, p, train):
    if not train or p == 0:
        return [cx.v(x), cx.unavailable(n, "dropout mask")]
    y, mask = cx.ops("dropout", [cx.v(x)], {"p": float(p)}, 2)
    return [y, cx.op("ne", [mask, cx.scalar(0.0, n.args[0])])]


def _draws(cx, n, normal):
    """Draws of tilegraph's Philox stream (keyed by seed, step and element) of the node's
    shape and dtype: torch.randn / rand / *_like inside a forward (not torch's bits)."""
    out = cx.dtype_of(n)
    compute = out if out in ("f32", "f64") else "f32"
    value = cx.op("normal" if normal else "uniform", [],
                  {"shape": cx.shape_of(n), "dtype": "dtype:" + compute})
    return cx.cast(value, out)


@handles(aten.randn.default, aten.rand.default)
def _random_fill(cx, n, size, dtype=None, layout=None, device=None, pin_memory=None,
                 generator=None):
    if generator is not None:
        cx.unsupported(n, "random numbers from an explicit generator")
    return _draws(cx, n, n.target == aten.randn.default)


@handles(aten.randint.default, aten.randint.low, aten.randint_like.default,
         aten.randint_like.low_dtype)
def _randint(cx, n, *args, dtype=None, layout=None, device=None, pin_memory=None,
             generator=None, memory_format=None):
    """Integers uniform in [low, high): floor(u * (high - low)) + low for u of tilegraph's
    uniform draws in [0, 1) (in f64, exact for ranges below 2**53)."""
    if generator is not None:
        cx.unsupported(n, "random numbers from an explicit generator")
    if n.target in (aten.randint.default, aten.randint_like.default):
        low, high = 0, args[1] if n.target == aten.randint_like.default else args[0]
    else:
        low, high = args[1:3] if n.target == aten.randint_like.low_dtype else args[0:2]
    if any(isinstance(v, torch.fx.Node) for v in (low, high)):
        cx.unsupported(n, "randint with tensor bounds")
    u = cx.op("uniform", [], {"shape": cx.shape_of(n), "dtype": "dtype:f64"})
    value = cx.op("floor", [cx.op("mul", [u, cx.scalar(float(high - low), None, "f64")])])
    value = cx.op("add", [value, cx.scalar(float(low), None, "f64")])
    return cx.cast(value, cx.dtype_of(n))


@handles(aten.randn_like.default, aten.rand_like.default)
def _random_like(cx, n, x, dtype=None, layout=None, device=None, pin_memory=None,
                 memory_format=None):
    return _draws(cx, n, n.target == aten.randn_like.default)


def _scaled_draws(cx, n, normal, scale, shift):
    """draws * scale + shift (scale, shift: Python numbers or FX nodes broadcast to n)."""
    value = _draws(cx, n, normal)

    def operand(v):
        return cx.cast(cx.v(v), cx.dtype_of(n)) if isinstance(v, torch.fx.Node) else \
            cx.scalar(float(v), n)
    if not (isinstance(scale, (int, float)) and scale == 1):
        value = cx.op("mul", [value, operand(scale)])
    if not (isinstance(shift, (int, float)) and shift == 0):
        value = cx.op("add", [value, operand(shift)])
    return value


def _no_generator(cx, n, generator):
    if generator is not None:
        cx.unsupported(n, "random numbers from an explicit generator")


@handles(aten.normal_functional.default)
def _normal_fill(cx, n, x, mean=0.0, std=1.0, generator=None):
    """x.normal_(mean, std): N(mean, std^2) draws of x's shape (tilegraph's Philox stream)."""
    _no_generator(cx, n, generator)
    return _scaled_draws(cx, n, True, std, mean)


@handles(aten.normal.float_float, aten.normal.Tensor_float, aten.normal.float_Tensor,
         aten.normal.Tensor_Tensor)
def _normal(cx, n, mean, std, *args, generator=None, **kw):
    """torch.normal(mean, std[, size]): mean and std numbers or tensors."""
    _no_generator(cx, n, generator)
    return _scaled_draws(cx, n, True, std, mean)


@handles(aten.uniform.default)
def _uniform_fill(cx, n, x, low=0.0, high=1.0, generator=None):
    """x.uniform_(low, high): U[low, high) draws of x's shape."""
    _no_generator(cx, n, generator)
    return _scaled_draws(cx, n, False, float(high) - float(low), low)


@handles(aten.exponential.default)
def _exponential_fill(cx, n, x, lambd=1.0, generator=None):
    """x.exponential_(lambd): -log(1 - U) / lambd, U uniform on [0, 1)."""
    _no_generator(cx, n, generator)
    u = _draws(cx, n, False)
    tail = cx.op("log", [cx.op("sub", [cx.scalar(1.0, n), u])])
    return cx.op("mul", [tail, cx.scalar(-1.0 / float(lambd), n)])


@handles(aten.geometric.default)
def _geometric_fill(cx, n, x, p, generator=None):
    """x.geometric_(p): trials to the first success, ceil(log(1 - U) / log(1 - p)) (>= 1),
    torch's inversion."""
    _no_generator(cx, n, generator)
    tail = cx.op("log", [cx.op("sub", [cx.scalar(1.0, n), _draws(cx, n, False)])])
    trials = cx.op("ceil", [cx.op("mul", [tail, cx.scalar(1.0 / math.log1p(-float(p)), n)])])
    return cx.op("maximum", [trials, cx.scalar(1.0, n)])  # (U = 0 gives 0 trials otherwise)


@handles(aten.log_normal.default)
def _log_normal_fill(cx, n, x, mean=1.0, std=2.0, generator=None):
    """x.log_normal_(mean, std): exp of N(mean, std^2) draws."""
    _no_generator(cx, n, generator)
    return cx.op("exp", [_scaled_draws(cx, n, True, std, mean)])


@handles(aten.cauchy.default)
def _cauchy_fill(cx, n, x, median=0.0, sigma=1.0, generator=None):
    """x.cauchy_(median, sigma): median + sigma tan(pi (U - 1/2)), torch's inversion."""
    _no_generator(cx, n, generator)
    angle = cx.op("mul", [cx.op("sub", [_draws(cx, n, False), cx.scalar(0.5, n)]),
                          cx.scalar(math.pi, n)])
    return cx.op("add", [cx.op("mul", [cx.op("tan", [angle]), cx.scalar(float(sigma), n)]),
                         cx.scalar(float(median), n)])


def _eager_raises(cx, n, message):
    """A call eager PyTorch refuses (a RuntimeError from its kernel) for a reason known at
    compile time: refused there, at the user's line, with torch's message (tilegraph.Error
    is a RuntimeError)."""
    from ._blocks import Error
    raise Error(f"{cx.source or '<unknown>'}: {message} ({n.target}; eager PyTorch raises "
                "this too)")


_TORCH_TYPE_NAME = {"i64": "Long", "i32": "Int", "i16": "Short", "i8": "Char", "u8": "Byte",
                    "bool": "Bool"}


@handles(aten.multinomial.default)
def _multinomial(cx, n, probs, num_samples, replacement=False, generator=None):
    """torch.multinomial of non-negative weights (1-D [K] or 2-D [R, K], not normalized),
    int64 indices [num_samples] / [R, num_samples], from tilegraph's Philox stream (not
    torch's bits). As torch does it: without replacement (or one sample), the exponential
    race, topk of w / q with q ~ Exp(1) (Gumbel top-k: the same law as drawing one by one
    without replacement); with replacement, the inverse CDF: each uniform u * sum(w) is
    placed in the running sum of w by a binary search (log2 K gathers), so a zero-weight
    category is never drawn. Computed in f64. Eager's data checks (no negative, infinite or
    NaN weight, a positive sum per row) are run-time assertions with its messages."""
    _no_generator(cx, n, generator)
    shape = cx.shape_of(probs)
    own = cx.own_dtype(probs)
    if own not in ("f32", "f64", "f16", "bf16"):
        _eager_raises(cx, n, "multinomial only supports floating-point dtypes for input, "
                             f"got: {_TORCH_TYPE_NAME.get(own, own)}")
    count, categories = int(num_samples), shape[-1]
    if count <= 0:
        _eager_raises(cx, n, "cannot sample n_sample <= 0 samples")
    if not replacement and count > categories:
        _eager_raises(cx, n, "cannot sample n_sample > prob_dist.size(-1) samples without "
                             "replacement")
    out_shape = cx.shape_of(n)
    if _numel(out_shape) == 0:
        return cx.op("full", [], {"shape": out_shape, "value": 0.0, "dtype": "dtype:i64"})
    if categories == 0:
        _eager_raises(cx, n, "invalid multinomial distribution (sum of probabilities <= 0)")

    def f64(v):
        return cx.scalar(v, None, "f64")

    def check(condition, message):
        cx.op("assert_all", [condition], {"message": message, "runtime_error": 1})
    w = cx.cast(cx.v(probs), "f64")
    if not replacement or count == 1:
        check(cx.op("logical_and", [cx.op("ge", [w, f64(0.0)]),
                                    cx.op("lt", [w, f64(math.inf)])]),
              "probability tensor contains either `inf`, `nan` or element < 0")
        total = cx.op("sum", [w], {"axes": [-1], "keepdim": False})
        check(cx.op("gt", [total, f64(0.0)]),
              "invalid multinomial distribution (sum of probabilities <= 0)")
        u = cx.op("uniform", [], {"shape": shape, "dtype": "dtype:f64"})
        q = cx.op("neg", [cx.op("log1p", [cx.op("neg", [u])])])  # Exp(1), in [0, inf)
        keys = cx.op("div", [w, cx.op("maximum", [q, f64(1e-300)])])
        return cx.ops("topk", [keys], {"k": count, "axis": -1, "largest": 1}, 2)[1]
    check(cx.op("ge", [w, f64(0.0)]),  # NaN too, as torch's kernel reports it
          "invalid multinomial distribution (encountering probability entry < 0)")
    check(cx.op("ne", [w, f64(math.inf)]),
          "invalid multinomial distribution (encountering probability entry = infinity or NaN)")
    running = cx.op("cumsum", [w], {"axis": -1})
    total = cx.op("slice", [running], {"axis": len(shape) - 1, "start": categories - 1,
                                       "end": categories, "step": 1})
    check(cx.op("gt", [total, f64(0.0)]),
          "invalid multinomial distribution (sum of probabilities <= 0)")
    target = cx.op("mul", [cx.op("uniform", [], {"shape": out_shape, "dtype": "dtype:f64"}),
                           total])

    def i64(v):
        return cx.scalar(v, None, "i64")
    # The number of running sums <= target (the drawn index), by a branchless binary search.
    position = cx.op("full", [], {"shape": out_shape, "value": 0.0, "dtype": "dtype:i64"})
    step = 1 << (categories.bit_length() - 1)
    while step:
        candidate = cx.op("add", [position, i64(step)])
        index = cx.op("sub", [cx.op("minimum", [candidate, i64(categories)]), i64(1)])
        below = cx.op("le", [cx.op("gather", [running, index], {"axis": -1}), target])
        take = cx.op("logical_and", [cx.op("le", [candidate, i64(categories)]), below])
        position = cx.op("where", [take, candidate, position])
        step >>= 1
    return cx.op("minimum", [position, i64(categories - 1)])


@handles(aten.bernoulli.p)
def _bernoulli(cx, n, x, p=0.5, generator=None):
    """Bernoulli(p) draws of x's shape (x's values are ignored, as in torch): uniform < p.
    The draws come from tilegraph's Philox stream, so they are not torch's bits."""
    if generator is not None:
        cx.unsupported(n, "bernoulli with an explicit generator")
    u = cx.op("uniform", [], {"shape": cx.shape_of(n), "dtype": "dtype:f32"})
    return cx.cast(cx.op("lt", [u, cx.scalar(float(p), None, "f32")]), cx.dtype_of(n))


# ---- reductions --------------------------------------------------------------------------
def _axes(dims):
    return [] if dims is None else [dims] if isinstance(dims, int) else list(dims)


@handles(aten.sum.dim_IntList, aten.sum.default)
def _sum(cx, n, x, dims=None, keepdim=False, dtype=None):
    x_ = cx.v(x)
    if dtype is not None or cx.dtype_of(n) != cx.dtype_of(n.args[0]):
        x_ = cx.cast(x_, cx.dtype_of(n))
    return cx.op("sum", [x_], {"axes": _axes(dims), "keepdim": keepdim})


@handles(aten._trilinear.default)
def _trilinear(cx, n, i1, i2, i3, expand1, expand2, expand3, sumdim, unroll_dim=1):
    """torch's _trilinear (nn.Bilinear: x1^T W x2 + b): each input gets size-1 dims at its
    `expand` positions, the three are multiplied with broadcasting and summed over sumdim."""
    def expanded(t, dims):
        shape = list(cx.shape_of(t))
        for d in sorted(dims):
            shape.insert(d, 1)
        return cx.op("reshape", [cx.v(t)], {"shape": shape})
    product = cx.op("mul", [cx.op("mul", [expanded(i1, expand1), expanded(i2, expand2)]),
                            expanded(i3, expand3)])
    return cx.op("sum", [product], {"axes": sorted(sumdim), "keepdim": False}) \
        if sumdim else product


@handles(aten.mean.dim, aten.mean.default)
def _mean(cx, n, x, dims=None, keepdim=False, dtype=None):
    return cx.op("mean", [cx.cast(cx.v(x), cx.dtype_of(n))],
                 {"axes": _axes(dims), "keepdim": keepdim})


@handles(aten.amax.default)
def _amax(cx, n, x, dims=(), keepdim=False):
    return cx.op("amax", [cx.v(x)], {"axes": _axes(dims), "keepdim": keepdim})


@handles(aten.max.default)
def _max_all(cx, n, x):
    return cx.op("amax", [cx.v(x)], {"axes": [], "keepdim": False})


@handles(aten.amin.default)
def _amin(cx, n, x, dims=(), keepdim=False):
    """min = -max(-x) (the gradient, like amax's, is split evenly among ties)."""
    negated = cx.op("neg", [cx.v(x)])
    return cx.op("neg", [cx.op("amax", [negated], {"axes": _axes(dims), "keepdim": keepdim})])


@handles(aten.min.default)
def _min_all(cx, n, x):
    return _amin(cx, n, x)


@handles(aten.max.dim)
def _max_dim(cx, n, x, dim, keepdim=False):
    """(values, indices) along dim: argmax (the first index of the maximum) and the values
    gathered at it, so that a gradient goes to that one index, as torch's does (amax's
    splits it between tied maxima)."""
    return _selected_along(cx, n, x, _ordering_key(cx, x), dim, keepdim)


@handles(aten.min.dim)
def _min_dim(cx, n, x, dim, keepdim=False):
    return _selected_along(cx, n, x, cx.op("neg", [_ordering_key(cx, x)]), dim, keepdim)


def _ordering_key(cx, x):
    """x in a dtype argmax orders (bool, small integers and half types widened exactly)."""
    dtype = cx.dtype_of(x)
    if dtype in ("f32", "f64", "i32", "i64"):
        return cx.v(x)
    return cx.cast(cx.v(x), "f32" if dtype in ("f16", "bf16") else "i32")


def _selected_along(cx, n, x, key, dim, keepdim):
    """x's values where `key` is largest along dim, and their indices (max.dim / min.dim)."""
    if len(cx.shape_of(x)) == 0:  # a 0-d tensor: itself, at index 0
        return [cx.v(x), cx.op("argmax", [key], {"axis": dim, "keepdim": keepdim})]
    index = cx.op("argmax", [key], {"axis": dim, "keepdim": True})
    values = cx.op("gather", [cx.v(x), index], {"axis": dim})
    if keepdim:
        return [values, index]
    values_shape, index_shape = (list(v.shape) for v in n.meta["val"])
    return [cx.op("reshape", [values], {"shape": values_shape}),
            cx.op("reshape", [index], {"shape": index_shape})]


@handles(aten.argmin.default)
def _argmin(cx, n, x, dim=None, keepdim=False):
    """argmax of -x: the first index of the minimum, as torch's argmin."""
    return _argmax_of(cx, n, cx.op("neg", [_ordering_key(cx, x)]), cx.shape_of(x), dim, keepdim)


@handles(aten.var.correction)
def _var(cx, n, x, dims=None, correction=None, keepdim=False):
    correction = 1 if correction is None else correction
    if correction == int(correction):
        return cx.op("var", [cx.v(x)], {"axes": _axes(dims), "correction": int(correction),
                                         "keepdim": keepdim})
    # A fractional correction: the biased variance times count / (count - correction).
    shape = cx.shape_of(n.args[0])
    count = _numel([shape[d] for d in _axes(dims)] if _axes(dims) else shape)
    biased = cx.op("var", [cx.v(x)], {"axes": _axes(dims), "correction": 0,
                                       "keepdim": keepdim})
    # (a scalar of x's dtype: n may be var_mean's, whose result is a tuple)
    return cx.op("mul", [biased, cx.scalar(count / (count - correction), x)])


@handles(aten.var_mean.correction)
def _var_mean(cx, n, x, dims=None, correction=None, keepdim=False):
    """(var, mean) over dims (torch.std_mean is the square root of this var)."""
    mean = cx.op("mean", [cx.v(x)], {"axes": _axes(dims), "keepdim": keepdim})
    return [_var(cx, n, x, dims, correction, keepdim), mean]


@handles(aten.median.default)
def _median_all(cx, n, x):
    """The lower median of all elements (torch.median without dim)."""
    count = _numel(cx.shape_of(x))
    flat = cx.op("reshape", [cx.v(x)], {"shape": [count]})
    values, _ = _lower_median(cx, flat, count, 0)
    return cx.op("reshape", [values], {"shape": []})


@handles(aten.median.dim)
def _median_dim(cx, n, x, dim, keepdim=False):
    """(values, indices) of the lower median along dim."""
    shape = cx.shape_of(x)
    if not shape:  # a 0-d tensor is its own median, at index 0
        return [cx.op("reshape", [cx.v(x)], {"shape": []}),
                cx.op("full", [], {"shape": [], "value": 0.0, "dtype": "dtype:i64"})]
    dim = dim % len(shape)
    values, indices = _lower_median(cx, cx.v(x), shape[dim], dim)
    if not keepdim:
        out = shape[:dim] + shape[dim + 1:]
        values = cx.op("reshape", [values], {"shape": out})
        indices = cx.op("reshape", [indices], {"shape": out})
    return [values, indices]


def _lower_median(cx, value, size, axis):
    """The ((size - 1) // 2)-th smallest along axis, kept as a dim of 1: the last of the
    smallest k (topk orders ties by index, as a stable sort). A float row holding NaN has
    median NaN at its first NaN's index, as eager's (median propagates NaN; nanmedian skips
    it)."""
    k = (size - 1) // 2 + 1
    values, indices = cx.ops("topk", [value], {"k": k, "axis": axis, "largest": 0}, 2)

    def last(v):
        return cx.op("slice", [v], {"axis": axis, "start": k - 1, "end": k, "step": 1})
    values, indices = last(values), last(indices)
    if cx.g.type_of(value)[0] not in ("f32", "f64", "f16", "bf16"):
        return values, indices
    nan = cx.op("ne", [value, value])
    first_nan = cx.op("argmax", [cx.cast(nan, "i32")], {"axis": axis, "keepdim": True})
    has_nan = cx.op("gather", [nan, first_nan], {"axis": axis})  # (argmax is 0 without one)
    values = cx.op("where", [has_nan, cx.op("gather", [value, first_nan], {"axis": axis}),
                             values])
    return values, cx.op("where", [has_nan, cx.cast(first_nan, "i64"), indices])


@handles(aten.var.dim)
def _var_dim(cx, n, x, dims=None, unbiased=True, keepdim=False):
    return _var(cx, n, x, dims, 1 if unbiased else 0, keepdim)


@handles(aten.argmax.default)
def _argmax(cx, n, x, dim=None, keepdim=False):
    return _argmax_of(cx, n, _ordering_key(cx, x), cx.shape_of(x), dim, keepdim)


def _argmax_of(cx, n, value, shape, dim, keepdim):
    """argmax of `value` along dim, or over the flattened tensor (dim None; keepdim then
    gives all-ones dims)."""
    if dim is None:
        flat = cx.op("reshape", [value], {"shape": [_numel(shape)]})
        index = cx.op("argmax", [flat], {"axis": 0})
        return cx.op("reshape", [index], {"shape": cx.shape_of(n)}) if keepdim else index
    return cx.op("argmax", [value], {"axis": dim, "keepdim": keepdim})


def _numel(shape):
    return math.prod(shape)


@handles(aten.any.dim, aten.any.dims, aten.any.default)
def _any(cx, n, x, dims=None, keepdim=False):
    """Some element is nonzero (NaN counts, as in torch): a count of x != 0 above 0 (the
    sum of x itself was wrong for negative values, values that cancel, and NaN)."""
    as_float = cx.cast(_as_bool(cx, n, x), "f32")
    s = cx.op("sum", [as_float], {"axes": _axes(dims), "keepdim": keepdim})
    return cx.op("gt", [s, cx.scalar(0.0, None, "f32")])


@handles(aten._is_all_true.default)
def _is_all_true(cx, n, x):
    """A 0-d bool: every element is true (torch.distributions' argument checks, asserted at
    run time, see _capture_patches.value_checks_as_assertions): no element false."""
    false = cx.cast(cx.op("logical_not", [_as_bool(cx, n, x)]), "f32")
    count = cx.op("sum", [false], {"axes": _axes(None), "keepdim": False})
    return cx.op("eq", [count, cx.scalar(0.0, None, "f32")])


# ---- indexing, embedding, constants ------------------------------------------------------
@handles(aten.gather.default)
def _gather(cx, n, x, dim, index, sparse_grad=False):
    value = cx.v(x)
    if not cx.shape_of(x) and cx.shape_of(index):  # a 0-d input read as 1-D, as eager does
        value = cx.op("reshape", [value], {"shape": [1]})
    return cx.op("gather", [value, cx.v(index)], {"axis": dim})


@handles(aten.index_select.default)
def _index_select(cx, n, x, dim, index):
    return cx.op("index_select", [cx.v(x), cx.v(index)], {"axis": dim})


@handles(aten.index.Tensor)
def _index(cx, n, x, indices):
    """Advanced indexing x[i0, i1, ...] with integer index tensors (None skips a dim): the
    indexed dims are moved to the front and flattened, the broadcast indices become one
    linear index, and index_select gathers rows. As in torch, the result's indexed block sits
    where the indexed dims were if they are adjacent, else in front. Boolean masks have a
    data-dependent shape and are not supported."""
    shape = cx.shape_of(n.args[0])
    dims = [d for d, i in enumerate(indices) if i is not None]
    for d in dims:
        if cx.own_dtype(indices[d]) in ("bool", "u8"):  # (torch reads a uint8 index as a mask)
            cx.unsupported(n, "indexing with a boolean mask (except x[mask] over x's leading "
                              "dims)")
    rest = [d for d in range(len(shape)) if d not in dims]
    x_ = cx.v(x)
    if dims + rest != list(range(len(shape))):
        x_ = cx.op("permute", [x_], {"perm": dims + rest})
    rows = _numel([shape[d] for d in dims])
    x_ = cx.op("reshape", [x_], {"shape": [rows] + [shape[d] for d in rest]})
    flat, bshape = _linear_index(cx, n, shape, indices, dims)
    picked = cx.op("index_select", [x_, flat], {"axis": 0})
    result_front = bshape + [shape[d] for d in rest]
    picked = cx.op("reshape", [picked], {"shape": result_front})
    adjacent = dims == list(range(dims[0], dims[-1] + 1))
    if adjacent and dims[0] > 0:  # move the indexed block back to where the dims were
        k, lead = len(bshape), dims[0]
        perm = list(range(k, k + lead)) + list(range(k)) + list(range(k + lead, len(result_front)))
        picked = cx.op("permute", [picked], {"perm": perm})
    return picked


def _linear_index(cx, n, shape, indices, dims):
    """The broadcast integer indices of `dims` folded into one flat row index -> (flat [N],
    broadcast shape). torch's negative indices; each dimension checked on its own, as eager
    does (a folded linear index could be in range while one of its parts is not)."""
    bshape = list(torch.broadcast_shapes(*(tuple(cx.shape_of(indices[d])) for d in dims)))
    linear, stride = None, 1
    for d in reversed(dims):
        i = cx.op("index_wrap", [cx.v(indices[d])], {"size": shape[d], "dim": d})
        term = i if stride == 1 else cx.op("mul", [i, cx.scalar(stride, None, "i64")])
        linear = term if linear is None else cx.op("add", [linear, term])
        stride *= shape[d]
    linear = cx.op("expand", [linear], {"shape": bshape})
    return cx.op("reshape", [linear], {"shape": [_numel(bshape)]}), bshape


def _put_rows(cx, base, flat, values, rows, accumulate, dtype):
    """base [rows, ...] with values [N, ...] added at (accumulate) or written to the rows
    `flat` names. Of writes to a repeated row the last stays, as torch's CPU kernel writes
    them in order (torch documents the winner as unspecified); only it gets a gradient (the
    overwritten values change nothing; torch's backward passes them the row's gradient)."""
    if accumulate:
        return cx.op("index_add", [base, flat, values], {"axis": 0})
    compute = _write_dtype(dtype)
    base_c = cx.cast(base, compute)
    keep = last_writes(cx, [rows], flat, 0)
    count_shape = [rows] + [1] * (len(cx.g.type_of(base)[1]) - 1)
    zeros = cx.op("full", [], {"shape": [rows], "value": 0.0, "dtype": "dtype:" + compute})
    count = cx.op("reshape", [cx.op("index_add", [zeros, flat, cx.cast(keep, compute)],
                                    {"axis": 0})], {"shape": count_shape})
    values_c = cx.cast(values, compute)
    n = cx.g.type_of(flat)[1][0]
    kept = cx.op("reshape", [keep], {"shape": [n] + [1] * (len(cx.g.type_of(values)[1]) - 1)})
    values_c = cx.op("where", [kept, values_c, cx.scalar(0.0, None, compute)])
    written = cx.op("index_add", [cx.op("mul", [base_c, cx.scalar(0.0, None, compute)]), flat,
                                  values_c], {"axis": 0})
    return _mean_of_writes(cx, base_c, count, written, dtype)


def last_writes(cx, target_shape, index, axis):
    """Which writes of a scatter along `axis` (index names, for each of its elements, the
    target's position along the axis) stay when targets repeat: the last in the index's
    row-major order, as torch's CPU kernels write. A bool mask of the index's shape: each
    write's place in that order equals the largest place among the writes to its target
    (scatter_max of the places, gathered back)."""
    ishape = list(cx.g.type_of(index)[1])
    total = _numel(ishape)
    kind, numpy_kind = ("f32", np.float32) if total < 2 ** 24 else ("f64", np.float64)
    order = cx.g.add_constant(np.arange(total, dtype=numpy_kind).reshape(ishape))
    floor = cx.op("full", [], {"shape": list(target_shape), "value": -1.0,
                               "dtype": "dtype:" + kind})
    last = cx.op("scatter_max", [floor, index, order], {"axis": axis})
    return cx.op("eq", [cx.op("gather", [last, index], {"axis": axis}), order])


def _write_dtype(dtype):
    """The dtype writes are computed in: the result's if floating, else f64 (exact for
    integers below 2**53)."""
    return dtype if dtype in ("f32", "f64") else "f64"


def _mean_of_writes(cx, base, count, written, dtype):
    """Where `count` (writes per position) is > 0, the mean of the `written` sum; elsewhere
    `base`; in `dtype`. The one rule of index_put and scatter for repeated positions."""
    compute = cx.g.type_of(base)[0]
    hit = cx.op("gt", [count, cx.scalar(0.0, None, compute)])
    mean = cx.op("div", [written, cx.op("maximum", [count, cx.scalar(1.0, None, compute)])])
    return cx.cast(cx.op("where", [hit, mean, base]), dtype)


@handles(aten.index_put.default)
def _index_put(cx, n, x, indices, values, accumulate=False):
    """x[i0, i1, ...] = values (or += with accumulate): the indexed dims are moved to the
    front and flattened as in _index, values are laid out the same way, and the rows are
    written with index_add (gradients: values get the gathered gradient, x the rest)."""
    shape = cx.shape_of(x)
    dims = [d for d, i in enumerate(indices) if i is not None]
    if any(cx.own_dtype(indices[d]) in ("bool", "u8") for d in dims):
        return _masked_put(cx, n, x, indices, values, accumulate)
    dtype = cx.dtype_of(n)
    if dtype == "bool":
        cx.unsupported(n, "index_put into a bool tensor")
    rest = [d for d in range(len(shape)) if d not in dims]
    front = dims + rest
    x_ = cx.v(x)
    if front != list(range(len(shape))):
        x_ = cx.op("permute", [x_], {"perm": front})
    rows = _numel([shape[d] for d in dims])
    rest_shape = [shape[d] for d in rest]
    x_ = cx.op("reshape", [x_], {"shape": [rows] + rest_shape})
    flat, bshape = _linear_index(cx, n, shape, indices, dims)
    # values broadcast to the indexing result's layout (torch's), then put in front order
    adjacent = dims == list(range(dims[0], dims[-1] + 1))
    lead = dims[0] if adjacent else 0
    layout = rest_shape[:lead] + bshape + rest_shape[lead:]
    v = cx.op("expand", [cx.cast(cx.v(values), dtype)], {"shape": layout})
    if lead:
        k = len(bshape)
        v = cx.op("permute", [v], {"perm": list(range(lead, lead + k)) + list(range(lead)) +
                                   list(range(lead + k, len(layout)))})
    v = cx.op("reshape", [v], {"shape": [_numel(bshape)] + rest_shape})
    out = _put_rows(cx, x_, flat, v, rows, accumulate, dtype)
    out = cx.op("reshape", [out], {"shape": [shape[d] for d in front]})
    if front != list(range(len(shape))):
        out = cx.op("permute", [out], {"perm": [front.index(d) for d in range(len(shape))]})
    return out


@handles(aten.put.default)
def _put(cx, n, x, index, source, accumulate=False):
    """Tensor.put: x viewed as one row of its elements (row-major), source's elements written
    to (or, with accumulate, added at) the flat positions index names (any shape, torch's
    negative indices, checked against x's element count), as index_put on that row."""
    shape, dtype = cx.shape_of(x), cx.dtype_of(n)
    if dtype == "bool":
        cx.unsupported(n, "put into a bool tensor")
    total, count = _numel(shape), _numel(cx.shape_of(index))
    if _numel(cx.shape_of(source)) != count:
        cx.unsupported(n, f"put with {count} indices and {_numel(cx.shape_of(source))} source "
                          "elements (torch requires as many)")
    row = cx.op("reshape", [cx.cast(cx.v(x), dtype)], {"shape": [total]})
    flat = cx.op("index_wrap", [cx.op("reshape", [cx.v(index)], {"shape": [count]})],
                 {"size": total, "dim": 0})
    values = cx.op("reshape", [cx.cast(cx.v(source), dtype)], {"shape": [count]})
    out = _put_rows(cx, row, flat, values, total, accumulate, dtype)
    return cx.op("reshape", [out], {"shape": list(shape)})


def _masked_put(cx, n, x, indices, values, accumulate):
    """x[mask] = values (or +=) with one boolean (or uint8) mask over dims d.. of x (None
    before it: x[:, mask]): where(mask, values, x), exactly torch's result when the values do
    not depend on how many elements the mask selects: a single value, or values broadcast
    along the dims after the mask (x[mask] = 0, x[mask] = -inf, x[mask] = row)."""
    shape = cx.shape_of(x)
    dims = [d for d, i in enumerate(indices) if i is not None]
    if len(dims) != 1:
        cx.unsupported(n, "index_put with a boolean mask and other indices")
    d, mask = dims[0], indices[dims[0]]
    mshape = cx.shape_of(mask)
    if mshape != shape[d:d + len(mshape)]:
        cx.unsupported(n, "index_put with a boolean mask not of x's shape at its dims")
    rest = shape[d + len(mshape):]
    vshape = cx.shape_of(values) if isinstance(values, torch.fx.Node) else []
    while vshape and vshape[0] == 1 and len(vshape) > len(rest):
        vshape = vshape[1:]
    along_rest = len(vshape) <= len(rest) and all(
        v in (1, r) for v, r in zip(reversed(vshape), reversed(rest)))
    if _numel(vshape) != 1 and not along_rest:
        cx.unsupported(n, "index_put with a boolean mask and values with one row per selected "
                          "element (use torch.where(mask, values, x) with values of x's shape)")
    dtype = cx.dtype_of(n)
    m = cx.op("reshape", [cx.cast(cx.v(mask), "bool")],
              {"shape": [1] * d + mshape + [1] * len(rest)})
    if isinstance(values, torch.fx.Node):
        v = cx.op("reshape", [cx.cast(cx.v(values), dtype)],
                  {"shape": [1] * (len(shape) - len(vshape)) + vshape})
    else:
        v = cx.scalar(values, None, dtype)
    x_ = cx.v(x)
    if accumulate:
        v = cx.op("add", [x_, v])
    m = cx.op("expand", [m], {"shape": shape})
    v = cx.op("expand", [v], {"shape": shape})
    return cx.op("where", [m, v, x_])


@handles(aten.scatter_add.default)
def _scatter_add(cx, n, x, dim, index, src):
    """torch.scatter_add: src's leading part of index's shape is added at the positions."""
    src_ = cx.cast(cx.v(src), cx.dtype_of(n))
    if cx.shape_of(src) != cx.shape_of(index):
        src_ = _leading_part(cx, src_, cx.shape_of(src), cx.shape_of(index))
    return cx.op("scatter_add", [cx.v(x), cx.v(index), src_], {"axis": dim})


def _leading_part(cx, value, shape, want):
    for d, (have, size) in enumerate(zip(shape, want)):
        if have != size:
            value = cx.op("slice", [value], {"axis": d, "start": 0, "end": size, "step": 1})
    return value


@handles(aten.scatter.src, aten.scatter.value)
def _scatter(cx, n, x, dim, index, src):
    """torch.scatter (writes): positions named by index take src's values; of a position
    named twice the last write (row-major over index) stays, as torch's CPU kernel writes in
    order (torch leaves which one wins unspecified)."""
    dtype = cx.dtype_of(n)
    compute = _write_dtype(dtype)
    ishape = cx.shape_of(index)
    if isinstance(src, torch.fx.Node):
        src_ = cx.cast(cx.v(src), compute)
        if cx.shape_of(src) != ishape:
            src_ = _leading_part(cx, src_, cx.shape_of(src), ishape)
    else:
        src_ = cx.op("full", [], {"shape": ishape, "value": float(src),
                                  "dtype": "dtype:" + compute})
    dim = dim % len(cx.shape_of(x)) if cx.shape_of(x) else 0
    keep = last_writes(cx, cx.shape_of(x), cx.v(index), dim)
    src_ = cx.op("where", [keep, src_, cx.scalar(0.0, None, compute)])
    base, count, written = scatter_sums(cx, x, dim, index, src_, compute,
                                        counted=cx.cast(keep, compute))
    return _mean_of_writes(cx, base, count, written, dtype)


class ComputedIndex:
    """An index a handler computed (a tilegraph value of `shape`), given to the scatter
    helpers where torch's own index is an fx node (index_reduce spreads its 1-d index)."""

    def __init__(self, value, shape):
        self.value, self.shape = value, list(shape)


def index_value(cx, index):
    return index.value if isinstance(index, ComputedIndex) else cx.v(index)


def index_shape(cx, index):
    return index.shape if isinstance(index, ComputedIndex) else cx.shape_of(index)


def scatter_sums(cx, x, dim, index, src_, compute, counted=None):
    """(x, writes per position, sum of the values written there), in `compute`: what
    scatter and scatter_reduce build their rules from. `counted` (of index's shape, 0 / 1):
    which writes count (every one by default)."""
    base = cx.cast(cx.v(x), compute)
    zeros = cx.op("mul", [base, cx.scalar(0.0, None, compute)])
    ones = counted if counted is not None else cx.op(
        "full", [], {"shape": index_shape(cx, index), "value": 1.0, "dtype": "dtype:" + compute})
    count = cx.op("scatter_add", [zeros, index_value(cx, index), ones], {"axis": dim})
    written = cx.op("scatter_add", [zeros, index_value(cx, index), src_], {"axis": dim})
    return base, count, written


@handles(aten.topk.default)
def _topk(cx, n, x, k, dim=-1, largest=True, sorted=True):
    """(values, indices); equal values in the order eager's CPU topk leaves them (its
    selection algorithm on (value, index) pairs, see src/ops/sort.cc), sorted=False too."""
    return cx.ops("topk", [cx.v(x)], {"k": int(k), "axis": dim, "largest": int(bool(largest)),
                                       "ties": "topk" if sorted else "topk_unsorted"}, 2)


@handles(aten.sort.default)
def _sort(cx, n, x, dim=-1, descending=False):
    """torch.sort: topk over the whole axis; equal values in the order of eager's CPU sort
    (std::sort of (value, index) pairs: not stable beyond 16 elements)."""
    return _sort_stable(cx, n, x, stable=False, dim=dim, descending=descending)


@handles(aten.sort.stable)
def _sort_stable(cx, n, x, stable=None, dim=-1, descending=False):
    shape = cx.shape_of(x)
    if not shape:
        return [cx.v(x), cx.op("full", [], {"shape": [], "value": 0.0, "dtype": "dtype:i64"})]
    return cx.ops("topk", [cx.v(x)], {"k": shape[dim], "axis": dim,
                                       "largest": int(bool(descending)),
                                       "ties": "stable" if stable else "sort"}, 2)


# When SDPA compiles to the fused attention op: "auto": in f32 programs (the f32 forward and
# backward kernels are register-blocked: as fast as or faster than matmuls around a softmax
# at every length measured, inference 128 to 1536 tokens, training 64 to 512), and elsewhere
# (f64, half precision) when its score matrices would take at least this many bytes (those
# kernels are written for memory, not for speed); "always"; or "never". The
# TILEGRAPH_FUSED_ATTENTION environment variable overrides the mode.
FUSED_ATTENTION = {"mode": "auto", "min_score_bytes": 64 * 2 ** 20}


def _use_fused_attention(score_bytes, fast_kernels):
    import os
    mode = os.environ.get("TILEGRAPH_FUSED_ATTENTION", FUSED_ATTENTION["mode"])
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"TILEGRAPH_FUSED_ATTENTION must be auto, always or never, got {mode!r}")
    return mode == "always" or (mode == "auto" and (
        fast_kernels or score_bytes >= FUSED_ATTENTION["min_score_bytes"]))


@handles(aten.scaled_dot_product_attention.default)
def _sdpa(cx, n, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    """F.scaled_dot_product_attention kept whole (export does not decompose it, see
    _capture.export). Where the score matrices are large (FUSED_ATTENTION) it is
    tilegraph's fused attention op, dropout included: batch dims flattened, a boolean mask
    turned additive (0 / -inf), the mask kept at its broadcast size ([1 or N, 1 or Sq, Sk]);
    no [Sq, Sk] score matrix is stored. Otherwise (and for grouped-query heads) it is
    written out as matmul, softmax, dropout, matmul."""
    qs, ks, vs = cx.shape_of(q), cx.shape_of(k), cx.shape_of(v)
    dtype = cx.dtype_of(n)
    sq, sk, d, dv = qs[-2], ks[-2], qs[-1], vs[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    mask = None
    if attn_mask is not None:
        mask = cx.v(attn_mask)
        if cx.dtype_of(attn_mask) == "bool":
            mask = cx.op("where", [mask, cx.scalar(0.0, None, dtype),
                                   cx.scalar(-math.inf, None, dtype)])
        else:
            mask = cx.cast(mask, dtype)
    batch = qs[:-2]
    rows = _numel(batch)
    if enable_gqa or qs[:-2] != ks[:-2] or qs[:-2] != vs[:-2] or \
            not _use_fused_attention(rows * sq * sk * (8 if dtype == "f64" else 4),
                                     dtype == "f32"):
        return _attention_written_out(cx, n, q, k, v, mask, dropout_p, is_causal, scale)
    flat = lambda value, shape: cx.op("reshape", [value], {"shape": [rows] + shape[-2:]})
    if mask is None:
        mask3 = cx.op("full", [], {"shape": [1, 1, sk], "value": 0.0, "dtype": "dtype:" + dtype})
    else:
        mshape = [1] * (len(qs) - len(cx.g.type_of(mask)[1])) + list(cx.g.type_of(mask)[1])
        mask = cx.op("reshape", [mask], {"shape": mshape})
        mq = sq if mshape[-2] != 1 else 1
        if mshape[-1] != sk:
            mask = cx.op("expand", [mask], {"shape": mshape[:-1] + [sk]})
        mbatch = mshape[:-2]
        # A mask whose leading batch dims are the batch's and the rest 1 ([B, 1, Sq, Sk] over
        # [B, H] heads) is one entry per group of consecutive rows: not expanded (the op
        # takes M entries for N rows, M dividing N). Others are expanded to every row.
        shared = 0
        while shared < len(mbatch) and mbatch[shared] == batch[shared]:
            shared += 1
        if all(m == 1 for m in mbatch[shared:]):
            mask3 = cx.op("reshape", [mask], {"shape": [_numel(mbatch[:shared]), mq, sk]})
        else:
            mask = cx.op("expand", [mask], {"shape": batch + [mq, sk]})
            mask3 = cx.op("reshape", [mask], {"shape": [rows, mq, sk]})
    out, _ = cx.ops("attention", [flat(cx.v(q), qs), flat(cx.v(k), ks), flat(cx.v(v), vs), mask3],
                    {"scale": scale, "causal": int(bool(is_causal)),
                     "dropout_p": float(dropout_p)}, 2)
    return cx.op("reshape", [out], {"shape": batch + [sq, dv]})


def _attention_written_out(cx, n, q, k, v, mask, dropout_p, is_causal, scale):
    """SDPA as its parts (the math torch's decomposition does), for dropout and grouped
    heads: scores = q k^T * scale (+ mask, causal -inf above the diagonal), softmax,
    dropout, @ v."""
    qs, ks = cx.shape_of(q), cx.shape_of(k)
    q_, k_, v_ = cx.v(q), cx.v(k), cx.v(v)
    if qs[:-2] != ks[:-2]:  # grouped-query attention: repeat k, v heads to q's
        groups = qs[-3] // ks[-3]
        def widen(value, shape):
            value = cx.op("reshape", [value], {"shape": shape[:-2] + [1] + shape[-2:]})
            value = cx.op("expand", [value], {"shape": shape[:-3] + [shape[-3], groups] +
                                               shape[-2:]})
            return cx.op("reshape", [value], {"shape": shape[:-3] + [shape[-3] * groups] +
                                              shape[-2:]})
        k_, v_ = widen(k_, ks), widen(v_, cx.shape_of(v))
    scores = _scaled_scores(cx, q_, k_, scale, is_causal, cx.dtype_of(n))
    if mask is not None:
        scores = cx.op("add", [scores, mask])
    probs = cx.op("softmax", [scores], {"axis": -1}) if mask is None else \
        _softmax_of_masked_scores(cx, scores, cx.dtype_of(n))
    if dropout_p > 0:
        probs = cx.ops("dropout", [probs], {"p": float(dropout_p)}, 2)[0]
    return cx.op("matmul", [probs, v_])


@handles(aten._scaled_dot_product_flash_attention_for_cpu.default)
def _flash_attention_for_cpu(cx, n, q, k, v, dropout_p=0.0, is_causal=False, attn_mask=None,
                             scale=None):
    """The CPU flash-attention op SDPA dispatches to, when a model calls it itself: its
    output as SDPA's, and the logsumexp of each query row's scaled (masked) scores, f32
    [..., Sq] as eager's (torch's decomposition, which capture used before, puts the
    attention probabilities there)."""
    if dropout_p > 0:
        cx.unsupported(n, "_scaled_dot_product_flash_attention_for_cpu with dropout (call "
                          "F.scaled_dot_product_attention)")
    qs = cx.shape_of(q)
    scale = 1.0 / math.sqrt(qs[-1]) if scale is None else float(scale)
    dt = cx.g.type_of(cx.v(q))[0]
    scores = _scaled_scores(cx, cx.v(q), cx.v(k), scale, is_causal, dt)
    if attn_mask is not None:
        mask = cx.v(attn_mask)
        scores = cx.op("where", [mask, scores, cx.scalar(-math.inf, None, dt)]) \
            if cx.dtype_of(attn_mask) == "bool" else cx.op("add", [scores, cx.cast(mask, dt)])
    out = cx.op("matmul", [_softmax_of_masked_scores(cx, scores, dt), cx.v(v)])
    top = cx.op("amax", [scores], {"axes": [-1], "keepdim": True})
    top = cx.op("where", [cx.op("eq", [top, cx.scalar(-math.inf, None, dt)]),
                          cx.scalar(0.0, None, dt), top])  # (a fully masked row: -inf)
    total = cx.op("sum", [cx.op("exp", [cx.op("sub", [scores, top])])],
                  {"axes": [-1], "keepdim": False})
    lse = cx.op("add", [cx.op("log", [total]), cx.op("reshape", [top], {"shape": qs[:-1]})])
    return [out, cx.cast(lse, "f32")]


def _scaled_scores(cx, q, k, scale, is_causal, dtype):
    """q k^T * scale, with -inf above the diagonal when causal (the written-out attentions)."""
    scores = cx.op("mul", [cx.op("matmul", [q, k], {"transpose_b": True}),
                           cx.scalar(scale, None, dtype)])
    if is_causal:
        sq, sk = cx.g.type_of(q)[1][-2], cx.g.type_of(k)[1][-2]
        hidden = np.triu(np.ones((sq, sk), dtype=bool), 1)
        scores = cx.op("where", [cx.g.add_constant(hidden), cx.scalar(-math.inf, None, dtype),
                                 scores])
    return scores


def _softmax_of_masked_scores(cx, scores, dtype):
    """PyTorch's SDPA gives 0 for a query row whose keys are all masked (a fully padded
    sample), where a plain softmax of -inf scores is NaN. Such rows' scores are replaced by
    0 before the softmax (finite probabilities, so no NaN reaches the gradient either) and
    their probabilities by 0 after it: the row's output and gradients are 0, as eager's."""
    neg_inf = cx.scalar(-math.inf, None, dtype)
    hidden = cx.op("eq", [cx.op("amax", [scores], {"axes": [-1], "keepdim": True}), neg_inf])
    zero = cx.scalar(0.0, None, dtype)
    safe = cx.op("softmax", [cx.op("where", [hidden, zero, scores])], {"axis": -1})
    return cx.op("where", [hidden, zero, safe])


def _bag_max(cx, rows, keep, bag_of, bags, width, dtype):
    """Per-bag elementwise max of the embedded rows (padding rows left out); an empty bag
    gives zeros, as PyTorch's."""
    count_rows = cx.g.type_of(rows)[1][0]
    low = cx.scalar(-math.inf, None, dtype)
    if keep is not None:
        kept = cx.op("ne", [cx.op("reshape", [keep], {"shape": [count_rows, 1]}),
                            cx.scalar(0.0, None, dtype)])
        rows = cx.op("where", [kept, rows, low])
    index = cx.op("expand", [cx.op("reshape", [bag_of], {"shape": [count_rows, 1]})],
                  {"shape": [count_rows, width]})
    base = cx.op("full", [], {"shape": [bags, width], "value": -math.inf,
                              "dtype": "dtype:" + dtype})
    out = cx.op("scatter_max", [base, index, rows], {"axis": 0})
    return cx.op("where", [cx.op("eq", [out, low]), cx.scalar(0.0, None, dtype), out])


def _check_bag_offsets(cx, offsets, count, rows, include_last_offset):
    """EmbeddingBag's offsets as eager checks them (out-of-range offsets made plausible bags
    of the wrong rows): the first is 0, they do not decrease, the last is at most the rows.
    With include_last_offset the last one must be the rows, as torch's documentation says
    (CSR offsets): eager runs a smaller one, inconsistently (a sum leaves the rows after it
    out, a mean divides by all rows, a max takes them all)."""
    def check(condition, message):
        cx.op("assert_all", [condition], {"message": message, "runtime_error": 1})

    def at(i):
        return cx.op("slice", [offsets], {"axis": 0, "start": i, "end": i + 1, "step": 1})
    if count == 0:
        return
    check(cx.op("eq", [at(0), cx.scalar(0, None, "i64")]),
          "offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to start "
          "from position 0")
    check(cx.op("le", [at(count - 1), cx.scalar(rows, None, "i64")]),
          f"offsets[-1] can not be greater than input's length {rows}")
    if include_last_offset:
        check(cx.op("eq", [at(count - 1), cx.scalar(rows, None, "i64")]),
              f"EmbeddingBag(include_last_offset=True): offsets[-1] must be the input's length "
              f"{rows} (CSR offsets, as torch documents them)")
    if count > 1:
        later = cx.op("slice", [offsets], {"axis": 0, "start": 1, "end": count, "step": 1})
        earlier = cx.op("slice", [offsets], {"axis": 0, "start": 0, "end": count - 1,
                                             "step": 1})
        check(cx.op("ge", [later, earlier]), "EmbeddingBag: offsets must not decrease")


@handles(aten._embedding_bag.default, aten._embedding_bag_forward_only.default)
def _embedding_bag(cx, n, weight, indices, offsets, scale_grad_by_freq=False, mode=0,
                   sparse=False, per_sample_weights=None, include_last_offset=False,
                   padding_idx=-1):
    """nn.EmbeddingBag, sum (mode 0), mean (1) or max (2): the rows of `indices` are
    embedded, each row's bag is the number of offsets at or before it, minus one, and the
    rows are summed per bag with index_add (an empty bag gives zeros, a mean divides by the
    rows the bag holds; rows equal to padding_idx do not count) or maxed with scatter_max."""
    if scale_grad_by_freq:
        cx.unsupported(n, "EmbeddingBag with scale_grad_by_freq")
    count_rows = cx.shape_of(indices)[0]
    bags = cx.shape_of(offsets)[0] - (1 if include_last_offset else 0)
    dtype = cx.dtype_of(weight)
    rows = cx.op("embedding", [cx.v(weight), cx.v(indices)], {"padding_idx": -1})
    positions = cx.g.add_constant(np.arange(count_rows, dtype=np.int64).reshape(-1, 1))
    _check_bag_offsets(cx, cx.cast(cx.v(offsets), "i64"), cx.shape_of(offsets)[0], count_rows,
                       include_last_offset)
    starts = cx.op("reshape", [cx.cast(cx.v(offsets), "i64")],
                   {"shape": [1, cx.shape_of(offsets)[0]]})
    if include_last_offset:
        starts = cx.op("slice", [starts], {"axis": 1, "start": 0, "end": bags, "step": 1})
    started = cx.cast(cx.op("ge", [positions, starts]), "i64")
    bag_of = cx.op("sub", [cx.op("sum", [started], {"axes": [1], "keepdim": False}),
                           cx.scalar(1, None, "i64")])
    keep = None
    if padding_idx is not None and padding_idx >= 0:
        keep = cx.cast(cx.op("ne", [cx.v(indices), cx.scalar(padding_idx, None, "i64")]), dtype)
        rows = cx.op("mul", [rows, cx.op("reshape", [keep], {"shape": [count_rows, 1]})])
    width = cx.shape_of(weight)[1]
    unused = [cx.unavailable(n, what) for what in ("offset2bag", "bag_size", "max_indices")]
    if mode == 2:
        return [_bag_max(cx, rows, keep, bag_of, bags, width, dtype)] + unused
    if per_sample_weights is not None:
        w = cx.op("reshape", [cx.cast(cx.v(per_sample_weights), dtype)],
                  {"shape": [count_rows, 1]})
        rows = cx.op("mul", [rows, w])
    zeros = cx.op("full", [], {"shape": [bags, width], "value": 0.0, "dtype": "dtype:" + dtype})
    out = cx.op("index_add", [zeros, bag_of, rows], {"axis": 0})
    if mode == 1:
        ones = keep if keep is not None else cx.op(
            "full", [], {"shape": [count_rows], "value": 1.0, "dtype": "dtype:" + dtype})
        counts = cx.op("index_add", [cx.op("full", [], {"shape": [bags], "value": 0.0,
                                                        "dtype": "dtype:" + dtype}),
                                     bag_of, ones], {"axis": 0})
        counts = cx.op("maximum", [counts, cx.scalar(1.0, None, dtype)])
        out = cx.op("div", [out, cx.op("reshape", [counts], {"shape": [bags, 1]})])
    return [out] + unused


def _reflect(cx, c, size, align_corners, dtype):
    """grid_sample's reflection padding: coordinates mirrored at the image's edges (its
    corner centres with align_corners, its outer borders without), as PyTorch reflects them:
    |c - low| folded into one span, every other span reversed."""
    low, high = (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)
    span = high - low
    if span <= 0:
        return cx.op("mul", [c, cx.scalar(0.0, None, dtype)])
    d = cx.op("abs", [cx.op("sub", [c, cx.scalar(low, None, dtype)])])
    extra = cx.op("fmod_scalar", [d], {"divisor": span})
    flips = cx.op("floor", [cx.op("div", [d, cx.scalar(span, None, dtype)])])
    even = cx.op("eq", [cx.op("remainder_scalar", [flips], {"divisor": 2.0}),
                        cx.scalar(0.0, None, dtype)])
    forward = cx.op("add", [extra, cx.scalar(low, None, dtype)])
    backward = cx.op("sub", [cx.scalar(span + low, None, dtype), extra])
    return cx.op("where", [even, forward, backward])


@handles(aten.grid_sampler_2d.default)
def _grid_sampler(cx, n, x, grid, interpolation_mode=0, padding_mode=0, align_corners=False):
    """F.grid_sample in 2-D (spatial transformers): bilinear (mode 0) or nearest (1), zeros
    (0), border (1) or reflection (2) padding. Source positions from the grid by torch's unnormalization;
    each corner is a gather of x's channel vectors at data-computed rows (index_select, so
    x's gradient scatters back), weighted by the fractional parts (so the grid gets its
    gradient through the weights, as in torch)."""
    if interpolation_mode not in (0, 1):
        cx.unsupported(n, "grid_sample with bicubic interpolation")
    batch, channels, height, width = cx.shape_of(x)
    _, out_h, out_w, _ = cx.shape_of(grid)
    dtype = cx.dtype_of(n)
    rows = cx.op("reshape", [cx.op("permute", [cx.v(x)], {"perm": [0, 2, 3, 1]})],
                 {"shape": [batch * height * width, channels]})
    g = cx.cast(cx.v(grid), dtype)

    def coordinate(axis, size):
        c = cx.op("slice", [g], {"axis": 3, "start": axis, "end": axis + 1, "step": 1})
        c = cx.op("reshape", [c], {"shape": [batch, out_h, out_w, 1]})
        if align_corners:  # (c + 1) / 2 * (size - 1)
            c = cx.op("mul", [cx.op("add", [c, cx.scalar(1.0, None, dtype)]),
                              cx.scalar((size - 1) / 2.0, None, dtype)])
        else:  # ((c + 1) * size - 1) / 2
            c = cx.op("div", [cx.op("sub", [cx.op("mul", [cx.op("add", [
                c, cx.scalar(1.0, None, dtype)]), cx.scalar(float(size), None, dtype)]),
                cx.scalar(1.0, None, dtype)]), cx.scalar(2.0, None, dtype)])
        if padding_mode == 2:
            c = _reflect(cx, c, size, align_corners, dtype)
        if padding_mode in (1, 2):
            c = cx.op("clamp", [c], {"min": 0.0, "max": float(size - 1)})
        return c

    ix, iy = coordinate(0, width), coordinate(1, height)
    base = cx.g.add_constant((np.arange(batch, dtype=np.int64) * height * width)
                             .reshape(batch, 1, 1, 1))

    def corner(xc, yc):
        """x's channels at integer (xc, yc) (as floats), zero outside the image."""
        inside = cx.op("logical_and", [
            cx.op("logical_and", [cx.op("ge", [xc, cx.scalar(0.0, None, dtype)]),
                                  cx.op("le", [xc, cx.scalar(width - 1.0, None, dtype)])]),
            cx.op("logical_and", [cx.op("ge", [yc, cx.scalar(0.0, None, dtype)]),
                                  cx.op("le", [yc, cx.scalar(height - 1.0, None, dtype)])])])
        xi = cx.cast(cx.op("clamp", [xc], {"min": 0.0, "max": float(width - 1)}), "i64")
        yi = cx.cast(cx.op("clamp", [yc], {"min": 0.0, "max": float(height - 1)}), "i64")
        flat = cx.op("add", [cx.op("add", [cx.op("mul", [yi, cx.scalar(width, None, "i64")]),
                                           xi]), base])
        flat = cx.op("reshape", [flat], {"shape": [batch * out_h * out_w]})
        picked = cx.op("reshape", [cx.op("index_select", [rows, flat], {"axis": 0})],
                       {"shape": [batch, out_h, out_w, channels]})
        return picked, cx.cast(inside, dtype)

    if interpolation_mode == 1:  # nearest: round half to even, as torch
        picked, inside = corner(cx.op("round", [ix]), cx.op("round", [iy]))
        out = cx.op("mul", [picked, inside])
    else:
        x0, y0 = cx.op("floor", [ix]), cx.op("floor", [iy])
        x1 = cx.op("add", [x0, cx.scalar(1.0, None, dtype)])
        y1 = cx.op("add", [y0, cx.scalar(1.0, None, dtype)])
        wx1, wy1 = cx.op("sub", [ix, x0]), cx.op("sub", [iy, y0])
        wx0 = cx.op("sub", [cx.scalar(1.0, None, dtype), wx1])
        wy0 = cx.op("sub", [cx.scalar(1.0, None, dtype), wy1])
        out = None
        for xc, yc, wx, wy in ((x0, y0, wx0, wy0), (x1, y0, wx1, wy0), (x0, y1, wx0, wy1),
                               (x1, y1, wx1, wy1)):
            picked, inside = corner(xc, yc)
            term = cx.op("mul", [picked, cx.op("mul", [cx.op("mul", [wx, wy]), inside])])
            out = term if out is None else cx.op("add", [out, term])
    return cx.op("permute", [out], {"perm": [0, 3, 1, 2]})


@handles(aten.embedding.default)
def _embedding(cx, n, weight, indices, padding_idx=-1, scale_grad=False, sparse=False):
    return cx.op("embedding", [cx.v(weight), cx.v(indices)], {"padding_idx": padding_idx})


@handles(aten.nll_loss_forward.default)
def _nll_loss(cx, n, logp, target, weight, reduction, ignore_index):
    red = {0: "none", 1: "mean", 2: "sum"}[reduction]
    if weight is not None:
        return [_weighted_nll(cx, n, logp, target, weight, red, ignore_index),
                cx.unavailable(n, "nll_loss total weight")]
    loss = cx.op("nll_loss", [cx.v(logp), cx.v(target)],
                 {"reduction": red, "ignore_index": ignore_index})
    return [loss, cx.unavailable(n, "nll_loss total weight")]


def _weighted_nll(cx, n, logp, target, weight, reduction, ignore_index):
    """nll_loss with class weights: loss_i = -weight[t_i] * logp[i, t_i] (0 where t_i is
    ignore_index); "mean" divides the sum by the summed weights of the counted targets,
    as PyTorch does."""
    dtype = cx.dtype_of(n)
    t = cx.v(target)
    valid = cx.op("ne", [t, cx.scalar(int(ignore_index), None, cx.dtype_of(target))])
    safe = cx.op("where", [valid, t, cx.scalar(0, None, cx.dtype_of(target))])
    batched = len(cx.shape_of(logp)) == 2
    index = cx.op("reshape", [safe], {"shape": cx.shape_of(target) + [1]})
    picked = cx.op("gather", [cx.v(logp), index], {"axis": -1})
    picked = cx.op("reshape", [picked], {"shape": cx.shape_of(target)})
    rows = cx.op("reshape", [safe], {"shape": cx.shape_of(target)[:1] if batched else [1]})
    w = cx.op("index_select", [cx.cast(cx.v(weight), dtype), rows], {"axis": 0})
    w = cx.op("mul", [cx.op("reshape", [w], {"shape": cx.shape_of(target)}),
                      cx.cast(valid, dtype)])
    losses = cx.op("neg", [cx.op("mul", [picked, w])])
    if reduction == "none":
        return losses
    total = cx.op("sum", [losses], {"axes": [], "keepdim": False})
    if reduction == "sum":
        return total
    return cx.op("div", [total, cx.op("sum", [w], {"axes": [], "keepdim": False})])


@handles(aten._ctc_loss.Tensor)
def _ctc_loss(cx, n, log_probs, targets, input_lengths, target_lengths, blank=0,
              zero_infinity=False):
    """Per-sample CTC negative log-likelihood from padded targets [B, S]; torch's composite
    ctc_loss applies the reduction around it. The op's gradient recomputes the alpha/beta
    recursion, so log_alpha is never produced."""
    if len(cx.shape_of(targets)) != 2:
        cx.unsupported(n, "ctc_loss with concatenated 1-D targets (pass padded [B, S])")
    loss = cx.op("ctc_loss", [cx.v(log_probs), cx.v(targets), cx.v(input_lengths),
                              cx.v(target_lengths)],
                 {"blank": blank, "zero_infinity": bool(zero_infinity)})
    return [loss, cx.unavailable(n, "ctc log_alpha")]


@handles(aten.full.default, aten.full_like.default, aten.scalar_tensor.default,
         aten.zeros.default, aten.ones.default, aten.zeros_like.default, aten.ones_like.default,
         aten.arange.default, aten.arange.start, aten.arange.start_step, aten.empty.memory_format,
         aten.empty_permuted.default, aten.empty_strided.default,
         aten.new_zeros.default, aten.new_ones.default, aten.new_full.default)
def _constant_like(cx, n, *args, **kw):
    """Tensors that depend on nothing but shapes: evaluated once by torch, kept as constants."""
    return cx.constant_from_torch(n)


@handles(operator.getitem)
def _getitem(cx, n, seq, index):
    return cx.results(seq)[index]


register_tilegraph_ops()
# (they register entries in TABLE)
from . import (_aten_data, _aten_linalg, _aten_math, _aten_scans,  # noqa: E402,F401
               _aten_search, _aten_spatial)
