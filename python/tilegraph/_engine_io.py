"""Tensors between torch and the engine's bindings, for every dtype.

The bindings take any C-contiguous CPU array through DLPack and return numpy arrays.
numpy has no bfloat16, so bf16 goes in as a torch tensor (DLPack carries it) and comes back
as its uint16 bits, viewed here as torch.bfloat16 again.
"""
import numpy as np
import torch


def to_engine(t):
    """A C-contiguous CPU array of `t` for the bindings (no copy when already contiguous)."""
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t
    return np.asarray(t.numpy(), order="C")


def from_engine(array, dtype=None):
    """A torch tensor of an array the bindings returned (bf16 arrives as uint16 bits)."""
    array = np.asarray(array)
    if array.dtype == np.uint16:
        return torch.from_numpy(array.copy() if not array.flags.writeable else array) \
            .view(torch.bfloat16)
    t = torch.from_numpy(array)
    return t if dtype is None or t.dtype == dtype else t.to(dtype)


def _viewable(t):
    """Whether numpy can view `t` in place (bf16 has no numpy type)."""
    return t.device.type == "cpu" and t.dtype != torch.bfloat16 and t.is_contiguous()


def read_variable_into(exe, name, t):
    """Copies the engine's variable `name` straight into tensor `t` (one copy, no temporary)
    when `t` is a contiguous CPU tensor numpy can view with the variable's exact type; returns
    False (nothing written) otherwise. The write is a tensor update like copy_: its version
    counter moves, so autograd and tilegraph's host-edit guard see it."""
    if not _viewable(t):
        return False
    try:
        exe.read_variable_into(name, t.detach().numpy())
    except (ValueError, TypeError):  # another shape or dtype: the caller copies the slow way
        return False
    torch.autograd.graph.increment_version(t)
    return True


def read_variables_into(exe, pairs):
    """read_variable_into for many (name, tensor) pairs in one engine call, the copies spread
    over its threads. Returns the pairs it did not write (not viewable as the variable's exact
    type: the caller copies those the slow way)."""
    direct = [(name, t) for name, t in pairs if _viewable(t)]
    if not direct:
        return list(pairs)
    try:
        exe.read_variables_into([name for name, _ in direct],
                                [t.detach().numpy() for _, t in direct])
    except (ValueError, TypeError):  # some variable has another type: one at a time
        return [(name, t) for name, t in pairs if not read_variable_into(exe, name, t)]
    for _, t in direct:
        torch.autograd.graph.increment_version(t)
    done = {id(t) for _, t in direct}
    return [(name, t) for name, t in pairs if id(t) not in done]
