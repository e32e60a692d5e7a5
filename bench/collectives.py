"""Scale-out measured and modelled (issue 11, section 7).

    python3 bench/collectives.py            # ~10 min on 2 cores
    python3 bench/collectives.py --quick    # 2 and 4 processes, fewer sizes

1. All-reduce bandwidth on this machine: tilegraph's process all-reduce (the Communicator
   every replicated run uses: MPI_Iallreduce polled against a deadline) for 2, 4 and 8
   processes and 4 KiB .. 256 MiB, interleaved with Open MPI's own blocking MPI_Allreduce
   through mpi4py as the anchor (when mpi4py is installed: `pip install mpi4py`). Reported
   as algbw = bytes / time and busbw = algbw * 2(n-1)/n (NCCL's convention), medians.
2. An alpha-beta model t(m) = alpha + beta * m fitted per process count.
3. Data parallelism on this machine: 1 process x 2 threads against 2 processes x 1 thread
   (the same global batch) on ResNet-50 and BERT (small configs), and the all-reduce's
   share of the step from tilegraph's per-instruction profile.
4. The step-time model for ResNet-50 and BERT-Large at 8..128 replicas on a 100 Gb/s and a
   400 Gb/s link (ring all-reduce of the fp32 gradients, no overlap as built, and the ideal
   with full overlap), the computation's time taken from single-replica steps measured here.
Results: bench/results/collectives_<date>_<commit>.{json,md}.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from common import machine, save_results  # noqa: E402

SIZES = [4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20]
QUICK_SIZES = [4 << 10, 1 << 20, 16 << 20, 64 << 20]


# ---- 1. child: one process of an all-reduce run ------------------------------------------

def allreduce_child(out, sizes):
    import numpy as np
    import tilegraph
    rank, size = tilegraph._core.mpi_world()
    try:
        from mpi4py import MPI
    except ImportError:
        MPI = None
    rows = []
    for nbytes in sizes:
        iters = max(3, min(30, (64 << 20) // nbytes))
        ours, anchor = [], []
        buf = np.ones(nbytes // 4, dtype=np.float32)
        for _ in range(3):  # interleaved rounds: ours, Open MPI's, ours, ...
            ours += tilegraph._core.mpi_allreduce_seconds(nbytes, iters)
            if MPI is not None:
                MPI.COMM_WORLD.Barrier()
                for _ in range(iters):
                    t0 = time.perf_counter()
                    MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
                    anchor.append(time.perf_counter() - t0)
        rows.append(dict(bytes=nbytes, tilegraph_s=statistics.median(ours),
                         tilegraph_min=min(ours), tilegraph_max=max(ours),
                         openmpi_s=statistics.median(anchor) if anchor else None))
    if rank == 0:
        with open(out, "w") as f:
            json.dump(dict(processes=size, rows=rows, anchor=MPI is not None), f)


def launch(n, args, timeout=1800, env=None):
    cmd = [sys.executable, "-m", "tilegraph.run", "-n", str(n), os.path.abspath(__file__)] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def measure_allreduce(processes, sizes):
    results = []
    for n in processes:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = f.name
        proc = launch(n, ["--child-allreduce", out, "--sizes", ",".join(map(str, sizes))],
                      env={"OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise SystemExit(f"{n} processes failed:\n{proc.stderr[-3000:]}")
        with open(out) as fh:
            r = json.load(fh)
        os.unlink(out)
        for row in r["rows"]:
            for key in ("tilegraph", "openmpi"):
                t = row[f"{key}_s"]
                row[f"{key}_busbw_gbs"] = (row["bytes"] / t * 2 * (n - 1) / n / 1e9) if t else None
        results.append(r)
        print(f"all-reduce, {n} processes: " + ", ".join(
            f"{row['bytes'] >> 10} KiB {row['tilegraph_busbw_gbs']:.2f} GB/s" for row in r["rows"]),
            flush=True)
    return results


# ---- 2. the alpha-beta fit ---------------------------------------------------------------

def fit_alpha_beta(rows, key="tilegraph_s"):
    """Least squares of t = alpha + beta * m, each point weighted by 1/t (relative error),
    so that latency-bound small and bandwidth-bound large messages both count."""
    xs = [r["bytes"] for r in rows]
    ts = [r[key] for r in rows]
    w = [1 / (t * t) for t in ts]
    sw = sum(w)
    sx = sum(wi * x for wi, x in zip(w, xs))
    st = sum(wi * t for wi, t in zip(w, ts))
    sxx = sum(wi * x * x for wi, x in zip(w, xs))
    sxt = sum(wi * x * t for wi, x, t in zip(w, xs, ts))
    beta = (sw * sxt - sx * st) / (sw * sxx - sx * sx)
    alpha = (st - beta * sx) / sw
    return max(alpha, 0.0), beta


# ---- 3. child: data-parallel training step -----------------------------------------------

def training_child(out, model_name, global_batch, steps):
    import torch
    import tilegraph
    from tilegraph import zoo
    opts = tilegraph.Options()
    rank, procs = opts.Distributed.processId, opts.Distributed.numProcesses
    case = getattr(zoo, model_name)(size="small")
    micro = global_batch // procs
    inputs = [t[:1].expand(micro, *t.shape[1:]).contiguous() for t in case.train_inputs]
    opts.deviceIterations(steps).enableProfiling(tempfile.mkdtemp())
    model = case.train_model
    trainer = tilegraph.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=1e-3))
    feeds = [t.repeat(steps, *([1] * (t.dim() - 1))) for t in inputs]
    trainer(*feeds)  # compile + warm-up
    trainer.resetProfile()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        trainer(*feeds)
        times.append(time.perf_counter() - t0)
    by_op = {p["op"]: p["seconds"] for p in trainer.profile()}
    total = sum(by_op.values())
    if rank == 0:
        with open(out, "w") as f:
            json.dump(dict(model=model_name, processes=procs, threads=os.environ.get(
                "OMP_NUM_THREADS"), global_batch=global_batch, steps=steps,
                step_seconds=statistics.median(times) / steps,
                samples_per_s=global_batch * steps / statistics.median(times),
                allreduce_share=sum(s for op, s in by_op.items() if op.startswith("all_reduce"))
                / total if total else 0.0), f)


def measure_training(models):
    rows = []
    for model_name, batch in models:
        for procs, threads in ((1, 2), (2, 1)):
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
                out = f.name
            proc = launch(procs, ["--child-training", out, "--model", model_name,
                                  "--batch", str(batch)], env={"OMP_NUM_THREADS": str(threads)})
            if proc.returncode != 0:
                raise SystemExit(f"{model_name} x{procs} failed:\n{proc.stderr[-3000:]}")
            with open(out) as fh:
                rows.append(json.load(fh))
            os.unlink(out)
            r = rows[-1]
            print(f"{model_name}: {procs} process(es) x {threads} thread(s): "
                  f"{r['samples_per_s']:.1f} samples/s, all-reduce {100 * r['allreduce_share']:.1f}%"
                  " of the step", flush=True)
    return rows


# ---- 4. the step-time model --------------------------------------------------------------

# Gradient bytes (fp32) of the published models, from their parameter counts.
MODELS = {"ResNet-50": 25.6e6 * 4, "BERT-Large": 335e6 * 4}
LINKS = {"100 Gb/s Ethernet": (100e9 / 8, 10e-6), "400 Gb/s fabric": (400e9 / 8, 3e-6)}
REPLICAS = [8, 16, 64, 128]


def ring_allreduce_seconds(nbytes, n, bandwidth, latency):
    """Ring all-reduce: 2(n-1) steps, each moving nbytes/n over the slowest link."""
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * latency


def model_table(compute_seconds):
    rows = []
    for model, nbytes in MODELS.items():
        tc = compute_seconds[model]
        for link, (bw, lat) in LINKS.items():
            for n in REPLICAS:
                comm = ring_allreduce_seconds(nbytes, n, bw, lat)
                rows.append(dict(model=model, link=link, replicas=n, compute_s=tc, comm_s=comm,
                                 efficiency_no_overlap=tc / (tc + comm),
                                 efficiency_overlap=tc / max(tc, comm),
                                 compute_for_90pct_s=9 * comm))
    return rows


def markdown(info, allreduce, alpha_beta, training, model_rows):
    lines = [f"# Scale-out measured ({info['date']}, commit {info['commit']})", "",
             f"`{info['command']}` on {info['cpu']} ({info['cores']} cores).", "",
             "## All-reduce bus bandwidth (GB/s, median), this machine", ""]
    sizes = [row["bytes"] for row in allreduce[0]["rows"]]
    lines.append("| processes | engine | " + " | ".join(f"{s >> 10} KiB" for s in sizes) + " |")
    lines.append("|---|---|" + "---|" * len(sizes))
    for r in allreduce:
        for key, name in (("tilegraph", "tilegraph"), ("openmpi", "Open MPI (mpi4py)")):
            if r["rows"][0][f"{key}_busbw_gbs"] is None:
                continue
            lines.append(f"| {r['processes']} | {name} | " + " | ".join(
                f"{row[f'{key}_busbw_gbs']:.2f}" for row in r["rows"]) + " |")
    lines += ["", "## Alpha-beta fit of tilegraph's all-reduce: t = alpha + beta * bytes", "",
              "| processes | alpha (us) | 1/beta (GB/s) |", "|---|---|---|"]
    for n, (a, b) in alpha_beta.items():
        lines.append(f"| {n} | {a * 1e6:.1f} | {1 / b / 1e9 if b > 0 else float('inf'):.2f} |")
    lines += ["", "## Data parallelism on this machine (same global batch)", "",
              "| model | processes x threads | samples/s | all-reduce share of the step |",
              "|---|---|---|---|"]
    for r in training:
        lines.append(f"| {r['model']} | {r['processes']} x {r['threads']} | "
                     f"{r['samples_per_s']:.1f} | {100 * r['allreduce_share']:.1f}% |")
    lines += ["", "## Modelled step time at scale (ring all-reduce of fp32 gradients)", "",
              "compute_s: one replica's step measured here (see docs/SCALING.md for what it "
              "stands for); efficiency = compute / step.", "",
              "| model | link | replicas | compute s | all-reduce s | efficiency, no overlap "
              "(as built) | efficiency, full overlap | compute time for 90% (s) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in model_rows:
        lines.append(f"| {r['model']} | {r['link']} | {r['replicas']} | {r['compute_s']:.3f} | "
                     f"{r['comm_s']:.4f} | {100 * r['efficiency_no_overlap']:.1f}% | "
                     f"{100 * r['efficiency_overlap']:.1f}% | {r['compute_for_90pct_s']:.3f} |")
    return "\n".join(lines) + "\n"


def single_replica_step_seconds():
    """One replica's training step on this machine, full-size configs at modest inputs."""
    import torch
    import tilegraph
    from tilegraph import zoo
    out = {}
    for name, factory in (("ResNet-50", lambda: zoo.resnet50(size="full")),
                          ("BERT-Large", lambda: zoo.bert_pretraining(size="large"))):
        case = factory()
        model = case.train_model
        trainer = tilegraph.trainingModel(model, tilegraph.Options(),
                                          torch.optim.SGD(model.parameters(), lr=1e-4))
        trainer(*case.train_inputs)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            trainer(*case.train_inputs)
            times.append(time.perf_counter() - t0)
        out[name] = min(times)
        shapes = [tuple(t.shape) for t in case.train_inputs]
        print(f"{name}: one replica's step {out[name]:.2f} s here (inputs {shapes})", flush=True)
        trainer.destroy()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child-allreduce")
    p.add_argument("--child-training")
    p.add_argument("--sizes", default="")
    p.add_argument("--model", default="")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    if args.child_allreduce:
        return allreduce_child(args.child_allreduce, [int(s) for s in args.sizes.split(",")])
    if args.child_training:
        return training_child(args.child_training, args.model, args.batch, steps=4)
    info = machine(threads=2)
    info["command"] = "python3 bench/collectives.py" + (" --quick" if args.quick else "")
    processes = [2, 4] if args.quick else [2, 4, 8]
    allreduce = measure_allreduce(processes, QUICK_SIZES if args.quick else SIZES)
    alpha_beta = {r["processes"]: fit_alpha_beta(r["rows"]) for r in allreduce}
    training = measure_training([("resnet50", 8), ("bert_pretraining", 4)])
    compute = single_replica_step_seconds()
    rows = model_table(compute)
    md = markdown(info, allreduce, alpha_beta, training, rows)
    save_results("collectives", info, dict(allreduce=allreduce, alpha_beta=alpha_beta,
                                           training=training, compute_seconds=compute,
                                           model=rows), md)


if __name__ == "__main__":
    main()
