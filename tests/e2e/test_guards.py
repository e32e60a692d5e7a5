"""Nothing silently stale: a compiled program follows the module it was captured from.

Guards re-capture the model when what the capture depended on changes (requires_grad, a
plain attribute the forward reads, train/eval modes, a parameter's shape), and weights
changed on the host (another executor's training, a hand edit, load_state_dict) reach the
engine before the next call. Each test compares with eager PyTorch on the same module.
"""
import copy

import torch
import torch.nn.functional as F

import tilegraph
from models import MLP, batches


def _data(steps=1, batch=4, seed=0):
    return batches("mlp", steps, batch, torch.Generator().manual_seed(seed))


def _eager_sgd_steps(model, x, t, steps, lr=0.1):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        model(x, t)[1].backward()
        opt.step()


def test_inference_model_serves_the_weights_a_training_model_just_trained():
    torch.manual_seed(0)
    model = MLP()
    reference = copy.deepcopy(model)
    x, t = _data()
    trainer = tilegraph.trainingModel(model, None, torch.optim.SGD(model.parameters(), lr=0.1))
    infer = tilegraph.inferenceModel(model)
    before = infer(x, t)[0]
    for _ in range(3):
        trainer(x, t)
    _eager_sgd_steps(reference, x, t, 3)
    after = infer(x, t)[0]
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, reference(x, t)[0], rtol=1e-5, atol=1e-5)


def test_hand_edits_and_load_state_dict_reach_both_executors():
    torch.manual_seed(0)
    model = MLP()
    x, t = _data()
    trainer = tilegraph.trainingModel(model, None, torch.optim.SGD(model.parameters(), lr=0.1))
    infer = tilegraph.inferenceModel(model)
    trainer(x, t)
    infer(x, t)
    with torch.no_grad():
        model.fc2.weight.mul_(0.5)
    torch.testing.assert_close(infer(x, t)[0], model(x, t)[0])
    other = MLP()
    model.load_state_dict(other.state_dict())
    torch.testing.assert_close(infer(x, t)[0], other(x, t)[0])
    model.fc2.bias.data = torch.ones(5)  # a new tensor, not an in-place edit
    torch.testing.assert_close(infer(x, t)[0], model(x, t)[0])
    # The training model continues from the edited weights, as eager would.
    reference = copy.deepcopy(model)
    trainer(x, t)
    _eager_sgd_steps(reference, x, t, 1)
    torch.testing.assert_close(model.fc1.weight, reference.fc1.weight, rtol=1e-5, atol=1e-6)


def test_requires_grad_change_recompiles_the_training_step():
    torch.manual_seed(0)
    model = MLP()
    x, t = _data()
    trainer = tilegraph.trainingModel(model, None, torch.optim.SGD(model.parameters(), lr=0.1))
    trainer(x, t)
    model.fc1.weight.requires_grad_(False)
    frozen = model.fc1.weight.detach().clone()
    reference = copy.deepcopy(model)
    trainer(x, t)
    _eager_sgd_steps(reference, x, t, 1)
    torch.testing.assert_close(model.fc1.weight, frozen, rtol=0, atol=0)
    torch.testing.assert_close(model.fc2.weight, reference.fc2.weight, rtol=1e-5, atol=1e-6)


class Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(20, 5)
        self.scale = 2.0
        self.use_relu = False
        self.unused = "label"

    def forward(self, x):
        y = self.fc(x) * self.scale
        return F.relu(y) if self.use_relu else y


def test_a_plain_attribute_the_forward_reads_recaptures():
    model = Scaled()
    x, _ = _data()
    infer = tilegraph.inferenceModel(model)
    torch.testing.assert_close(infer(x), model(x))
    count = tilegraph.compilation_count()
    model.scale = 3.0
    torch.testing.assert_close(infer(x), model(x))
    model.use_relu = True
    torch.testing.assert_close(infer(x), model(x))
    assert tilegraph.compilation_count() == count + 2
    model.unused = "another label"  # re-captured, same graph: nothing recompiled
    torch.testing.assert_close(infer(x), model(x))
    infer(x)
    assert tilegraph.compilation_count() == count + 2


def test_a_replaced_submodule_of_another_shape_recompiles():
    model = Scaled()
    x, _ = _data()
    infer = tilegraph.inferenceModel(model)
    assert infer(x).shape == (4, 5)
    model.fc = torch.nn.Linear(20, 7)
    out = infer(x)
    assert out.shape == (4, 7)
    torch.testing.assert_close(out, model(x))


class WithNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(20, 8)
        self.bn = torch.nn.BatchNorm1d(8)
        self.out = torch.nn.Linear(8, 5)

    def forward(self, x, t):
        y = self.out(F.relu(self.bn(self.fc(x))))
        return y, F.cross_entropy(y, t)


def test_freezing_batch_norm_after_compile_recompiles_in_its_mode():
    torch.manual_seed(0)
    model = WithNorm()
    x, t = _data(batch=8)
    trainer = tilegraph.trainingModel(model, None, torch.optim.SGD(model.parameters(), lr=0.1))
    trainer(x, t)
    model.bn.eval()  # freeze its statistics, a common fine-tuning recipe
    reference = copy.deepcopy(model)
    stats = model.bn.running_mean.clone()
    trainer(x, t)
    _eager_sgd_steps(reference, x, t, 1)
    torch.testing.assert_close(model.bn.running_mean, stats, rtol=0, atol=0)
    torch.testing.assert_close(model.fc.weight, reference.fc.weight, rtol=1e-5, atol=1e-6)


def test_inference_model_keeps_its_eval_view_when_the_module_trains():
    torch.manual_seed(0)
    model = WithNorm()
    x, t = _data(batch=8)
    infer = tilegraph.inferenceModel(model.eval())  # PopTorch's recipe: eval, then wrap
    expected = model(x, t)[0]
    model.train()  # to go on training the module
    torch.testing.assert_close(infer(x, t)[0], expected)  # compiled now: still the eval view
    assert model.training and model.bn.training  # the user's modes are left as they were
    model.bn.momentum = 0.5  # a guard fires: re-captured, still in eval mode
    torch.testing.assert_close(infer(x, t)[0], expected)
