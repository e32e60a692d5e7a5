"""Recomputation on BERT-Base: planned peak memory with and without a checkpoint after every
encoder layer (PopTorch's recomputationCheckpoint, added by forward hooks so that the Hugging
Face model code is unchanged), and the losses of two training calls, which must agree.

    python3 bench/recompute.py [--batch 4] [--seq 128]
"""
import argparse
import copy
import time

import torch

import tilegraph
from tilegraph import zoo


def checkpoint_every_layer(model):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (tilegraph.recomputationCheckpoint(output[0]),) + output[1:]
        return tilegraph.recomputationCheckpoint(output)
    layers = [m for name, m in model.named_modules() if type(m).__name__ == "BertLayer"]
    for layer in layers:
        layer.register_forward_hook(hook)
    return len(layers)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    args = p.parse_args()
    case = zoo.bert_pretraining(size="base", batch=args.batch, seq=args.seq)
    plain = case.train_model
    marked = copy.deepcopy(plain)
    n = checkpoint_every_layer(marked)
    results = {}
    for name, model in (("without checkpoints", plain), ("checkpoint after each of "
                                                        f"{n} layers", marked)):
        trainer = tilegraph.trainingModel(model, tilegraph.Options(),
                                          torch.optim.SGD(model.parameters(), lr=1e-4))
        t0 = time.perf_counter()
        losses = [float(trainer(*case.train_inputs)[-1]) for _ in range(2)]
        stats = trainer.executable.memory_stats
        results[name] = (stats["arena_bytes"], losses, time.perf_counter() - t0)
        trainer.destroy()
    print(f"BERT-Base pretraining, batch {args.batch}, sequence {args.seq}:")
    for name, (arena, losses, seconds) in results.items():
        print(f"  {name}: planned arena {arena / 2**20:.1f} MiB, losses {losses}, "
              f"{seconds:.1f} s for compile + 2 steps")


if __name__ == "__main__":
    main()
