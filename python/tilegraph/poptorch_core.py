"""The names of PopTorch's C++ extension module (`poptorch.poptorch_core`) that PopTorch code
and tests use from Python: its error classes (the same classes as tilegraph.Error and
friends, so `except poptorch.poptorch_core.Error` catches tilegraph's refusals) and
isCompilingWithDispatcher."""
from ._blocks import Error
from ._system import RecoverableError, UnrecoverableError

__all__ = ["Error", "RecoverableError", "UnrecoverableError", "isCompilingWithDispatcher"]


def isCompilingWithDispatcher():
    """True: tilegraph captures through torch.export (PopTorch 3's dispatcher capture is
    the same kind: ops as the dispatcher sees them, not a JIT trace)."""
    return True
