"""8- and 16-bit integer tensors (torch.uint8 / torch.int8 / torch.int16): images fed as uint8
(a quarter of the bytes of float32, as PopTorch users send them to the IPU), cast, scaled
and trained on, 16-bit PCM audio, and narrow arithmetic, which wraps modulo 2^8 / 2^16 in
torch and must wrap the same way here.

How they run (python/tilegraph/_capture.py, _Context): a node that reads or writes 8-bit
values is translated widened to i32 and its result narrowed back, like half precision is
widened to f32; a cast reads the 8-bit values directly (u8 -> f32 is one kernel)."""
import pytest
import torch
import torch.nn as nn

import tilegraph


class ImageNet(nn.Module):
    """NHWC uint8 images in, as a data loader yields them; scaled to [0, 1] on the device."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, images):
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = torch.relu(self.conv(x)).mean((2, 3))
        return self.head(x)


class WithLoss(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images, labels):
        out = self.model(images)
        return out, nn.functional.cross_entropy(out, labels)


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 10, 10, 3), dtype=torch.uint8, generator=g)


def test_uint8_images_infer_like_eager():
    torch.manual_seed(0)
    model = ImageNet().eval()
    images = _images()
    engine = tilegraph.inferenceModel(model)
    torch.testing.assert_close(engine(images), model(images), rtol=1e-5, atol=1e-6)
    # the u8 -> f32 conversion is one cast from the 8-bit input, not through i32
    ir = engine._exe.optimized_ir
    assert "u8[6,10,10,3]" in ir and "i32[6,10,10,3]" not in ir, ir


def test_uint8_images_train_like_eager():
    torch.manual_seed(0)
    model = ImageNet()
    reference = ImageNet()
    reference.load_state_dict(model.state_dict())
    trainer = tilegraph.trainingModel(WithLoss(model), tilegraph.Options(),
                                      torch.optim.SGD(model.parameters(), lr=0.1))
    eager = WithLoss(reference)
    eager_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    for step in range(4):
        images, labels = _images(seed=step), torch.arange(6) % 5
        _, loss = trainer(images, labels)
        eager_opt.zero_grad()
        _, want = eager(images, labels)
        want.backward()
        eager_opt.step()
        torch.testing.assert_close(loss.reshape(()), want.detach(), rtol=1e-5, atol=1e-6)
    trainer.copyWeightsToHost()
    for (name, got), want in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)


_U8 = torch.tensor([[0, 1, 127, 128], [200, 254, 255, 37]], dtype=torch.uint8)
_I8 = torch.tensor([[-128, -1, 0, 1], [127, -77, 64, -3]], dtype=torch.int8)

# Each: torch's 8-bit result, exactly (values and dtype). Sums, differences, products and
# negations wrap modulo 256; comparisons, selections and reductions are exact.
_CASES = {
    "add_wraps": lambda u, i: u + 1,
    "mul_sub_wrap": lambda u, i: u * 3 - 7,
    "neg_wraps": lambda u, i: -i,
    "abs_of_min_wraps": lambda u, i: i.abs(),
    "floor_divide": lambda u, i: u // 3,
    "true_divide_is_float": lambda u, i: u / 3,
    "bitwise_and": lambda u, i: u & 0x0F,
    "compare_and_where": lambda u, i: torch.where(u > 100, u, u.flip(0)),
    "maximum": lambda u, i: torch.maximum(i, i.flip(1)),
    "clamp": lambda u, i: i.clamp(-5, 5),
    "max_along_dim": lambda u, i: u.max(1)[0],
    "argmax": lambda u, i: i.argmax(1),
    "sort": lambda u, i: u.sort(1)[0],
    "sum_is_int64": lambda u, i: u.sum(1),
    "cumsum_is_int64": lambda u, i: i.cumsum(0),
    "float_to_uint8_wraps": lambda u, i: (u.float() * 1.7 - 100).to(torch.uint8),
    "float_to_int8_truncates": lambda u, i: (i.float() * 0.37).to(torch.int8),
    "to_int64": lambda u, i: i.long() * 1000,
    "to_bool_and_logic": lambda u, i: u.bool() & (i > 0),
    "half": lambda u, i: u.half() * i.half(),
    "data_movement": lambda u, i: torch.cat([i.t().reshape(2, 4), i[:, [2, 0]].repeat(1, 2)]),
    "gather": lambda u, i: u.gather(1, torch.tensor([[3, 0], [1, 1]])),
    "pad": lambda u, i: nn.functional.pad(u, (1, 2), value=9),
}


@pytest.mark.parametrize("name", sorted(_CASES))
def test_eight_bit_ops_give_torchs_values_and_dtypes(name):
    fn = _CASES[name]

    class Model(nn.Module):
        def forward(self, u, i):
            return fn(u, i)

    got = tilegraph.inferenceModel(Model())(_U8, _I8)
    want = fn(_U8, _I8)
    assert got.dtype == want.dtype
    assert torch.equal(got, want), (got, want)


def test_mixed_uint8_int8_arithmetic_promotes_to_int16_as_torch():
    class Model(nn.Module):
        def forward(self, u, i):
            return u + i, u * i

    got = tilegraph.inferenceModel(Model())(_U8, _I8)
    for g, w in zip(got, Model()(_U8, _I8)):
        assert g.dtype == w.dtype == torch.int16
        assert torch.equal(g, w), (g, w)


_I16 = torch.tensor([[-32768, -1, 0, 1], [32767, -12345, 256, 7]], dtype=torch.int16)

# int16 (16-bit PCM audio, PopTorch's math_ops_test): widened to i32 like the 8-bit types,
# wrapping modulo 2^16 where torch's int16 arithmetic does.
_CASES_16 = {
    "pcm_to_float": lambda x: x.float() / 32768.0,
    "mul_wraps": lambda x: x * 3,
    "add_wraps": lambda x: x + 30000,
    "bitwise_and": lambda x: torch.bitwise_and(x, x.flip(1)),
    "compare_and_where": lambda x: torch.where(x > 0, x, -x),
    "sum_is_int64": lambda x: x.sum(1),
    "max_along_dim": lambda x: x.max(1)[0],
    "float_to_int16_truncates": lambda x: (x.float() * 0.37).to(torch.int16),
    "data_movement": lambda x: torch.cat([x.t().reshape(2, 4), x[:, [3, 0]].repeat(1, 2)]),
}


@pytest.mark.parametrize("name", sorted(_CASES_16))
def test_int16_ops_give_torchs_values_and_dtypes(name):
    fn = _CASES_16[name]

    class Model(nn.Module):
        def forward(self, x):
            return fn(x)

    got = tilegraph.inferenceModel(Model())(_I16)
    want = fn(_I16)
    assert got.dtype == want.dtype
    assert torch.equal(got, want), (got, want)
