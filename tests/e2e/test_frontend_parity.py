"""trainingModel / inferenceModel on unchanged nn.Modules against eager PyTorch.

Losses per step and weights (and batch-norm running statistics) after 50 steps must match
eager within fp32 tolerance; the batch arithmetic options must give the weights of the
equivalent eager loop.
"""
import copy

import pytest
import torch

import tilegraph
from models import MODELS, batches

STEPS = 50


def make_optimizer(kind, params):
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)


def eager_train(model, opt, x, t, micro, accumulation=1):
    losses = []
    for s in range(x.shape[0] // (micro * accumulation)):
        opt.zero_grad()
        for k in range(accumulation):
            i = (s * accumulation + k) * micro
            _, loss = model(x[i:i + micro], t[i:i + micro])
            (loss / accumulation).backward()
            losses.append(loss.item())
        opt.step()
    return torch.tensor(losses)


def _without_key_bias(name, value):
    # Attention's key bias adds the same score to every key, so softmax cancels it: its true
    # gradient is 0 and what both engines compute is rounding noise, which Adam turns into
    # lr-sized steps. Those entries are compared by neither side's noise.
    if name.endswith("in_proj_bias"):
        d = value.shape[0] // 3
        return torch.cat([value[:d], value[2 * d:]])
    return value


def assert_same_state(a, b, rtol, atol):
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        torch.testing.assert_close(_without_key_bias(k, sa[k].float()),
                                   _without_key_bias(k, sb[k].float()), rtol=rtol, atol=atol,
                                   msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("opt_kind", ["sgd", "adamw"])
@pytest.mark.parametrize("model_kind", ["mlp", "cnn", "encoder"])
def test_training_matches_eager(model_kind, opt_kind):
    torch.manual_seed(0)
    model = MODELS[model_kind]()
    reference = copy.deepcopy(model)
    micro = 8
    x, t = batches(model_kind, STEPS, micro, torch.Generator().manual_seed(1))
    ref_losses = eager_train(reference, make_optimizer(opt_kind, reference.parameters()),
                             x, t, micro)
    opts = tilegraph.Options().deviceIterations(10).outputMode(tilegraph.OutputMode.All)
    trainer = tilegraph.trainingModel(model, opts, make_optimizer(opt_kind, model.parameters()))
    losses = []
    for c in range(STEPS // 10):
        sl = slice(c * 10 * micro, (c + 1) * 10 * micro)
        _, loss = trainer(x[sl], t[sl])
        losses.append(loss)
    torch.testing.assert_close(torch.cat(losses), ref_losses, rtol=1e-4, atol=1e-5)
    assert_same_state(model, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_kind", ["mlp", "cnn", "encoder"])
def test_inference_matches_eager(model_kind):
    torch.manual_seed(0)
    model = MODELS[model_kind]().eval()
    x, t = batches(model_kind, 4, 8, torch.Generator().manual_seed(2))
    opts = tilegraph.Options().deviceIterations(4)
    out, loss = tilegraph.inferenceModel(model, opts)(x, t)
    with torch.no_grad():
        ref_out = torch.cat([model(x[i * 8:(i + 1) * 8], t[i * 8:(i + 1) * 8])[0]
                             for i in range(4)])
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    assert loss.shape == (4,)


@pytest.mark.parametrize("device_iterations", [1, 3])
@pytest.mark.parametrize("accumulation", [1, 2])
@pytest.mark.parametrize("mode", ["All", "Final", "Sum", "EveryN"])
def test_batch_options_give_eager_weights(device_iterations, accumulation, mode):
    torch.manual_seed(0)
    model = MODELS["mlp"]()
    reference = copy.deepcopy(model)
    micro, calls = 4, 2
    per_call = micro * device_iterations * accumulation
    x, t = batches("mlp", calls * device_iterations * accumulation, micro,
                   torch.Generator().manual_seed(3))
    ref_losses = eager_train(reference, make_optimizer("sgd", reference.parameters()), x, t,
                             micro, accumulation)
    opts = (tilegraph.Options().deviceIterations(device_iterations)
            .Training.gradientAccumulation(accumulation))
    steps = device_iterations * accumulation
    if mode == "EveryN":
        opts.outputMode(tilegraph.OutputMode.EveryN, output_return_period=steps)
    else:
        opts.outputMode(getattr(tilegraph.OutputMode, mode))
    trainer = tilegraph.trainingModel(model, opts, make_optimizer("sgd", model.parameters()))
    for c in range(calls):
        _, loss = trainer(x[c * per_call:(c + 1) * per_call], t[c * per_call:(c + 1) * per_call])
        step_losses = ref_losses[c * steps:(c + 1) * steps]
        # (All: one loss per step; a single step's loss is 0-d, as eager's)
        all_steps = step_losses if len(step_losses) > 1 else step_losses[0]
        expected = {"All": all_steps, "Final": step_losses[-1], "Sum": step_losses.sum(),
                    "EveryN": step_losses[-1:]}[mode]
        torch.testing.assert_close(loss, expected.to(loss.dtype), rtol=1e-4, atol=1e-5)
    assert_same_state(model, reference, rtol=1e-4, atol=1e-5)


def test_dropout_keep_rate_and_scaling():
    class Drop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(4000))

        def forward(self, x):
            y = torch.nn.functional.dropout(x * self.w, p=0.3, training=True)
            return y, y.sum() * 0.0

    trainer = tilegraph.trainingModel(Drop(), tilegraph.Options().randomSeed(5),
                                      torch.optim.SGD([torch.zeros(1)], lr=0.0))
    y, _ = trainer(torch.ones(1, 4000))
    kept = (y != 0).float().mean().item()
    # 4000 Bernoulli(0.7) draws: standard error 0.0072; allow 4 of them.
    assert abs(kept - 0.7) < 4 * 0.0072
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))
    y2, _ = trainer(torch.ones(1, 4000))
    assert not torch.equal(y, y2), "dropout mask must change from step to step"
