"""Data-parallel training through tilegraph: PopTorch's MNIST network on synthetic MNIST,
with replicas in each process and processes over Open MPI. The script is ordinary PopTorch
code; scaling is in the options and the launcher:

    python -m tilegraph.run -n 2 examples/data_parallel.py            # 2 processes
    python -m tilegraph.run -n 2 examples/data_parallel.py --replicas 2  # 2 x 2 replicas
    python examples/data_parallel.py --replicas 2                       # 2 replicas, 1 process

Each process reads its own part of the dataset (tilegraph.DataLoader shards it), every
replica trains on its micro-batches, gradients are averaged across all replicas, and every
process ends with the same weights (process 0's initial weights are broadcast at compile).
Process 0 prints the loss per epoch and the global throughput; every process prints a
checksum of its weights, which must agree. (The equivalence with one replica on the whole
batch is tested in tests/e2e/test_distributed.py.)
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import tilegraph as poptorch  # noqa: E402
from mnist_poptorch import Network, SyntheticMNIST  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicas", type=int, default=1, help="replicas per process")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-samples", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--device-iterations", type=int, default=8)
    p.add_argument("--shard-optimizer-state", action="store_true")
    args = p.parse_args()

    opts = poptorch.Options().deviceIterations(args.device_iterations)
    opts.replicationFactor(args.replicas).randomSeed(0)
    opts.TensorLocations.setOptimizerLocation(
        poptorch.TensorLocationSettings().useReplicatedTensorSharding(args.shard_optimizer_state))
    rank, procs = opts.Distributed.processId, opts.Distributed.numProcesses
    data = poptorch.DataLoader(opts, SyntheticMNIST(args.train_samples), batch_size=args.micro_batch,
                               shuffle=True)
    torch.manual_seed(rank)  # different in every process: the run broadcasts process 0's
    model = Network()
    trainer = poptorch.trainingModel(model, opts, poptorch.optim.SGD(model.parameters(), lr=0.01,
                                                                     momentum=0.9))
    replicas = args.replicas * procs
    if rank == 0:
        print(f"{procs} process(es) x {args.replicas} replica(s) = {replicas} replicas; "
              f"micro-batch {args.micro_batch}, {len(data)} calls of "
              f"{data.combined_batch_size} samples per process and epoch", flush=True)
    for epoch in range(args.epochs):
        start, losses = time.perf_counter(), []
        for x, y in data:
            _, loss = trainer(x, y)
            losses.append(float(loss.mean()))
        seconds = time.perf_counter() - start
        if rank == 0:
            samples = len(data) * data.combined_batch_size * procs
            print(f"epoch {epoch + 1}: loss {sum(losses) / len(losses):.4f}, "
                  f"{samples / seconds:,.0f} samples/s over all replicas"
                  + (" (includes compilation)" if epoch == 0 else ""), flush=True)
    checksum = sum(float(t.double().abs().sum()) for t in model.state_dict().values())
    print(f"process {rank}: weights checksum {checksum:.10e}", flush=True)


if __name__ == "__main__":
    main()
