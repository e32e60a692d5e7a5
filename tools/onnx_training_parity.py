#!/usr/bin/env python3
"""Training parity of the ONNX path on a real model family: torchvision's ResNet-18 with its
loss, exported by torch.onnx.export in TRAINING mode, trained by tilegraph's C++
TrainingSession (SGD with momentum), against eager PyTorch in float32 and float64.

Prints per-step losses of both and, for the parameters that differ most from eager fp32,
their distance to the float64 run next to eager fp32's own distance (the judge: tilegraph is
right when it is as close to float64 as eager fp32 is; batch norm over few values makes
single-precision runs drift apart).

    python3 tools/onnx_training_parity.py [--steps 3] [--batch 4] [--size 64]
"""
import argparse
import io
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import tilegraph.onnx as tgx


class WithLoss(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.m = net

    def forward(self, x, y):
        return F.cross_entropy(self.m(x), y)


def eager_train(model, xs, ys, lr, dtype):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for x, y in zip(xs, ys):
        opt.zero_grad()
        loss = model(x.to(dtype), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = WithLoss(torchvision.models.resnet18(num_classes=10))
    state = model.state_dict()
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(args.steps, args.batch, 3, args.size, args.size, generator=g)
    ys = torch.randint(0, 10, (args.steps, args.batch), generator=g)

    f = io.BytesIO()
    torch.onnx.export(model, (xs[0], ys[0]), f, input_names=["x", "y"], output_names=["loss"],
                      dynamo=False, training=torch.onnx.TrainingMode.TRAINING,
                      do_constant_folding=False, opset_version=17)
    sess = tgx.TrainingSession(f.getvalue(), "loss", tgx.SGD(lr=args.lr, momentum=0.9),
                               tgx.DataFlow(batches_per_step=args.steps))
    ours = sess.run({"x": xs.numpy(), "y": ys.numpy()})["loss"]
    weights = sess.weights()

    e32 = WithLoss(torchvision.models.resnet18(num_classes=10))
    e32.load_state_dict(state)
    eager = eager_train(e32, xs, ys, args.lr, torch.float32)
    e64 = WithLoss(torchvision.models.resnet18(num_classes=10)).double()
    e64.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in state.items()})
    eager_train(e64, xs, ys, args.lr, torch.float64)

    print("step  tilegraph(ONNX)  eager fp32")
    for s, (a, b) in enumerate(zip(ours, eager)):
        print(f"{s + 1:4d}  {a:.7f}        {b:.7f}")
    p32, p64 = dict(e32.named_parameters()), dict(e64.named_parameters())
    rows = sorted(((np.abs(weights[n] - p.detach().numpy()).max(), n) for n, p in p32.items()),
                  reverse=True)[:5]
    print("parameter                     |ours-eager32|  |ours-f64|  |eager32-f64|  max|p|")
    for d, n in rows:
        ref64 = p64[n].detach().numpy()
        print(f"{n:30s} {d:.3e}      {np.abs(weights[n] - ref64).max():.3e}   "
              f"{np.abs(p32[n].detach().numpy() - ref64).max():.3e}     "
              f"{np.abs(ref64).max():.3e}")


if __name__ == "__main__":
    main()
