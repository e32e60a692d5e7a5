"""Machine limits and microbenchmarks, measured in the same run as the models.

- limits: FP32 FMA peak (independent FMA chains in the widest vector ISA tilegraph was built
  for) and triad DRAM bandwidth, both on the suite's thread count (tilegraph._core probes).
- gemm: one large fp32 matrix product, GFLOP/s and fraction of the measured peak.
- layernorm_gelu: a memory-bound chain (layer norm then GELU over 32 MiB), GB/s counting one
  read of x and one write of y, and fraction of the measured bandwidth.
- silu_chain: silu(x) * y + z over three 32 MiB inputs (one fused elementwise kernel with a
  transcendental step, the shape of EfficientNet's and Llama's activations), GB/s counting
  three reads and one write.
- sgd_update / adam_update: the optimizer's update of one 64 MiB parameter (SGD with momentum;
  Adam), GB/s counting each tensor the update must read and write once (SGD: parameter,
  gradient and momentum read, parameter and momentum written; Adam: 4 reads, 3 writes).
The first three run through tilegraph.inferenceModel like any model, next to eager and
torch.compile; the updates time tilegraph's update kernels in a training step (its profiler's
per-instruction times) next to eager's `optimizer.step()` and torch.compile's. An update
written in place reads each line it writes, so it pays no write-allocate traffic, which the
triad probe's separate output array does: its fraction of the triad can exceed 1.
"""
import os
import tempfile
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

        def call(fn=fn, args=x if isinstance(x, tuple) else (x,)):
            with torch.no_grad():
                fn(*args)
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


class SiluChain(torch.nn.Module):
    def forward(self, x, y, z):
        return F.silu(x) * y + z


def silu_chain(threads, rounds=15, n=8 * 2 ** 20, run_limits=None):
    torch.manual_seed(0)
    lim = limits(threads, run_limits)
    x = (torch.randn(n), torch.randn(n), torch.randn(n))
    r = _measure("silu_chain", SiluChain(), x, threads, rounds, 4.0 * n * 4, "GB/s",
                 lim["triad_gbs"], "triad bandwidth")
    r["config"] = "fp32 silu(x) * y + z, 8M elements; bytes = read x, y, z + write the result"
    return r


class OuterProduct(torch.nn.Module):
    """loss = sum(x @ W): W's gradient is a matmul (its own kernel), so the optimizer's update
    kernels are the only elementwise work on W."""

    def __init__(self, n):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(n, n) / n)

    def forward(self, x):
        return (x @ self.w).sum()


def _update_kernel_seconds(executor):
    """Seconds per call in the optimizer's update kernels: the fused elementwise instructions
    with no source line (the optimizer emits them; the model's code has lines) that move more
    than a MiB."""
    rows = executor.profile(per_instruction=True)
    calls = max((r["calls"] for r in rows), default=0)
    seconds = sum(r["seconds"] for r in rows if "fused_elementwise" in r["op"] and
                  not r["source"] and r["bytes"] > 2 ** 20)
    return seconds / calls if calls else None


def _optimizer_update(name, make_optimizer, tensors_moved, threads, rounds, run_limits, n=4096):
    torch.manual_seed(0)
    lim = limits(threads, run_limits)
    x = torch.randn(1, n)
    bytes_moved = tensors_moved * n * n * 4.0
    engines = {}
    # eager and torch.compile: optimizer.step() alone, on a gradient set once.
    for engine in ("eager", "torch.compile"):
        model = OuterProduct(n)
        model(x).backward()
        opt = make_optimizer(model.parameters())
        step = opt.step if engine == "eager" else torch.compile(opt.step)
        t0 = time.perf_counter()
        step()
        first = time.perf_counter() - t0
        engines[engine] = (step, first)
    times = common.interleaved({k: c for k, (c, _) in engines.items()}, rounds)
    # tilegraph: its update kernels' time inside training steps, from its profiler.
    model = OuterProduct(n)
    opts = tilegraph.Options().setThreads(threads).enableProfiling(
        os.path.join(tempfile.gettempdir(), "tilegraph_bench_profile"))
    t0 = time.perf_counter()
    executor = tilegraph.trainingModel(model, opts, make_optimizer(model.parameters()))
    executor(x)
    first = time.perf_counter() - t0
    per_call = []
    for _ in range(rounds):
        executor.resetProfile()
        executor(x)
        per_call.append(_update_kernel_seconds(executor))
    times["tilegraph"] = common.summarize(per_call)
    engines["tilegraph"] = (None, first)
    result = {"name": name, "engines": {}}
    for engine, t in times.items():
        rate = bytes_moved / t["median"] / 1e9
        result["engines"][engine] = dict(t, first_call_seconds=engines[engine][1], rate=rate,
                                         fraction_of_limit=rate / lim["triad_gbs"])
    result.update(unit="GB/s", limit=lim["triad_gbs"], limit_name="triad bandwidth")
    return result


def sgd_update(threads, rounds=9, run_limits=None):
    r = _optimizer_update(
        "sgd_update", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9), 5, threads, rounds,
        run_limits)
    r["config"] = ("fp32 [4096,4096] parameter (64 MiB), SGD momentum 0.9; bytes = read w, g, buf + "
                   "write w, buf; tilegraph: its update kernels in a training step")
    return r


def adam_update(threads, rounds=9, run_limits=None):
    r = _optimizer_update("adam_update", lambda p: torch.optim.Adam(p, lr=1e-3), 7, threads,
                          rounds, run_limits)
    r["config"] = ("fp32 [4096,4096] parameter (64 MiB), Adam; bytes = read w, g, m, v + write w, m, v; "
                   "tilegraph: its update kernels in a training step")
    return r


RUN = {"gemm": gemm, "layernorm_gelu": layernorm_gelu, "silu_chain": silu_chain,
       "sgd_update": sgd_update, "adam_update": adam_update}
# Timed calls per engine (quick, full). A layer norm + GELU call takes milliseconds, where a
# neighbour's burst on these shared VMs moves one sample by 2x: more samples for its median
# (3 gave 0.30 and 0.54 of triad in two runs of the same build a minute apart).
ROUNDS = {"gemm": (3, 7), "layernorm_gelu": (15, 31), "silu_chain": (15, 31),
          "sgd_update": (9, 21), "adam_update": (9, 21)}
