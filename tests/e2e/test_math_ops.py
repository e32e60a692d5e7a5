"""Rounding, fmod / remainder, topk / sort, prod (its gradient exact at zeros), the trigonometric / hyperbolic family, base-2/10 logarithms, atan2, NaN/inf
tests, rounding division and min/max reductions with indices (the Core ATen ops models
reach for: position buckets, angle features, argmin assignments), in inference and, where
differentiable, training, against eager PyTorch."""
import math

import pytest
import torch
import torch.nn.functional as F

import tilegraph
from parity import assert_infers_and_trains_like_eager, assert_layer_matches_eager

DIFFERENTIABLE = {
    "tan": lambda h: torch.tan(torch.tanh(h)),
    "asin_acos": lambda h: torch.asin(torch.tanh(h) * 0.9) + torch.acos(torch.tanh(h) * 0.8),
    "atan_atan2": lambda h: torch.atan(h) + torch.atan2(h, h.flip(1) + 0.5),
    "sinh_cosh": lambda h: torch.sinh(h * 0.5) * torch.cosh(h * 0.3),
    "asinh_acosh_atanh": lambda h: torch.asinh(h) + torch.acosh(h.abs() + 1.2)
    + torch.atanh(torch.tanh(h) * 0.8),
    "log2_log10": lambda h: torch.log2(h.abs() + 0.5) + torch.log10(h.abs() + 0.5),
    "floor_ceil_round_trunc_frac": lambda h: h + torch.floor(h * 3) + torch.ceil(h * 3)
    + torch.round(h * 3) + torch.trunc(h * 3) + torch.frac(h * 3),
    "max_min_dim": lambda h: torch.max(h, 1, keepdim=True)[0] - torch.min(h, 1,
                                                                           keepdim=True)[0] + h,
    "amin": lambda h: torch.amin(h, 0) + h,
    "floor_divide": lambda h: h + torch.div(h * 4, 1.5, rounding_mode="floor"),
    "fmod_remainder": lambda h: torch.fmod(h * 3, h.flip(1).abs() + 0.5)
    + torch.remainder(h * 3, -(h.abs() + 0.7)),
    "diagonal_select_scatter": lambda h: torch.select_scatter(
        h, torch.diagonal(h.reshape(4, 2, 4), 1, 1, 2).reshape(8) * 2, 0, 2),
    "var_dim": lambda h: h - torch.var(h, 1, unbiased=True, keepdim=True),
    "topk": lambda h: torch.topk(h, 3, dim=1)[0].sum(1, keepdim=True) + h,
    "sort": lambda h: torch.sort(h, dim=1, descending=True)[0] * torch.linspace(1.0, 0.1, 8),
    "hypot_copysign": lambda h: torch.hypot(h, h.flip(1) * 2) + torch.copysign(h, h.flip(1))
    + torch.copysign(h, -1.0),
    "kthvalue": lambda h: torch.kthvalue(h, 3, dim=1, keepdim=True)[0] + h,
    "remainder_of_a_number": lambda h: h + torch.remainder(5.0, h.detach().abs() + 0.5),
    "cummax_cummin": lambda h: torch.cummax(h, 1)[0] - torch.cummin(h, 1).values
    + torch.cummax(h.round(), 0)[1] * 0.1,
    "logcumsumexp": lambda h: torch.logcumsumexp(h * 3, 1),
    "prod": lambda h: torch.prod(torch.tanh(h).reshape(4, 4, 2), 1).repeat(1, 4)
    + torch.prod(h[:, :3]) * 0.1 + torch.prod(h * torch.tensor([0.0] + [1.0] * 7), 1,
                                                keepdim=True),
}


@pytest.mark.parametrize("name", sorted(DIFFERENTIABLE))
def test_inference_and_training_match_eager(name):
    assert_layer_matches_eager(DIFFERENTIABLE[name])


def test_integer_division_nan_inf_and_index_reductions():
    class Features(torch.nn.Module):
        def forward(self, x, i, j):
            return (i // j, torch.div(i, j, rounding_mode="trunc"), torch.floor(i),
                    torch.isnan(torch.log(x)), torch.isinf(1 / x.round()),
                    torch.argmin(x, 1), torch.argmin(x), torch.min(x, 0)[1],
                    torch.round(x, decimals=1), torch.topk(x, 2, dim=0, largest=False)[1],
                    torch.argsort(x, dim=1), torch.sort(i.flatten(), descending=True)[0],
                    torch.prod(i[:2, :3], 1), torch.prod(i[0] > 0))

    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, generator=g) * 2
    i = torch.randint(-30, 30, (5, 4), generator=g)
    j = torch.randint(1, 7, (5, 4), generator=g) * torch.where(i > 0, 1, -1)
    got = tilegraph.inferenceModel(Features())(x, i, j)
    for a, b in zip(got, Features()(x, i, j)):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.reshape(b.shape), b)


class _Divide(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, a, b):
        return self.fn(a, b)


_DIVISIONS = {"floor": lambda a, b: a // b,
              "trunc": lambda a, b: torch.div(a, b, rounding_mode="trunc"),
              "remainder": lambda a, b: a % b, "fmod": torch.fmod,
              "floor_by_number": lambda a, b: a // 0.1}


@pytest.mark.parametrize("name", sorted(_DIVISIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_division_rounds_as_torch_does_at_its_edges(name, dtype):
    """torch's floor division is not floor(a / b): it starts from fmod (1 // 0.1 is 9, inf //
    1 is NaN) and keeps the sign of a zero quotient; tilegraph gives the same bits."""
    a = torch.tensor([1.0, math.inf, -math.inf, 7.0, -7.0, 0.0, 5.0, -0.0, 1e30, -5.5, 3.0,
                      -1.0], dtype=dtype)
    b = torch.tensor([0.1, 1.0, 1.0, 2.0, 2.0, -3.0, 0.0, 2.0, 3e-9, 2.0, -0.0, 0.3],
                     dtype=dtype)
    fn = _DIVISIONS[name]
    got, want = tilegraph.inferenceModel(_Divide(fn))(a, b), fn(a, b)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    finite = ~want.isnan()
    assert torch.equal(torch.signbit(got[finite]), torch.signbit(want[finite]))


@pytest.mark.parametrize("name", ["floor", "trunc", "remainder", "fmod"])
def test_integer_division_by_zero_fails_the_call_as_torch_raises(name):
    fn = _DIVISIONS[name]
    infer = tilegraph.inferenceModel(_Divide(fn))
    a, b = torch.tensor([7, -9, 3]), torch.tensor([2, 4, -2])
    torch.testing.assert_close(infer(a, b), fn(a, b), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        fn(a, torch.tensor([2, 0, 1]))
    with pytest.raises(RuntimeError, match="ZeroDivisionError") as info:
        infer(a, torch.tensor([2, 0, 1]))
    assert "test_math_ops.py" in str(info.value)  # the user's line
    torch.testing.assert_close(infer(a, b), fn(a, b), rtol=0, atol=0)  # still usable


class Image(torch.nn.Module):
    """Segmentation-head style: upsampling and border padding around a convolution."""

    def __init__(self, resample):
        super().__init__()
        self.resample = resample
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x, t):
        h = self.conv(self.resample(x))
        out = self.fc(h.mean((2, 3)) + h.amax((2, 3)))
        return out, F.cross_entropy(out, t)


RESAMPLES = {
    "nearest_x2": lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
    "nearest_size": lambda x: F.interpolate(x, size=(7, 9), mode="nearest"),
    "bilinear_x2": lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"),
    "bilinear_align_corners": lambda x: F.interpolate(x, size=(8, 11), mode="bilinear",
                                                      align_corners=True),
    "reflection_pad": lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect"),
    "replication_pad": lambda x: F.pad(x, (1, 2, 2, 1), mode="replicate"),
}


@pytest.mark.parametrize("name", sorted(RESAMPLES))
def test_upsampling_and_border_padding_match_eager(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(2, 2, 5, 6, generator=g), torch.randint(0, 2, (2,), generator=g)
    assert_infers_and_trains_like_eager(Image(RESAMPLES[name]), (x, t), atol=1e-5)


def test_random_draws_in_a_forward_have_the_right_distribution():
    """torch.randn_like / rand inside forward draw from tilegraph's Philox stream: checked
    by their moments over 20,000 draws (bounds of 5 standard errors), a fresh stream per
    step, and a repeatable one per seed."""
    class Noise(torch.nn.Module):
        def forward(self, x):
            return x + torch.randn_like(x), torch.rand(x.shape[0], 100)

    x = torch.zeros(200, 100)
    run = tilegraph.inferenceModel(Noise(), tilegraph.Options().randomSeed(11))
    normal, uniform = run(x)
    n = normal.numel()
    assert abs(normal.mean().item()) < 5 / n ** 0.5
    assert abs(normal.var().item() - 1) < 5 * (2 / n) ** 0.5
    assert abs((normal ** 3).mean().item()) < 5 * (15 / n) ** 0.5  # symmetric
    assert 0 <= uniform.min().item() and uniform.max().item() < 1
    assert abs(uniform.mean().item() - 0.5) < 5 * (1 / 12 / n) ** 0.5
    assert abs(uniform.var().item() - 1 / 12) < 5 * (1 / 180 / n) ** 0.5
    again, _ = run(x)
    assert not torch.equal(normal, again)  # the next step draws anew
    first, _ = tilegraph.inferenceModel(Noise(), tilegraph.Options().randomSeed(11))(x)
    torch.testing.assert_close(first, normal)  # same seed, same first step


@pytest.mark.parametrize("config", [
    dict(in_channels=4, out_channels=3, kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(2, 3), stride=(2, 1), groups=2,
         dilation=(1, 2)),
    dict(in_channels=3, out_channels=2, kernel_size=4, stride=2, padding=1, bias=False),
], ids=["stride_output_padding", "groups_dilation", "no_bias"])
def test_transposed_convolution_matches_eager(config):
    """ConvTranspose2d (decoders, U-Nets, GANs): inference and training."""
    torch.manual_seed(0)

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.ConvTranspose2d(**config)
            self.fc = torch.nn.Linear(config["out_channels"], 2)

        def forward(self, x, t):
            out = self.fc(self.up(x).mean((2, 3)))
            return out, F.cross_entropy(out, t)

    x, t = torch.randn(2, config["in_channels"], 5, 6), torch.tensor([0, 1])
    assert_infers_and_trains_like_eager(Decoder(), (x, t), lr=0.5, atol=1e-5)

    class Up1d(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.ConvTranspose1d(3, 2, 3, stride=2)

        def forward(self, x):
            return self.up(x)

    up = Up1d()
    x1 = torch.randn(2, 3, 7)
    torch.testing.assert_close(tilegraph.inferenceModel(up)(x1), up(x1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_transposed_convolution_with_output_padding_past_the_stride_matches_eager(dims):
    """torch allows output_padding up to max(stride, dilation) - 1 (torch's op_db samples:
    stride 2, dilation 4, output_padding 3): the result is cropped from the unpadded one and
    the positions past every tap's reach are zeros (it failed with an internal shape error).
    Every output position is weighed differently, so a misplaced value would show."""
    torch.manual_seed(0)
    conv = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)[dims - 1]

    class Up(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = conv(4, 4, kernel_size=(3, 2, 2)[:dims], stride=(3, 2, 1)[:dims],
                           padding=(1, 2, 1)[:dims], output_padding=(2, 3, 1)[:dims], groups=2,
                           dilation=(4, 4, 2)[:dims])

        def forward(self, x, weights):
            y = self.up(x)
            return y, (y * weights).sum()

    x = torch.randn((2, 4) + (4, 4, 3)[:dims])
    weights = torch.randn(Up()(x, 1.0)[0].shape)
    assert_infers_and_trains_like_eager(Up(), (x, weights), lr=0.1, atol=1e-5)


@pytest.mark.parametrize("mode, padding, align_corners", [
    ("bilinear", "zeros", False), ("bilinear", "border", True), ("nearest", "zeros", True),
    ("nearest", "border", False), ("bilinear", "reflection", False),
    ("bilinear", "reflection", True), ("nearest", "reflection", False)])
def test_spatial_transformer_grid_sample_matches_eager(mode, padding, align_corners):
    """PyTorch's spatial-transformer tutorial pattern: a localization net predicts an
    affine transform, affine_grid + grid_sample resample the input; trained end to end
    (gradients reach the input and, through the sampling weights, the grid)."""
    torch.manual_seed(0)

    class Transformer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.loc = torch.nn.Linear(2 * 6 * 7, 6)
            self.fc = torch.nn.Linear(2 * 5 * 4, 3)

        def forward(self, x, t):
            theta = (self.loc(x.flatten(1)) * 0.3 +
                     torch.tensor([1.0, 0, 0, 0, 1, 0])).view(-1, 2, 3)
            grid = F.affine_grid(theta, [x.shape[0], 2, 5, 4],
                                 align_corners=align_corners) * 1.3  # partly outside
            y = F.grid_sample(x, grid, mode=mode, padding_mode=padding,
                              align_corners=align_corners)
            out = self.fc(y.flatten(1))
            return out, F.cross_entropy(out, t)

    x, t = torch.randn(3, 2, 6, 7), torch.tensor([0, 1, 2])
    assert_infers_and_trains_like_eager(Transformer(), (x, t), atol=1e-5)


def test_outputs_with_an_empty_dimension_after_the_first_come_back_shaped():
    """A result with no elements but a shape (1, 0, 5) (a reduction over an empty batch, an
    empty index) has that shape: the combined batch is not found by reshape(-1, ...)."""
    class Empty(torch.nn.Module):
        def forward(self, x, y, i):
            return x * 2, x.sum(1), y.prod(1), y.cumsum(1), torch.index_select(x[0], 0, i)

    x, y, i = torch.empty(1, 0, 5), torch.empty(2, 0), torch.tensor([], dtype=torch.long)
    for a, b in zip(tilegraph.inferenceModel(Empty())(x, y, i), Empty()(x, y, i)):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b)
    # Several steps per call: their empty results concatenated into one combined batch.
    twice = tilegraph.inferenceModel(_Divide(lambda a, b: a * b),
                                     tilegraph.Options().deviceIterations(2))
    assert twice(torch.empty(4, 0, 5), torch.empty(4, 0, 5)).shape == (4, 0, 5)


def test_the_variance_of_fewer_values_than_its_correction_is_nan():
    """torch divides by max(0, N - correction): an empty or single-value unbiased variance is
    NaN (it was -0.0 for N = 0)."""
    class Spread(torch.nn.Module):
        def forward(self, empty, one):
            return (empty.var(), empty.std(), torch.var_mean(empty)[0], empty.reshape(0, 3).var(0),
                    one.var(1), one.var(1, correction=0))

    args = (torch.tensor([]), torch.ones(2, 1))
    for a, b in zip(tilegraph.inferenceModel(Spread())(*args), Spread()(*args)):
        torch.testing.assert_close(a, b, equal_nan=True)


@pytest.mark.parametrize("reduce", ["max", "min", "max_keepdim", "max_last"])
def test_max_and_min_along_a_dim_give_the_gradient_to_the_returned_index(reduce):
    """torch.max(x, dim) / torch.min(x, dim): the values' gradient goes to the index they
    return (the first of tied extremes), not split between ties as amax's is."""
    fn = {"max": lambda p: torch.max(p, 1)[0],
          "min": lambda p: torch.min(p, 1)[0],
          "max_keepdim": lambda p: torch.max(p, 0, keepdim=True)[0],
          "max_last": lambda p: torch.max(p, -1).values}[reduce]

    class Pick(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.tensor([[1., 3., 3., 0.], [2., 2., -1., -1.]]))

        def forward(self, w):
            return tilegraph.identity_loss((fn(self.p) * w).sum(), reduction="none")

    model, reference = Pick(), Pick()
    w = torch.tensor([1.0, 2.0]).reshape(fn(reference.p).shape) if reduce != "max_keepdim" \
        else torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0))(w)
    opt = torch.optim.SGD(reference.parameters(), lr=1.0)
    (fn(reference.p) * w).sum().backward()
    opt.step()
    torch.testing.assert_close(model.p, reference.p, rtol=0, atol=0)


_INTEGER_OPS = {
    "pow": lambda a, b: a ** (b.abs() % 5),
    "pow_negative": lambda a, b: a ** -(b.abs() % 5),
    "pow_scalar": lambda a, b: a ** 3 + 2 ** (b.abs() % 5),
    "matmul": lambda a, b: a.reshape(2, 3) @ b.reshape(3, 2),
    "shift_left": lambda a, b: (a << 2) + (a << b) + (1 << b.abs()),
    "shift_right": lambda a, b: (a >> 1) + (a >> b),
    "sign_of_bool": lambda a, b: torch.sign(a > b),
    "bool_and_number": lambda a, b: ((a > b) + True, (a > b) * False, (a > 0) * 2.5),
}


@pytest.mark.parametrize("name", sorted(_INTEGER_OPS))
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_integer_arithmetic_as_torch_computes_it(name, dtype):
    """Integer powers (a negative exponent truncates to 0 but for +-1), matrix products
    and shifts (0 or the sign past the type's width) in the integer dtype, and bools with
    Python numbers, as eager."""
    fn = _INTEGER_OPS[name]
    a = torch.tensor([3, -2, 1, -1, 5, 0], dtype=dtype)
    b = torch.tensor([2, 3, -1, 4, 70, 0], dtype=dtype)
    if name == "shift_left" or name == "shift_right":
        b = torch.tensor([2, 3, -1, 4, 70 if dtype == torch.int64 else 40, 0], dtype=dtype)
    want = fn(a, b)
    got = tilegraph.inferenceModel(_Divide(fn))(a, b)
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=0, atol=0)


_ORDERING_OPS = {  # ops that order values, on dtypes argmax / pooling do not take directly
    "max_dim_bool": lambda x: torch.max(x > 0, 1),
    "min_dim_uint8": lambda x: torch.min(x.to(torch.uint8), 1),
    "argmax_uint8": lambda x: torch.argmax(x.to(torch.uint8), 1),
    "argmin_half": lambda x: torch.argmin(x.half() / 3, 2),
    "max_dim_half": lambda x: torch.max(x.half() / 3, 2),
    "cummax_bool": lambda x: torch.cummax(x > 0, 1),
    "cummin_bool": lambda x: torch.cummin(x > 0, 2),
    "cummax_int16": lambda x: torch.cummax(x.to(torch.int16), 2),
    "max_pool2d_int64": lambda x: torch.nn.functional.max_pool2d(x, 3, 2, 1),
    "max_pool2d_uint8_ceil": lambda x: torch.nn.functional.max_pool2d(
        x[..., :5, :5].to(torch.uint8), 2, 2, ceil_mode=True),
    "median_dim_0d": lambda x: torch.median(x[0, 0, 0, 0].float(), 0),
    "median_dim_0d_keepdim": lambda x: torch.median(x[0, 0, 0, 0].float(), -1, keepdim=True),
}


@pytest.mark.parametrize("name", sorted(_ORDERING_OPS))
def test_ordering_ops_on_bool_integer_and_half_tensors_match_eager(name):
    """Values and indices exactly as eager's, ties included (bool cummax took other indices,
    bool max(dim) and integer max pooling were refused with an internal dtype message, the
    median of a 0-d tensor along a dim failed)."""
    fn = _ORDERING_OPS[name]
    x = torch.randint(-3, 4, (2, 3, 6, 6), generator=torch.Generator().manual_seed(0))
    want = fn(x)
    got = tilegraph.inferenceModel(_Sample(fn))(x)
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=0, atol=0)


_INTERNAL_OPS = {  # ops of torch's own internals that models (and torch's op tests) call
    "batch_norm_legit_eval": (lambda x: torch._native_batch_norm_legit(
        x, torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3), False, 0.1, 1e-5),
        torch.float32),
    "flash_attention_for_cpu": (lambda x: torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        x[:, :, :3], x, x.flip(-1), 0.0, True), torch.float32),
    "flash_attention_for_cpu_bf16_mask": (
        lambda x: torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            x, x, x, attn_mask=torch.full((6, 6), -math.inf).triu(1).to(x.dtype)),
        torch.bfloat16),
    "renorm_half": (lambda x: torch.renorm(x, 2, 1, 0.5), torch.float16),
    "renorm_bf16": (lambda x: torch.renorm(x, 2, 1, 0.5), torch.bfloat16),
}


@pytest.mark.parametrize("name", sorted(_INTERNAL_OPS))
def test_internal_ops_match_eager(name):
    """The saved statistics of an eval-mode batch norm (empty tensors, as eager; they were a
    crash when returned), the CPU flash-attention op's logsumexp (f32 [..., Sq]; torch's
    decomposition put the probabilities there, silently), renorm in half (a prims cast its
    decomposition leaves was refused)."""
    fn, dtype = _INTERNAL_OPS[name]
    x = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    want = fn(x)
    got = tilegraph.inferenceModel(_Sample(fn))(x)
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,), strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-5 if dtype == torch.float32 else 1e-2,
                                   atol=1e-5 if dtype == torch.float32 else 1e-2)


def test_a_tensor_as_narrows_start_is_refused_with_what_to_write():
    fn = lambda x, s: torch.narrow(x, 1, s, 2)  # noqa: E731
    with pytest.raises(NotImplementedError, match=r"x\[:, s:s \+ n\]"):
        tilegraph.inferenceModel(_Sample(fn))(torch.randn(4, 5), torch.tensor(2))


def test_randint_draws_every_value_of_its_range_evenly():
    """torch.randint / randint_like in a forward: integers in [low, high), each value about
    equally often (counts within 5 standard deviations of n / k), in the asked dtype."""
    class Draw(torch.nn.Module):
        def forward(self, x):
            return (torch.randint(3, 9, (30000,)), torch.randint(5, (6, 5000), dtype=torch.int32),
                    torch.randint_like(x, 10))

    for values, low, high, dtype in zip(tilegraph.inferenceModel(Draw())(torch.zeros(30000)),
                                        (3, 0, 0), (9, 5, 10),
                                        (torch.int64, torch.int32, torch.float32)):
        assert values.dtype == dtype
        assert values.min() >= low and values.max() < high
        counts = torch.bincount(values.flatten().long() - low, minlength=high - low).double()
        expected = values.numel() / (high - low)
        sigma = (values.numel() * (1 / (high - low)) * (1 - 1 / (high - low))) ** 0.5
        assert ((counts - expected).abs() < 5 * sigma).all(), counts


@pytest.mark.parametrize("fn", [lambda a: a - True, lambda a: a - a, torch.ceil, torch.round],
                         ids=["bool_minus_number", "bool_minus_bool", "ceil_bool", "round_bool"])
def test_ops_eager_refuses_on_bools_are_refused(fn):
    """Where eager raises NotImplementedError for a bool tensor (subtraction, rounding),
    tilegraph refuses too (its UnsupportedError is a NotImplementedError) instead of
    computing something."""
    b = torch.tensor([True, False])
    with pytest.raises(NotImplementedError):
        fn(b)
    with pytest.raises(NotImplementedError):
        tilegraph.inferenceModel(_Divide(lambda x, y: fn(x)))(b, b)


class _Sample(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _assert_frequencies(draws, p, what):
    """Each category's count among `draws` (a 1-D int64 tensor) within 5 standard deviations
    of len(draws) * p (binomial), and no draw of a category of probability 0."""
    n = draws.numel()
    counts = torch.bincount(draws, minlength=len(p)).double()
    p = torch.as_tensor(p, dtype=torch.float64)
    assert len(counts) == len(p), (what, counts)
    assert (counts[p == 0] == 0).all(), (what, counts)
    sigma = (n * p * (1 - p)).sqrt()
    assert ((counts - n * p).abs() <= 5 * sigma + 1e-9).all(), (what, counts, n * p)


def test_multinomial_with_replacement_draws_each_category_by_its_weight():
    """torch.multinomial(w, n, replacement=True) of unnormalized weights (zero weights
    inside and at the end of a row, one row with a single non-zero weight), 2-D and 1-D,
    and Tensor.multinomial: int64, eager's shape, each category's count within 5 standard
    deviations of n * w / sum(w) (a wrong law, e.g. uniform or one category off, is
    hundreds of deviations away), zero-weight categories never drawn, and fresh draws on
    the next call."""
    rows = torch.tensor([[1.0, 0.0, 3.0, 6.0], [0.5, 1.5, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    flat = torch.tensor([0.2, 0.0, 0.1, 0.3, 0.4], dtype=torch.float64)
    fn = lambda w, v: (torch.multinomial(w, 20000, replacement=True),  # noqa: E731
                       torch.multinomial(v, 20000, True), v.multinomial(3, True))
    run = tilegraph.inferenceModel(_Sample(fn))
    got = run(rows, flat)
    for g, w in zip(got, fn(rows, flat)):
        assert g.dtype == w.dtype == torch.int64 and g.shape == w.shape
    for r in range(3):
        _assert_frequencies(got[0][r], rows[r] / rows[r].sum(), f"row {r}")
    _assert_frequencies(got[1], flat / flat.sum(), "1-D")
    assert not torch.equal(run(rows, flat)[0], got[0])


def test_multinomial_without_replacement_samples_in_order_without_repeats():
    """Without replacement: no index twice in a row; categories of weight 0 only after all
    the others (never, when there are enough others); the first draw's law is w / sum(w)
    and the second's sum_i p_i p_j / (1 - p_i), each count within 5 standard deviations
    over 20,000 rows (drawing by weight order, or with replacement, fails by far); a single
    draw (replacement or not) by the weights; 1-D weights."""
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    p = w / w.sum()
    second = torch.stack([sum(p[i] * p[j] / (1 - p[i]) for i in range(4) if i != j)
                          for j in range(4)])
    many = w.expand(20000, 4).contiguous()
    zeros = torch.tensor([[0.0, 1.0, 2.0, 0.0, 3.0, 4.0]]).expand(50, 6).contiguous()
    fn = lambda m, z, v: (torch.multinomial(m, 2), torch.multinomial(z, 4),  # noqa: E731
                          torch.multinomial(z, 6), torch.multinomial(m, 1, True),
                          torch.multinomial(v, 3), v.multinomial(4))
    got = tilegraph.inferenceModel(_Sample(fn))(many, zeros, w)
    for g, e in zip(got, fn(many, zeros, w)):
        assert g.dtype == e.dtype == torch.int64 and g.shape == e.shape
    pairs, nonzero, full, single, flat, flat_all = got
    assert (pairs[:, 0] != pairs[:, 1]).all()
    _assert_frequencies(pairs[:, 0], p, "first draw")
    _assert_frequencies(pairs[:, 1], second, "second draw")
    _assert_frequencies(single[:, 0], p, "a single draw")
    assert (nonzero.sort(1).values == torch.tensor([1, 2, 4, 5])).all()
    assert (full.sort(1).values == torch.arange(6)).all()
    assert (full[:, 4:].sort(1).values == torch.tensor([0, 3])).all()  # weight 0: last
    assert len(set(flat.tolist())) == 3 and sorted(flat_all.tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("fn,probs,message", [
    (lambda w: torch.multinomial(w, 4), [1.0, 2.0, 3.0],
     "cannot sample n_sample > prob_dist.size"),
    (lambda w: torch.multinomial(w, 0, True), [1.0, 2.0, 3.0], "cannot sample n_sample <= 0"),
    (lambda w: torch.multinomial(w.long(), 1), [1.0, 2.0, 3.0],
     "only supports floating-point dtypes"),
], ids=["more_than_categories_without_replacement", "no_samples", "integer_weights"])
def test_multinomial_arguments_eager_refuses_are_refused_at_the_call(fn, probs, message):
    """What eager's multinomial refuses whatever the data (known at compile time) is a
    RuntimeError with torch's message at the user's line."""
    w = torch.tensor(probs)
    with pytest.raises(RuntimeError, match=message):
        fn(w)
    with pytest.raises(RuntimeError, match=message) as info:
        tilegraph.inferenceModel(_Sample(fn))(w)
    assert "test_math_ops.py" in str(info.value)


@pytest.mark.parametrize("replacement", [False, True])
def test_multinomial_of_invalid_weights_fails_the_call_as_torch_raises(replacement):
    """A negative, infinite or NaN weight, or a row of zeros, fails the call with a
    RuntimeError with eager's message (a run-time check of the data); the model is usable
    afterwards."""
    fn = lambda w: torch.multinomial(w, 2, replacement)  # noqa: E731
    run = tilegraph.inferenceModel(_Sample(fn))
    good = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 1.0]])
    assert run(good).shape == (2, 2)
    bad = {"negative": ([[1.0, -2.0, 3.0], [0.0, 1.0, 1.0]], "element < 0|entry < 0"),
           "infinite": ([[1.0, math.inf, 3.0], [0.0, 1.0, 1.0]], "inf|infinity"),
           "nan": ([[1.0, 2.0, 3.0], [0.0, math.nan, 1.0]], "nan|entry < 0"),
           "zero_row": ([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], r"sum of probabilities <= 0")}
    for name, (values, message) in bad.items():
        w = torch.tensor(values)
        with pytest.raises(RuntimeError, match=message):
            fn(w)
        with pytest.raises(RuntimeError, match=message) as info:
            run(w)
        assert "test_math_ops.py" in str(info.value), name
    assert run(good).shape == (2, 2)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_frac_of_an_integer_tensor_is_refused_as_eager_refuses_it(dtype):
    """torch.frac of an integer tensor: eager raises NotImplementedError; tilegraph refuses
    it at the user's line (not x - trunc(x) = 0, what its decomposition would give)."""
    fn = lambda x: torch.frac(x) + 1  # noqa: E731
    x = torch.tensor([3, 1, 4], dtype=dtype)
    with pytest.raises(NotImplementedError):
        fn(x)
    with pytest.raises(NotImplementedError, match="frac") as info:
        tilegraph.inferenceModel(_Sample(fn))(x)
    assert "test_math_ops.py" in str(info.value)
    h = torch.tensor([1.75, -2.25, 3.0, -0.5])
    torch.testing.assert_close(tilegraph.inferenceModel(_Sample(fn))(h), fn(h), rtol=0, atol=0)


def test_a_bool_tensor_to_a_bool_power_is_a_bool_tensor_as_in_eager():
    """bool_tensor ** True is the tensor and ** False all True, both bool (what eager gives;
    torch's shape function says int64), also inside further arithmetic; bool ** int is
    int64; a bool tensor to a bool tensor's power, or True ** bool_tensor, is refused as
    eager refuses it."""
    fn = lambda b, i: (b ** True, b ** False, torch.pow(b, True),  # noqa: E731
                       (b ** True) & ~b.flip(0), (b ** False) + i, b ** 2, b ** True * 2.5)
    b, i = torch.tensor([True, False, True]), torch.tensor([1, 2, 3])
    for g, w in zip(tilegraph.inferenceModel(_Sample(fn))(b, i), fn(b, i)):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    for refused in (lambda b, i: b ** b.flip(0), lambda b, i: True ** b):
        with pytest.raises(NotImplementedError):
            refused(b, i)
        with pytest.raises(NotImplementedError, match="pow"):
            tilegraph.inferenceModel(_Sample(refused))(b, i)


class _Bce(torch.nn.Module):
    """Linear -> [sigmoid] -> nn.BCELoss (class weights) and F.binary_cross_entropy."""

    def __init__(self, squash=True):
        super().__init__()
        self.fc, self.squash = torch.nn.Linear(6, 4), squash
        self.loss = torch.nn.BCELoss(weight=torch.tensor([1.0, 2.0, 0.5, 1.0]))

    def forward(self, x, t):
        p = torch.sigmoid(self.fc(x)) if self.squash else self.fc(x)
        return p, self.loss(p, t) + F.binary_cross_entropy(p, t, reduction="sum") * 0.1


def test_binary_cross_entropy_matches_eager_in_range_and_fails_outside_it():
    """F.binary_cross_entropy / nn.BCELoss: inference and training (gradients) as eager on
    probabilities and soft targets in [0, 1]; an input or target outside [0, 1] (or NaN)
    fails the call with eager's RuntimeError ("all elements of input should be between 0
    and 1") instead of giving NaN, in inference and in training, at the user's line."""
    g = torch.Generator().manual_seed(5)
    x, t = torch.randn(5, 6, generator=g), torch.rand(5, 4, generator=g)
    assert_infers_and_trains_like_eager(_Bce(), (x, t), steps=3, atol=1e-5)

    fn = lambda p, t: F.binary_cross_entropy(p, t)  # noqa: E731
    run = tilegraph.inferenceModel(_Sample(fn))
    p = torch.tensor([[0.2, 0.9], [1.0, 0.0]])
    torch.testing.assert_close(run(p, t[:2, :2]), fn(p, t[:2, :2]))
    for bad_p, bad_t, what in ((p + 0.5, t[:2, :2], "input"), (p - 0.3, t[:2, :2], "input"),
                               (p.where(p != 1.0, math.nan), t[:2, :2], "input"),
                               (p, t[:2, :2] * 3, "target")):
        message = f"all elements of {what} should be between 0 and 1"
        with pytest.raises(RuntimeError, match=message):
            fn(bad_p, bad_t)
        with pytest.raises(RuntimeError, match=message) as info:
            run(bad_p, bad_t)
        assert "test_math_ops.py" in str(info.value)
    torch.testing.assert_close(run(p, t[:2, :2]), fn(p, t[:2, :2]))  # still usable

    unsquashed = _Bce(squash=False)
    with torch.no_grad():
        unsquashed.fc.bias.fill_(2.0)  # outputs above 1
    with pytest.raises(RuntimeError, match="all elements of input should be between 0 and 1"):
        unsquashed(x, t)
    trainer = tilegraph.trainingModel(unsquashed, optimizer=torch.optim.SGD(
        unsquashed.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match="all elements of input should be between 0 and 1"):
        trainer(x, t)


def test_var_mean_and_std_mean_with_a_fractional_correction():
    """A fractional correction (count / (count - correction) times the biased variance)
    in var_mean / std_mean: their result is a pair (it failed at capture)."""
    x = torch.randn(5, 6)

    class Moments(torch.nn.Module):
        def forward(self, x):
            return torch.var_mean(x, dim=1, correction=1.3) + torch.std_mean(x, dim=0,
                                                                             correction=0.5)
    got = tilegraph.inferenceModel(Moments())(x)
    for g, w in zip(got, Moments()(x)):
        torch.testing.assert_close(g, w)


def test_gather_of_a_0d_tensor_and_a_negative_divisor_override():
    """Valid inputs eager computes (they were shape errors): gather of a 0-d tensor with a
    1-element index, and avg_pool2d with a negative divisor_override."""
    class Odd(torch.nn.Module):
        def forward(self, s, x):
            return (torch.gather(s, 0, torch.zeros(1, dtype=torch.long)),
                    F.avg_pool2d(x, 2, divisor_override=-2))
    args = (torch.tensor(3.0), torch.randn(1, 2, 4, 4))
    for g, w in zip(tilegraph.inferenceModel(Odd())(*args), Odd()(*args)):
        torch.testing.assert_close(g, w)
