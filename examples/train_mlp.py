"""Main job: train an MNIST-sized MLP through tilegraph and compare with eager PyTorch.

The model (784 -> 256 -> GELU -> 10, cross entropy, SGD with momentum) is built with the
core's graph API; tilegraph's C++ autodiff generates the backward and the optimizer update,
the pass pipeline fuses elementwise chains, and each host call runs `--steps-per-call`
training steps inside the engine. The same model, initial weights and batches train in
eager PyTorch alongside; the script prints both loss curves, the largest weight difference,
and the throughput of each (timed interleaved, medians over the calls after warm-up).

    python examples/train_mlp.py [--calls 10] [--steps-per-call 50] [--batch 64]
"""
import argparse
import statistics
import time

import numpy as np
import torch

import tilegraph as tg

D_IN, D_HIDDEN, D_OUT = 784, 256, 10


def build_graph(batch, lr, momentum):
    g = tg.Graph("mnist_mlp")
    x = g.add_input("x", "f32", [batch, D_IN])
    t = g.add_input("labels", "i64", [batch])
    shapes = {"fc1.weight": [D_HIDDEN, D_IN], "fc1.bias": [D_HIDDEN],
              "fc2.weight": [D_OUT, D_HIDDEN], "fc2.bias": [D_OUT]}
    for name, shape in shapes.items():
        g.add_variable(name, "f32", shape)
    (h,) = g.op("matmul", [x, "fc1.weight"], {"transpose_b": True})
    (h,) = g.op("add", [h, "fc1.bias"])
    (h,) = g.op("gelu", [h])
    (logits,) = g.op("matmul", [h, "fc2.weight"], {"transpose_b": True})
    (logits,) = g.op("add", [logits, "fc2.bias"])
    (logp,) = g.op("log_softmax", [logits], {"axis": 1})
    (loss,) = g.op("nll_loss", [logp, t])
    g.add_output(loss)
    info = g.add_training_step(loss, "sgd", [dict(params=list(shapes), lr=lr, momentum=momentum)],
                               use_momentum=True)
    return g, info


class TorchMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(D_IN, D_HIDDEN)
        self.fc2 = torch.nn.Linear(D_HIDDEN, D_OUT)

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def synthetic_mnist(n, protos, generator):
    """MNIST-shaped data: one of 10 fixed class prototypes plus noise per sample."""
    labels = torch.randint(0, D_OUT, (n,), generator=generator)
    x = protos[labels] + 4.0 * torch.randn(n, D_IN, generator=generator)
    return x, labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--steps-per-call", type=int, default=50)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lr, momentum = 0.01, 0.9

    g, info = build_graph(args.batch, lr, momentum)
    t0 = time.perf_counter()
    exe = tg.Executable.compile(g, training=True, num_threads=args.threads)
    compile_s = time.perf_counter() - t0
    for name, value in info["hyperparams"].items():
        exe.set_hyperparam(name, value)
    model = TorchMLP()
    for name, p in model.named_parameters():
        exe.write_variable(name, p.detach().numpy().copy())
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    stats = exe.memory_stats
    print(f"tilegraph: compiled in {compile_s:.3f} s, {exe.num_instructions} kernels per step, "
          f"arena {stats['arena_bytes'] / 1e6:.2f} MB (without reuse "
          f"{stats['naive_bytes'] / 1e6:.2f} MB)")

    gen = torch.Generator().manual_seed(1)
    protos = torch.randn(D_OUT, D_IN, generator=gen)
    s = args.steps_per_call
    tg_times, torch_times = [], []
    print(f"{'step':>6} {'tilegraph loss':>15} {'eager loss':>12} {'tilegraph/s':>12} {'eager/s':>10}")
    for call in range(args.calls):
        x, y = synthetic_mnist(s * args.batch, protos, gen)
        xs = x.reshape(s, args.batch, D_IN)
        ys = y.reshape(s, args.batch)
        t0 = time.perf_counter()
        (losses,) = exe.run([xs.numpy(), ys.numpy()], steps=s, mode="all")
        tg_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = []
        for i in range(s):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xs[i]), ys[i])
            loss.backward()
            opt.step()
            ref.append(loss.item())
        torch_times.append(time.perf_counter() - t0)
        print(f"{(call + 1) * s:6d} {losses.mean():15.4f} {np.mean(ref):12.4f} "
              f"{s * args.batch / tg_times[-1]:12.0f} {s * args.batch / torch_times[-1]:10.0f}")

    diff = max(float(np.abs(exe.read_variable(n) - p.detach().numpy()).max())
               for n, p in model.named_parameters())
    steady = slice(1, None) if args.calls > 1 else slice(None)
    tg_med = statistics.median(tg_times[steady])
    torch_med = statistics.median(torch_times[steady])
    print(f"max |weight difference| tilegraph vs eager after {args.calls * s} steps: {diff:.2e}")
    print(f"throughput (samples/s, median of calls after the first): tilegraph "
          f"{s * args.batch / tg_med:.0f}, eager PyTorch {s * args.batch / torch_med:.0f}, "
          f"ratio {torch_med / tg_med:.2f}x  [{args.threads} threads, fp32]")


if __name__ == "__main__":
    main()
