"""The benchmarked workloads: models (from tilegraph.zoo, the same code the parity tests
check) and microbenchmarks. Each model workload gives a factory for a fresh, identically
seeded model, one micro-batch of training and of inference inputs, and how many steps one
call runs (tilegraph runs them as deviceIterations in one engine call; the baselines loop).
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from tilegraph import zoo


@dataclass
class ModelWorkload:
    name: str
    config: str                      # recorded with the results
    build: callable                  # () -> zoo.ModelCase, seeded
    steps: int                       # steps per timed call
    rounds: int                      # timed calls per engine (interleaved)
    lr: float = 1e-3
    onnx: bool = True                # ONNX Runtime baseline for inference
    notes: str = ""
    extra: dict = field(default_factory=dict)
    # (section, engine) pairs the quick suite leaves out, with the reason in `notes`
    quick_skip: tuple = ()


class MnistMLP(torch.nn.Module):
    """784-256-256-10 with ReLU: an MNIST-sized MLP, where per-step host overhead dominates."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 256)
        self.fc2 = torch.nn.Linear(256, 256)
        self.fc3 = torch.nn.Linear(256, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def mlp_case(batch=32):
    torch.manual_seed(0)
    model = MnistMLP()
    x = torch.randn(batch, 784)
    y = torch.randint(0, 10, (batch,))
    return zoo.ModelCase("mlp", model, (x,), zoo.WithLoss(model, F.cross_entropy), (x, y))


class SmallResidualCNN(torch.nn.Module):
    """The issue's "unseen-style" small CNN, written for the bench (no zoo model like it):
    a conv stem, two residual blocks (conv, batch norm, GELU, conv, batch norm, + skip), a
    strided conv, a channels-last layer norm and a linear head, on 32x32 images."""

    def __init__(self, width=32, classes=10):
        super().__init__()
        c = width
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, c, 3, padding=1, bias=False),
                                        torch.nn.BatchNorm2d(c), torch.nn.GELU())
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, padding=1, bias=False),
                                torch.nn.BatchNorm2d(c), torch.nn.GELU(),
                                torch.nn.Conv2d(c, c, 3, padding=1, bias=False),
                                torch.nn.BatchNorm2d(c)) for _ in range(2))
        self.down = torch.nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.norm = torch.nn.LayerNorm(2 * c)
        self.head = torch.nn.Linear(2 * c, classes)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = F.gelu(x + block(x))
        x = self.down(x)                                      # [N, 2c, 16, 16]
        x = self.norm(x.permute(0, 2, 3, 1))                  # channels-last layer norm
        return self.head(x.mean(dim=(1, 2)))


def small_cnn_case(batch=32):
    torch.manual_seed(0)
    model = SmallResidualCNN()
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    return zoo.ModelCase("small_cnn", model, (x,), zoo.WithLoss(model, F.cross_entropy), (x, y))


def model_workloads(quick=True):
    """The suite's models; `quick` keeps the whole suite under 15 minutes on 2 cores."""
    return [
        ModelWorkload("mlp", "784-256-256-10 ReLU, batch 32, SGD momentum",
                      lambda: mlp_case(32), steps=100, rounds=5 if quick else 9, lr=0.01),
        ModelWorkload("small_cnn", "unseen-style small CNN (bench/workloads.py): conv, "
                      "batch norm, GELU, residual adds, layer norm; 32x32, batch 32, "
                      "SGD momentum",
                      lambda: small_cnn_case(32), steps=4, rounds=5 if quick else 9,
                      lr=0.01),
        ModelWorkload("resnet50", "torchvision ResNet-50, 10 classes, 64x64, batch 8",
                      lambda: zoo.resnet50("small", batch=8, resolution=64,
                                           zero_init_residual=True),
                      steps=2, rounds=3 if quick else 9),
        ModelWorkload("efficientnet_b0", "torchvision EfficientNet-B0, 10 classes, 64x64, "
                      "batch 8, dropout/stochastic depth 0",
                      lambda: zoo.efficientnet_b0("small", batch=8, resolution=64, dropout=0.0,
                                                  stochastic_depth_prob=0.0),
                      steps=2, rounds=3 if quick else 9,
                      quick_skip=(("infer", "torch.compile"),) if quick else (),
                      notes="quick suite: no torch.compile inference (its compile alone takes "
                            "~70 s and the suite would pass 15 minutes; --full runs it)"
                            if quick else ""),
        ModelWorkload("bert_base", "HF BertForPreTraining, BERT-Base config, seq 128, batch 2, "
                      "MLM+NSP loss; dropout 0",
                      lambda: zoo.bert_pretraining("base", batch=2, seq=128),
                      steps=1, rounds=3 if quick else 7),
        ModelWorkload("wav2vec2_small", "HF Wav2Vec2ForCTC, small config, 4000 samples, "
                      "batch 2, CTC loss",
                      lambda: zoo.wav2vec2_ctc("small", batch=2),
                      steps=4, rounds=3 if quick else 9, onnx=True),
    ]
