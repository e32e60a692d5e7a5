"""torch.special's functions (lgamma, digamma, polygamma, erfinv, ndtri, i0 / i0e / i1 /
i1e, erfcx, and what decomposes to them: gammaln, mvlgamma, log_ndtr), the float functions
PyTorch's decompositions leave to prims (exp2, fmax / fmin, signbit, frexp, angle,
nextafter), the searches (bucketize, searchsorted, histc), diagonal_scatter,
scatter(reduce="add"), nanmedian, mode, addmv, ldexp and tril / triu_indices: against eager
PyTorch, with the special values (NaN, -0.0, infinities, ties, bin edges) where eager's
rules are subtle, and trained where differentiable."""
import math

import pytest
import torch

import tilegraph
from parity import Fn, assert_layer_matches_eager


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


def test_signbit_and_copysign_read_the_sign_bit_of_zeros_and_nans():
    # -0.0 and a negative NaN (x86's 0 / 0 makes one) have the bit set, as eager reads it.
    with_nans = torch.cat([SPECIAL, -SPECIAL])
    assert torch.signbit(-torch.tensor([math.nan])).item()  # the input really has a -NaN
    assert_like_eager(torch.signbit, with_nans, exact=True)
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        assert_like_eager(torch.signbit, with_nans.to(dtype), exact=True)
    assert_like_eager(torch.signbit, torch.tensor([-3, 0, 4]), exact=True)
    assert_like_eager(torch.signbit, torch.tensor([True, False]), exact=True)
    magnitudes = torch.arange(1.0, with_nans.numel() + 1)
    assert_like_eager(torch.copysign, magnitudes, with_nans, exact=True)
    assert_like_eager(lambda a: torch.copysign(a, -0.0), magnitudes, exact=True)


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


def test_nextafter_steps_one_ulp_in_its_format():
    a = torch.cat([SPECIAL, torch.randn(20)])
    b = torch.cat([SPECIAL.flip(0), torch.randn(20)])
    for dtype in (torch.float32, torch.float64):
        assert_like_eager(torch.nextafter, a.to(dtype), b.to(dtype), exact=True)
    assert_like_eager(lambda a: torch.nextafter(a, torch.tensor(math.inf)), a, exact=True)


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
    with pytest.raises((RuntimeError, NotImplementedError), match="not implemented for"):
        tilegraph.inferenceModel(Fn(lambda x: torch.histc(x, 3)))(torch.tensor([1, 2, 3]))


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


def test_mode_takes_the_smallest_most_frequent_value_and_its_last_index():
    g = torch.Generator().manual_seed(0)
    cases = [torch.tensor([[3, 1, 3, 1, 2], [5, 5, 4, 4, 4], [7, 0, 0, 7, 1]]),
             torch.randint(0, 4, (6, 9), generator=g),
             torch.randint(0, 3, (5, 4, 7), generator=g).float(),
             torch.randint(0, 2, (4, 5), generator=g).bool(),
             torch.tensor([[1.0, 2, 2, 1, math.nan, math.nan]])]
    for x in cases:
        for dim in range(-x.dim(), x.dim()):
            assert_like_eager(lambda t: torch.mode(t, dim, keepdim=dim % 2 == 0), x, exact=True)
    nan_mode = torch.tensor([[math.nan, math.nan, math.nan, 1.0, 2.0]])
    got = tilegraph.inferenceModel(Fn(lambda t: torch.mode(t, 1)))(nan_mode)
    assert torch.isnan(got[0]).all() and torch.isnan(nan_mode[0, got[1]]).all()


def test_scatter_with_reduce_add_and_multiply():
    x, src = torch.randn(3, 5), torch.randn(3, 5)
    index = torch.tensor([[0, 1, 0, 4, 4], [2, 2, 2, 0, 1], [3, 3, 1, 1, 0]])
    assert_like_eager(lambda x, s, i: x.scatter(1, i, s, reduce="add"), x, src, index)
    assert_like_eager(lambda x, i: x.scatter(1, i, 2.5, reduce="add"), x, index)
    assert_like_eager(lambda x, s, i: x.scatter(1, i, s, reduce="multiply"), x, src, index)
    assert_like_eager(lambda x, i: x.scatter(-1, i, -1.5, reduce="multiply"), x, index)


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


WIDE = torch.cat([torch.linspace(-30, 60, 1801), torch.tensor([
    0.0, -0.0, 1e-30, -1e-30, 1.4616321, 1e30, -1e30, math.inf, -math.inf, math.nan])])
UNIT = torch.cat([torch.linspace(-1, 1, 2001), torch.tensor([
    1e-30, -1e-12, 0.99999994, -0.9999999, 1.5, -1.5, -0.0, math.nan])])
SPECIAL_FUNCTIONS = {  # name: (function, inputs)
    "lgamma": (torch.lgamma, WIDE),
    "digamma": (torch.digamma, WIDE),
    "polygamma_1": (lambda x: torch.polygamma(1, x), WIDE[WIDE != WIDE.round()]),
    "polygamma_3": (lambda x: torch.polygamma(3, x), torch.linspace(0.05, 40, 801)),
    "erfinv": (torch.erfinv, UNIT),
    "ndtri": (torch.special.ndtri, torch.cat([(UNIT + 1) / 2, torch.tensor([1e-30, 1e-10])])),
    "i0": (torch.i0, WIDE),
    "i0e": (torch.special.i0e, WIDE),
    "i1": (torch.special.i1, WIDE),
    "i1e": (torch.special.i1e, WIDE),
    "erfcx": (torch.special.erfcx, WIDE),
    "gammaln": (torch.special.gammaln, WIDE),
    "mvlgamma": (lambda x: torch.mvlgamma(x, 3), torch.linspace(1.01, 50, 801)),
}


def _mpmath(fn):
    """A float64 reference from mpmath at 30 digits (eager's f64 digamma / trigamma lose
    up to 2e-9 relative next to the negative poles: tan(pi x) of an x near an integer)."""
    import mpmath

    def value(t):
        with mpmath.workdps(30):
            out = []
            for v in t.double().tolist():
                if math.isnan(v) or math.isinf(v) or (v <= 0 and v == round(v)):
                    out.append(math.nan)  # (the special values are compared with eager's)
                else:
                    out.append(float(fn(mpmath, mpmath.mpf(v))))
            return torch.tensor(out, dtype=torch.float64)
    return value


# name: a more exact f64 reference than eager's, where eager's is not exact to 1e-13.
EXACT_REFERENCE = {"digamma": _mpmath(lambda mp, v: mp.digamma(v)),
                   "polygamma_1": _mpmath(lambda mp, v: mp.polygamma(1, v))}
# Where eager's f32 kernel is itself off the f64 result by more than the f32 comparison's
# tolerance, only the f64 reference is compared (trigamma of negative numbers: eager's
# reflection loses all digits near the poles, 0.85 relative at -9.7).
EAGER_F32_RELIABLE = {"polygamma_1": lambda x: x > 0}


@pytest.mark.parametrize("name", sorted(SPECIAL_FUNCTIONS))
def test_special_functions_match_an_f64_reference(name):
    """f32: within 2.5e-7 relative of eager's f64 result (tilegraph computes in double and
    rounds once; eager's f32 kernels are off by up to 4e-6 in places: erfcx(-8.5), digamma
    near its root), and equal to eager's f32 result to its own error; f64: eager's f64 to
    1e-13 (eager's digamma is 4e-11 off its root: an absolute tolerance covers it). Special
    values (poles, +-0, infinities, NaN, outside the domain) as eager's."""
    fn, x = SPECIAL_FUNCTIONS[name]
    model = tilegraph.inferenceModel(Fn(fn))
    got, want64 = model(x), fn(x.double())
    if name in EXACT_REFERENCE:
        exact = EXACT_REFERENCE[name](x)
        want64 = torch.where(exact.isnan(), want64, exact)
    torch.testing.assert_close(got, want64.float(), rtol=2.5e-7, atol=0, equal_nan=True)
    reliable = EAGER_F32_RELIABLE.get(name, torch.ones_like)(x).bool()
    torch.testing.assert_close(got[reliable], fn(x)[reliable], rtol=4e-6, atol=1e-6,
                               equal_nan=True)
    got64 = tilegraph.inferenceModel(Fn(fn))(x.double())
    torch.testing.assert_close(got64, want64, rtol=1e-13, atol=1e-12, equal_nan=True)


def test_log_ndtr_through_erfcx_as_eager():
    """log_ndtr decomposes (at capture, by PyTorch's rule) into erfcx and logs computed in
    the input's dtype, as eager's kernel does: equal to eager in f32 and f64."""
    x = torch.linspace(-40, 10, 801)
    for dtype in (torch.float32, torch.float64):
        assert_like_eager(torch.special.log_ndtr, x.to(dtype))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_polygamma_of_negative_arguments_by_reflection(order):
    """Negative arguments, near and far from 0 (-1e7 - 0.25: a zeta sum taking |x| terms
    did not end in reasonable time; the reflection formula takes a few), against mpmath."""
    x = torch.tensor([-1e7 - 0.25, -12345.3, -3.7, -2.5, -1.1, -0.001], dtype=torch.float64)
    got = tilegraph.inferenceModel(Fn(lambda t: torch.polygamma(order, t)))(x)
    want = _mpmath(lambda mp, v: mp.polygamma(order, v))(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_polygamma_at_the_poles_is_infinite():
    """At 0 and the negative integers trigamma is a pole: +inf here; eager's reflection
    formula returns a large finite number from sin(pi x) rounded off zero (5.4e12 at -10)."""
    x = torch.tensor([0.0, -1.0, -10.0])
    got = tilegraph.inferenceModel(Fn(lambda x: torch.polygamma(1, x)))(x)
    assert torch.isinf(got).all() and (got > 0).all()


def test_distributions_log_probs_train_like_eager():
    """torch.distributions' Gamma, Beta, StudentT and Dirichlet log densities (lgamma and,
    in the gradient, digamma / polygamma) as a loss: 4 SGD steps as in eager."""
    D = torch.distributions

    class Likelihood(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.raw = torch.nn.Parameter(torch.tensor([0.3, -0.2, 0.5, 0.1]))

        def forward(self, x, p, y):
            a, b, df, c = torch.nn.functional.softplus(self.raw) + 0.5
            conc = torch.stack([a, b, c])
            nll = -(D.Gamma(a, b).log_prob(x).mean() + D.Beta(a, c).log_prob(p).mean()
                    + D.StudentT(df).log_prob(y).mean()
                    + D.Dirichlet(conc).log_prob(torch.softmax(y.reshape(-1, 3), 1)).mean())
            return nll
    from parity import assert_trains_like_eager
    g = torch.Generator().manual_seed(3)
    x, p = torch.rand(12, generator=g) * 3 + 0.1, torch.rand(12, generator=g) * 0.9 + 0.05
    y = torch.randn(12, generator=g)
    assert_trains_like_eager(Likelihood(), (x, p, y), steps=4, lr=0.05,
                             loss_of=lambda out: out, rtol=1e-5, atol=1e-5)


DIFFERENTIABLE = {
    "lgamma_digamma": lambda h: torch.lgamma(h.abs() + 0.5) + torch.digamma(h.abs() + 0.7),
    "polygamma": lambda h: torch.polygamma(2, h.abs() + 0.8) * 0.1 + h,
    "erfinv_ndtri": lambda h: torch.erfinv(torch.tanh(h) * 0.9) + torch.special.ndtri(
        torch.sigmoid(h)),
    "bessel": lambda h: torch.i0(h) * 0.1 + torch.special.i0e(h) + torch.special.i1(h) * 0.1
    + torch.special.i1e(h * torch.tensor([0.0] + [1.0] * 7)),
    "erfcx": lambda h: torch.special.erfcx(h) * 0.1,
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
    assert_layer_matches_eager(DIFFERENTIABLE[name])


def test_edges_an_adversarial_audit_found():
    """Each was a crash, a hang or a wrong value before (helper audit, session 51)."""
    assert_like_eager(lambda x: torch.tril_indices(3, 0) + x, torch.tensor(0), exact=True)
    assert_like_eager(lambda x: torch.triu_indices(3, 4, 1) + x, torch.tensor(0), exact=True)
    assert_like_eager(torch.diagonal_scatter, torch.zeros(2, 2),
                      torch.ones(2, dtype=torch.float64), exact=True)
    got = tilegraph.inferenceModel(Fn(torch.nanmedian))(torch.zeros(0))
    assert got.shape == () and torch.isnan(got)
    with_nan = torch.tensor([[3.0, 1.0, math.nan, 2.0, math.nan], [1.0, 2.0, 3.0, 4.0, 5.0]])
    assert_like_eager(lambda x: torch.median(x, 1), with_nan, exact=True)
    assert_like_eager(torch.median, with_nan, exact=True)
    mat = torch.tensor([[math.inf, 1.0], [0.0, 1.0]])
    assert_like_eager(lambda a, m, v: torch.addmv(a, m, v, alpha=0), torch.tensor([1.0, 2.0]),
                      mat, torch.ones(2), exact=True)
    assert_like_eager(lambda a, m, v: torch.addmv(a, m, v, beta=0), torch.tensor([math.nan, 2.0]),
                      mat.nan_to_num(posinf=3.0), torch.ones(2), exact=True)
    got = tilegraph.inferenceModel(Fn(lambda t: torch.polygamma(1, t)))(torch.tensor([math.inf]))
    assert torch.equal(got, torch.zeros(1))
    tiny = torch.tensor([5e-324, 1e-320, 1e-300], dtype=torch.float64)  # f64 subnormals
    assert_like_eager(torch.special.ndtri, tiny)
    # A range past the format (max - min overflows): no crash, nothing counted twice
    counts = tilegraph.inferenceModel(Fn(lambda x: torch.histc(x, 5)))(
        torch.tensor([-3e38, 3e38, 0.0]))
    assert counts.shape == (5,) and float(counts.sum()) <= 3


def test_gradients_at_ties_and_in_the_tails():
    """fmax / fmin split a tie's gradient evenly (eager's rule); log_ndtr's gradient deep in
    the left tail is finite (its decomposition's untaken branch made NaN)."""
    from parity import assert_trains_like_eager

    class Ties(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([0.5, 2.0, -1.0]))

        def forward(self, other):
            return (torch.fmax(self.w, other) * torch.tensor([1.0, 2.0, 3.0])).sum() + \
                torch.fmin(other, self.w).sum()
    assert_trains_like_eager(Ties(), (torch.tensor([0.5, 1.0, -1.0]),), steps=2,
                             loss_of=lambda out: out)

    class Tail(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(
                [-100.0, -40.0, -10.0, -3.0, 0.5, 3.0, 6.0], dtype=torch.float64))

        def forward(self, scale):
            return torch.special.log_ndtr(self.w * scale).sum()
    assert_trains_like_eager(Tail(), (torch.tensor(1.0, dtype=torch.float64),), steps=1,
                             lr=0.01, loss_of=lambda out: out, rtol=1e-9, atol=1e-9)


def _tied(shape, dtype, seed, nan=False):
    """Values with many ties (4 distinct), NaN in some rows when `nan`."""
    x = torch.randint(0, 4, shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    if nan:
        x.view(-1)[::7] = math.nan
    return x


TIE_FUNCTIONS = {
    "sort": lambda x, d: torch.sort(x, dim=d),
    "sort_descending": lambda x, d: torch.sort(x, dim=d, descending=True),
    "sort_stable": lambda x, d: torch.sort(x, dim=d, stable=True, descending=True),
    "argsort": lambda x, d: torch.argsort(x, dim=d),
    "msort": lambda x, d: torch.msort(x.movedim(d, 0)),
    "topk_partial_sort": lambda x, d: torch.topk(x, 2, dim=d),  # k * 64 <= n from n = 128
    "topk": lambda x, d: torch.topk(x, min(9, x.shape[d]), dim=d),
    "topk_smallest": lambda x, d: torch.topk(x, min(5, x.shape[d]), dim=d, largest=False),
    "topk_unsorted": lambda x, d: torch.topk(x, min(6, x.shape[d]), dim=d, sorted=False),
    "topk_all": lambda x, d: torch.topk(x, x.shape[d], dim=d),
    "kthvalue": lambda x, d: torch.kthvalue(x, (x.shape[d] + 2) // 3, dim=d),
    "kthvalue_last": lambda x, d: torch.kthvalue(x, x.shape[d], dim=d),
    "median": lambda x, d: torch.median(x, dim=d),
    "mode": lambda x, d: torch.mode(x, dim=d),
}


@pytest.mark.parametrize("length", [5, 16, 17, 40, 130, 300])
def test_sort_topk_kthvalue_order_ties_as_eager(length):
    """Among equal values the indices are eager's: its CPU sort (std::sort, not stable beyond
    16 elements), topk (partial sort or selection) and kthvalue (quickselect) leave a
    particular order, which tilegraph reproduces (src/ops/sort.cc), along the last and a
    leading dim, in float (with NaN) and integer dtypes."""
    for dtype, nan in ((torch.float32, False), (torch.float32, True), (torch.float64, False),
                       (torch.int64, False), (torch.int32, False)):
        # (where NaN is the mode, eager's index depends on its NaN-blind comparator: see
        # _aten_data._mode)
        names = [k for k in sorted(TIE_FUNCTIONS) if not (nan and k in ("kthvalue_last",
                                                                         "mode"))]
        for dim, shape in ((-1, (3, length)), (0, (length, 2))):
            x = _tied(shape, dtype, length + dim, nan)

            def every(t):
                out = []
                for k in names:
                    r = TIE_FUNCTIONS[k](t, dim)
                    out.extend(r if isinstance(r, tuple) else (r,))
                return tuple(out)
            assert_like_eager(every, x, exact=True)


def test_gradients_of_tied_topk_and_sort_go_where_eagers_go():
    """topk / sort / kthvalue of equal values with gradients (a per-unit scale initialized to
    ones, as a norm's weight is): the gradient reaches the units eager's order picks, so the
    weights after a few steps are eager's (a stable order would train other units)."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(48))

        def forward(self, x):
            h = self.scale * x.sum(1, keepdim=True)  # every row: 48 equal values
            top = torch.topk(h, 20, dim=1).values
            ranked = torch.sort(h, dim=1, descending=True).values[:, :30]
            kth = torch.kthvalue(h, 30, dim=1).values
            return (top * torch.linspace(1, 2, 20)).sum() + (ranked * torch.linspace(0, 1, 30)
                                                             ).sum() + kth.sum()

    from parity import assert_trains_like_eager
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(9))
    assert_trains_like_eager(Net(), (x,), steps=3, lr=0.01, loss_of=lambda out: out)
