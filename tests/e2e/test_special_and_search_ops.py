"""Float functions PyTorch's decompositions leave to prims (exp2, fmax / fmin, signbit,
frexp, angle), the searches (bucketize, searchsorted, histc), diagonal_scatter,
scatter(reduce="add"), nanmedian and the ops decomposed at capture (addmv, ldexp,
tril / triu_indices): against eager PyTorch, with the special values (NaN, -0.0,
infinities, ties, bin edges) where eager's rules are subtle, and trained where
differentiable."""
import math

import pytest
import torch

import tilegraph
from parity import LayerNet, assert_infers_and_trains_like_eager


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def assert_like_eager(fn, *args, exact=False):
    want = fn(*args)
    got = tilegraph.inferenceModel(Fn(fn))(*args)
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        if exact:
            torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)
        else:
            torch.testing.assert_close(g, w, equal_nan=True)


SPECIAL = torch.tensor([0.0, -0.0, 1.0, -1.0, 0.5, 3.0, -7.25, 1e-40, -3e-42, 1e30, math.inf,
                        -math.inf, math.nan, 2.0 ** -126, 1023.5, 0.75])


def test_fmax_fmin_ignore_a_nan_operand():
    a = torch.cat([SPECIAL, torch.randn(20)])
    b = torch.cat([SPECIAL.flip(0), torch.randn(20)])
    b[3] = math.nan
    assert_like_eager(lambda a, b: (torch.fmax(a, b), torch.fmin(a, b)), a, b, exact=True)
    i, j = torch.randint(-5, 5, (12,)), torch.randint(-5, 5, (12,))
    assert_like_eager(lambda i, j: (torch.fmax(i, j), torch.fmin(i, j)), i, j, exact=True)


def test_signbit_sees_negative_zero():
    assert_like_eager(torch.signbit, SPECIAL[SPECIAL == SPECIAL], exact=True)
    assert_like_eager(torch.signbit, torch.tensor([-3, 0, 4]), exact=True)
    assert_like_eager(torch.signbit, torch.tensor([True, False]), exact=True)


def test_exp2_frexp_ldexp_angle():
    x = torch.cat([SPECIAL, torch.randn(30) * 40])
    assert_like_eager(torch.exp2, x)
    assert_like_eager(torch.exp2, torch.arange(-3, 5))
    # frexp: subnormals, powers of two (where log2 lands on an integer) and their neighbours
    powers = torch.tensor([2.0 ** e for e in range(-149, 128, 7)])
    edge = torch.cat([x, powers, torch.nextafter(powers, torch.zeros(1)),
                      torch.nextafter(powers, torch.full((1,), math.inf))])
    assert_like_eager(torch.frexp, edge, exact=True)
    assert_like_eager(torch.frexp, edge.double(), exact=True)
    e = torch.randint(-20, 20, x.shape)
    assert_like_eager(torch.ldexp, x, e)
    assert_like_eager(torch.angle, x, exact=True)
    assert_like_eager(torch.angle, torch.tensor([-2, 0, 3]), exact=True)


@pytest.mark.parametrize("right", [False, True])
def test_bucketize_and_searchsorted_place_ties_and_nan_as_eager(right):
    boundaries = torch.tensor([-2.0, -1.0, -1.0, 0.0, 0.5, 3.0, 3.0, 3.0, 10.0])
    x = torch.cat([boundaries, torch.randn(40) * 4, torch.tensor([-math.inf, math.inf,
                                                                    math.nan])]).reshape(4, 13)
    assert_like_eager(lambda x, b: torch.bucketize(x, b, right=right), x, boundaries,
                      exact=True)
    assert_like_eager(lambda x, b: torch.bucketize(x, b, right=right, out_int32=True), x,
                      boundaries, exact=True)
    assert_like_eager(lambda b: torch.bucketize(0.5, b, right=right), boundaries, exact=True)
    for size in (1, 2, 7, 8, 16):  # every depth of the search, and lengths of 2 ** k
        seq = torch.sort(torch.randint(-4, 4, (size,)).float())[0]
        assert_like_eager(lambda s, x: torch.searchsorted(s, x, right=right), seq, x,
                          exact=True)
    rows = torch.sort(torch.randn(4, 9), dim=1)[0]
    assert_like_eager(lambda s, x: torch.searchsorted(s, x, side="right" if right else "left"),
                      rows, x, exact=True)
    unsorted = torch.randn(4, 9)
    order = torch.argsort(unsorted, dim=1)
    assert_like_eager(lambda s, x, o: torch.searchsorted(s, x, right=right, sorter=o),
                      unsorted, x, order, exact=True)


def test_histc_bins_edges_and_data_range():
    x = torch.cat([torch.randn(200), torch.tensor([-2.0, 2.0, 0.0, 1.0, -1.0, 2.5, math.nan,
                                                   -math.inf, 1.9999999, -1.9999999])])
    assert_like_eager(lambda x: torch.histc(x, bins=8, min=-2, max=2), x, exact=True)
    assert_like_eager(lambda x: torch.histc(x, bins=7, min=-2, max=2), x, exact=True)
    finite = x[torch.isfinite(x)]
    assert_like_eager(lambda x: torch.histc(x, bins=10), finite, exact=True)
    assert_like_eager(lambda x: torch.histc(x, bins=3), torch.full((5,), 4.0), exact=True)
    assert_like_eager(lambda x: torch.histc(x, bins=5, min=0, max=1), torch.rand(3, 4).double(),
                      exact=True)


def test_nanmedian_skips_nan():
    x = torch.randn(5, 7)
    x[0, 2] = x[1, 0] = x[1, 6] = math.nan
    x[2] = math.nan  # a row of NaN only: NaN
    assert_like_eager(lambda x: torch.nanmedian(x, 1)[0], x, exact=True)
    assert_like_eager(lambda x: torch.nanmedian(x, 0, keepdim=True)[0], x, exact=True)
    assert_like_eager(torch.nanmedian, x, exact=True)
    distinct = torch.randperm(35).float().reshape(5, 7)
    distinct[1, 3] = math.nan
    assert_like_eager(lambda x: torch.nanmedian(x, 1), distinct, exact=True)


def test_scatter_with_reduce_add():
    x, src = torch.randn(3, 5), torch.randn(3, 5)
    index = torch.tensor([[0, 1, 0, 4, 4], [2, 2, 2, 0, 1], [3, 3, 1, 1, 0]])
    assert_like_eager(lambda x, s, i: x.scatter(1, i, s, reduce="add"), x, src, index)
    assert_like_eager(lambda x, i: x.scatter(1, i, 2.5, reduce="add"), x, index)
    with pytest.raises(NotImplementedError, match="multiply"):
        tilegraph.inferenceModel(Fn(lambda x, s, i: x.scatter(1, i, s, reduce="multiply")))(
            x, src, index)


def test_constant_index_ops():
    x = torch.randn(4, 5)
    assert_like_eager(lambda x: x + torch.tril_indices(4, 5, -1).sum(), x)
    assert_like_eager(lambda x: torch.triu_indices(3, 6, 2) * x.sum().long(), x)
    for offset, d1, d2 in ((0, 0, 1), (2, 0, 1), (-1, 1, 0), (1, 2, 0)):
        cube = torch.randn(3, 4, 5)
        src = torch.diagonal(cube, offset, d1, d2) * 0 + torch.randn(
            torch.diagonal(cube, offset, d1, d2).shape)
        assert_like_eager(lambda c, s: torch.diagonal_scatter(c, s, offset, d1, d2), cube, src,
                          exact=True)


DIFFERENTIABLE = {
    "exp2": lambda h: torch.exp2(torch.tanh(h) * 3),
    "fmax_fmin": lambda h: torch.fmax(h, h.flip(1)) + torch.fmin(h * 2, h.flip(0)),
    "ldexp": lambda h: torch.ldexp(h, torch.arange(8) - 4),
    "addmv": lambda h: torch.addmv(h[:, 0], h, h[0], beta=0.5, alpha=2.0).unsqueeze(1) + h,
    "diagonal_scatter": lambda h: torch.diagonal_scatter(h, h[:, 1] * 3, 1),
    "frexp_mantissa": lambda h: torch.frexp(h * 3)[0] + h,
    "nanmedian": lambda h: torch.nanmedian(h, 1, keepdim=True)[0] + h,
}


@pytest.mark.parametrize("name", sorted(DIFFERENTIABLE))
def test_inference_and_training_match_eager(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g)
    assert_infers_and_trains_like_eager(LayerNet(DIFFERENTIABLE[name]), (x, t), steps=4,
                                        atol=1e-5)
