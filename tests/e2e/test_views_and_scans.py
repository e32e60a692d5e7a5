"""Views and writes into slices (as_strided, slice_scatter, copy, x[a:b] = y), writes at
indices (index_put with and without accumulation, put, scatter, scatter_add), flip, repeat,
cumulative sums, unfold and bitwise ops, as the models that needed them use them (ConvNeXt and Swin reach
as_strided / slice_scatter / copy, RoBERTa's position ids cumsum, masks combine bitwise):
inference and training against eager PyTorch."""
import pytest
import torch

import tilegraph
from parity import LayerNet, assert_infers_and_trains_like_eager, assert_trains_like_eager

LAYERS = {
    # a strided view of a permuted tensor (reads storage through the input's own strides)
    "as_strided": lambda h: torch.as_strided(h.t(), (8, 4), (1, 8), 0).t().reshape(4, 8) + h,
    "as_strided_overlapping": lambda h: torch.as_strided(h, (4, 7, 2), (8, 1, 1)).sum(-1)
    .repeat(1, 2)[:, :8],
    "slice_scatter": lambda h: torch.slice_scatter(h, h[:, :3] * 2, 1, 2, 8, 2),
    "setitem": lambda h: _setitem(h),
    "cumsum": lambda h: torch.cumsum(h, dim=1) * 0.1,
    "index_put": lambda h: torch.index_put(h, (torch.tensor([3, 0]),), h[1:3] * 2),
    "index_put_accumulate_repeated": lambda h: torch.index_put(
        h, (torch.tensor([2, 2, 0]), torch.tensor([1, 1, 7])), h[0, :3], accumulate=True),
    "index_put_columns": lambda h: _put_columns(h),
    "scatter_add": lambda h: torch.scatter_add(h, 1, torch.tensor([[0, 3, 3, 7]] * 4),
                                               h[:, :4] * 3),
    "scatter": lambda h: torch.scatter(h, 1, torch.tensor([[5], [1], [0], [7]]), h[:, 2:3] - 1),
    "cumsum_reverse_flip": lambda h: torch.cumsum(h.flip(0), dim=0).flip(0) * 0.1,
    "setitem_empty_slices": lambda h: _setitem_empty(h),
    # Tensor.unfold: overlapping windows as a new last dim (PopTorch's tensor_ops test)
    "unfold_overlapping": lambda h: h.unfold(1, 3, 2).sum(-1).repeat(1, 3)[:, :8],
    # repeated positions in a write: the last write stays, as torch's CPU kernel (values
    # independent of the weights: torch's backward gives an overwritten value the gradient
    # of the position it lost, tilegraph's gives it none, as it changes nothing)
    "index_put_repeated": lambda h: torch.index_put(
        h, (torch.tensor([1, 3, 1]),), torch.arange(24.0).reshape(3, 8)),
    # Tensor.put: flat positions of a 2-d tensor (a negative one), a 2-d index; accumulating
    # with a repeated position
    "put": lambda h: h.put(torch.tensor([[0, 9], [-1, 17]]), h[1, :4].reshape(2, 2) * 2),
    "put_accumulate_repeated": lambda h: h.put(torch.tensor([5, 30, 5]), h[2, :3],
                                               accumulate=True),
}


def _put_columns(h):
    out = h.clone()
    out[:, torch.tensor([6, 1])] = h[:, :2] * -1  # columns written, a non-leading index
    return out


def _setitem_empty(h):
    """Writes into empty slices are no-ops (torchvision's Swin3D builds its attention mask
    with x[-w:-s] = v, empty when a shift s is 0): of a tensor computed from the input and
    of a constant one (folded at compile time)."""
    out = h * 2
    out[2:2, :] = 1.0
    mask = h.new_zeros(4, 8)
    mask[-2:0, :] = 5.0
    mask[:, 3:3] = 7.0
    return out + mask


def _setitem(h):
    out = torch.zeros_like(h)
    out[:, 1:5] = h[:, :4] * 3  # copy into a slice: slice_scatter + copy in Core ATen
    return out + h


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_inference_and_training_match_eager(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g)
    assert_infers_and_trains_like_eager(LayerNet(LAYERS[name], squash=True), (x, t), steps=5)


class PositionIds(torch.nn.Module):
    """RoBERTa's position ids: a cumulative sum of the padding mask, on integers."""

    def forward(self, ids):
        mask = ids.ne(1).int()
        return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + 1


def test_integer_cumsum_position_ids():
    ids = torch.tensor([[5, 7, 1, 1], [1, 3, 4, 9]])
    got = tilegraph.inferenceModel(PositionIds())(ids)
    torch.testing.assert_close(got, PositionIds()(ids))
    assert got.dtype == torch.int64


@pytest.mark.parametrize("op", ["and", "or", "xor", "not", "shift_mask"])
def test_bitwise_ops_on_integers_and_bools(op):
    fns = {"and": lambda a, b: a & b, "or": lambda a, b: a | 12, "xor": lambda a, b: a ^ b,
           "not": lambda a, b: ~a + (~(a > b)).long(),
           "shift_mask": lambda a, b: ((a & 1) == 0) | (b > 0)}

    class Bits(torch.nn.Module):
        def forward(self, a, b):
            return fns[op](a, b)

    g = torch.Generator().manual_seed(2)
    a, b = (torch.randint(-100, 100, (3, 5), generator=g) for _ in range(2))
    torch.testing.assert_close(tilegraph.inferenceModel(Bits())(a, b), Bits()(a, b))
    torch.testing.assert_close(tilegraph.inferenceModel(Bits())(a.int(), b.int()),
                               Bits()(a.int(), b.int()))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_gcd_and_lcm_match_torch(dtype):
    """torch.gcd / torch.lcm: signs, zeros (gcd(0, 0) = 0, lcm with 0 = 0), broadcasting,
    and the type's extremes (gcd of the most negative value with 0 wraps, as torch's)."""
    class GcdLcm(torch.nn.Module):
        def forward(self, a, b):
            return torch.gcd(a, b), torch.lcm(a, b[:1])

    info = torch.iinfo(dtype)
    g = torch.Generator().manual_seed(3)
    a = torch.randint(-60, 60, (4, 6), generator=g, dtype=dtype)
    b = torch.randint(-60, 60, (4, 6), generator=g, dtype=dtype)
    a[0, :4] = torch.tensor([0, 0, info.min, info.max], dtype=dtype)
    b[0, :4] = torch.tensor([0, 7, 0, info.max - 1], dtype=dtype)
    for got, want in zip(tilegraph.inferenceModel(GcdLcm())(a, b), GcdLcm()(a, b)):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_bitwise_ops_on_floats_name_the_line():
    class Bad(torch.nn.Module):
        def forward(self, a):
            return torch.bitwise_and(a.view(torch.int32).float(), 1.0)

    with pytest.raises((NotImplementedError, RuntimeError)):
        tilegraph.inferenceModel(Bad())(torch.randn(3))


@pytest.mark.parametrize("mode, extra", [("sum", {}), ("mean", {}),
                                         ("mean", {"padding_idx": 2}),
                                         ("sum", {"include_last_offset": True}),
                                         ("max", {}), ("max", {"padding_idx": 2})],
                         ids=["sum", "mean", "mean_padding_idx", "sum_last_offset", "max",
                              "max_padding_idx"])
def test_embedding_bag_trains_like_eager(mode, extra):
    """nn.EmbeddingBag (recommendation models): bags by offsets, an empty bag included."""
    torch.manual_seed(0)

    class Bags(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bag = torch.nn.EmbeddingBag(10, 4, mode=mode, **extra)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, ids, offsets):
            return self.fc(self.bag(ids, offsets)).pow(2).mean()

    ids = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9])
    offsets = torch.tensor([0, 4, 4, 8] if extra.get("include_last_offset") else [0, 4, 4, 7])
    assert_trains_like_eager(Bags(), (ids, offsets), lr=0.5, loss_of=lambda out: out)


@pytest.mark.parametrize("offsets, last, match", [
    ([0, 5], False, "can not be greater than input's length 4"),
    ([1, 2], False, "offsets\\[0\\] has to be 0"),
    ([0, 3, 2], False, "must not decrease"),
    ([0, -1], False, "must not decrease"),
    ([0, 2], True, "must be the input's length 4"),
])
def test_embedding_bag_offsets_are_checked(offsets, last, match):
    """Offsets eager refuses (or, with include_last_offset, treats inconsistently between
    modes) fail the call with eager's message; they made plausible bags of the wrong rows."""
    bag = torch.nn.EmbeddingBag(10, 3, mode="sum", include_last_offset=last)
    exe = tilegraph.inferenceModel(bag)
    ids = torch.tensor([1, 2, 3, 4])
    good = torch.tensor([0, 4] if last else [0, 1, 3] if len(offsets) == 3 else [0, 2])
    assert torch.allclose(exe(ids, good), bag(ids, good))
    with pytest.raises(RuntimeError, match=match):
        exe(ids, torch.tensor(offsets))


class StridedUpdate(torch.nn.Module):
    """An in-place update through an as_strided view (torch exports as_strided_scatter)."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.arange(9.0).reshape(3, 3) / 9)

    def forward(self, x):
        h = self.p * x
        window = h.as_strided((2, 2), (3, 1), 1)
        window.mul_(10)
        return h, (h ** 2).sum()


def test_an_update_through_an_as_strided_view_matches_eager():
    x = torch.linspace(-1, 1, 9).reshape(3, 3)
    model, reference = StridedUpdate(), StridedUpdate()
    torch.testing.assert_close(tilegraph.inferenceModel(StridedUpdate())(x)[0],
                               StridedUpdate()(x)[0])
    trainer = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(),
                                                                       lr=0.01))
    opt = torch.optim.SGD(reference.parameters(), lr=0.01)
    for _ in range(2):
        trainer(x)
        opt.zero_grad()
        reference(x)[1].backward()
        opt.step()
    torch.testing.assert_close(model.p, reference.p)
