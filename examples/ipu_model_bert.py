"""BERT on the IPU Model: does it fit one emulated GC200, and where would the auto-partitioner
place it over 4? (docs/IPU_MODEL.md; every figure printed is a compile-time estimate)

    python3 examples/ipu_model_bert.py --size large --half --micro-batch 1 [--report r.html]
    python3 examples/ipu_model_bert.py --size large --half --pipelined --recompute \
        --available-memory 0.28

--pipelined places the stages as PipelinedExecution (1F1B, 8 micro-batches of gradient
accumulation: IPU k of N holds the activations of N - k micro-batches in flight) instead of
ShardedExecution; --recompute adds Graphcore's recipe for BERT-Large: autoRecomputation=3
(each stage keeps only its inputs) and a recomputationCheckpoint after every encoder layer;
--available-memory sets every IPU's available memory proportion for matmul temporaries
(0.28 in the PaddlePaddle BERT-Large IPU recipe; Poplar's default is 0.6). With --half the
accumulated gradients are kept in fp16 (the optimizer's accum_type), as Graphcore's recipes do.

Compiles (does not train) Hugging Face's BertForPreTraining with random weights, sequence
128 (16 for --size small), SGD: first on one emulated IPU with out-of-memory allowed (fits or
not, the fullest tile), then `tilegraph.autoPartition` over --ipus IPUs, printing the chosen stages next to
Graphcore's published placement for BERT-Large (embeddings + 3 layers, then 7, 7, 7) and
the estimated pipeline throughput (the slowest stage sets the pace). BERT-Large needs ~2 GB
of host memory and a few minutes on 2 cores.
"""
import argparse

import torch

import tilegraph as poptorch
from tilegraph import zoo


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="base", choices=["small", "base", "large"])
    parser.add_argument("--half", action="store_true", help="model.half() (PopTorch style)")
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--ipus", type=int, default=4)
    parser.add_argument("--report", help="write the one-IPU report as HTML here")
    parser.add_argument("--pipelined", action="store_true",
                        help="PipelinedExecution with 8 micro-batches per step")
    parser.add_argument("--recompute", action="store_true",
                        help="autoRecomputation=3 and a checkpoint after every encoder layer")
    parser.add_argument("--available-memory", type=float,
                        help="available memory proportion of every IPU (default 0.6)")
    args = parser.parse_args()

    seq = 16 if args.size == "small" else 128  # the small config has 64 positions
    accumulation = 8 if args.pipelined else 1
    case = zoo.bert_pretraining(args.size, batch=args.micro_batch * accumulation, seq=seq)
    model, inputs = case.train_model, case.train_inputs
    if args.half:
        model.half()
    if args.recompute:
        for layer in model.model.bert.encoder.layer:
            layer.register_forward_hook(_checkpoint_hidden_state)
    optimizer = poptorch.optim.SGD(model.parameters(), lr=0.01,
                                   accum_type=torch.float16 if args.half else None)
    params = sum(p.numel() for p in model.parameters())
    print(f"BERT-{args.size}: {params / 1e6:.1f}M parameters, "
          f"{'fp16' if args.half else 'fp32'}, micro-batch {args.micro_batch}, sequence {seq}")

    opts = poptorch.Options().useIpuModel(True, allow_out_of_memory=True)
    opts.Training.gradientAccumulation(accumulation)
    if args.available_memory:
        opts.setAvailableMemoryProportion({f"IPU{i}": args.available_memory
                                           for i in range(args.ipus)})
    if args.recompute:
        opts._Popart.set("autoRecomputation", int(poptorch.RecomputationType.Pipeline))
    one = poptorch.trainingModel(model, opts, optimizer)
    one.compile(*inputs)
    report = one.ipuModelReport()
    if args.report:
        print("report:", one.writeIpuModelReport(args.report))
    one.destroy()
    ipu = report["ipus"][0]
    capacity = report["target"]["bytes_per_tile"] / 1024
    print(f"one {report['target']['name']}: {'fits' if report['fits'] else 'does not fit'}; "
          f"fullest tile {ipu['max_tile_bytes'] / 1024:,.0f} KiB of {capacity:,.0f} "
          f"(tile {ipu['max_tile']}), {ipu['total_bytes'] / 2**20:,.0f} MiB in all")

    opts = opts.clone()
    if args.pipelined:
        opts.setExecutionStrategy(poptorch.PipelinedExecution())
    plan = poptorch.autoPartition(model, args.ipus, inputs, optimizer=optimizer, options=opts)
    print(plan)
    layers = [sum(u.startswith("model.bert.encoder.layer.") for u in stage)
              for stage in plan.stages]
    print("encoder layers per IPU:", layers,
          "(Graphcore's BERT-Large configuration: [3, 7, 7, 7], embeddings on IPU 0)")
    stages = [i["cycles"] for i in plan.verified["ipus"]]
    clock = report["target"]["clock_hz"]
    if args.pipelined:
        print(f"estimated pipeline throughput: {clock / max(stages) * args.micro_batch:,.0f} "
              f"sequences/s (slowest stage {max(stages):,.0f} cycles per micro-batch)")
    else:
        print(f"estimated throughput, sharded (one IPU at a time): "
              f"{clock / sum(stages) * args.micro_batch:,.0f} sequences/s; pipelined, the "
              f"slowest stage would set the pace: {clock / max(stages) * args.micro_batch:,.0f} "
              "(memory verified for sharded execution; see --pipelined)")


def _checkpoint_hidden_state(module, args, output):
    """A forward hook: keeps an encoder layer's output for the backward (recomputes the rest)."""
    if isinstance(output, tuple):
        return (poptorch.recomputationCheckpoint(output[0]),) + output[1:]
    return poptorch.recomputationCheckpoint(output)


if __name__ == "__main__":
    main()
