"""Child process for test_isa_builds: under the build TILEGRAPH_ISA names, trains the CNN and
the transformer encoder (conv, batch norm, pooling, attention, layer norm, ReLU FFN,
embedding, SGD with momentum) for 6 steps against eager PyTorch and runs the inference
path; prints which build was loaded and the largest relative weight and output
differences."""
import copy
import json
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import tilegraph  # noqa: E402
from tilegraph import _core  # noqa: E402
from models import CNN, Encoder, batches  # noqa: E402


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def train(kind, cls, steps=6, batch=4):
    torch.manual_seed(0)
    model = cls()
    reference = copy.deepcopy(model)
    x, t = batches(kind, steps, batch, torch.Generator().manual_seed(1))
    trainer = tilegraph.trainingModel(
        model, tilegraph.Options().deviceIterations(steps),
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    trainer(x, t)
    trainer.copyWeightsToHost()
    opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    for s in range(steps):
        opt.zero_grad()
        reference(x[s * batch:(s + 1) * batch], t[s * batch:(s + 1) * batch])[1].backward()
        opt.step()
    weights = max(rel(p.detach(), q.detach())
                  for p, q in zip(model.parameters(), reference.parameters()))
    reference.eval()
    model.eval()
    infer = tilegraph.inferenceModel(copy.deepcopy(reference), tilegraph.Options())
    with torch.no_grad():
        out = rel(infer(x[:batch], t[:batch])[0], reference(x[:batch], t[:batch])[0])
    return weights, out


result = {"isa": _core.isa, "march": _core.march}
for kind, cls in (("cnn", CNN), ("encoder", Encoder)):
    result[kind] = train(kind, cls)
print(json.dumps(result))
