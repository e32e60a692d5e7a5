"""poptorch.experimental: the names PopTorch's experimental module offers. Its
dispatcher (IPUContext) is not built in tilegraph and is refused by name."""
from ._system import IPUContext, IPUScope  # noqa: F401

__all__ = ["IPUContext", "IPUScope"]
