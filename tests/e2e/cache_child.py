"""Child process for test_caching: wraps a model with executable caching and reports."""
import json
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import tilegraph  # noqa: E402
from models import CNN, batches  # noqa: E402

cache_dir = sys.argv[1]
torch.manual_seed(0)
model = CNN()
opts = tilegraph.Options().deviceIterations(2).enableExecutableCaching(cache_dir)
trainer = tilegraph.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=0.05))
x, t = batches("cnn", 2, 4, torch.Generator().manual_seed(0))
start = time.perf_counter()
trainer.compile(x, t)
compile_s = time.perf_counter() - start
_, loss = trainer(x, t)
print(json.dumps({"from_cache": trainer.loaded_from_cache, "compile_s": compile_s,
                  "loss": loss.item(), "bias": model.fc.bias.tolist()}))
