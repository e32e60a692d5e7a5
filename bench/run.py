"""tilegraph's benchmark suite: tilegraph vs eager PyTorch, torch.compile and ONNX Runtime.

    python3 bench/run.py            # the quick suite (< 15 min on 2 cores)
    python3 bench/run.py --full     # more rounds
    python3 bench/run.py --only resnet50,gemm

Writes bench/results/<date>_<commit>.json and .md (and latest.json / latest.md). Every
model runs in its own child process (a crash or timeout there loses one row, not the run).
Rules (../shared/BENCHMARKS.md): same threads / batch / dtype for all engines, interleaved
calls after warm-up, medians with min-max spreads, compile time apart from steady state,
efficiency as a fraction of limits measured in this run.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench import common, micro, report  # noqa: E402

MODELS = ["mlp", "small_cnn", "resnet50", "efficientnet_b0", "bert_base", "wav2vec2_small"]
MICRO = ["gemm", "layernorm_gelu", "silu_chain", "sgd_update", "adam_update"]


def child_env(threads):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    # Compile time is part of what we compare: Inductor must not reuse kernels compiled by
    # an earlier run (tilegraph's executable cache is off unless the user enables it).
    env["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def run_model_child(name, args):
    out = os.path.join(args.tmp, f"{name}.json")
    cmd = [sys.executable, os.path.join(HERE, "model_bench.py"), name, "--threads",
           str(args.threads), "--out", out] + (["--full"] if args.full else [])
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, env=child_env(args.threads), timeout=args.timeout,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout)[-1500:]
            return {"name": name, "error": f"exit {proc.returncode}: {tail}"}
    except subprocess.TimeoutExpired:
        return {"name": name, "error": f"timed out after {args.timeout} s"}
    with open(out) as f:
        result = json.load(f)
    result["wall_seconds"] = time.time() - t0
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="more rounds per engine")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated workloads")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per model child")
    ap.add_argument("--outdir", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    args.tmp = os.path.join(args.outdir, ".tmp")
    os.makedirs(args.tmp, exist_ok=True)
    os.environ.update(child_env(args.threads))

    import torch
    torch.set_num_threads(args.threads)
    started = time.time()
    results = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv),
               "suite": "full" if args.full else "quick",
               "machine": common.machine(args.threads)}
    print(f"machine: {results['machine']['cpu']}, {args.threads} threads", flush=True)
    results["limits"] = micro.limits(args.threads)
    print(f"limits: {results['limits']}", flush=True)
    results["micro"] = []
    for name in MICRO:
        if not only or name in only:
            r = micro.RUN[name](args.threads, rounds=micro.ROUNDS[name][args.full],
                                run_limits=results["limits"])
            results["micro"].append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "engines"}), flush=True)
    results["models"] = []
    for name in MODELS:
        if not only or name in only:
            r = run_model_child(name, args)
            results["models"].append(r)
            print(report.model_line(r), flush=True)
    results["total_seconds"] = time.time() - started
    results["summary"] = report.summary(results)
    stem = time.strftime("%Y-%m-%d_%H%M") + "_" + results["machine"]["commit"].replace("+", "_")
    for base in (stem, "latest"):
        with open(os.path.join(args.outdir, base + ".json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.outdir, base + ".md"), "w") as f:
            f.write(report.markdown(results))
    print(report.markdown(results))
    print(f"wrote {os.path.join(args.outdir, stem)}.json/.md in {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
