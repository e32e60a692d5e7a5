"""PopTorch-style half precision (`model.half()`) on the CPU: the training step with and
without the passes that undo the widened capture's redundant work (fold-exact-casts; and
fold-transpose, which then folds the half weights' transposes into the matmuls). Both
executors run the same model in the same process, interleaved; the ratio is the result.

    python3 bench/half_passes.py [--size base] [--batch 4] [--seq 128] [--rounds 5]
"""
import argparse
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import interleaved, isa_line, machine  # noqa: E402

import tilegraph  # noqa: E402
from tilegraph import zoo  # noqa: E402


def compiled_trainer(model, inputs, disabled):
    """A training executor compiled with TILEGRAPH_DISABLE_PASSES=`disabled` (the pass
    manager reads it when it builds the pipeline, at compile)."""
    os.environ["TILEGRAPH_DISABLE_PASSES"] = disabled
    try:
        t = tilegraph.trainingModel(model, tilegraph.Options(),
                                    tilegraph.optim.SGD(model.parameters(), lr=1e-4))
        t.compile(*inputs)
        return t
    finally:
        os.environ.pop("TILEGRAPH_DISABLE_PASSES", None)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="base", choices=["small", "base"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    seq = min(args.seq, 64) if args.size == "small" else args.seq
    case = zoo.bert_pretraining(args.size, batch=args.batch, seq=seq)
    model = case.train_model.half()
    inputs = case.train_inputs
    engines = {"with fold-exact-casts": compiled_trainer(copy.deepcopy(model), inputs, ""),
               "without": compiled_trainer(copy.deepcopy(model), inputs, "fold-exact-casts")}
    times = interleaved({k: (lambda t=t: t(*inputs)) for k, t in engines.items()},
                        args.rounds)
    info = machine(torch.get_num_threads())
    print(f"{info['cpu']}, {info['threads']} threads, {isa_line(info)}, "
          f"commit {info['commit']}")
    print(f"BERT-{args.size} model.half() training step, batch {args.batch}, sequence {seq}:")
    for name, t in times.items():
        print(f"  {name:22s} median {t['median'] * 1e3:8.1f} ms  "
              f"(min {t['min'] * 1e3:.1f}, max {t['max'] * 1e3:.1f})")
    ratio = times["without"]["median"] / times["with fold-exact-casts"]["median"]
    print(f"  speed-up from the passes: {ratio:.2f}x")


if __name__ == "__main__":
    main()
