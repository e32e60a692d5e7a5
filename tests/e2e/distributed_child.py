"""Child of test_distributed.py, started by mpirun: trains an MLP data-parallel over the
processes (and `--replicas` replicas in each) and compares with eager PyTorch training the
same model on the whole global batch. Each process writes its report (JSON) to
--report-dir/report<rank>.json (mpirun interleaves the processes' standard output).

Every process starts from a different random model: the run must broadcast process 0's.
"""
import argparse
import copy
import json
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import tilegraph  # noqa: E402
from models import MLP  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--replicas", type=int, default=1)
p.add_argument("--optimizer", default="sgd")
p.add_argument("--accumulation", type=int, default=1)
p.add_argument("--calls", type=int, default=5)
p.add_argument("--width", type=int, default=32)   # a process given another width: mismatch
p.add_argument("--fail", default="")              # "raise" / "hang": rank 1 misbehaves
p.add_argument("--mismatch", action="store_true")  # rank 1 builds a narrower model
p.add_argument("--report-dir", default=".")
p.add_argument("--shard", action="store_true")  # sharded optimizer state (ZeRO-1)
p.add_argument("--stages", action="store_true")  # fc2 on a second device (2-D parallelism)
p.add_argument("--pipelined", action="store_true")  # with --stages: PipelinedExecution
p.add_argument("--spread", action="store_true")  # with --pipelined: a process per stage
p.add_argument("--mixed", action="store_true")  # setMixedPrecision(bf16); eager: autocast
p.add_argument("--popdist", action="store_true")  # Options from tilegraph.popdist (poprun's)
args = p.parse_args()

if args.popdist:  # as Graphcore's scripts do under poprun: the launch sets the replicas
    import tilegraph.popdist as popdist  # noqa: E402
    assert popdist.isPopdistEnvSet() and popdist.getNumLocalReplicas() == args.replicas
    opts = popdist.poptorch.Options()
else:
    opts = tilegraph.Options()
if args.spread:
    opts.Distributed.placeStagesOnProcesses(2)
rank, procs = opts.Distributed.processId, opts.Distributed.numProcesses
part, parts = opts.Distributed.dataParallelId, opts.Distributed.numDataParallel
R, A, steps, micro = args.replicas, args.accumulation, 2, 3
group = parts * R
opts.replicationFactor(R).deviceIterations(steps).Training.gradientAccumulation(A)
opts.outputMode(tilegraph.OutputMode.All)
if args.mixed:
    opts.Precision.setMixedPrecision(torch.bfloat16)
opts.TensorLocations.setOptimizerLocation(
    tilegraph.TensorLocationSettings().useReplicatedTensorSharding(args.shard))


def make_optimizer(params):
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return torch.optim.AdamW(params, lr=0.01, weight_decay=0.01)


width = 16 if args.mismatch and rank == 1 else args.width
torch.manual_seed(100 + rank)  # a different initial model in every process
model = MLP(dh=width)
torch.manual_seed(100)
reference = MLP(dh=args.width)  # process 0's initial model
if args.stages:
    model.fc2 = tilegraph.BeginBlock(model.fc2, ipu_id=1)
    opts.setExecutionStrategy(tilegraph.PipelinedExecution() if args.pipelined
                              else tilegraph.ShardedExecution())
trainer = tilegraph.trainingModel(model, opts, make_optimizer(model.parameters()))
eager_opt = make_optimizer(reference.parameters())

data = torch.Generator().manual_seed(7)
micro_steps = steps * A
losses, ref_losses = [], []
for call in range(args.calls):
    # The global batch of this call: [micro_steps, group, micro]; this process feeds its
    # replicas' part [micro_steps, part*R:(part+1)*R, micro] (part: its pipeline when the
    # stages are spread over processes, else its rank).
    x = torch.randn(micro_steps, group, micro, 20, generator=data)
    t = torch.randint(0, 5, (micro_steps, group, micro), generator=data)
    if args.fail == "raise" and rank == 1 and call == 1:
        raise RuntimeError("process 1 fails on purpose")
    if args.fail == "hang" and rank == 1 and call == 1:
        import time
        time.sleep(600)  # alive but never calls the model again
    mine = slice(part * R, (part + 1) * R)
    _, loss = trainer(x[:, mine].reshape(-1, 20), t[:, mine].reshape(-1))
    losses.append(loss.reshape(micro_steps, R))
    for s in range(steps):  # eager: mean loss over the global batch, A micro-batches
        eager_opt.zero_grad()
        for a in range(A):
            k = s * A + a
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mixed):
                loss_k = reference(x[k].reshape(-1, 20), t[k].reshape(-1))[1]
            (loss_k / A).backward()
            ref_losses.append(loss_k.item())
        eager_opt.step()

weight_error = max((a - b).abs().max().item() / (1 + b.abs().max().item())
                   for a, b in zip(model.parameters(), reference.parameters()))
report = json.dumps({"rank": rank, "processes": procs, "replicas": R,
                     "pipelined": trainer.executable.pipelined,
                     "devices_here": len(trainer.executable.pipeline_stats()["busy_seconds"]),
                     "weight_error": weight_error, "ref_losses": ref_losses,
                  "losses": torch.cat(losses).tolist(),
                  "state": {k: v.sum().item() for k, v in model.state_dict().items()}})
with open(f"{args.report_dir}/report{rank}.json", "w") as f:
    f.write(report)
