"""Machine limits and microbenchmarks, measured in the same run as the models.

- limits: FP32 FMA peak (independent FMA chains in the widest vector ISA tilegraph was built
  for) and triad DRAM bandwidth, both on the suite's thread count (tilegraph._core probes).
- gemm: one large fp32 matrix product, GFLOP/s and fraction of the measured peak.
- layernorm_gelu: a memory-bound chain (layer norm then GELU over 32 MiB), GB/s counting one
  read of x and one write of y, and fraction of the measured bandwidth.
Each runs through tilegraph.inferenceModel like any model, next to eager and torch.compile.
"""
import time

import torch
import torch.nn.functional as F

import tilegraph
from tilegraph import _core

from bench import common


def limits(threads, earlier=None):
    """Measures the limits; with `earlier` (the run's first measurement) keeps the larger of
    each: a probe disturbed by the noisy VM can only come out low, and a low limit would
    flatter the fractions computed from it."""
    peak = _core.measure_fma_peak(threads)
    out = {"fma_peak_gflops": peak["gflops"], "fma_isa": peak["isa"],
           "triad_gbs": _core.measure_triad_bandwidth(threads)}
    if earlier:
        out["fma_peak_gflops"] = max(out["fma_peak_gflops"], earlier["fma_peak_gflops"])
        out["triad_gbs"] = max(out["triad_gbs"], earlier["triad_gbs"])
    return out


class MatMul(torch.nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(k, n) / k ** 0.5)

    def forward(self, x):
        return x @ self.w


class LayerNormGelu(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d)

    def forward(self, x):
        return F.gelu(self.norm(x))


def _engines(model, x, threads):
    """{engine: (call, first_call_seconds)} for eager, torch.compile and tilegraph."""
    out = {}
    builders = {
        "eager": lambda: model,
        "torch.compile": lambda: torch.compile(model),
        "tilegraph": lambda: tilegraph.inferenceModel(
            model, tilegraph.Options().setThreads(threads)),
    }
    for name, build in builders.items():
        t0 = time.perf_counter()
        fn = build()

        def call(fn=fn):
            with torch.no_grad():
                fn(x)
        call()
        out[name] = (call, time.perf_counter() - t0)
    return out


def _raw_onednn_gemm(n):
    """The reference engine: oneDNN's matmul primitive alone on buffers it owns (the library
    tilegraph's matmul kernel calls; no graph, no copies in or out)."""
    t0 = time.perf_counter()
    raw = _core.RawOnednnMatmul(n, n, n)
    raw.run()
    return raw.run, time.perf_counter() - t0, raw.implementation


def _measure(name, model, x, threads, rounds, work, unit, limit, limit_name, extra=None):
    """extra: {engine: (call, first_call_seconds)} measured in the same rounds."""
    torch.manual_seed(0)
    built = _engines(model.eval(), x, threads)
    built.update(extra or {})
    times = common.interleaved({n: c for n, (c, _) in built.items()}, rounds)
    result = {"name": name, "engines": {}}
    for engine, t in times.items():
        rate = work / t["median"] / 1e9
        result["engines"][engine] = dict(t, first_call_seconds=built[engine][1],
                                         rate=rate, fraction_of_limit=rate / limit)
    result.update(unit=unit, limit=limit, limit_name=limit_name)
    return result


def gemm(threads, rounds=5, n=4096, run_limits=None):
    torch.manual_seed(0)
    lim = limits(threads, run_limits)
    x = torch.randn(n, n)
    raw_call, raw_first, raw_impl = _raw_onednn_gemm(n)
    r = _measure(f"gemm_{n}", MatMul(n, n), x, threads, rounds, 2.0 * n ** 3, "GFLOP/s",
                 lim["fma_peak_gflops"], "FMA peak",
                 extra={"oneDNN (raw)": (raw_call, raw_first)})
    r["config"] = f"fp32 [{n},{n}] @ [{n},{n}]; oneDNN's implementation: {raw_impl}"
    return r


def layernorm_gelu(threads, rounds=5, rows=8192, d=1024, run_limits=None):
    torch.manual_seed(0)
    lim = limits(threads, run_limits)
    x = torch.randn(rows, d)
    bytes_moved = 2.0 * x.numel() * 4
    r = _measure("layernorm_gelu", LayerNormGelu(d), x, threads, rounds, bytes_moved, "GB/s",
                 lim["triad_gbs"], "triad bandwidth")
    r["config"] = f"fp32 [{rows},{d}] layer_norm -> gelu (erf); bytes = read x + write y"
    return r


RUN = {"gemm": gemm, "layernorm_gelu": layernorm_gelu}
# Timed calls per engine (quick, full). A layer norm + GELU call takes milliseconds, where a
# neighbour's burst on these shared VMs moves one sample by 2x: more samples for its median
# (3 gave 0.30 and 0.54 of triad in two runs of the same build a minute apart).
ROUNDS = {"gemm": (3, 7), "layernorm_gelu": (15, 31)}
