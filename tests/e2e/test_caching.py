"""Executable caching across processes and compileAndExport / tilegraph.load."""
import json
import os
import subprocess
import sys

import torch

import tilegraph
from models import MLP, batches

HERE = os.path.dirname(__file__)


def run_child(cache_dir):
    env = dict(os.environ)
    out = subprocess.run([sys.executable, os.path.join(HERE, "cache_child.py"), cache_dir],
                         check=True, capture_output=True, text=True, env=env, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_compiled_step_from_the_cache(tmp_path):
    first = run_child(str(tmp_path))
    second = run_child(str(tmp_path))
    assert not first["from_cache"] and second["from_cache"]
    assert len(list(tmp_path.glob("*.tgcache"))) == 1
    assert second["loss"] == first["loss"]
    assert second["bias"] == first["bias"]
    print(f"compile: {first['compile_s']:.3f} s cold, {second['compile_s']:.3f} s from cache")


def test_a_different_model_misses_the_cache(tmp_path):
    opts = tilegraph.Options().enableExecutableCaching(str(tmp_path))
    x, t = batches("mlp", 1, 4, torch.Generator().manual_seed(0))
    a = tilegraph.inferenceModel(MLP(dh=8).eval(), opts)
    a.compile(x, t)
    b = tilegraph.inferenceModel(MLP(dh=16).eval(), opts)
    b.compile(x, t)
    assert not b.loaded_from_cache
    assert len(list(tmp_path.glob("*.tgcache"))) == 2


def test_compile_and_export_then_load(tmp_path):
    torch.manual_seed(0)
    model = MLP().eval()
    x, t = batches("mlp", 1, 4, torch.Generator().manual_seed(0))
    infer = tilegraph.inferenceModel(model)
    path = str(tmp_path / "mlp.tg")
    infer.compileAndExport(path, x, t)
    loaded = tilegraph.load(path)
    torch.testing.assert_close(loaded(x, t)[0], infer(x, t)[0])


def _stale_child(cache_dir, helper, temp):
    out = subprocess.run([sys.executable, os.path.join(HERE, "cache_stale_child.py"),
                          str(cache_dir), str(helper), str(temp)], check=True,
                         capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_editing_a_helper_or_a_constructor_argument_misses_the_cache(tmp_path):
    helper = tmp_path / "stale_helper.py"
    helper.write_text("def scale(x):\n    return x * 2.0\n")
    first = _stale_child(tmp_path / "cache", helper, 4.0)
    again = _stale_child(tmp_path / "cache", helper, 4.0)
    assert not first["from_cache"] and again["from_cache"]
    helper.write_text("def scale(x):\n    return x * 3.0\n")  # the model's class is unchanged
    edited = _stale_child(tmp_path / "cache", helper, 4.0)
    assert not edited["from_cache"] and edited["max_error"] < 1e-6
    other_temp = _stale_child(tmp_path / "cache", helper, 2.0)
    assert not other_temp["from_cache"] and other_temp["max_error"] < 1e-6
    assert first["max_error"] < 1e-6 and again["max_error"] < 1e-6


def test_a_tied_weight_survives_export_and_load_as_one_tensor(tmp_path):
    """A weight tied under two names is one variable; the module tilegraph.load builds
    without the model's code ties the two names again, and training continues identically."""
    class TiedLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.out = torch.nn.Linear(4, 10)
            self.out.weight = self.emb.weight

        def forward(self, idx):
            logits = self.out(torch.tanh(self.emb(idx)))
            return torch.nn.functional.cross_entropy(logits, (idx + 1) % 10)

    torch.manual_seed(0)
    model = TiedLM()
    train = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(
        model.parameters(), lr=0.5, momentum=0.9))
    idx = torch.tensor([1, 2, 3, 7])
    train(idx)
    path = str(tmp_path / "tied.tg")
    train.compileAndExport(path, idx)
    loaded = tilegraph.load(path)
    assert loaded.model.emb.weight is loaded.model.out.weight
    assert [train(idx).item() for _ in range(3)] == [loaded(idx).item() for _ in range(3)]
    assert torch.equal(model.emb.weight, loaded.model.out.weight)


class _TrainsOrPredicts(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(10, 10)

    def forward(self, x, t=None):
        out = self.fc(x)
        return (out, torch.nn.functional.cross_entropy(out, t)) if self.training else out


def test_a_training_model_runs_a_loaded_executable(tmp_path):
    """PopTorch's loadExecutable on a training model, then calls: the loaded program trains
    the module (it crashed on the first call: state a compile sets was not taken over)."""
    torch.manual_seed(0)
    x, t = torch.randn(2, 10), torch.randint(0, 10, (2,))
    path = str(tmp_path / "train.tg")
    tilegraph.trainingModel(_TrainsOrPredicts()).compileAndExport(path, x, t,
                                                                  export_model=False)
    model = _TrainsOrPredicts()
    before = model.fc.weight.detach().clone()
    run = tilegraph.trainingModel(model)
    run.loadExecutable(path)
    _, first = run(x, t)
    _, second = run(x, t)
    assert float(second) < float(first)
    assert not torch.equal(model.fc.weight, before)


def test_modes_of_a_loaded_module_do_not_block_its_program(tmp_path):
    """The program of tilegraph.load has no Python code to follow train/eval modes: eval() on
    its module (through an inference executor sharing it, as PopTorch's validation loops
    do) leaves the training program running instead of refusing it."""
    torch.manual_seed(0)
    x, t = torch.randn(2, 10), torch.randint(0, 10, (2,))
    path = str(tmp_path / "train.tg")
    tilegraph.trainingModel(_TrainsOrPredicts()).compileAndExport(path, x, t)
    train = tilegraph.load(path)
    tilegraph.inferenceModel(train).model.eval()
    _, loss = train(x, t)
    assert loss.dim() == 0 and torch.isfinite(loss)
