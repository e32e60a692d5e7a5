"""Small models used by the front-end parity tests (each returns (output, loss))."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self, din=20, dh=32, dout=5):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(din, dh), nn.Linear(dh, dout)

    def forward(self, x, t):
        out = self.fc2(F.relu(self.fc1(x)))
        return out, F.cross_entropy(out, t)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        # No conv bias before batch norm: its gradient is pure rounding noise, which Adam
        # would amplify to lr-sized steps in both engines alike (but not identically).
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x, t):
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        h = F.relu(self.bn2(self.conv2(h)))
        h = F.adaptive_avg_pool2d(h, 2).flatten(1)
        out = self.fc(h)
        return out, F.cross_entropy(out, t)


class Encoder(nn.Module):
    def __init__(self, vocab=50, d=32, heads=4, ff=64, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens, t):
        h = self.layer(self.emb(tokens))
        out = self.head(h.mean(dim=1))
        return out, F.cross_entropy(out, t)


def batches(kind, steps, batch, generator):
    if kind == "mlp":
        return (torch.randn(steps * batch, 20, generator=generator),
                torch.randint(0, 5, (steps * batch,), generator=generator))
    if kind == "cnn":
        return (torch.randn(steps * batch, 1, 8, 8, generator=generator),
                torch.randint(0, 10, (steps * batch,), generator=generator))
    return (torch.randint(0, 50, (steps * batch, 6), generator=generator),
            torch.randint(0, 3, (steps * batch,), generator=generator))


MODELS = {"mlp": MLP, "cnn": CNN, "encoder": Encoder}
