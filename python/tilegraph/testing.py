"""PopTorch's `poptorch.testing`: comparisons of (possibly nested) results, as PopTorch's
tests and users write them."""
import torch

__all__ = ["allclose", "assert_allclose", "assert_allequal"]


def _pairs(actual, expected):
    if isinstance(actual, torch.Tensor) or isinstance(expected, torch.Tensor):
        yield torch.as_tensor(actual), torch.as_tensor(expected)
        return
    if isinstance(actual, dict) and isinstance(expected, dict):
        if actual.keys() != expected.keys():
            raise ValueError(f"different keys: {sorted(actual)} and {sorted(expected)}")
        for k in actual:
            yield from _pairs(actual[k], expected[k])
        return
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        if len(actual) != len(expected):
            raise ValueError(f"different lengths: {len(actual)} and {len(expected)}")
        for a, e in zip(actual, expected):
            yield from _pairs(a, e)
        return
    yield torch.as_tensor(actual), torch.as_tensor(expected)


def allclose(actual, expected, rtol=1e-05, atol=1e-08, equal_nan=False):
    """torch.allclose over every tensor of two structures (tensors, numbers, nested lists,
    tuples and dicts of them), after promoting each pair to a common dtype; False where
    shapes or structures differ."""
    try:
        for a, e in _pairs(actual, expected):
            if a.shape != e.shape:
                return False
            dtype = torch.promote_types(a.dtype, e.dtype)
            if not dtype.is_floating_point:
                dtype = torch.float64
            if not torch.allclose(a.to(dtype), e.to(dtype), rtol=rtol, atol=atol,
                                  equal_nan=equal_nan):
                return False
    except ValueError:
        return False
    return True


def assert_allclose(actual=None, expected=None, rtol=1e-05, atol=1e-08, equal_nan=False,
                    msg=None):
    """torch.testing.assert_close with PopTorch's keyword-only habit (actual=, expected=)."""
    assert actual is not None and expected is not None, \
        "'actual' and 'expected' keyword arguments must be present"
    for a, e in _pairs(actual, expected):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, equal_nan=equal_nan,
                                   check_dtype=False, msg=msg)


def assert_allequal(actual=None, expected=None, msg=None):
    """Exact equality of every tensor of two structures."""
    assert_allclose(actual=actual, expected=expected, rtol=0, atol=0, msg=msg)
