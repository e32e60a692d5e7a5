"""One model of the suite, run in its own process by bench/run.py:

    python3 bench/model_bench.py resnet50 --threads 2 --out /tmp/resnet50.json

Training: eager, torch.compile and tilegraph, each on its own identically seeded copy of
the model. Inference: eager, torch.compile, ONNX Runtime and tilegraph. For each engine:
the first call (build + compile + one call) is timed apart; then calls are interleaved.
Memory per engine: RSS it keeps after its first call plus its growth during one more call
(watched apart from the timed calls: the sampling thread slows the call it watches).
"""
import argparse
import copy
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

from bench import common, engines, workloads  # noqa: E402


def build_engines(builders, make_args):
    """Builds every engine in turn; returns ({name: call}, {name: info})."""
    calls, info = {}, {}
    for name, builder in builders.items():
        try:
            args = make_args()  # a fresh copy of the model, not part of the first call
            with common.MemoryWatch() as watch:
                t0 = time.perf_counter()
                call = builder(*args)
                call()  # compile (torch.compile / tilegraph / ORT session) + one call
                first = time.perf_counter() - t0
            calls[name] = call
            info[name] = {"first_call_seconds": first,
                          "resident_bytes": watch.end - watch.start}
            engine = getattr(call, "engine", None)
            if engine is not None and engine.executable is not None:
                stats = engine.executable.memory_stats
                info[name]["planned_arena_bytes"] = stats["arena_bytes"]
                info[name]["variable_bytes"] = stats["variable_bytes"]
                info[name]["compile_seconds_core"] = engine.executable.compile_seconds
        except Exception as e:  # one engine failing must not lose the others' numbers
            info[name] = {"error": f"{type(e).__name__}: {str(e)[:600]}"}
            traceback.print_exc()
        print(f"  built {name}: {info[name]}", file=sys.stderr, flush=True)
    return calls, info


def timed(calls, info, rounds, samples_per_call):
    """Interleaved timing. Memory growth is measured in one extra call per engine before the
    timed ones, not during them: the sampling thread, on 2 cores, slowed the calls it
    watched by ~20% (an MLP inference call, 9.7 -> 11.8 ms, tilegraph and ONNX Runtime
    alike), which compressed every ratio towards 1."""
    for name, fn in calls.items():
        with common.MemoryWatch() as w:
            fn()
        info[name]["peak_bytes"] = info[name]["resident_bytes"] + w.growth
    times = common.interleaved(calls, rounds)
    for name, t in times.items():
        info[name].update(t)
        info[name]["per_second"] = samples_per_call / t["median"]
    return info


def run(name, threads, full):
    torch.set_num_threads(threads)
    wl = {w.name: w for w in workloads.model_workloads(quick=not full)}[name]
    case = wl.build()
    batch = int(case.inputs[0].shape[0])
    result = {"name": name, "config": wl.config, "steps_per_call": wl.steps,
              "rounds": wl.rounds, "batch": batch, "notes": wl.notes}
    skip = set(wl.quick_skip)

    # Every engine gets its own copy of one built case: same weights, and BERT-Base is built
    # (randomly initialized) once instead of eight times (8 s each on 2 cores).
    def train_args():
        c = copy.deepcopy(case)
        return c.train_model, c.train_inputs, wl.steps, wl.lr, threads

    def infer_args():
        c = copy.deepcopy(case)
        return c.model, c.inputs, wl.steps, threads

    calls, info = build_engines(
        {k: v for k, v in engines.TRAIN.items() if ("train", k) not in skip}, train_args)
    result["train"] = timed(calls, info, wl.rounds, batch * wl.steps)
    del calls
    infer = {k: v for k, v in engines.INFER.items() if ("infer", k) not in skip}
    if not wl.onnx:
        infer.pop("onnxruntime")
    calls, info = build_engines(infer, infer_args)
    result["infer"] = timed(calls, info, wl.rounds, batch * wl.steps)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    result = run(args.name, args.threads, args.full)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
