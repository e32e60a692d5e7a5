"""HMC for Bayesian logistic regression with the whole iteration inside one tilegraph
program (tilegraph.mcmc): exact replay against plain PyTorch given the same draws, and the
posterior's mean and variance against a long reference chain."""
import pytest
import torch

from tilegraph import mcmc

N, D = 200, 5
STEP, LEAPFROG = 0.05, 10


def _problem(dtype):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=g, dtype=dtype)
    w = torch.randn(D, generator=g, dtype=dtype)
    y = (torch.rand(N, generator=g, dtype=dtype) < torch.sigmoid(X @ w)).to(dtype)

    def log_density(q):  # Bernoulli likelihood with logits Xq, standard normal prior
        z = q @ X.T
        return (y * z - z.clamp(min=0) - torch.log(1 + torch.exp(-z.abs()))).sum(-1) \
            - 0.5 * (q * q).sum(-1)
    return log_density


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_chain_replays_in_plain_pytorch(dtype, tol):
    log_density = _problem(dtype)
    sampler = mcmc.HMC(log_density, torch.zeros(D, dtype=dtype), STEP, LEAPFROG, seed=3)
    draws = sampler.sample(200)
    assert draws.samples.shape == (200, D) and draws.samples.dtype == dtype
    assert 0.5 < draws.accepted.double().mean() < 1.0  # both decisions occur
    assert not draws.accepted.all()
    samples, accepted = mcmc.torch_hmc(log_density, torch.zeros(D, dtype=dtype), STEP,
                                       LEAPFROG, draws.momenta, draws.uniforms)
    assert torch.equal(accepted, draws.accepted)
    torch.testing.assert_close(draws.samples, samples, rtol=tol, atol=tol)
    # The state persists across calls: the next call continues the chain.
    more = sampler.sample(5)
    cont, _ = mcmc.torch_hmc(log_density, draws.samples[-1], STEP, LEAPFROG, more.momenta,
                             more.uniforms)
    torch.testing.assert_close(more.samples, cont, rtol=tol, atol=tol)


def test_posterior_moments_match_a_long_reference_chain():
    log_density = _problem(torch.float64)
    sampler = mcmc.HMC(log_density, torch.zeros(D, dtype=torch.float64), STEP, LEAPFROG,
                       seed=11)
    sampler.sample(200)  # burn-in
    chain = sampler.sample(4000).samples
    ess = mcmc.effective_sample_size(chain)
    # Reference: 32 independent plain-PyTorch chains (torch's own random draws), 700
    # iterations each after 200 of burn-in: 22,400 draws.
    g = torch.Generator().manual_seed(5)
    chains, iters = 32, 900
    momenta = torch.randn(iters, chains, D, generator=g, dtype=torch.float64)
    uniforms = torch.rand(iters, chains, generator=g, dtype=torch.float64)
    ref, _ = mcmc.torch_hmc(log_density, torch.zeros(chains, D, dtype=torch.float64), STEP,
                            LEAPFROG, momenta, uniforms)
    ref = ref[200:].reshape(-1, D)
    mean, var = chain.mean(0), chain.var(0)
    ref_mean, ref_var = ref.mean(0), ref.var(0)
    # 5 Monte-Carlo standard errors of the tilegraph chain's mean (from its ESS) ...
    se = (var / ess).sqrt()
    assert torch.all((mean - ref_mean).abs() < 5 * se), ((mean - ref_mean) / se)
    # ... and of its variance (relative error sqrt(2 / ESS) for a near-Gaussian posterior).
    assert torch.all((var / ref_var - 1).abs() < 5 * (2 / ess).sqrt()), var / ref_var
