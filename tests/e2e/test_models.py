"""The use case's model families, from their authors' code, against eager PyTorch.

Small configurations (tilegraph.zoo, size="small"): torchvision ResNet-50, ResNeXt-50 32x4d,
EfficientNet-B0; Hugging Face BertForPreTraining (2 layers) and Wav2Vec2ForCTC (small).

Inference: outputs within rtol 1e-4 of eager, relative to the output's largest magnitude
(tens of fp32 layers, each ~1e-6 relative).

Training, 3 SGD+momentum steps (lr 1e-3): losses and every updated weight / running
statistic are compared with an eager **float64** run of the same model (the exact answer);
per tensor, tilegraph's (fp32) largest error must be within 4x of eager fp32's largest error
on that tensor, or within fp32 tolerance (1e-4 of the tensor's scale). Why not compare with eager fp32 directly:
deep networks at random initialization amplify rounding. For EfficientNet-B0, eager fp32
itself departs from float64 by 0.4% in the third loss at lr 1e-2 (batch norm over 4 samples
amplifies rounding; the loss falls from 4.5 to 0.14 in three steps even at lr 1e-3), and by
far more in parameters whose true gradient is ~0 (biases before batch norm); a fixed fp32
tolerance would either fail on rounding noise or be loose enough to hide bugs. (Measured:
first-step gradients of tilegraph and eager fp32 both sit ~1e-5 from float64, relative to
each tensor's largest gradient; by step 3 both engines' per-tensor errors are draws from
the same chaotic spread, hence 4x rather than a per-element bound.) Measuring both engines against float64 keeps
the check sharp where the model is well conditioned and fair where it is not.

ResNets are built with torchvision's zero_init_residual=True (the Goyal et al. recipe):
with the default init the residual stream grows through 16 blocks and eager fp32's first
gradients differ from float64 by up to 19% (measured), so no engine's fp32 gradient means
anything. Stochastic depth and dropout are 0 in the parity runs (random draws cannot match
torch's generator); stochastic depth is checked separately for its statistics.
"""

import pytest
import torch

import tilegraph
from tilegraph import coverage, zoo

STEPS = 3
LR = 1e-3

CASES = {
    "resnet50": lambda: zoo.resnet50(batch=4, zero_init_residual=True),
    "resnext50_32x4d": lambda: zoo.resnext50_32x4d(batch=4, zero_init_residual=True),
    "efficientnet_b0": lambda: zoo.efficientnet_b0(batch=4, stochastic_depth_prob=0.0,
                                                   dropout=0.0),
    "bert": lambda: zoo.bert_pretraining(),
    "wav2vec2": lambda: zoo.wav2vec2_ctc(),
}


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


@pytest.mark.parametrize("name", list(CASES))
def test_inference_matches_eager(name):
    case = CASES[name]()
    model = case.model.eval()
    with torch.no_grad():
        expected = _as_tuple(model(*case.inputs))
    got = _as_tuple(tilegraph.inferenceModel(model)(*case.inputs))
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert g.shape == e.shape and g.dtype == e.dtype
        torch.testing.assert_close(g, e, rtol=0, atol=1e-4 * float(e.abs().max()))


@pytest.mark.parametrize("name", list(CASES))
def test_three_training_steps_match_eager(name):
    """Losses and every floating-point state entry judged against eager float64
    (coverage.judge_against_float64: within 4x eager fp32's error, or fp32 tolerance);
    integer state (num_batches_tracked) equal."""
    case = CASES[name]()
    verdict = coverage.compare_training(case.train_model, case.train_inputs, STEPS, LR)
    tensor, ours, allowed = verdict["worst"]
    assert verdict["passed"], (f"{tensor}: tilegraph differs from float64 by {ours:.3e}, "
                               f"allowed {allowed:.3e}")


def test_stochastic_depth_keeps_the_expected_value():
    """EfficientNet's stochastic depth in training: each residual branch is dropped per
    sample with probability p and kept ones are scaled by 1/(1-p). Through tilegraph, the
    drop rate over many draws must be p (binomial bounds) and the scaling exact."""
    from torchvision.ops import StochasticDepth

    class Branch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = StochasticDepth(0.25, "row")

        def forward(self, x):
            return self.drop(x)

    model = Branch().train()
    x = torch.ones(4000, 3)
    engine = tilegraph.inferenceModel(model)
    y = engine(x)
    kept = y[:, 0] != 0
    assert torch.all((y[kept] - 1 / 0.75).abs() < 1e-6)
    assert torch.all(y[~kept] == 0)
    assert torch.all((y == y[:, :1]).all(dim=1)), "a row is kept or dropped as a whole"
    rate = 1 - kept.double().mean().item()
    sigma = (0.25 * 0.75 / 4000) ** 0.5
    assert abs(rate - 0.25) < 5 * sigma, rate
    assert not torch.equal(engine(x), y), "each call draws anew"
