"""Mixed precision (bf16): tilegraph fp32 and bf16 against eager PyTorch and torch.compile
under bf16 autocast, in the same run, on the suite's ResNet-50, EfficientNet-B0 and BERT-Base.

    python3 bench/mixed_precision.py [--quick] [--only resnet50,bert_base] [--standard]

Engines (same model, batch, threads and SGD-momentum optimizer; one timed call runs the
workload's steps, tilegraph as deviceIterations):
  tilegraph fp32 | tilegraph bf16 (Precision.setMixedPrecision(torch.bfloat16): matmul,
  convolution and attention in bf16, the rest and the weights fp32) | eager bf16 autocast |
  torch.compile bf16 autocast (training only; --quick leaves it out: its compiles take most
  of the run on 2 cores).
Also: bf16 and fp32 GEMM (1024^3) in torch, raw oneDNN and tilegraph, the machine's fp32 FMA
peak and bf16 peak (AMX tiles where the CPU has AMX-BF16, else AVX512_BF16's dot product),
--standard adds ResNet-50 at ImageNet's resolution (224x224, batch 16), where convolutions
outweigh the per-layer memory-bound work that dominates the suite's 64x64 inputs. And
whether the CPU has bf16 arithmetic
(AVX512_BF16, AMX-BF16) and tilegraph runs native bf16 kernels (TILEGRAPH_NATIVE_HALF=0
measures the widened f32 kernels instead). Results: bench/results/mixed_precision_<date>_<commit>.{json,md}.
"""
import argparse
import contextlib
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import interleaved, machine, save_results  # noqa: E402
from engines import _python_infer_loop, _python_train_loop, _sgd, _stacked  # noqa: E402
from workloads import ModelWorkload, model_workloads  # noqa: E402

import tilegraph  # noqa: E402
from tilegraph import zoo  # noqa: E402

MODELS = ("resnet50", "efficientnet_b0", "bert_base")

# --standard: ResNet-50 at the resolution it is trained at.
STANDARD = ModelWorkload("resnet50_224", "torchvision ResNet-50, 10 classes, 224x224, batch 16",
                         lambda: zoo.resnet50("small", batch=16, resolution=224,
                                              zero_init_residual=True),
                         steps=1, rounds=3)


def _autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _eager_train(model, inputs, steps, lr, compiled=False):
    model.train()
    return _python_train_loop(torch.compile(model) if compiled else model, inputs, steps, lr,
                              _autocast)


def _eager_infer(model, inputs, steps):
    return _python_infer_loop(model.eval(), inputs, steps, _autocast)


def _tilegraph(model, inputs, steps, lr, threads, bf16, training):
    opts = tilegraph.Options().deviceIterations(steps).setThreads(threads)
    if bf16:
        opts.Precision.setMixedPrecision(torch.bfloat16)
    if training:
        model.train()
        engine = tilegraph.trainingModel(model, opts, _sgd(model, lr))
    else:
        engine = tilegraph.inferenceModel(model.eval(), opts)
    stacked = _stacked(inputs, steps)
    return lambda: engine(*stacked)


def _first_call(build):
    t0 = time.perf_counter()
    fn = build()
    fn()
    return fn, time.perf_counter() - t0


def measure_model(work, threads, quick):
    out = {"config": work.config}
    for section in ("train", "infer"):
        builders = {
            "tilegraph fp32": lambda: _tilegraph(*_case(work, section), work.steps, work.lr,
                                                 threads, False, section == "train"),
            "tilegraph bf16": lambda: _tilegraph(*_case(work, section), work.steps, work.lr,
                                                 threads, True, section == "train"),
        }
        if section == "train":
            builders["eager bf16 autocast"] = lambda: _eager_train(*_case(work, section),
                                                                   work.steps, work.lr)
            if not quick:
                builders["torch.compile bf16 autocast"] = lambda: _eager_train(
                    *_case(work, section), work.steps, work.lr, compiled=True)
        else:
            builders["eager bf16 autocast"] = lambda: _eager_infer(*_case(work, section),
                                                                   work.steps)
        fns, first = {}, {}
        for name, build in builders.items():
            try:
                fns[name], first[name] = _first_call(build)
            except Exception as e:  # recorded, never hidden
                first[name] = f"failed: {type(e).__name__}: {str(e)[:200]}"
        timed = interleaved(fns, 2 if quick else work.rounds, warmup=0)
        out[section] = {"median_s": {k: v["median"] for k, v in timed.items()},
                        "samples": {k: v["samples"] for k, v in timed.items()},
                        "first_call_s": first}
        print(work.name, section, {k: round(v["median"], 4) for k, v in timed.items()},
              flush=True)
    return out


def _case(work, section):
    case = work.build()
    if section == "train":
        return case.train_model, case.train_inputs
    return case.model, case.inputs


class _MatMul(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(n, n) / n ** 0.5)

    def forward(self, x):
        return x @ self.w


def gemm(n=1024, rounds=10):
    """fp32 and bf16 GEMM n^3 in torch, raw oneDNN (the primitive alone), tilegraph's AMX GEMM
    alone where the CPU has AMX (the kernel tilegraph's bf16 matmuls run there; b packed every
    run as for a trained weight, and kept as for an inference weight) and tilegraph (a model's
    matmul through inferenceModel: the kernel plus copies in and out), next to the fp32 FMA
    peak and the bf16 peak (AMX tiles or AVX512_BF16 dot products) measured in the same run."""
    threads = torch.get_num_threads()
    res = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.matmul(a, b)
        best = min(_time(lambda: torch.matmul(a, b)) for _ in range(rounds))
        res[f"torch {name} GFLOP/s"] = 2 * n ** 3 / best / 1e9
        try:
            raw = tilegraph._core.RawOnednnMatmul(n, n, n, bf16=dtype == torch.bfloat16)
        except RuntimeError:  # oneDNN 2.6 has no bf16 matmul without AVX512 (AVX2 CPUs)
            res[f"oneDNN raw {name} GFLOP/s (no {name} matmul on this CPU)"] = 0.0
        else:
            raw.run()
            best = min(_time(raw.run) for _ in range(rounds))
            res[f"oneDNN raw {name} GFLOP/s ({raw.implementation})"] = 2 * n ** 3 / best / 1e9
        if dtype == torch.bfloat16 and tilegraph._core.amx_gemm_usable():
            for keep in (False, True):
                amx = tilegraph._core.RawAmxGemm(n, n, n, keep_b=keep)
                amx.run()
                best = min(_time(amx.run) for _ in range(rounds))
                res[f"tilegraph AMX GEMM alone bf16 GFLOP/s (b {'kept' if keep else 'packed per run'})"] = \
                    2 * n ** 3 / best / 1e9
        model = _MatMul(n).to(dtype).eval()
        engine = tilegraph.inferenceModel(model, tilegraph.Options().setThreads(threads))
        engine(a)
        best = min(_time(lambda: engine(a)) for _ in range(rounds))
        res[f"tilegraph {name} GFLOP/s"] = 2 * n ** 3 / best / 1e9
    peak = tilegraph._core.measure_fma_peak(threads)
    res[f"fp32 FMA peak GFLOP/s ({peak['isa']})"] = peak["gflops"]
    bf16_peak = tilegraph._core.measure_bf16_peak(threads)
    res[f"bf16 dot peak GFLOP/s ({bf16_peak['isa']})"] = bf16_peak["gflops"]
    if bf16_peak["gflops"]:
        res["tilegraph bf16 fraction of bf16 peak"] = \
            res["tilegraph bf16 GFLOP/s"] / bf16_peak["gflops"]
        kept = "tilegraph AMX GEMM alone bf16 GFLOP/s (b kept)"
        if kept in res:
            res["AMX GEMM alone (b kept) fraction of bf16 peak"] = res[kept] / bf16_peak["gflops"]
    # Without bf16 arithmetic (AVX2) fp32 speed is what the hardware allows a bf16 GEMM.
    res["tilegraph bf16 / tilegraph fp32 GEMM"] = \
        res["tilegraph bf16 GFLOP/s"] / res["tilegraph fp32 GFLOP/s"]
    res["native bf16 kernels (tilegraph)"] = float(tilegraph._core.native_bf16_dense())
    return res


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def isa():
    flags = open("/proc/cpuinfo").read()
    return {f: f" {f}" in flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16",
                                          "amx_tile")}


def markdown(info, flags, g, results):
    lines = [f"# Mixed precision (bf16) — {info['date']}, commit {info['commit']}", "",
             f"{info['cpu']}, {info['cores']} cores, {info['threads']} threads; "
             f"`{info['command']}`", "",
             "ISA: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items())
             + f"; tilegraph build: {info['tilegraph_build']}", "",
             "## GEMM 1024^3", "", "| | GFLOP/s (or fraction) |", "|---|---|"]
    for k, v in g.items():
        lines.append(f"| {k} | {v:.2f} |" if v else f"| {k} | n/a |")
    for section, title in (("train", "Training"), ("infer", "Inference")):
        lines += ["", f"## {title}: median s per call (ratio: tilegraph bf16 vs each)", "",
                  "| model | engine | s | tilegraph bf16 speed-up |", "|---|---|---|---|"]
        for name, r in results.items():
            med = r[section]["median_s"]
            ours = med.get("tilegraph bf16")
            for engine, s in med.items():
                ratio = f"{s / ours:.2f}x" if ours else "n/a"
                lines.append(f"| {name} | {engine} | {s:.4f} | {ratio} |")
            for engine, first in r[section]["first_call_s"].items():
                if isinstance(first, str):
                    lines.append(f"| {name} | {engine} | {first} | |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(MODELS))
    parser.add_argument("--standard", action="store_true",
                        help="also ResNet-50 at 224x224, batch 16")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    info = machine(threads)
    info["command"] = "python3 bench/mixed_precision.py" + (" --quick" if args.quick else "") \
        + (f" --only {args.only}" if args.only != ",".join(MODELS) else "") \
        + (" --standard" if args.standard else "")
    flags = isa()
    g = gemm()
    print(flags, g, flush=True)
    wanted = args.only.split(",")
    results = {}
    for work in model_workloads(quick=True) + ([STANDARD] if args.standard else []):
        if work.name in wanted or work is STANDARD:
            with contextlib.suppress(KeyboardInterrupt):
                results[work.name] = measure_model(work, threads, args.quick)
    md = markdown(info, flags, g, results)
    save_results("mixed_precision", info, dict(isa=flags, gemm=g, models=results), md)


if __name__ == "__main__":
    main()
