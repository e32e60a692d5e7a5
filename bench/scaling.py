"""How a training step's time grows with batch size and threads: where tilegraph is
overhead-, memory- or compute-bound (issue 16).

    python3 bench/scaling.py [--quick]

Models: the MNIST MLP of the suite (784-256-256-10) and the main job's conv net
(examples/mnist_poptorch.py), trained with SGD momentum at batch 1, 4, 16, 64 and 256 on 1
and 2 threads. For each: tilegraph's time per step (deviceIterations steps in one call) and
eager PyTorch's (a Python loop), interleaved; the step's FLOPs (matmul and convolution, from
tilegraph's per-op profile) and the rate they run at as a fraction of the FMA peak measured in
the same run for that thread count; and a verdict:
  - compute-bound: the step runs its FLOPs at >= 0.5 of the peak;
  - overhead-bound: the batch-1 step already takes more than half of this step's time
    (fixed per-step costs: kernel launches, small-op latency, the optimizer's pass over the
    weights, which does not grow with the batch);
  - memory/latency-bound: neither (elementwise passes, reorders, cache misses).
Results: bench/results/scaling_<date>_<commit>.{json,md}. --quick: 2 rounds, fewer steps.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
from common import interleaved, isa_line, machine, save_results  # noqa: E402
from engines import _python_train_loop, _sgd, _stacked  # noqa: E402
from workloads import MnistMLP  # noqa: E402

import tilegraph  # noqa: E402
from tilegraph import _core  # noqa: E402

BATCHES = (1, 4, 16, 64, 256)
THREADS = (1, 2)


class MlpWithLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = MnistMLP()

    def forward(self, x, y):
        return F.cross_entropy(self.net(x), y)


def _conv_net():
    import mnist_poptorch
    return mnist_poptorch.Network()


MODELS = {
    # name: (builder, input shape of one sample)
    "mlp": (MlpWithLoss, (784,)),
    "mnist_convnet": (_conv_net, (1, 28, 28)),
}


def _inputs(shape, batch):
    g = torch.Generator().manual_seed(batch)
    return [torch.randn(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g)]


def _flops_per_step(model, inputs, steps, threads):
    """matmul + convolution FLOPs of one training step, from tilegraph's profile."""
    opts = tilegraph.Options().deviceIterations(steps).setThreads(threads).enableProfiling(
        os.path.join("/tmp", "tilegraph_scaling_profile"))
    engine = tilegraph.trainingModel(model, opts, _sgd(model, 0.01))
    stacked = _stacked(inputs, steps)
    engine(*stacked)
    engine.resetProfile()
    engine(*stacked)
    total = sum(row["flops"] for row in engine.profile())
    engine.destroy()
    return total / steps


def measure(name, batch, threads, steps, rounds):
    build, shape = MODELS[name]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    inputs = _inputs(shape, batch)
    flops = _flops_per_step(build(), inputs, steps, threads)
    torch.manual_seed(0)
    tg_model, eager_model = build(), build()
    opts = tilegraph.Options().deviceIterations(steps).setThreads(threads)
    engine = tilegraph.trainingModel(tg_model, opts, _sgd(tg_model, 0.01))
    stacked = _stacked(inputs, steps)
    eager_model.train()
    times = interleaved({"tilegraph": lambda: engine(*stacked),
                         "eager": _python_train_loop(eager_model, inputs, steps, 0.01)}, rounds)
    engine.destroy()
    tg, eager = times["tilegraph"]["median"] / steps, times["eager"]["median"] / steps
    return {"model": name, "batch": batch, "threads": threads, "steps": steps,
            "tilegraph_step_s": tg, "eager_step_s": eager, "flops_per_step": flops,
            "tilegraph_gflops": flops / tg / 1e9,
            "samples": {k: v["samples"] for k, v in times.items()}}


def verdict(row, batch1_step, peak):
    fraction = row["tilegraph_gflops"] / peak
    if fraction >= 0.5:
        return "compute-bound"
    if batch1_step > 0.5 * row["tilegraph_step_s"]:
        return "overhead-bound"
    return "memory/latency-bound"


def markdown(info, rows, peaks):
    lines = [
        "# Training step time against batch size and threads (bench/scaling.py)", "",
        f"- command: `{info['command']}`",
        f"- commit: `{info['commit']}`, date: {info['date']}",
        f"- machine: {info['cpu']}, {info['cores']} cores; {isa_line(info)}",
        "- measured FMA peak: " + ", ".join(
            f"{t} thread(s) {p['gflops']:.0f} GFLOP/s ({p['isa']})" for t, p in peaks.items()),
        "",
        "Time per training step (SGD momentum), median of interleaved calls; FLOPs are the "
        "step's matmul and convolution work (tilegraph's profile); the verdict is explained "
        "in the script's docstring.", ""]
    for name in MODELS:
        lines += [f"## {name}", "",
                  "| threads | batch | tilegraph ms/step | eager ms/step | tg/eager speed-up | "
                  "MFLOP/step | GFLOP/s | of peak | verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for threads in THREADS:
            mine = [r for r in rows if r["model"] == name and r["threads"] == threads]
            base = next((r for r in mine if r["batch"] == 1), None)
            for r in mine:
                peak = peaks[threads]["gflops"]
                v = verdict(r, base["tilegraph_step_s"] if base else 0.0, peak)
                lines.append(
                    f"| {threads} | {r['batch']} | {r['tilegraph_step_s'] * 1e3:.3f} | "
                    f"{r['eager_step_s'] * 1e3:.3f} | "
                    f"{r['eager_step_s'] / r['tilegraph_step_s']:.2f} | "
                    f"{r['flops_per_step'] / 1e6:.1f} | {r['tilegraph_gflops']:.1f} | "
                    f"{r['tilegraph_gflops'] / peak:.2f} | {v} |")
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds = 2 if args.quick else 5
    peaks = {t: _core.measure_fma_peak(t) for t in THREADS}
    rows = []
    for name in MODELS:
        for threads in THREADS:
            for batch in BATCHES:
                steps = max(4, min(64, 2048 // batch)) // (2 if args.quick else 1)
                rows.append(measure(name, batch, threads, steps, rounds))
                r = rows[-1]
                print(f"{name} threads {threads} batch {batch}: tilegraph "
                      f"{r['tilegraph_step_s'] * 1e3:.3f} ms, eager {r['eager_step_s'] * 1e3:.3f}"
                      f" ms per step", flush=True)
    info = machine(max(THREADS))
    info["command"] = "python3 bench/scaling.py" + (" --quick" if args.quick else "")
    save_results("scaling", info, {"rows": rows, "fma_peaks": peaks},
                 markdown(info, rows, peaks))


if __name__ == "__main__":
    main()
