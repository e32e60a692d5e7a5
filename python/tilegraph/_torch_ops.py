"""PopTorch's `torch.ops.poptorch` operators that model code calls directly (Hugging Face
optimum-graphcore's fx transformations insert `torch.ops.poptorch.set_attribute` /
`clear_attribute` around layers for outlining, `begin_autocast` / `restore_autocast` around
autocast regions). On tilegraph they have no effect: outlining is an IPU code-size setting,
and autocast regions are tilegraph.autocast's (the ops mark no region here). Defined with
CompositeImplicitAutograd kernels, so eager runs and torch.export's trace both see nothing
of them (tensor ops are the identity). Registered once per process; skipped when another
library (PopTorch itself) already defined the namespace's operators."""
import torch

# name -> (schema, kernel)
_OPS = {
    "set_attribute": ("set_attribute(str attribute, str key, str value) -> ()",
                      lambda attribute, key, value: None),
    "clear_attribute": ("clear_attribute(str attribute, str key) -> ()",
                        lambda attribute, key: None),
    "begin_autocast": ("begin_autocast() -> ()", lambda: None),
    "suppress_autocast": ("suppress_autocast() -> ()", lambda: None),
    "restore_autocast": ("restore_autocast() -> ()", lambda: None),
    "push_name_scope": ("push_name_scope(str name) -> ()", lambda name: None),
    "pop_name_scope": ("pop_name_scope() -> ()", lambda: None),
    "nop": ("nop(Tensor x) -> Tensor", lambda x: x.clone()),
    "recomputation_checkpoint": ("recomputation_checkpoint(Tensor x) -> Tensor",
                                 lambda x: x.clone()),
}

_library = None


def register():
    """Defines the operators (idempotent)."""
    global _library
    if _library is not None:
        return
    try:
        missing = [n for n in _OPS if not hasattr(torch.ops.poptorch, n)]
    except (AttributeError, RuntimeError):
        missing = list(_OPS)
    if not missing:
        return
    try:
        library = torch.library.Library("poptorch", "FRAGMENT")
        for name in missing:
            schema, kernel = _OPS[name]
            library.define(schema)
            library.impl(name, kernel, "CompositeImplicitAutograd")
    except RuntimeError:
        return  # defined by someone else meanwhile: theirs stand
    _library = library
