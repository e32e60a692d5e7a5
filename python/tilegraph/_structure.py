"""Structured inputs and outputs: how a call's Python values map to the compiled program.

A compiled program takes a flat list of tensors and returns a flat list of tensors. A model's
forward takes anything: tuples, lists and dicts of tensors (an LSTM's (h, c)), keyword
arguments, 0-d tensors, Python numbers, strings, None; and returns any nesting of tensors,
numbers and None (a dict, a Hugging Face ModelOutput). This module is the mapping:

- `CallStructure.of(model, args, kwargs)` binds a call to the forward's signature (so that
  `model(x, mask=m)` and `model(x, m)` are the same call; defaults are not filled in, see
  `_bind`), flattens it with torch's pytree,
  and splits the leaves into tensors (the program's inputs, in flatten order, which is the
  order torch.export numbers its user inputs) and constants (every non-tensor leaf). Its
  `key` is the tree structure plus the constants: the program was traced with those values
  baked in, so a call whose key differs needs another capture (the executor recompiles).
- `OutputStructure` is the flattened result: each leaf is a program output (by index) or a
  constant the forward returned; `rebuild(tensors)` restores the model's own structure.

Both serialize to JSON for export files (torch's treespec_dumps; no pickle). A structure
whose node types torch cannot name (an unregistered namedtuple) works in memory but cannot be
exported; compileAndExport says so.
"""
import inspect
import json

import torch
import torch.utils._pytree as pytree

_JSON_CONSTANTS = (bool, int, float, str, type(None))

# Node types a file's tree may not name: a defaultdict's context names a module and a
# function to import for its default_factory.
_REFUSED_NODE_TYPES = ("collections.defaultdict", "NO_SERIALIZED_TYPE_NAME_FOUND")
_MAX_TREE_DEPTH = 200


def _check_rebuilds(spec, what):
    """A tree read from a file must rebuild (a dict keyed by a JSON list, say, does not: an
    error at load rather than a TypeError at the first call)."""
    try:
        pytree.tree_unflatten([None] * spec.num_leaves, spec)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"{what}: does not rebuild ({type(e).__name__}: {e})") from None


def _safe_treespec_loads(text):
    """torch's treespec_loads on a tree read from a file, after checking it: torch's reader
    imports whatever module a context's {"__enum__": ..., "fqn": "module:attr"} names (an
    import, or ctypes' dlopen, chosen by the file) and a defaultdict's default_factory by
    name. Here the JSON is read plainly first: node types must be registered pytree types
    (defaultdict refused), contexts plain JSON without "__enum__" objects, the depth bounded.
    Anything else is a ValueError; nothing is imported or called."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as e:
        raise ValueError(f"tree structure: not JSON ({e})") from None
    if not (isinstance(data, list) and len(data) == 2 and data[0] == 1):
        raise ValueError("tree structure: expected [1, tree] (pytree protocol 1)")

    def refuse_enums(value):
        if isinstance(value, dict):
            if "__enum__" in value:
                raise ValueError("tree structure: enum objects are not read from files")
            for v in value.values():
                refuse_enums(v)
        elif isinstance(value, list):
            for v in value:
                refuse_enums(v)

    def check(node, depth):
        if depth > _MAX_TREE_DEPTH:
            raise ValueError("tree structure: nested too deeply")
        if not isinstance(node, dict) or set(node) != {"type", "context", "children_spec"}:
            raise ValueError("tree structure: malformed node")
        typ, context, children = node["type"], node["context"], node["children_spec"]
        if not isinstance(children, list) or not (context is None or isinstance(context, str)):
            raise ValueError("tree structure: malformed node")
        if typ is not None:
            if not isinstance(typ, str) or typ in _REFUSED_NODE_TYPES or \
                    typ not in pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE:
                raise ValueError(f"tree structure: node type {typ!r} is not read from files")
            if context is not None:
                try:
                    refuse_enums(json.loads(context))
                except (TypeError, ValueError) as e:
                    raise ValueError(f"tree structure: bad node context ({e})") from None
        for child in children:
            check(child, depth + 1)

    check(data[1], 0)
    return pytree.treespec_loads(text)


def _constant_key(value):
    """A comparable stand-in for a non-tensor leaf (the value itself where it is hashable)."""
    try:
        hash(value)
        return (type(value).__qualname__, value)
    except TypeError:
        return (type(value).__qualname__, id(value))


def _signature(forward):
    try:
        return inspect.signature(forward)
    except (TypeError, ValueError):
        return None  # no introspectable signature: arguments are taken as given


def _signature_to_json(signature):
    """The forward's parameters for an export file (the loaded executor binds calls as the
    model did), or None if a default is not a JSON value."""
    if signature is None:
        return None
    params = []
    for p in signature.parameters.values():
        has_default = p.default is not inspect.Parameter.empty
        if has_default and not isinstance(p.default, _JSON_CONSTANTS):
            return None
        params.append([p.name, int(p.kind), has_default, p.default if has_default else None])
    return params


def _signature_from_json(params):
    if params is None:
        return None
    return inspect.Signature([
        inspect.Parameter(str(name), inspect._ParameterKind(int(kind)),
                          default=default if has_default else inspect.Parameter.empty)
        for name, kind, has_default, default in params])


def _bind(signature, name, args, kwargs):
    """(args, kwargs) with every argument the signature lets be positional made positional
    (up to the first one left out) and the rest keyword arguments in signature order: one
    normal form per call. Defaults are not filled in: the model is called with what the
    caller passed, since a forward's decorator may tell "left out" from "passed the default"
    (Hugging Face's supplies `use_cache` when it is left out), so `model(x)` and
    `model(x, mask=None)` are two calls (two captures) as far as tilegraph knows."""
    if signature is None:
        return tuple(args), dict(kwargs)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{name}(): {e}") from None
    positional, keyword, gap = [], {}, False
    for name, p in bound.signature.parameters.items():
        present = name in bound.arguments
        value = bound.arguments.get(name)
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if present and not gap:
                positional.append(value)
            elif present:
                keyword[name] = value
            else:
                gap = True
        elif p.kind == p.VAR_POSITIONAL:
            positional.extend(value or ())
        elif p.kind == p.KEYWORD_ONLY and present:
            keyword[name] = value
        elif p.kind == p.VAR_KEYWORD and present:
            keyword.update(sorted(value.items()))
    return tuple(positional), keyword


class CallStructure:
    """One call's arguments as the program's tensor inputs plus baked-in constants."""

    def __init__(self, spec, leaves, signature=None):
        self.spec = spec
        self.signature = signature  # the forward's, to bind later calls (export files)
        self.is_tensor = [isinstance(v, torch.Tensor) for v in leaves]
        self.tensors = [v for v in leaves if isinstance(v, torch.Tensor)]
        self.constants = [v for v in leaves if not isinstance(v, torch.Tensor)]
        self.key = (spec, tuple(self.is_tensor),
                    tuple(_constant_key(v) for v in self.constants))
        self.plain_arity = None  # n: the call was n plain tensors, positionally (see rebind)

    @classmethod
    def of(cls, model, args, kwargs, signature=None):
        """The structure of `model(*args, **kwargs)`, bound to `signature` (default: the
        signature of model.forward)."""
        if signature is None:
            signature = _signature(model.forward)
        name = getattr(model.forward, "__qualname__", "forward")
        plain = not kwargs and all(type(a) is torch.Tensor for a in args)
        arity = len(args)
        args, kwargs = _bind(signature, name, args, kwargs)
        leaves, spec = pytree.tree_flatten((args, kwargs))
        structure = cls(spec, leaves, signature)
        structure.plain_arity = arity if plain else None
        return structure

    def rebind(self, args):
        """This structure for another call of the same forward with as many plain tensors,
        positionally and nothing else (the executor's per-call fast path: binding and
        flattening such a call gives this structure again, so only the tensors change)."""
        assert self.plain_arity == len(args)
        call = object.__new__(CallStructure)
        call.__dict__.update(self.__dict__)
        call.tensors = list(args)
        return call

    def arguments(self, tensors):
        """(args, kwargs) of this call with its tensor leaves replaced by `tensors`."""
        it = iter(tensors)
        consts = iter(self.constants)
        leaves = [next(it) if t else next(consts) for t in self.is_tensor]
        return pytree.tree_unflatten(leaves, self.spec)

    def describe_change(self, other):
        """What differs between this call and `other` (an earlier one), for a message."""
        if self.spec != other.spec or self.is_tensor != other.is_tensor:
            return "the structure of the arguments changed"
        for i, (a, b) in enumerate(zip(self.constants, other.constants)):
            if _constant_key(a) != _constant_key(b):
                return f"non-tensor argument {i} changed from {b!r} to {a!r}"
        return "the arguments changed"

    # ---- export files --------------------------------------------------------------------
    def to_json(self):
        if not all(isinstance(v, _JSON_CONSTANTS) for v in self.constants):
            bad = next(v for v in self.constants if not isinstance(v, _JSON_CONSTANTS))
            raise ValueError(f"a non-tensor argument of type {type(bad).__name__} cannot be "
                             "written to an export file (numbers, strings, bools and None can)")
        return dict(spec=pytree.treespec_dumps(self.spec), is_tensor=self.is_tensor,
                    constants=self.constants, signature=_signature_to_json(self.signature))

    @classmethod
    def from_json(cls, d):
        spec = _safe_treespec_loads(d["spec"])
        is_tensor, constants = [bool(t) for t in d["is_tensor"]], list(d["constants"])
        if spec.num_leaves != len(is_tensor) or is_tensor.count(False) != len(constants):
            raise ValueError("call structure: leaf counts do not agree")
        _check_rebuilds(spec, "call structure")
        consts = iter(constants)
        leaves = [torch.empty(0) if t else next(consts) for t in is_tensor]
        return cls(spec, leaves, _signature_from_json(d.get("signature")))


class OutputStructure:
    """The model's result: a tree whose leaves are program outputs or constants."""

    def __init__(self, spec, leaves, signature=None):
        self.spec = spec
        self.signature = signature  # the forward's, to bind later calls (export files)
        self.leaves = leaves  # ("tensor", output index) or ("constant", value)

    def rebuild(self, tensors):
        return pytree.tree_unflatten(
            [tensors[v] if kind == "tensor" else v for kind, v in self.leaves], self.spec)

    @classmethod
    def flat(cls, count):
        """A single tensor (count 1) or a tuple of `count` tensors: the structure of export
        files written before structures were recorded."""
        if count == 1:
            return cls(pytree.tree_flatten(0)[1], [("tensor", 0)])
        return cls(pytree.tree_flatten((0,) * count)[1], [("tensor", i) for i in range(count)])

    def to_json(self):
        for kind, v in self.leaves:
            if kind == "constant" and not isinstance(v, _JSON_CONSTANTS):
                raise ValueError(f"the model returns a {type(v).__name__}, which cannot be "
                                 "written to an export file")
        return dict(spec=pytree.treespec_dumps(self.spec), leaves=[list(x) for x in self.leaves])

    @classmethod
    def from_json(cls, d):
        leaves = []
        for kind, v in d["leaves"]:
            if kind not in ("tensor", "constant"):
                raise ValueError(f"unknown output leaf kind {kind!r}")
            leaves.append((kind, int(v) if kind == "tensor" else v))
        spec = _safe_treespec_loads(d["spec"])
        if spec.num_leaves != len(leaves):
            raise ValueError("output structure: leaf counts do not agree")
        _check_rebuilds(spec, "output structure")
        return cls(spec, leaves)


def dumps_or_none(structure):
    """JSON text of a structure, or None where it cannot be serialized (see the module
    comment): the cache then keeps the live capture's structure instead."""
    try:
        return json.dumps(structure.to_json())
    except (ValueError, NotImplementedError, TypeError):
        return None


# ---- PopTorch's custom argument parsers ---------------------------------------------------
class ICustomArgParser:
    """How the inputs and outputs of a user type map to tensors (PopTorch's interface):
    yieldTensors(struct) yields its tensors in order; reconstruct(original_structure,
    tensor_iterator) builds a new object of the type from tensors drawn from the iterator."""

    def yieldTensors(self, struct):
        raise NotImplementedError

    def reconstruct(self, original_structure, tensor_iterator):
        raise NotImplementedError


class _Original:
    """The flattened object kept as a tree node's context. Compared by type only: two calls
    with objects of a registered type are the same structure when their tensors agree."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Original) and type(other.value) is type(self.value)

    def __hash__(self):
        return hash(type(self.value))

    def __repr__(self):
        return f"<{type(self.value).__name__}>"

    def __deepcopy__(self, memo):  # the object may hold traced tensors: shared, not copied
        return self


def registerCustomArgParser(type_, parser):
    """Makes objects of `type_` valid inputs and outputs of a model: their tensors (by
    `parser`, an ICustomArgParser) are the program's, the object is rebuilt around the
    results. Registered as a torch pytree node, so capture and calls both see through it."""
    if not isinstance(type_, type) or not isinstance(parser, ICustomArgParser):
        raise TypeError("registerCustomArgParser(type, parser): expected a class and an "
                        "ICustomArgParser instance")

    def flatten(obj):
        return list(parser.yieldTensors(obj)), _Original(obj)

    def unflatten(values, context):
        return parser.reconstruct(context.value, iter(values))

    def flatten_with_keys(obj):  # torch.export names the leaves by these keys
        values, context = flatten(obj)
        return [(pytree.SequenceKey(i), v) for i, v in enumerate(values)], context

    if type_ in pytree.SUPPORTED_NODES:
        pytree._deregister_pytree_node(type_)
    pytree.register_pytree_node(type_, flatten, unflatten,
                                flatten_with_keys_fn=flatten_with_keys)
