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
