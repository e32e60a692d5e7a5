"""widen-half-dense on CPUs without native kernels for a half dtype: tilegraph fp32, bf16
mixed precision, and bf16 with the pass disabled (TILEGRAPH_DISABLE_PASSES=widen-half-dense,
the dense ops widened inside their kernels as before the pass), interleaved in one process.

    python3 bench/widen_half_dense.py [--rounds 7] [--only resnet50,efficientnet_b0]

On a CPU with AVX512_BF16 / AMX the pass leaves bf16 alone, so the two bf16 rows measure the
same program there. Results: bench/results/widen_half_dense_<date>_<commit>.{json,md}.
"""
import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import interleaved, machine, save_results  # noqa: E402
from engines import _sgd, _stacked  # noqa: E402
from workloads import model_workloads  # noqa: E402

import tilegraph  # noqa: E402


def _engine(work, section, bf16, disable):
    if disable:
        os.environ["TILEGRAPH_DISABLE_PASSES"] = disable
    try:
        case = work.build()
        model, inputs = ((case.train_model, case.train_inputs) if section == "train"
                         else (case.model, case.inputs))
        opts = tilegraph.Options().deviceIterations(work.steps).setThreads(
            torch.get_num_threads())
        if bf16:
            opts.Precision.setMixedPrecision(torch.bfloat16)
        if section == "train":
            engine = tilegraph.trainingModel(model.train(), opts, _sgd(model, work.lr))
        else:
            engine = tilegraph.inferenceModel(model.eval(), opts)
        stacked = _stacked(inputs, work.steps)
        engine(*stacked)  # compiles with the environment above
    finally:
        os.environ.pop("TILEGRAPH_DISABLE_PASSES", None)
    return lambda: engine(*stacked)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", default="resnet50,efficientnet_b0")
    parser.add_argument("--sections", default="train")
    args = parser.parse_args()
    info = machine(torch.get_num_threads())
    info["command"] = ("python3 bench/widen_half_dense.py --rounds "
                       f"{args.rounds} --only {args.only} --sections {args.sections}")
    native = bool(tilegraph._core.native_bf16_dense())
    lines = [f"# widen-half-dense — {info['date']}, commit {info['commit']}", "",
             f"{info['cpu']}, {info['threads']} threads; `{info['command']}`; native bf16 "
             f"kernels: {'yes (the pass leaves bf16 alone)' if native else 'no'}", "",
             "| model | section | engine | median s | vs fp32 |", "|---|---|---|---|---|"]
    results = {}
    for work in model_workloads(quick=True):
        if work.name not in args.only.split(","):
            continue
        for section in args.sections.split(","):
            fns = {"fp32": _engine(work, section, False, ""),
                   "bf16": _engine(work, section, True, ""),
                   "bf16 without widen-half-dense": _engine(work, section, True,
                                                            "widen-half-dense")}
            timed = interleaved(fns, args.rounds, warmup=0)
            base = timed["fp32"]["median"]
            results[f"{work.name} {section}"] = timed
            for name, t in timed.items():
                lines.append(f"| {work.name} | {section} | {name} | {t['median']:.4f} | "
                             f"{base / t['median']:.2f}x |")
            print(lines[-3:], flush=True)
    save_results("widen_half_dense", info, dict(results=results), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
