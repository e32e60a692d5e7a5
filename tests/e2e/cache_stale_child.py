"""Child process for test_caching's stale-cache tests: a model whose forward calls a helper
from a module file the test rewrites between runs, and takes a constructor argument."""
import importlib.util
import json
import sys

import torch

import tilegraph

cache_dir, helper_path, temp = sys.argv[1], sys.argv[2], float(sys.argv[3])
spec = importlib.util.spec_from_file_location("stale_helper", helper_path)
helper = importlib.util.module_from_spec(spec)
spec.loader.exec_module(helper)


class Model(torch.nn.Module):
    def __init__(self, temp):
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)
        self.temp = temp

    def forward(self, x):
        return helper.scale(self.fc(x)) / self.temp


torch.manual_seed(0)
model = Model(temp).eval()
x = torch.randn(2, 3)
opts = tilegraph.Options().enableExecutableCaching(cache_dir)
exe = tilegraph.inferenceModel(model, opts)
out = exe(x)
expected = model(x)
print(json.dumps({"from_cache": exe.loaded_from_cache,
                  "max_error": (out - expected).abs().max().item()}))
