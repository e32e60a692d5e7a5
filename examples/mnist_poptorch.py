"""PopTorch's MNIST tutorial, unchanged except for the import line, on synthetic MNIST.

The shape follows Graphcore's PopTorch MNIST example: a conv net (Block = conv, max-pool,
ReLU; then Linear layers) whose forward returns (output, loss) when labels are given,
poptorch.Options with deviceIterations, poptorch.DataLoader, poptorch.optim.SGD,
trainingModel for the epochs, detachFromDevice, then inferenceModel for test accuracy.
The only tilegraph-specific line is `import tilegraph as poptorch`. (The tutorial's
Dropout(0.5) is left out so that the weights can be compared with eager PyTorch's.)

MNIST cannot be downloaded here, so the data is synthetic and MNIST-shaped (1x28x28, 10
classes): ten fixed random stroke templates, each sample shifted, scaled and noised.
The same model, data order and optimizer also train in eager PyTorch (a deepcopy of the
initial model), call by call interleaved with tilegraph's, for the side-by-side throughput,
accuracy and weight difference.

    python examples/mnist_poptorch.py [--epochs 2] [--train-samples 3072] [--check]
"""
import argparse
import copy
import sys
import time

import torch
import torch.nn as nn

import tilegraph as poptorch

ACCURACY_THRESHOLD = 0.90   # --check: tilegraph's test accuracy must reach this
# --check: max |tilegraph weight - eager weight| after the first call, and at the end
# against eager's own sensitivity. One call (32 steps) matches eager to ~1e-7, but the
# trajectories drift apart over hundreds of steps: conv-net SGD is chaotic (eager against
# itself with 1e-7-perturbed initial weights, lr 0.01: 4e-2 after 256 steps). The mechanism,
# traced on one data order: at step 19 a max-pool window's two largest conv outputs differ by
# 3e-8 (~1 ulp); oneDNN's and torch's convolutions round differently, the argmax flips, the
# gradient goes to the other element and momentum carries the difference. Measured here
# with the defaults: 3.1e-4 to 1.8e-3 after epoch 1 and 3.8e-3 to 5.4e-2 at the end (it moves
# with any change of rounding in the conv kernels). So the tight check is on the first call,
# before any near-tie can flip, and the end of the run is judged against chaos measured in
# the same run: eager retrained from initial weights scaled by 1 +- 1e-7 (about an ulp).
# tilegraph's drift from eager must stay within CHAOS_FACTOR times the larger of those two.
FIRST_CALL_TOLERANCE = 1e-5
CHAOS_FACTOR = 4.0


class SyntheticMNIST(torch.utils.data.Dataset):
    """MNIST-shaped images: one of 10 fixed stroke templates, shifted by up to 3 pixels,
    scaled, plus Gaussian noise. Deterministic in (seed, train)."""

    def __init__(self, size, train=True, seed=0):
        templates = self.templates(seed)
        g = torch.Generator().manual_seed(seed * 1000 + (1 if train else 2))
        self.labels = torch.randint(0, 10, (size,), generator=g)
        images = templates[self.labels]
        shifts = torch.randint(-3, 4, (size, 2), generator=g)
        for i in range(size):
            images[i] = torch.roll(images[i], (int(shifts[i, 0]), int(shifts[i, 1])), (1, 2))
        scale = 0.7 + 0.6 * torch.rand(size, 1, 1, 1, generator=g)
        noise = 0.2 * torch.randn(size, 1, 28, 28, generator=g)
        self.images = ((images * scale + noise) - 0.1307) / 0.3081  # MNIST's normalisation

    @staticmethod
    def templates(seed):
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
        out = torch.zeros(10, 1, 28, 28)
        for c in range(10):  # 3 strokes of 12 soft dots along a random line segment
            for _ in range(3):
                p0, p1 = 6 + 16 * torch.rand(2, 2, generator=g)
                for s in torch.linspace(0, 1, 12):
                    cy, cx = p0 + s * (p1 - p0)
                    out[c, 0] += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 3.0)
        return out.clamp(max=1.0)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]


class Block(nn.Module):
    def __init__(self, in_channels, num_filters, kernel_size, pool_size):
        super(Block, self).__init__()
        self.conv = nn.Conv2d(in_channels, num_filters, kernel_size=kernel_size)
        self.pool = nn.MaxPool2d(kernel_size=pool_size)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.conv(x)
        x = self.pool(x)
        x = self.relu(x)
        return x


class Network(nn.Module):
    def __init__(self):
        super(Network, self).__init__()
        self.layer1 = Block(1, 32, 3, 2)
        self.layer2 = Block(32, 64, 3, 2)
        self.layer3 = nn.Linear(1600, 128)
        self.layer3_act = nn.ReLU()
        self.layer4 = nn.Linear(128, 10)
        self.log_softmax = nn.LogSoftmax(dim=1)
        self.loss = nn.NLLLoss()

    def forward(self, x, labels=None):
        x = self.layer1(x)
        x = self.layer2(x)
        x = x.view(-1, 1600)
        x = self.layer3_act(self.layer3(x))
        x = self.log_softmax(self.layer4(x))
        if labels is not None:
            return x, self.loss(x, labels)
        return x


def accuracy(predictions, labels):
    _, ind = torch.max(predictions, 1)
    return torch.sum(torch.eq(ind, labels)).item() / labels.size()[0]


def max_difference(a, b):
    """Largest |p - q| over two lists of parameter tensors."""
    return max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(a, b))


def eager_steps(model, opt, data, labels, args):
    """One call's worth of steps (the call's batches, one by one) in eager PyTorch."""
    for x, y in zip(data.split(args.batch_size), labels.split(args.batch_size)):
        opt.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        opt.step()
    return loss


def train_eager(model, training_data, args):
    """The training loop in eager PyTorch alone, on the same data order (the shuffle is
    replayed from seed 0). Returns the weights after each epoch."""
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    model.train()
    torch.manual_seed(0)
    epochs = []
    for _ in range(args.epochs):
        for data, labels in training_data:
            eager_steps(model, opt, data, labels, args)
        epochs.append(copy.deepcopy(list(model.parameters())))
    return epochs


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batches-per-step", type=int, default=32)
    ap.add_argument("--test-batch-size", type=int, default=64)
    ap.add_argument("--train-samples", type=int, default=3072)
    ap.add_argument("--test-samples", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check", action="store_true",
                    help=f"exit 1 unless test accuracy >= {ACCURACY_THRESHOLD} and the weights "
                         "match eager PyTorch's (see the tolerances above)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    train_dataset = SyntheticMNIST(args.train_samples, train=True)
    test_dataset = SyntheticMNIST(args.test_samples, train=False)

    opts = poptorch.Options()
    opts.deviceIterations(args.batches_per_step)
    training_data = poptorch.DataLoader(opts, train_dataset, batch_size=args.batch_size,
                                        shuffle=True, drop_last=True)

    model = Network()
    eager_model = copy.deepcopy(model)  # same initial weights for the eager comparison
    initial_model = copy.deepcopy(model)
    optimizer = poptorch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    poptorch_model = poptorch.trainingModel(model, options=opts, optimizer=optimizer)

    # ---- training through tilegraph, and the same steps in eager PyTorch ---------------
    # Each tilegraph call (32 steps) is followed by the same batches in eager: the two are
    # timed interleaved (bench/README's rule), so a change in the machine's speed during the
    # run (this VM's neighbours) moves both numbers, not the ratio.
    torch.manual_seed(0)  # the shuffle order (train_eager replays it for the drift runs)
    eager_optimizer = torch.optim.SGD(eager_model.parameters(), lr=args.lr,
                                      momentum=args.momentum)
    call_times, eager_times, tg_epochs, eager_epochs = [], [], [], []
    for epoch in range(1, args.epochs + 1):
        total_loss, eager_total, steps = 0.0, 0.0, 0
        for data, labels in training_data:
            t0 = time.perf_counter()
            output, loss = poptorch_model(data, labels)
            call_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            eager_loss = eager_steps(eager_model, eager_optimizer, data, labels, args)
            eager_times.append(time.perf_counter() - t0)
            if len(call_times) == 1:
                tg_first_call = copy.deepcopy(list(model.parameters()))
                eager_first_call = copy.deepcopy(list(eager_model.parameters()))
            total_loss += loss.item()
            eager_total += eager_loss.item()
            steps += 1
        print(f"epoch {epoch}: loss tilegraph {total_loss / steps:.4f}, eager "
              f"{eager_total / steps:.4f}")
        tg_epochs.append(copy.deepcopy(list(model.parameters())))
        eager_epochs.append(copy.deepcopy(list(eager_model.parameters())))
    poptorch_model.detachFromDevice()
    samples_per_call = data.shape[0]
    first_call, steady = call_times[0], call_times[1:] or call_times
    tg_rate = samples_per_call * len(steady) / sum(steady)
    eager_rate = samples_per_call * len(eager_times[1:] or eager_times) / sum(
        eager_times[1:] or eager_times)
    chaos = 0.0
    if args.check:  # eager against itself from initial weights perturbed by about an ulp
        for sign in (1, -1):
            perturbed = copy.deepcopy(initial_model)
            with torch.no_grad():
                for p in perturbed.parameters():
                    p.mul_(1 + sign * 1e-7)
            runs = train_eager(perturbed, training_data, args)
            chaos = max(chaos, max_difference(runs[-1], eager_epochs[-1]))

    # ---- inference: test accuracy --------------------------------------------------
    model.eval()
    eager_model.eval()
    test_opts = poptorch.Options()
    test_opts.deviceIterations(4)
    test_data = poptorch.DataLoader(test_opts, test_dataset, batch_size=args.test_batch_size)
    inference_model = poptorch.inferenceModel(model, options=test_opts)
    correct = eager_correct = total = 0
    with torch.no_grad():
        for data, labels in test_data:
            output = inference_model(data)
            correct += accuracy(output, labels) * labels.size()[0]
            eager_correct += accuracy(eager_model(data), labels) * labels.size()[0]
            total += labels.size()[0]
    inference_model.detachFromDevice()
    tg_acc, eager_acc = correct / total, eager_correct / total

    with torch.no_grad():
        first_call_diff = max_difference(tg_first_call, eager_first_call)
        diffs = [max_difference(a, b) for a, b in zip(tg_epochs, eager_epochs)]
        scale = max(float(q.abs().max()) for q in eager_epochs[-1])
    print(f"training throughput (samples/s, calls after the first): tilegraph {tg_rate:.0f}, "
          f"eager PyTorch {eager_rate:.0f}  [{args.threads} threads; tilegraph's first call "
          f"incl. compile {first_call:.2f} s]")
    print(f"test accuracy on {total} samples: tilegraph {tg_acc:.4f}, eager PyTorch "
          f"{eager_acc:.4f}")
    print(f"max |weight difference| tilegraph vs eager after the first call "
          f"({args.batches_per_step} steps): {first_call_diff:.2e}; after each epoch: "
          + ", ".join(f"{d:.2e}" for d in diffs) + f" (largest weight {scale:.2f})")
    if args.check:
        print(f"eager vs eager from ulp-perturbed initial weights, at the end: {chaos:.2e}")
        ok = (tg_acc >= ACCURACY_THRESHOLD and first_call_diff <= FIRST_CALL_TOLERANCE
              and diffs[-1] <= CHAOS_FACTOR * chaos)
        print(f"check: accuracy >= {ACCURACY_THRESHOLD}, weight difference <= "
              f"{FIRST_CALL_TOLERANCE} after the first call and <= {CHAOS_FACTOR} x eager's own "
              f"drift at the end: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
