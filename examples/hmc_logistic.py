"""Bayesian logistic regression by HMC: tilegraph (whole iteration in one engine program)
against the same sampler in plain eager PyTorch. Prints posterior summaries and effective
samples per second (ESS/s, the minimum over coordinates) for each.

    python3 examples/hmc_logistic.py [--samples 4000] [--dim 10] [--data 500]
"""
import argparse
import time

import torch

from tilegraph import mcmc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--burn-in", type=int, default=500)
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--data", type=int, default=500)
    parser.add_argument("--step-size", type=float, default=0.03)
    parser.add_argument("--leapfrog", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(args.data, args.dim, generator=g, dtype=torch.float64)
    w = torch.randn(args.dim, generator=g, dtype=torch.float64)
    y = (torch.rand(args.data, generator=g, dtype=torch.float64) < torch.sigmoid(X @ w)).double()

    def log_density(q):
        z = q @ X.T
        return (y * z - z.clamp(min=0) - torch.log(1 + torch.exp(-z.abs()))).sum(-1) \
            - 0.5 * (q * q).sum(-1)

    start = torch.zeros(args.dim, dtype=torch.float64)
    t0 = time.perf_counter()
    sampler = mcmc.HMC(log_density, start, args.step_size, args.leapfrog, seed=1)
    compile_s = time.perf_counter() - t0
    sampler.sample(args.burn_in)
    t0 = time.perf_counter()
    draws = sampler.sample(args.samples)
    tg_s = time.perf_counter() - t0
    tg_ess = float(mcmc.effective_sample_size(draws.samples).min())

    n = args.burn_in + args.samples
    momenta = torch.randn(n, args.dim, generator=g, dtype=torch.float64)
    uniforms = torch.rand(n, generator=g, dtype=torch.float64)
    t0 = time.perf_counter()
    ref, _ = mcmc.torch_hmc(log_density, start, args.step_size, args.leapfrog, momenta,
                            uniforms)
    torch_s = (time.perf_counter() - t0) * args.samples / n
    ref = ref[args.burn_in:]
    torch_ess = float(mcmc.effective_sample_size(ref).min())

    print(f"posterior mean (tilegraph) {draws.samples.mean(0)[:4].tolist()} ...")
    print(f"posterior mean (eager)     {ref.mean(0)[:4].tolist()} ...")
    print(f"acceptance: tilegraph {draws.accepted.double().mean():.3f}")
    print(f"tilegraph: {args.samples} samples in {tg_s:.3f} s (compile {compile_s:.1f} s), "
          f"min ESS {tg_ess:.0f}, {tg_ess / tg_s:.0f} ESS/s")
    print(f"eager:     {args.samples} samples in {torch_s:.3f} s, min ESS {torch_ess:.0f}, "
          f"{torch_ess / torch_s:.0f} ESS/s")
    print(f"ESS/s ratio tilegraph / eager: {(tg_ess / tg_s) / (torch_ess / torch_s):.1f}x "
          "(one run, 2 threads; not a bench/ measurement)")


if __name__ == "__main__":
    main()
