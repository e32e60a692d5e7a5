"""tilegraph's ISA builds of its core against each other (python/tilegraph/_isa.py): what
the build `import tilegraph` picks is worth on this machine, per workload.

    python3 bench/isa_builds.py [--quick]

Every build of the installed package that this CPU runs (avx512, avx2, sse4; `native` too
when present) runs the same workloads in its own process (TILEGRAPH_ISA=<build>): the MNIST
MLP training step (100 steps per call, the suite's), a BERT-small training step, layer norm
+ GELU inference (the micro suite's, [8192, 1024]) and ResNet-50 / EfficientNet-B0
inference (the suite's, batch 8, 64x64). The builds run one after another, in several
passes (A B C A B C A B C: a noisy neighbour that slows one pass does not decide the
result); each workload reports the median over passes of the per-pass medians, the range of
the per-pass medians, and the ratio to the widest build. Convolutions and matmuls are oneDNN's on every build (it picks
its kernels at run time); the builds differ in tilegraph's own kernels. Results:
bench/results/isa_builds_<date>_<commit>.{json,md}.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _workloads():
    import torch

    import tilegraph
    from bench import engines, micro, workloads
    from tilegraph import zoo
    threads = torch.get_num_threads()
    out = {}
    case = workloads.mlp_case(32)
    out["mlp train (100 steps)"] = engines.tilegraph_train(case.train_model, case.train_inputs,
                                                           100, 0.01, threads)
    case = zoo.bert_pretraining("small", batch=2, seq=64)
    out["bert-small train"] = engines.tilegraph_train(case.train_model, case.train_inputs, 1,
                                                      1e-3, threads)
    x = torch.randn(8192, 1024)
    engine = tilegraph.inferenceModel(micro.LayerNormGelu(1024).eval(),
                                      tilegraph.Options().setThreads(threads))
    out["layernorm+gelu infer"] = lambda: engine(x)
    for name, build in (("resnet50", zoo.resnet50), ("efficientnet_b0", zoo.efficientnet_b0)):
        kwargs = dict(dropout=0.0, stochastic_depth_prob=0.0) if "efficient" in name else {}
        case = build("small", batch=8, resolution=64, **kwargs)
        out[f"{name} infer"] = engines.tilegraph_infer(case.model, case.inputs, 2, threads)
    return out


def child(rounds):
    from tilegraph import _core
    calls = _workloads()
    for call in calls.values():  # compile + warm up
        call()
        call()
    times = {}
    for name, call in calls.items():
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            call()
            samples.append(time.perf_counter() - t0)
        times[name] = samples
    print(json.dumps({"isa": _core.isa, "march": _core.march, "times": times}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    rounds, passes = (3, 3) if args.quick else (5, 5)
    if args.child:
        child(rounds)
        return
    from bench.common import isa_line, machine, save_results
    from tilegraph import _isa
    flags, built = _isa.cpu_flags(), _isa.built_isas()
    builds = [isa for isa in _isa.PREFERENCE if isa in built and _isa.runs_on(isa, flags)]
    samples = {isa: {} for isa in builds}  # {isa: {workload: [per-pass samples]}}
    marchs = {}
    for _ in range(passes):
        for isa in builds:
            env = dict(os.environ, TILEGRAPH_ISA=isa, PYTHONWARNINGS="ignore")
            cmd = [sys.executable, os.path.abspath(__file__), "--child"] + \
                (["--quick"] if args.quick else [])
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                sys.exit(f"build {isa} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            marchs[isa] = r["march"]
            for name, s in r["times"].items():
                samples[isa].setdefault(name, []).append(s)
    info = machine(int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count())
    info["command"] = "python3 bench/isa_builds.py" + (" --quick" if args.quick else "")
    pass_medians = {isa: {n: [statistics.median(p) for p in per_pass] for n, per_pass in w.items()}
                    for isa, w in samples.items()}
    medians = {isa: {n: statistics.median(m) for n, m in w.items()}
               for isa, w in pass_medians.items()}
    widest = next(isa for isa in builds if isa != "native") if len(builds) > 1 else builds[0]
    md = ["# tilegraph's ISA builds against each other (bench/isa_builds.py)", "",
          f"- command: `{info['command']}`", f"- commit: `{info['commit']}`, date: {info['date']}",
          f"- machine: {info['cpu']}, {info['cores']} cores; {isa_line(info)}",
          "- builds: " + ", ".join(f"{isa} (-march={marchs[isa]})" for isa in builds),
          f"- seconds per call: median over {passes} passes of each pass's median of {rounds} "
          f"calls [range of the pass medians]; (ratio) = the {widest} build's time / this "
          "build's (below 1: slower)", "",
          "| workload | " + " | ".join(builds) + " |", "|---|" + "---|" * len(builds)]
    for name in medians[builds[0]]:
        cells = []
        for isa in builds:
            t, m = medians[isa][name], pass_medians[isa][name]
            cells.append(f"{t:.4f} s [{min(m):.4f}-{max(m):.4f}] "
                         f"({medians[widest][name] / t:.2f})")
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    save_results("isa_builds", info, {"builds": builds, "march": marchs, "samples": samples,
                                      "median_s": medians}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
