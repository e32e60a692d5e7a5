"""The rest of the spatial Core ATen ops (tilegraph/_aten_spatial.py) and the data-placed
ones (tilegraph/_aten_data.py), each in a small model trained by tilegraph and by eager
PyTorch: 3-D convolution and pooling, 1-D pooling, F.fold (col2im), cdist / pdist, the
backward overloads a model may call itself, masked_scatter, scatter_reduce, index_reduce,
randperm."""
import pytest
import torch
import torch.nn.functional as F

import tilegraph
from parity import assert_infers_and_trains_like_eager


class Volume(torch.nn.Module):
    """[N, 2, D, H, W] -> a 3-D layer under test -> mean-pooled linear head + CE loss."""

    def __init__(self, layer, channels):
        super().__init__()
        self.pre = torch.nn.Conv3d(2, 4, 1)
        self.layer = layer
        self.head = torch.nn.Linear(channels, 3)

    def forward(self, x, t):
        h = self.layer(torch.tanh(self.pre(x)))
        out = self.head(h.mean(dim=(2, 3, 4)))
        return h, F.cross_entropy(out, t)


def _volume_args(shape=(2, 2, 7, 9, 8)):
    g = torch.Generator().manual_seed(0)
    return torch.randn(*shape, generator=g), torch.tensor([0, 2])


@pytest.mark.parametrize("layer,channels", [
    (lambda: torch.nn.Conv3d(4, 6, 3), 6),
    (lambda: torch.nn.Conv3d(4, 6, (3, 2, 3), stride=(2, 1, 2), padding=(1, 1, 0),
                             dilation=(2, 1, 1)), 6),
    (lambda: torch.nn.Conv3d(4, 4, 3, padding=1, groups=2, bias=False), 4),
    (lambda: torch.nn.MaxPool3d(3, stride=2, padding=1), 4),
    (lambda: torch.nn.MaxPool3d((2, 3, 2), ceil_mode=True), 4),
    (lambda: torch.nn.AvgPool3d(3, stride=2, padding=1), 4),
    (lambda: torch.nn.AvgPool3d(2, padding=1, ceil_mode=True, count_include_pad=False), 4),
    (lambda: torch.nn.AvgPool3d(2, divisor_override=3), 4),
    (lambda: torch.nn.AdaptiveAvgPool3d((3, 2, 5)), 4),
    (lambda: torch.nn.ConvTranspose3d(4, 6, 3), 6),
    (lambda: torch.nn.ConvTranspose3d(4, 6, (2, 3, 3), stride=(2, 1, 2), padding=(1, 0, 1),
                                      output_padding=(1, 0, 1)), 6),
    (lambda: torch.nn.ConvTranspose3d(4, 4, 3, stride=2, padding=1, dilation=(2, 1, 1),
                                      groups=2, bias=False), 4),
], ids=["conv", "conv_strided_dilated", "conv_grouped", "maxpool", "maxpool_ceil", "avgpool",
        "avgpool_exclude_pad", "avgpool_divisor", "adaptive", "conv_transpose",
        "conv_transpose_strided_padded", "conv_transpose_grouped_dilated"])
def test_3d_layers_match_eager(layer, channels):
    torch.manual_seed(0)
    assert_infers_and_trains_like_eager(Volume(layer(), channels), _volume_args(),
                                        rtol=1e-5, atol=1e-5)


def test_max_pool_3d_ties_route_the_gradient_like_torch():
    """Separable pooling picks the same (first, raster-order) maximum as torch's 3-D
    kernel when a window holds equal values."""
    class Pool(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1, 1, 4, 4, 4))

        def forward(self, x):
            y = F.max_pool3d(x * self.w, 2)
            return y, (y * torch.arange(8.0).reshape(1, 1, 2, 2, 2)).sum()

    x = torch.zeros(1, 1, 4, 4, 4)
    x[0, 0, 1, 0, 1] = x[0, 0, 0, 1, 1] = 1.0  # a tie in the first window
    from parity import assert_trains_like_eager
    assert_trains_like_eager(Pool(), (x,), steps=2)


class Sequence1d(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.a, self.layer = torch.nn.Conv1d(3, 4, 1), layer

    def forward(self, x):
        y = self.layer(torch.tanh(self.a(x)))
        return y, (y * y).mean()


@pytest.mark.parametrize("layer", [
    lambda: torch.nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False),
    lambda: torch.nn.AdaptiveAvgPool1d(4),
], ids=["avgpool1d", "adaptive1d"])
def test_1d_pooling_matches_eager(layer):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(1))
    assert_infers_and_trains_like_eager(Sequence1d(layer()), (x,))


class Fold(torch.nn.Module):
    """unfold -> a linear map of the patches -> fold (col2im), with overlap and padding."""

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Linear(3 * 3 * 3, 3 * 3 * 3)

    def forward(self, x):
        cols = F.unfold(x, 3, padding=1, stride=2)
        cols = self.mix(cols.transpose(1, 2)).transpose(1, 2)
        y = F.fold(cols, (7, 6), 3, padding=1, stride=2)
        return y, (y.tanh() ** 2).mean()


def test_fold_matches_eager():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=torch.Generator().manual_seed(1))
    assert_infers_and_trains_like_eager(Fold(), (x,))


class Distances(torch.nn.Module):
    def __init__(self, p, pairwise):
        super().__init__()
        self.p, self.pairwise = p, pairwise
        self.a = torch.nn.Linear(4, 5)

    def forward(self, x, y):
        hx = self.a(x)
        if self.pairwise:
            d = F.pdist(hx[0], p=self.p)
        else:
            d = torch.cdist(hx, self.a(y), p=self.p, compute_mode="donot_use_mm_for_euclid_dist")
        return d, d.mean()


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("pairwise", [False, True], ids=["cdist", "pdist"])
def test_distances_match_eager(p, pairwise):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 6, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    y[0, 1] = x[0, 2]  # a zero distance: gradient 0 there, as torch's
    assert_infers_and_trains_like_eager(Distances(p, pairwise), (x, y))


def test_backward_overloads_called_by_a_model():
    """A model that computes gradients itself with ATen's backward overloads (as custom
    autograd Functions do): pooling, convolution, embedding and layer norm backward."""
    aten = torch.ops.aten

    class Manual(torch.nn.Module):
        def forward(self, x, w, ids, table):
            y = F.avg_pool2d(x, 2)
            ga = aten.avg_pool2d_backward(torch.ones_like(y), x, [2, 2], [2, 2], [0, 0], False,
                                          True, None)
            gm = aten.max_pool2d_with_indices_backward(
                torch.ones(2, 3, 2, 2), x, [2, 2], [2, 2], [0, 0], [1, 1], False,
                torch.zeros(2, 3, 2, 2, dtype=torch.long))
            gp = aten._adaptive_avg_pool2d_backward(torch.ones(2, 3, 2, 2), x)
            dy = torch.ones(2, 5, 2, 2)
            gx, gw, gb = aten.convolution_backward(dy, x, w, [5], [1, 1], [0, 0], [1, 1],
                                                   False, [0, 0], 1, [True, True, True])
            ge = aten.embedding_dense_backward(torch.ones(2, 3, 4) * table[:1], ids, 6, -1,
                                               False)
            mean, rstd = x.mean(-1, keepdim=True), (x.var(-1, unbiased=False,
                                                          keepdim=True) + 1e-5).rsqrt()
            gln = aten.native_layer_norm_backward(x.sin(), x, [4], mean, rstd, None, None,
                                                  [True, False, False])[0]
            return ga, gm, gp, gx, gw, gb, ge, gln

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=g)
    args = (x, torch.randn(5, 3, 3, 3, generator=g), torch.tensor([[1, 2, 2], [0, 5, 1]]),
            torch.randn(6, 4, generator=g))
    expected = Manual()(*args)
    got = tilegraph.inferenceModel(Manual())(*args)
    for e, r in zip(expected, got):
        torch.testing.assert_close(r, e, rtol=1e-5, atol=1e-5)


class MaskedScatter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 4)

    def forward(self, x, mask, src):
        y = self.a(x).masked_scatter(mask, self.a(src).tanh())
        return y, (y ** 2).mean()


def test_masked_scatter_matches_eager():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, src = torch.randn(3, 4, generator=g), torch.randn(4, 4, generator=g)
    mask = torch.rand(3, 4, generator=g) > 0.5
    assert_infers_and_trains_like_eager(MaskedScatter(), (x, mask, src))


class ScatterReduce(torch.nn.Module):
    """Graph-network aggregation: messages of edges summed / averaged into their nodes."""

    def __init__(self, reduce, include_self):
        super().__init__()
        self.reduce, self.include_self = reduce, include_self
        self.msg = torch.nn.Linear(3, 3)

    def forward(self, nodes, edges, dst):
        index = dst[:, None].expand(-1, 3)
        out = nodes.scatter_reduce(0, index, self.msg(edges), self.reduce,
                                   include_self=self.include_self)
        return out, (out.tanh() ** 2).sum()


@pytest.mark.parametrize("reduce", ["sum", "mean", "amax", "amin"])
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce_matches_eager(reduce, include_self):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    args = (torch.randn(5, 3, generator=g), torch.randn(8, 3, generator=g),
            torch.tensor([0, 2, 2, 4, 0, 0, 1, 2]))  # node 3 receives nothing
    assert_infers_and_trains_like_eager(ScatterReduce(reduce, include_self), args)


class IndexReduce(torch.nn.Module):
    """Rows of messages reduced into the rows (dim 0) or columns (dim 1) index names."""

    def __init__(self, reduce, include_self, dim):
        super().__init__()
        self.reduce, self.include_self, self.dim = reduce, include_self, dim
        self.msg = torch.nn.Linear(3, 3)

    def forward(self, nodes, edges, dst):
        src = self.msg(edges)
        base = nodes if self.dim == 0 else nodes.t()
        out = base.index_reduce(self.dim, dst, src if self.dim == 0 else src.t(), self.reduce,
                                include_self=self.include_self)
        return out, (out.tanh() ** 2).sum()


@pytest.mark.parametrize("reduce", ["mean", "amax", "amin"])
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("dim", [0, 1])
def test_index_reduce_matches_eager(reduce, include_self, dim):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    args = (torch.randn(5, 3, generator=g), torch.randn(8, 3, generator=g),
            torch.tensor([0, 2, 2, 4, 0, 0, 1, 2]))  # row 3 receives nothing
    assert_infers_and_trains_like_eager(IndexReduce(reduce, include_self, dim), args)


@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_max_splits_the_gradient_among_ties_like_torch(include_self):
    class Max(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(4))

        def forward(self, x, index, src):
            out = (x * self.w[:3]).scatter_reduce(0, index, src * self.w, "amax",
                                                  include_self=include_self)
            return out, (out * torch.tensor([1.0, 2.0, 3.0])).sum()

    # Ties at positions 0 (two srcs, and x with include_self) and 2 (x and a src). Without
    # include_self, x's values differ from the maxima: there torch's backward still counts
    # x among the ties and drops its share (the shares sum to 2/3), where ours splits among
    # the written values only (a valid subgradient).
    x = torch.tensor([1.0, 0.0, 2.0]) if include_self else torch.tensor([0.5, 0.0, 1.5])
    args = (x, torch.tensor([0, 0, 2, 1]), torch.tensor([1.0, 1.0, 2.0, -1.0]))
    from parity import assert_trains_like_eager
    assert_trains_like_eager(Max(), args, steps=2)


class ScatterProd(torch.nn.Module):
    """Products of messages scattered into nodes, with zeros among them: positions with one
    zero, with two, and without (the gradient is torch's exclusive product)."""

    def __init__(self, include_self, how):
        super().__init__()
        self.include_self, self.how = include_self, how
        self.msg = torch.nn.Linear(3, 3)

    def forward(self, nodes, edges, dst, zero):
        src = self.msg(edges) * zero  # rows where zero is 0 are exact zeros
        index = dst[:, None].expand(-1, 3)
        if self.how == "scatter_reduce":
            out = nodes.scatter_reduce(0, index, src, "prod", include_self=self.include_self)
        elif self.how == "index_reduce":
            out = nodes.index_reduce(0, dst, src, "prod", include_self=self.include_self)
        else:  # the deprecated scatter(reduce="multiply"), x included
            out = nodes.scatter(0, index, src, reduce="multiply")
        return out, (out.tanh() ** 2).sum()


def _product_args():
    g = torch.Generator().manual_seed(1)
    dst = torch.tensor([0, 2, 2, 4, 0, 0, 1, 2])  # node 3 receives nothing
    zero = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0])[:, None]
    zero = zero * torch.tensor([1.0, 1.0, 0.0])  # column 2: zeros at every position
    return torch.randn(5, 3, generator=g), torch.randn(8, 3, generator=g), dst, zero


@pytest.mark.parametrize("how,include_self", [("scatter_reduce", True),
                                              ("scatter_reduce", False),
                                              ("index_reduce", True), ("index_reduce", False)])
def test_scatter_products_match_eager(how, include_self):
    torch.manual_seed(0)
    assert_infers_and_trains_like_eager(ScatterProd(include_self, how), _product_args())


def test_deprecated_scatter_multiply_matches_eager():
    """scatter(reduce="multiply") (eager has no derivative for it: inference only)."""
    torch.manual_seed(0)
    model = ScatterProd(True, "scatter")
    args = _product_args()
    with torch.no_grad():
        want = model(*args)
    got = tilegraph.inferenceModel(model)(*args)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)


def test_integer_scatter_products_are_exact():
    class IntProd(torch.nn.Module):
        def forward(self, x, index, src):
            return (x.scatter_reduce(0, index, src, "prod"),
                    x.scatter(0, index, 3, reduce="multiply"))

    args = (torch.tensor([2, 3, 5]), torch.tensor([0, 2, 2, 0]),
            torch.tensor([7, -11, 13, 1 << 20]))
    got = tilegraph.inferenceModel(IntProd())(*args)
    want = IntProd()(*args)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_randperm_is_a_uniform_permutation():
    """Every draw is a permutation; over many draws each value lands in each position
    with frequency 1/n (binomial bounds, 5 sigma)."""
    class Perm(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x[torch.randperm(5)] for _ in range(400)])

    engine = tilegraph.inferenceModel(Perm())
    draws = torch.cat([engine(torch.arange(5.0)) for _ in range(5)]).long()  # [2000, 5]
    assert torch.equal(draws.sort(dim=1).values, torch.arange(5).expand(2000, 5))
    counts = torch.stack([(draws == v).sum(0) for v in range(5)]).double()  # value x position
    expected, sigma = 2000 / 5, (2000 * 0.2 * 0.8) ** 0.5
    assert (counts - expected).abs().max() < 5 * sigma, counts
    assert len({tuple(r) for r in draws.tolist()}) > 100  # not one fixed permutation


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_class_weighted_cross_entropy_matches_eager(reduction):
    """CrossEntropyLoss(weight=...) with an ignored label: "mean" divides by the summed
    weights of the counted targets."""
    class Weighted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(6, 4)
            self.loss = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0, 1.0, 3.0]),
                                                  ignore_index=3, reduction=reduction)

        def forward(self, x, t):
            out = self.a(x)
            loss = self.loss(out, t)
            return out, loss if reduction != "none" else loss.sum()

    torch.manual_seed(0)
    x = torch.randn(6, 6, generator=torch.Generator().manual_seed(1))
    assert_infers_and_trains_like_eager(Weighted(), (x, torch.tensor([0, 1, 3, 2, 1, 0])))


class Normalized(torch.nn.Module):
    """Cosine similarity of F.normalize'd rows (Swin V2's attention), one row all zeros:
    its norm's gradient is 0 there, as PyTorch defines it (the decomposition pow(sum(x**2),
    0.5) gives NaN)."""

    def __init__(self, p):
        super().__init__()
        self.p, self.a = p, torch.nn.Linear(4, 4, bias=False)

    def forward(self, x):
        h = F.normalize(self.a(x), dim=-1) if self.p == 2 else \
            self.a(x) / self.a(x).norm(p=self.p, dim=-1, keepdim=True).clamp_min(1e-6)
        sim = h @ h.t()
        return sim, (sim * torch.arange(16.0).reshape(4, 4)).sum() + self.a(x).norm(p=self.p)


@pytest.mark.parametrize("p", [2, 1, 3, float("inf")])
def test_norms_match_eager_with_a_zero_row(p):
    torch.manual_seed(0)
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    x[2] = 0  # a zero row: its norm is 0
    assert_infers_and_trains_like_eager(Normalized(p), (x,), loss_of=lambda out: out[-1])


class PoolUnpool(torch.nn.Module):
    """SegNet-style: MaxPool2d(return_indices=True) and MaxUnpool2d at those indices."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(kernel_size, stride, padding, return_indices=True,
                                       ceil_mode=ceil_mode)
        self.unpool = torch.nn.MaxUnpool2d(kernel_size, stride, padding)

    def forward(self, x):
        h = self.conv(x)
        y, indices = self.pool(h)
        z = self.unpool(y, indices, output_size=h.shape[-2:])
        return indices, y, z, (z ** 2).mean() + y.mean()


@pytest.mark.parametrize("config", [dict(kernel_size=2), dict(kernel_size=2, ceil_mode=True),
                                    dict(kernel_size=3, stride=2, padding=1),
                                    dict(kernel_size=3, stride=1)])
def test_max_pool_indices_and_unpool_match_eager(config):
    """The indices are the flat positions in each input plane, as torch's; overlapping
    windows (stride 1) name a position twice, and each copy gets its gradient (a gather)."""
    torch.manual_seed(0)
    model = PoolUnpool(**config)
    x = torch.randn(2, 2, 7, 9)
    reference = PoolUnpool(**config)
    reference.load_state_dict(model.state_dict())
    got, want = tilegraph.inferenceModel(reference)(x), model(x)
    assert got[0].dtype == torch.int64 and torch.equal(got[0], want[0])
    assert_infers_and_trains_like_eager(model, (x,), output_of=lambda out: out[2])


@pytest.mark.parametrize("pool, shape", [
    (lambda: torch.nn.AdaptiveMaxPool2d((2, 3)), (2, 3, 5, 7)),
    (lambda: torch.nn.AdaptiveMaxPool2d(1), (2, 3, 4, 4)),  # CBAM / channel attention
    (lambda: torch.nn.AdaptiveMaxPool2d((3, None)), (2, 3, 7, 5)),
    (lambda: torch.nn.AdaptiveMaxPool1d(3), (2, 3, 7)),
], ids=["2x3", "global", "rows_only", "1d"])
def test_adaptive_max_pooling_matches_eager(pool, shape):
    """Bins of uneven size (floor / ceil bounds), the first maximum of each; the gradient
    goes to that element."""
    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.pool = torch.nn.Linear(shape[-1], shape[-1]), pool()

        def forward(self, x):
            y = self.pool(self.fc(x))
            return y, (y ** 2).sum()

    torch.manual_seed(0)
    assert_infers_and_trains_like_eager(Head(), (torch.randn(*shape),), lr=0.01)


def test_adaptive_max_pooling_indices_match_eager():
    pool = torch.nn.AdaptiveMaxPool2d((4, 4), return_indices=True)
    x = torch.randn(2, 3, 9, 6)
    x[..., 1, :] = x[..., 0, :]  # ties: the first maximum's position
    got, want = tilegraph.inferenceModel(torch.nn.Sequential(pool))(x), pool(x)
    torch.testing.assert_close(got[0], want[0])
    assert torch.equal(got[1], want[1])


class Unpool3d(torch.nn.Module):
    """MaxUnpool3d at given indices (some named twice): each copy gets the position's
    gradient, as torch's gather-based gradient gives it (index_put gave it to one copy)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(1, 2, 1, 1, 1))  # per channel

    def forward(self, x, indices):
        z = torch.nn.functional.max_unpool3d(x * self.w, indices, kernel_size=2,
                                             output_size=[3, 3, 3])
        return z, (z * torch.arange(27.0).reshape(3, 3, 3)).sum()


def test_max_unpool3d_gives_each_copy_its_gradient():
    torch.manual_seed(0)
    indices = torch.tensor([0, 0, 5, 26, 13, 13, 13, 2] * 2).reshape(1, 2, 2, 2, 2)
    x = torch.randn(1, 2, 8)  # a position's copies hold one value (its window's maximum)
    x[..., 1] = x[..., 0]
    x[..., 5] = x[..., 6] = x[..., 4]
    assert_infers_and_trains_like_eager(Unpool3d(), (x.reshape(1, 2, 2, 2, 2), indices),
                                        output_of=lambda out: out[0])


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_fractional_norm_gradient_is_zero_at_zero_elements(p):
    """|x|^p with p < 1 has an infinite slope at 0: eager's gradient there is 0 (it was NaN
    here, and the weight trained to NaN)."""
    class FractionalNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.x = torch.nn.Parameter(torch.tensor([0.0, 1.0, -2.0, 0.0, 0.5]))

        def forward(self, scale):
            return torch.linalg.vector_norm(self.x * scale, p)
    from parity import assert_trains_like_eager
    assert_trains_like_eager(FractionalNorm(), (torch.tensor(1.0),), steps=2,
                             loss_of=lambda out: out)
