"""Child process for the Ctrl-C test: a long multi-step training call, interrupted by the
parent with SIGINT; reports where it stopped and whether the module matches the engine."""
import faulthandler
import json
import sys

# A crash (a signal such as SIGSEGV) prints every thread's Python stack on stderr, which the
# parent test shows when the child fails.
faulthandler.enable()

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import tilegraph  # noqa: E402

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256),
                            torch.nn.ReLU(), torch.nn.Linear(256, 10))


class WithLoss(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        out = self.net(x)
        return out, torch.nn.functional.cross_entropy(out, t)


steps = 20000  # far longer than the test waits
wrapped = WithLoss(model)
trainer = tilegraph.trainingModel(wrapped, tilegraph.Options().deviceIterations(steps),
                                  torch.optim.SGD(wrapped.parameters(), lr=1e-3))
x, t = torch.randn(steps * 8, 256), torch.randint(0, 10, (steps * 8,))
trainer.compile(x, t)
print("running", flush=True)
report = {"steps": steps, "interrupted": False}
try:
    trainer(x, t)
except KeyboardInterrupt as e:
    report["interrupted"] = True
    report["note"] = "".join(getattr(e, "__notes__", []))
exe = trainer.executable
report["steps_done"] = exe.steps_completed_in_last_run
report["module_matches_engine"] = all(
    np.array_equal(np.asarray(exe.read_variable(var)), dict(wrapped.named_parameters())[fqn]
                   .detach().numpy()) for fqn, var in trainer._cap.params.items())
print(json.dumps(report))
