"""Pipelined execution (PipelinedExecution, 1F1B): the pipeline bubble, and pipeline stages
against one device using all the cores.

    python3 bench/pipeline.py [--quick]

1. Bubble: S balanced stages (2 Linear(768, 768)+tanh blocks per device, micro-batches of
   128 rows: ~5 ms per segment, large against the ~0.1 ms of a hand-over between device
   threads), M micro-batches per optimizer step. Each device runs on its own thread; the runtime times
   each device's segments (busy) and each wave (wall). Measured bubble = 1 - mean busy /
   wall; theory (1F1B or GPipe) = (S-1)/(M+S-1). Only S <= cores is measured: with more
   device threads than cores, "busy" includes time the thread was descheduled.
2. BERT-small pretraining (4 encoder layers, hidden 256, sequence 64), 8 micro-batches of 4
   per optimizer step: 2 stages x 1 thread (pipelined) against the unannotated model on
   1 device x 2 threads, and eager PyTorch (2 threads) on the same step, interleaved rounds.

Results: bench/results/pipeline_<date>_<commit>.{json,md}.
"""
import argparse
import copy
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import interleaved, isa_line, machine, save_results  # noqa: E402

import tilegraph  # noqa: E402


class Balanced(torch.nn.Module):
    def __init__(self, stages, width=384, per_stage=2):
        super().__init__()
        self.stages = torch.nn.ModuleList(
            torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(width, width),
                                                      torch.nn.Tanh())
                                  for _ in range(per_stage)])
            for _ in range(stages))

    def forward(self, x):
        for s in self.stages:
            x = s(x)
        return x, (x * x).mean()


def measure_bubble(stages, micro_batches, micro=128, width=768, steps=4):
    torch.manual_seed(0)
    model = Balanced(stages, width)
    for d in range(1, stages):
        tilegraph.BeginBlock(model.stages[d], f"stage{d}", ipu_id=d)
    opts = tilegraph.Options().setExecutionStrategy(tilegraph.PipelinedExecution())
    opts.Training.gradientAccumulation(micro_batches)
    trainer = tilegraph.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=1e-3))
    x = torch.randn(micro_batches * micro, width)
    trainer(x)  # compile + warm-up
    exe = trainer.executable
    assert exe.pipelined, exe.pipeline_fallback_reason
    exe.reset_pipeline_stats()
    for _ in range(steps):
        trainer(x)
    s = exe.pipeline_stats()
    trainer.destroy()
    busy = sum(s["busy_seconds"]) / stages
    return dict(stages=stages, micro_batches=micro_batches,
                measured=1 - busy / s["wall_seconds"],
                theory=(stages - 1) / (micro_batches + stages - 1),
                utilization=[b / s["wall_seconds"] for b in s["busy_seconds"]],
                step_ms=1e3 * s["wall_seconds"] / s["waves"])


def bert(seed=0):
    from transformers import BertConfig, BertForPreTraining
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, vocab_size=4096, max_position_embeddings=128,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        attn_implementation="eager")
    return BertForPreTraining(config)


def bert_batch(n, seq=64, vocab=4096):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (n, seq), generator=g)
    types = torch.zeros(n, seq, dtype=torch.long)
    mask = torch.ones(n, seq, dtype=torch.long)
    labels = torch.full((n, seq), -100, dtype=torch.long)
    labels[:, 1::4] = ids[:, 1::4]
    nsp = torch.randint(0, 2, (n,), generator=g)
    return ids, types, mask, labels, nsp


def measure_bert(rounds, micro_batches=8, micro=4):
    from tilegraph.zoo import BertPretrainingLoss
    model = bert()
    plain_model, eager_model = copy.deepcopy(model), copy.deepcopy(model)
    layers = model.bert.encoder.layer
    layers[2] = tilegraph.BeginBlock(layers[2], "second", ipu_id=1)
    opts = tilegraph.Options().setExecutionStrategy(tilegraph.PipelinedExecution())
    opts.Training.gradientAccumulation(micro_batches)
    piped = tilegraph.trainingModel(BertPretrainingLoss(model), opts,
                                    torch.optim.SGD(model.parameters(), lr=1e-4))
    plain = tilegraph.trainingModel(BertPretrainingLoss(plain_model),
                                    tilegraph.Options().Training.gradientAccumulation(micro_batches),
                                    torch.optim.SGD(plain_model.parameters(), lr=1e-4))
    eager_loss = BertPretrainingLoss(eager_model)
    eager_opt = torch.optim.SGD(eager_model.parameters(), lr=1e-4)
    data = bert_batch(micro_batches * micro)
    chunks = [tuple(t[k * micro:(k + 1) * micro] for t in data) for k in range(micro_batches)]

    def eager_step():
        eager_opt.zero_grad()
        for c in chunks:
            (eager_loss(*c)[-1] / micro_batches).backward()
        eager_opt.step()

    piped(*data)
    plain(*data)
    assert piped.executable.pipelined, piped.executable.pipeline_fallback_reason
    piped.executable.reset_pipeline_stats()
    times = interleaved({"tilegraph 2 stages x 1 thread (pipelined)": lambda: piped(*data),
                         "tilegraph 1 device x 2 threads": lambda: plain(*data),
                         "eager PyTorch (2 threads)": eager_step}, rounds)
    stats = piped.executable.pipeline_stats()
    return dict(micro_batches=micro_batches, micro=micro, seconds=times,
                utilization=[b / stats["wall_seconds"] for b in stats["busy_seconds"]],
                per_device_mib=[b / 2**20 for b in piped.executable.memory_stats["device_arena_bytes"]])


def markdown(info, bubbles, bert_result):
    lines = [f"# Pipelined execution — {info['date']}", "",
             f"`{info['command']}` · commit {info['commit']} · {info['cpu']} · {info['cores']} "
             f"cores · {isa_line(info)} · torch "
             f"{info['versions']['torch']}", "",
             "## Pipeline bubble (balanced stages, 1 thread per device)", "",
             "Measured bubble: idle share of the devices' time (mean over devices); the busiest "
             "device's idle share is the bubble on the critical path (the mean also counts the "
             "lighter devices' imbalance: device 0's backward computes no input gradient).", "",
             "| stages S | micro-batches M | measured bubble (mean) | busiest device idle | (S-1)/(M+S-1) | device utilization | ms per optimizer step |",
             "|---|---|---|---|---|---|---|"]
    for b in bubbles:
        util = " / ".join(f"{u:.0%}" for u in b["utilization"])
        lines.append(f"| {b['stages']} | {b['micro_batches']} | {b['measured']:.1%} | "
                     f"{1 - max(b['utilization']):.1%} | {b['theory']:.1%} | {util} | "
                     f"{b['step_ms']:.1f} |")
    lines += ["", f"## BERT-small pretraining, {bert_result['micro_batches']} micro-batches of "
              f"{bert_result['micro']} per optimizer step (median of interleaved rounds)", "",
              "| engine | s per optimizer step | samples/s | vs 1 device x 2 threads |",
              "|---|---|---|---|"]
    base = bert_result["seconds"]["tilegraph 1 device x 2 threads"]["median"]
    samples = bert_result["micro_batches"] * bert_result["micro"]
    for name, t in bert_result["seconds"].items():
        lines.append(f"| {name} | {t['median']:.3f} | {samples / t['median']:.1f} | "
                     f"{base / t['median']:.2f}x |")
    util = " / ".join(f"{u:.0%}" for u in bert_result["utilization"])
    mib = " / ".join(f"{m:.1f}" for m in bert_result["per_device_mib"])
    lines += ["", f"Pipelined device utilization: {util}; planned peak per device and "
              f"micro-batch in flight: {mib} MiB.", ""]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    info = machine(threads=os.cpu_count())
    info["command"] = "python3 bench/pipeline.py" + (" --quick" if args.quick else "")
    stage_counts = [s for s in (2, 4) if s <= (os.cpu_count() or 1)]
    bubbles = []
    for s in stage_counts:
        for m in ([2 * s - 1, 8] if args.quick else [2 * s - 1, 4 * s, 8 * s, 16 * s]):
            bubbles.append(measure_bubble(s, m))
            print(bubbles[-1], flush=True)
    bert_result = measure_bert(rounds=3 if args.quick else 8)
    md = markdown(info, bubbles, bert_result)
    save_results("pipeline", info, dict(bubbles=bubbles, bert=bert_result), md)


if __name__ == "__main__":
    main()
