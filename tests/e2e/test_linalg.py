"""torch.linalg's dense solvers (inv, det, slogdet, logdet, cholesky, solve, solve_triangular,
cholesky_solve, cholesky_inverse and the _ex forms) as models use them: a Gaussian process
marginal likelihood, a Glow-style invertible 1x1 convolution, a multivariate normal's
log density; inference and training against eager PyTorch, and eager's errors for singular
and indefinite matrices."""
import math

import pytest
import torch

import tilegraph
from parity import Fn, assert_infers_and_trains_like_eager, assert_trains_like_eager


class Solvers(torch.nn.Module):
    """Every solver on matrices built from one weight: A = W W^T + 4 I (SPD) and
    M = W + 3 I (not symmetric)."""

    def __init__(self, n=4, dtype=torch.float32):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(n, n, generator=g, dtype=dtype) * 0.5)
        self.v = torch.nn.Parameter(torch.randn(2, n, 3, generator=g, dtype=dtype))

    def forward(self, x):
        n = self.w.shape[0]
        eye = torch.eye(n, dtype=self.w.dtype)
        a = self.w @ self.w.T + 4 * eye
        m = self.w + 3 * eye
        low = torch.linalg.cholesky(a)
        up = torch.linalg.cholesky(a, upper=True)
        terms = [
            torch.linalg.inv(m).sum(),
            torch.inverse(m @ m).mean(),
            torch.linalg.det(m),
            torch.linalg.slogdet(m)[1],
            torch.logdet(a),
            low.sum() + up.square().sum(),
            torch.linalg.solve(m, self.v).sum(),                       # batch of matrices B
            torch.linalg.solve(m, x[0]).sum(),                         # a vector B
            torch.linalg.solve(m, self.v.mT, left=False).square().sum(),
            torch.linalg.solve_triangular(low, self.v, upper=False).sum(),
            torch.linalg.solve_triangular(up, self.v.mT, upper=True, left=False).sum(),
            torch.linalg.solve_triangular(low, self.v, upper=False, unitriangular=True).sum(),
            torch.cholesky_solve(self.v, low).sum(),
            torch.cholesky_solve(self.v, up, upper=True).mean(),
            torch.cholesky_inverse(low).sum(),
            torch.triangular_solve(self.v, up, upper=True, transpose=True)[0].sum(),
            (torch.linalg.inv(a.expand(3, n, n) + x.unsqueeze(-1) * eye)).sum(),  # batched
        ]
        return torch.stack(terms), sum(t * (0.1 + 0.01 * i) for i, t in enumerate(terms))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_solvers_infer_and_train_like_eager(dtype):
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-10)
    x = torch.rand(3, 4, dtype=dtype, generator=torch.Generator().manual_seed(1))
    assert_infers_and_trains_like_eager(Solvers(dtype=dtype), (x,), steps=3, lr=0.01, **tol)


class GaussianProcess(torch.nn.Module):
    """The negative log marginal likelihood of an RBF-kernel GP (GPyTorch's exact GP, by
    hand): Cholesky of K + s^2 I, alpha by cholesky_solve, log det from L's diagonal."""

    def __init__(self):
        super().__init__()
        self.log_lengthscale = torch.nn.Parameter(torch.tensor(0.3))
        self.log_noise = torch.nn.Parameter(torch.tensor(-1.0))

    def forward(self, x, y):
        d2 = (x.unsqueeze(1) - x.unsqueeze(0)).square().sum(-1)
        k = torch.exp(-0.5 * d2 / self.log_lengthscale.exp().square())
        k = k + (self.log_noise.exp().square() + 1e-4) * torch.eye(x.shape[0])
        low = torch.linalg.cholesky(k)
        alpha = torch.cholesky_solve(y.unsqueeze(-1), low)
        fit = 0.5 * (y.unsqueeze(-1) * alpha).sum()
        log_det = torch.log(torch.diagonal(low)).sum()
        return fit + log_det + 0.5 * x.shape[0] * math.log(2 * math.pi)


def test_gaussian_process_marginal_likelihood_trains_like_eager():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(24, 2, generator=g) * 4
    y = torch.sin(x[:, 0]) + 0.1 * torch.randn(24, generator=g)
    assert_trains_like_eager(GaussianProcess(), (x, y), steps=5, lr=0.02, loss_of=lambda o: o,
                             rtol=1e-4, atol=1e-5)


class InvertibleConv(torch.nn.Module):
    """Glow's invertible 1x1 convolution: y = W x per position, log |det W| per pixel, and
    the inverse pass with W^-1 (x recovered)."""

    def __init__(self, c=6):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(c, c, generator=torch.Generator().manual_seed(4)))
        self.weight = torch.nn.Parameter(q)

    def forward(self, x):
        c = self.weight.shape[0]
        y = torch.nn.functional.conv2d(x, self.weight.view(c, c, 1, 1))
        log_det = x.shape[2] * x.shape[3] * torch.linalg.slogdet(self.weight)[1]
        back = torch.nn.functional.conv2d(y, torch.linalg.inv(self.weight).view(c, c, 1, 1))
        return back, (y.square().mean() - log_det * 1e-3) + (back - x).square().sum()


def test_invertible_1x1_conv_infers_and_trains_like_eager():
    x = torch.randn(2, 6, 5, 5, generator=torch.Generator().manual_seed(5))
    assert_infers_and_trains_like_eager(InvertibleConv(), (x,), steps=4, lr=0.05, rtol=1e-4,
                                        atol=1e-5)


class MultivariateNormalLogProb(torch.nn.Module):
    def __init__(self, n=3):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(n))
        self.factor = torch.nn.Parameter(torch.eye(n) + 0.1 * torch.ones(n, n))

    def forward(self, x):
        cov = self.factor @ self.factor.T + 0.5 * torch.eye(self.loc.shape[0])
        dist = torch.distributions.MultivariateNormal(self.loc, covariance_matrix=cov)
        lp = dist.log_prob(x)
        return lp, -lp.mean()


def test_multivariate_normal_log_prob_infers_and_trains_like_eager():
    """With torch.distributions' argument validation on (the default): its positive-definite
    check (a Cholesky's info) compiles into a run-time check."""
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(6))
    assert_infers_and_trains_like_eager(MultivariateNormalLogProb(), (x,), steps=3, lr=0.05,
                                        rtol=1e-4, atol=1e-5)


def test_multivariate_normal_validation_rejects_an_indefinite_covariance():
    class Density(torch.nn.Module):
        def forward(self, cov, x):
            return torch.distributions.MultivariateNormal(torch.zeros(3), cov).log_prob(x)

    model, x = tilegraph.inferenceModel(Density()), torch.randn(4, 3)
    good = torch.eye(3) + 0.2
    torch.testing.assert_close(model(good, x), Density()(good, x))
    bad = torch.diag(torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError):
        Density()(bad, x)
    with pytest.raises(ValueError, match="data check"):  # as eager, a ValueError
        model(bad, x)


@pytest.mark.parametrize("fn, message", [
    (torch.linalg.inv, "singular"),
    (lambda a: torch.linalg.solve(a, torch.ones(a.shape[-1])), "singular"),
    (torch.linalg.cholesky, "positive-definite"),
])
def test_singular_or_indefinite_matrices_raise_as_eager(fn, message):
    """Where eager raises (a singular matrix to inv / solve, an indefinite one to cholesky),
    the call fails with the same kind of error, not with NaN results; the engine stays
    usable."""
    model = tilegraph.inferenceModel(Fn(fn))
    good = torch.eye(3) * 2
    torch.testing.assert_close(model(good), fn(good))
    bad = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
    bad = bad if message == "singular" else -good
    with pytest.raises(RuntimeError, match=message):
        fn(bad)
    with pytest.raises(RuntimeError, match=message):
        model(bad)
    torch.testing.assert_close(model(good), fn(good))


def test_ex_forms_report_info_without_raising():
    """inv_ex / cholesky_ex / solve_ex return LAPACK's info (0, or the failing pivot / minor)
    per matrix of a batch, as torch's."""
    def fn(a):
        inv, i1 = torch.linalg.inv_ex(a)
        low, i2 = torch.linalg.cholesky_ex(a)
        x, i3 = torch.linalg.solve_ex(a, torch.ones(2, 3, 1))
        return i1, i2, i3, inv[0], low[0], x[0]

    a = torch.stack([torch.eye(3) * 2 + 0.1, torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 1]])])
    got, want = tilegraph.inferenceModel(Fn(fn))(a), fn(a)
    for g, w in zip(got[:3], want[:3]):
        assert g.dtype == w.dtype == torch.int32
        torch.testing.assert_close(g, w)
    for g, w in zip(got[3:], want[3:]):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("dtype, message", [
    (torch.bfloat16, "Low precision dtypes not supported"),
    (torch.int64, "Expected a floating point"),
])
def test_unsupported_dtypes_are_refused_at_compile_time(dtype, message):
    with pytest.raises(RuntimeError, match=message):
        tilegraph.inferenceModel(Fn(torch.linalg.det))((torch.eye(3) * 2).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matrix_exp_and_householder_product_match_eager(dtype):
    """matrix_exp over norms from 1e-2 to ~50 (0 to 6 squarings), batched;
    householder_product of a tall matrix (LAPACK's orgqr)."""
    g = torch.Generator().manual_seed(7)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12,
                                                                          atol=1e-12)
    for scale in (0.01, 0.5, 3.0, 10.0):
        a = torch.randn(3, 5, 5, generator=g, dtype=dtype) * scale
        want = torch.linalg.matrix_exp(a)
        got = tilegraph.inferenceModel(Fn(torch.linalg.matrix_exp))(a)
        torch.testing.assert_close(got / want.abs().amax(), want / want.abs().amax(), **tol)
    a, tau = torch.randn(2, 7, 4, generator=g, dtype=dtype), torch.rand(2, 3, generator=g,
                                                                         dtype=dtype)
    f = torch.linalg.householder_product
    torch.testing.assert_close(tilegraph.inferenceModel(Fn(f))(a, tau), f(a, tau), **tol)


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
def test_orthogonal_parametrization_trains_like_eager(orthogonal_map):
    """torch.nn.utils.parametrizations.orthogonal on a square and a wide weight (its maps
    need matrix_exp, solve, householder_product)."""
    from torch.nn.utils.parametrizations import orthogonal
    torch.manual_seed(8)
    square, wide = torch.nn.Linear(6, 6), torch.nn.Linear(6, 4)
    orthogonal(square, orthogonal_map=orthogonal_map)
    orthogonal(wide, orthogonal_map=orthogonal_map)
    net = torch.nn.Sequential(square, torch.nn.Tanh(), wide)

    class Loss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x)
            return out, (out - 0.5).square().mean()

    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(9))
    assert_infers_and_trains_like_eager(Loss(), (x,), steps=3, lr=0.1, rtol=1e-5, atol=1e-6)
