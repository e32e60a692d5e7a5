"""BERT pretraining split over 4 devices with PopTorch's annotations only:

    python3 examples/pipelined_bert.py [--calls 3]
    python3 -m tilegraph.run -n 4 examples/pipelined_bert.py --stages-on-processes

The second runs each device in its own process (4 processes, one pipeline; with -n 8, two
data-parallel pipelines), as BERT-Large ran on 4 IPUs per replica, and compares with eager
PyTorch on the same micro-batches.

The Hugging Face model is unchanged; BeginBlock puts the embeddings and the first encoder
layer on device 0 and one more layer on each of devices 1-3, and the pretraining heads on
device 3 — whose MLM decoder shares its weight with the word embeddings on device 0
(PopTorch's case of a weight used on two devices). Pipelined training needs
gradientAccumulation >= 2 x stages - 1 = 7. tilegraph places every operation and its
gradient on its device, moves values between devices with explicit stage_copy ops, and runs
each device on its own thread with micro-batches in flight (1F1B, one optimizer step per
wave of 8 micro-batches). The numbers equal the unannotated model's, which the script
checks (to fp32 rounding: the devices run with fewer threads each).
"""
import argparse
import copy

import torch

import tilegraph as poptorch
from tilegraph.zoo import BertPretrainingLoss


def build(seed=0):
    from transformers import BertConfig, BertForPreTraining
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=128, vocab_size=512, max_position_embeddings=64,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        attn_implementation="eager")
    return BertForPreTraining(config)


def annotate(model):
    layers = model.bert.encoder.layer
    model.bert.embeddings = poptorch.BeginBlock(model.bert.embeddings, "embeddings", ipu_id=0)
    for i in range(1, 4):
        layers[i] = poptorch.BeginBlock(layers[i], f"layer{i}", ipu_id=i)
    model.cls = poptorch.BeginBlock(model.cls, "heads", ipu_id=3)
    return model


def batch(n, seq=16, vocab=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, seq), generator=g)
    types = torch.zeros(n, seq, dtype=torch.long)
    types[:, seq // 2:] = 1
    mask = torch.ones(n, seq, dtype=torch.long)
    labels = torch.full((n, seq), -100, dtype=torch.long)
    labels[:, 1::4] = ids[:, 1::4]
    nsp = torch.randint(0, 2, (n,), generator=g)
    return ids, types, mask, labels, nsp


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--stages-on-processes", action="store_true",
                   help="each device in its own process (launch with python -m tilegraph.run -n 4)")
    args = p.parse_args()
    model = build()
    reference = copy.deepcopy(model)
    annotate(model)
    opts = poptorch.Options().setExecutionStrategy(
        poptorch.PipelinedExecution(poptorch.AutoStage.SameAsIpu))
    opts.Training.gradientAccumulation(8)  # >= 2 x 4 - 1
    if args.stages_on_processes:
        opts.Distributed.placeStagesOnProcesses(4)
    part, parts = opts.Distributed.dataParallelId, opts.Distributed.numDataParallel
    say = print if opts.Distributed.processId == 0 else (lambda *a, **k: None)
    trainer = poptorch.trainingModel(BertPretrainingLoss(model), opts,
                                     poptorch.optim.AdamW(model.parameters(), lr=1e-3))
    if args.stages_on_processes:  # the reference: eager PyTorch on the global batch
        eager_loss = BertPretrainingLoss(reference)
        eager = torch.optim.AdamW(reference.parameters(), lr=1e-3)

        def plain(*data):
            eager.zero_grad()
            losses = []
            for k in range(8):  # micro-batch k of every pipeline, in order
                rows = [slice((q * 8 + k) * 2, (q * 8 + k + 1) * 2) for q in range(parts)]
                chunk = [torch.cat([t[r] for r in rows]) for t in data]
                loss = eager_loss(*chunk)[-1]
                (loss / 8).backward()
                losses.append(loss.detach())
            eager.step()
            return (losses[-1],)
    else:
        plain = poptorch.trainingModel(BertPretrainingLoss(reference),
                                       poptorch.Options().Training.gradientAccumulation(8),
                                       poptorch.optim.AdamW(reference.parameters(), lr=1e-3))
    for call in range(args.calls):
        data = batch(8 * 2 * parts, seed=call)  # per pipeline: 8 micro-batches of 2
        mine = [t[part * 16:(part + 1) * 16] for t in data]
        loss = trainer(*mine)[-1]
        ref_loss = plain(*data)[-1]
        if part == 0 and parts > 1:
            loss = loss.mean()
        say(f"call {call + 1}: loss {float(loss):.5f} (unannotated {float(ref_loss):.5f})")
    exe = trainer.executable
    stats = exe.memory_stats
    say("schedule:", "pipelined (1F1B)" if exe.pipelined
          else "sharded, because " + exe.pipeline_fallback_reason)
    say("planned peak per device and micro-batch in flight (MiB):",
          [round(b / 2**20, 2) for b in stats["device_arena_bytes"]])
    busy = exe.pipeline_stats()
    if busy["wall_seconds"] > 0:
        say("device utilization:", [f"{b / busy['wall_seconds']:.0%}"
                                      for b in busy["busy_seconds"]])
    say("inter-device copies in the program:", trainer.executable.optimized_ir.count("stage_copy("))
    worst = max((a - b).abs().max().item() for a, b in zip(model.parameters(),
                                                           reference.parameters()))
    say(f"largest weight difference from the unannotated model: {worst:.3g}")
    assert worst < 1e-5, "the annotated model must train like the unannotated one"
    if args.stages_on_processes:
        print(f"process {opts.Distributed.processId}: device "
              f"{opts.Distributed.processId % 4} of pipeline {part}")


if __name__ == "__main__":
    main()
