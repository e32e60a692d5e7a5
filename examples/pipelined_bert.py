"""BERT pretraining split over 4 devices with PopTorch's annotations only:

    python3 examples/pipelined_bert.py [--calls 3]

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
    args = p.parse_args()
    model = build()
    reference = copy.deepcopy(model)
    annotate(model)
    opts = poptorch.Options().setExecutionStrategy(
        poptorch.PipelinedExecution(poptorch.AutoStage.SameAsIpu))
    opts.Training.gradientAccumulation(8)  # >= 2 x 4 - 1
    trainer = poptorch.trainingModel(BertPretrainingLoss(model), opts,
                                     poptorch.optim.AdamW(model.parameters(), lr=1e-3))
    plain = poptorch.trainingModel(BertPretrainingLoss(reference),
                                   poptorch.Options().Training.gradientAccumulation(8),
                                   poptorch.optim.AdamW(reference.parameters(), lr=1e-3))
    for call in range(args.calls):
        data = batch(8 * 2, seed=call)  # 8 micro-batches of 2
        loss = trainer(*data)[-1]
        ref_loss = plain(*data)[-1]
        print(f"call {call + 1}: loss {float(loss):.5f} (unannotated {float(ref_loss):.5f})")
    exe = trainer.executable
    stats = exe.memory_stats
    print("schedule:", "pipelined (1F1B)" if exe.pipelined
          else "sharded, because " + exe.pipeline_fallback_reason)
    print("planned peak per device and micro-batch in flight (MiB):",
          [round(b / 2**20, 2) for b in stats["device_arena_bytes"]])
    busy = exe.pipeline_stats()
    if busy["wall_seconds"] > 0:
        print("device utilization:", [f"{b / busy['wall_seconds']:.0%}"
                                      for b in busy["busy_seconds"]])
    print("inter-device copies in the program:", trainer.executable.optimized_ir.count("stage_copy("))
    worst = max((a - b).abs().max().item() for a, b in zip(model.parameters(),
                                                           reference.parameters()))
    print(f"largest weight difference from the unannotated model: {worst:.3g}")
    assert worst < 1e-5, "the annotated model must train like the unannotated one"


if __name__ == "__main__":
    main()
