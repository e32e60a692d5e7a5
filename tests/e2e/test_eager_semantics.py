"""Eager PyTorch semantics that PopTorch's own unit tests exercise and that a compiled graph
could easily get wrong: detach() stops gradients, a submodule frozen with .eval() stays
frozen in a trainingModel, masked assignment x[mask] = v, uint8 masks, 0-d outputs stay
0-d, bool arithmetic, and a few ops (median, var_mean, erfc, random fills) PopTorch's tests
use. Each case is compared with eager PyTorch."""
import copy
import warnings

import pytest
import torch
import torch.nn as nn

import tilegraph
from parity import assert_trains_like_eager


class WithLoss(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x, target):
        out = self.body(x)
        return out, nn.functional.mse_loss(out, target)


def _train_both(body, steps=3, lr=0.1):
    """(tilegraph's body, eager's body) after `steps` SGD steps on the same data."""
    reference = copy.deepcopy(body)
    trainer = tilegraph.trainingModel(WithLoss(body), tilegraph.Options(),
                                      torch.optim.SGD(body.parameters(), lr=lr))
    eager = WithLoss(reference)
    opt = torch.optim.SGD(reference.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, t = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
        trainer(x, t)
        opt.zero_grad()
        eager(x, t)[1].backward()
        opt.step()
    trainer.copyWeightsToHost()
    return body, reference


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(8, 8)
        self.second = nn.Linear(8, 8)

    def forward(self, x):
        return self.second(torch.tanh(self.first(x)).detach())


class ReadsData(nn.Module):
    """`.data` in a forward: torch's own test models write weight.type_as(input.data)."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(8, 8)
        self.second = nn.Linear(8, 8)

    def forward(self, x):
        hidden = torch.tanh(self.first(x))
        return self.second(hidden.data) * self.second.weight.data.type_as(x.data).mean()


@pytest.mark.parametrize("make", [Detached, ReadsData], ids=["detach", "tensor.data"])
def test_detach_stops_the_gradient(make):
    """x.detach() and x.data (read as detach while capturing) carry no gradient."""
    torch.manual_seed(0)
    body = make()
    before = copy.deepcopy(body.first.state_dict())
    body, reference = _train_both(body)
    for name, value in body.first.state_dict().items():
        assert torch.equal(value, before[name]), name  # no gradient reached it
    for got, want in zip(body.second.parameters(), reference.second.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


class NoGradBlock(nn.Module):
    """A torch.no_grad() block inside a training forward (a target network, an EMA)."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(8, 8)
        self.second = nn.Linear(8, 8)
        self.register_buffer("ema", torch.zeros(8))

    def forward(self, x):
        with torch.no_grad():
            h = self.first(x)
            self.ema.mul_(0.9).add_(h.mean(0) * 0.1)
        return self.second(torch.tanh(h))


def test_a_no_grad_block_in_training_stops_the_gradient():
    torch.manual_seed(0)
    body = NoGradBlock()
    before = copy.deepcopy(body.first.state_dict())
    body, reference = _train_both(body)
    for name, value in body.first.state_dict().items():
        assert torch.equal(value, before[name]), name
    torch.testing.assert_close(body.ema, reference.ema, rtol=1e-5, atol=1e-6)
    for got, want in zip(body.second.parameters(), reference.second.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


class FrozenNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        return self.bn(self.lin(x))


def test_a_submodule_frozen_with_eval_stays_frozen_in_training():
    torch.manual_seed(0)
    body = FrozenNorm()
    body.bn.running_mean.fill_(0.5)
    body.bn.running_var.fill_(2.0)
    body.bn.eval()  # fine-tuning with frozen statistics
    body, reference = _train_both(body)
    assert body.training and not body.bn.training
    torch.testing.assert_close(body.bn.running_mean, reference.bn.running_mean)
    assert torch.all(body.bn.running_mean == 0.5)
    for got, want in zip(body.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_model_in_eval_mode_is_put_in_training_mode():
    # PopTorch's trainingModel trains: a module wrapped in eval mode trains in training mode.
    torch.manual_seed(0)
    body = FrozenNorm().eval()
    trainer = tilegraph.trainingModel(WithLoss(body).eval(), tilegraph.Options(),
                                      torch.optim.SGD(body.parameters(), lr=0.1))
    trainer(torch.randn(16, 8), torch.randn(16, 8))
    assert body.training and body.bn.training


def test_eval_set_after_wrapping_is_followed_from_the_first_call():
    """The flip to training mode happens when the module is wrapped: an eval() the user sets
    afterwards (before or after the first call) is followed, as eager would, the batch
    norm then normalizing with its running statistics."""
    torch.manual_seed(0)
    body = FrozenNorm()
    body.bn.running_mean.fill_(0.5)
    model = WithLoss(body).eval()
    trainer = tilegraph.trainingModel(model, tilegraph.Options(),
                                      torch.optim.SGD(body.parameters(), lr=0.1))
    assert model.training
    model.eval()
    x, t = torch.randn(16, 8), torch.randn(16, 8)
    want = copy.deepcopy(model)(x, t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (it warns once per process that it runs in eval mode)
        got = trainer(x, t)
    assert not model.training
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w.detach(), rtol=1e-5, atol=1e-6)
    assert torch.all(body.bn.running_mean == 0.5)


def _run(fn, *args):
    class Model(nn.Module):
        def forward(self, *a):
            return fn(*a)
    return tilegraph.inferenceModel(Model())(*args), fn(*args)


# (eager refuses a uint8 mask with a single value, and torch.export refuses x[uint8 mask]:
# a uint8 mask is checked where both work.)
@pytest.mark.parametrize("mask_dtype,value", [
    (torch.bool, "scalar"), (torch.bool, "row"), (torch.uint8, "row"),
    (torch.bool, "accumulate"), (torch.uint8, "accumulate"), (torch.bool, "after_none")])
def test_masked_assignment_matches_eager(mask_dtype, value):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, generator=g)
    mask = (torch.rand(3, 4, generator=g) > 0.5).to(mask_dtype)
    row = torch.arange(5.0)

    def put(x, mask, row):
        x = x * 1
        if value == "scalar":
            x[mask] = -1.5
        elif value == "row":
            x[mask] = row
        elif value == "accumulate":
            x.index_put_((mask,), row, accumulate=True)
        else:
            x[:, mask[0]] = 7.0
        return x
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates uint8 masks (and still honours them)
        got, want = _run(put, x, mask, row)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_masked_assignment_of_one_value_per_selected_row_is_refused_clearly():
    def put(x, mask):
        x = x * 1
        x[mask] = x[mask] * 2  # values with one row per selected row: a data-dependent count
        return x
    with pytest.raises(NotImplementedError, match="test_eager_semantics.py"):
        _run(put, torch.randn(4, 3), torch.tensor([True, False, True, True]))


def test_a_scalar_output_is_a_scalar():
    x = torch.rand(4, 8)
    got, want = _run(lambda x: (x.sum(), x.mean(), torch.all(x > 0.5), x.var()), x)
    for g, w in zip(got, want):
        assert g.shape == w.shape == ()
        torch.testing.assert_close(g, w)


def test_bool_arithmetic_is_logic():
    a = torch.tensor([False, True, False, True])
    b = torch.tensor([False, False, True, True])
    got, want = _run(lambda a, b: (a + b, a * b, torch.maximum(a, b), torch.minimum(a, b)), a, b)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype == torch.bool and torch.equal(g, w)


@pytest.mark.parametrize("name", ["median", "median_dim", "var_mean", "std_mean", "erfc"])
def test_statistics_ops_match_eager(name):
    fn = {"median": lambda x: torch.median(x),
          "median_dim": lambda x: torch.median(x, 1),
          "var_mean": lambda x: torch.var_mean(x, [0, 1], keepdim=True),
          "std_mean": lambda x: torch.std_mean(x, 1, correction=0),
          "erfc": lambda x: torch.erfc(x * 3)}[name]
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(2))
    got, want = _run(fn, x)
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=0)


def test_erfc_keeps_its_precision_where_erf_is_one():
    x = torch.tensor([3.0, 5.0, 8.0])
    got, want = _run(torch.erfc, x)
    assert torch.all(got > 0)  # 1 - erf(x) would round to 0 in float32 here
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


def test_median_and_erfc_gradients_match_eager():
    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            y = self.lin(x)
            return torch.erfc(y) + torch.median(y, 1, keepdim=True).values

    torch.manual_seed(0)
    body, reference = _train_both(Body())
    for got, want in zip(body.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["normal_", "uniform_", "exponential_", "normal_tensor"])
def test_random_fills_have_their_distribution(name):
    # Draws come from tilegraph's Philox stream (not torch's bits): the distribution is
    # checked, with bounds of several standard errors for 100,000 draws.
    fn = {"normal_": lambda x: x.clone().normal_(mean=20.0, std=8.0),
          "uniform_": lambda x: x.clone().uniform_(-1.0, 3.0),
          "exponential_": lambda x: x.clone().exponential_(2.0),
          "normal_tensor": lambda x: torch.normal(mean=x * 5, std=3.0)}[name]
    mean, std = {"normal_": (20.0, 8.0), "uniform_": (1.0, 4 / 12 ** 0.5),
                 "exponential_": (0.5, 0.5), "normal_tensor": (5.0, 3.0)}[name]
    x = torch.ones(100, 1000)
    got, _ = _run(fn, x)
    assert got.shape == x.shape
    assert abs(got.mean().item() - mean) < 5 * std / 1000 ** 0.5 / 10
    assert abs(got.std().item() - std) < 0.02 * std
    if name == "uniform_":
        assert got.min() >= -1.0 and got.max() < 3.0
    if name == "exponential_":
        assert got.min() >= 0.0


def test_geometric_log_normal_and_cauchy_fills_have_their_distribution():
    """geometric_ (mean 1 / p, integers >= 1), log_normal_ (median e^mean, log-std std) and
    cauchy_ (median and quartiles median -+ sigma) over 100,000 draws, several standard
    errors wide."""
    def fn(x):
        return (x.clone().geometric_(0.25), x.clone().log_normal_(0.5, 0.75),
                x.clone().cauchy_(2.0, 3.0))
    x = torch.ones(100, 1000)
    (geometric, log_normal, cauchy), _ = _run(fn, x)
    assert geometric.min() >= 1 and torch.equal(geometric, geometric.round())
    assert abs(geometric.mean().item() - 4.0) < 0.05  # std sqrt(12) / sqrt(1e5) = 0.011
    logs = log_normal.log()
    assert abs(logs.mean().item() - 0.5) < 0.01 and abs(logs.std().item() - 0.75) < 0.01
    quartiles = torch.quantile(cauchy.flatten().double(),
                               torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    torch.testing.assert_close(quartiles, torch.tensor([-1.0, 2.0, 5.0], dtype=torch.float64),
                               atol=0.1, rtol=0)


def test_random_fill_integers_cover_eagers_ranges():
    """Tensor.random_ (torch.export cannot trace it: captured as randint_like): [from, to),
    [0, to), and the default range, in float, int64 and bool tensors."""
    def fn(x):
        return (x.clone().random_(3, 10), x.clone().random_(7), x.long().random_(-5, 5),
                x.bool().random_(), x.clone().random_())
    x = torch.zeros(200, 500)
    (a, b, c, d, e), _ = _run(fn, x)
    for t, low, high in ((a, 3, 9), (b, 0, 6), (c, -5, 4), (d.long(), 0, 1)):
        assert t.min().item() == low and t.max().item() == high
        assert torch.equal(t, t.round()) and abs(t.double().mean().item() - (low + high) / 2) < 0.05
    assert c.dtype == torch.int64 and d.dtype == torch.bool
    assert e.min() >= 0 and e.max() <= 2 ** 24 and abs(e.double().mean().item() / 2 ** 23 - 1) < 0.01


def test_anchor_mode_takes_poptorch_2s_keyword():
    opts = tilegraph.Options().deviceIterations(10)
    opts.anchorMode(tilegraph.AnchorMode.EveryN, anchor_return_period=5)
    assert opts.output_return_period == 5


class VAE(nn.Module):
    """A variational autoencoder written with torch.distributions (Normal.rsample, KL)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(16, 8)
        self.dec = nn.Linear(4, 16)

    def forward(self, x):
        from torch.distributions import Normal, kl_divergence
        h = self.enc(x)
        q = Normal(h[:, :4], h[:, 4:].exp())
        rec = self.dec(q.rsample())
        prior = Normal(torch.zeros_like(h[:, :4]), torch.ones_like(h[:, :4]))
        kl = kl_divergence(q, prior).sum(1).mean()
        return rec, kl, nn.functional.mse_loss(rec, x) + kl


def test_a_vae_with_torch_distributions_trains():
    # Distributions made in the forward validate their arguments as in eager (the checks
    # compile into run-time assertions); the KL term (no randomness) matches eager's, and the
    # loss falls.
    torch.manual_seed(0)
    model = VAE()
    x = torch.randn(64, 16)
    with torch.no_grad():
        _, want_kl, _ = copy.deepcopy(model)(x)
    trainer = tilegraph.trainingModel(model, tilegraph.Options(),
                                      torch.optim.Adam(model.parameters(), lr=1e-2))
    _, kl, first = trainer(x)
    torch.testing.assert_close(kl, want_kl, rtol=1e-5, atol=1e-6)
    for _ in range(20):
        _, _, loss = trainer(x)
    assert loss < 0.8 * first


def test_distributions_validate_their_arguments_by_default_as_in_eager(capfd):
    """No validate_args: torch validates by default, so an invalid scale raises in eager;
    compiled, it fails the call at run time (it used to give NaN silently). Capturing prints
    none of torch's unbacked-symbol warnings."""
    class LogProb(nn.Module):
        def forward(self, x, scale):
            return torch.distributions.Normal(x, scale).log_prob(x + 1)

    x, scale = torch.randn(3), torch.rand(3) + 0.5
    with pytest.raises(ValueError):
        LogProb()(x, -scale)  # eager
    run = tilegraph.inferenceModel(LogProb())
    torch.testing.assert_close(run(x, scale), LogProb()(x, scale))
    assert "Unable to find user code" not in capfd.readouterr().err
    with pytest.raises(ValueError, match="distribution.py:.*failed.*eager PyTorch raises"):
        run(x, -scale)


def test_a_distribution_asked_to_validate_checks_its_arguments_at_run_time():
    """validate_args=True: torch's `if not valid: raise` compiles into a run-time assertion
    (_capture_patches.value_checks_as_assertions): valid arguments give eager's values, an
    invalid scale fails the call naming torch's check, as eager raises."""
    class LogProb(nn.Module):
        def forward(self, x, scale):
            return torch.distributions.Normal(x, scale, validate_args=True).log_prob(x + 1)

    run = tilegraph.inferenceModel(LogProb())
    x, scale = torch.randn(3), torch.rand(3) + 0.5
    torch.testing.assert_close(run(x, scale), LogProb()(x, scale))
    with pytest.raises(ValueError, match="distribution.py:.*failed.*eager PyTorch raises"):
        run(x, -scale)


def test_replacing_a_buffer_by_another_dtype_is_explained():
    class Reassign(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("y", torch.tensor([2]))

        def forward(self, x):
            x = x + 1
            self.y = x  # eager swaps in a float tensor; a compiled buffer keeps its dtype
            return x

    # PopTorch's words (its buffers_test matches them) and tilegraph's reason; both a
    # tilegraph.Error (PopTorch's class) and a NotImplementedError.
    with pytest.raises(tilegraph.Error, match=r"Buffer y is reassigned within the model when "
                       r"calling the forward method\. This is not supported\. Consider using "
                       r"self\.y\.copy_\(src\).*buffer 'y' is i64\[1\], the new value f32"):
        tilegraph.inferenceModel(Reassign())(torch.tensor([5.0]))
    with pytest.raises(NotImplementedError):
        tilegraph.inferenceModel(Reassign())(torch.tensor([5.0]))


def test_a_buffer_deleted_by_forward_is_named():
    """PopTorch's buffers_test: a forward that deletes its module's buffer gets an error
    naming the buffer (not a KeyError from the weight sync)."""
    class Remove(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("y", torch.tensor([2]))

        def forward(self, x):
            x = x + 1
            if "y" in self._buffers:
                del self._buffers["y"]
            return x

    with pytest.raises(tilegraph.Error, match="Buffer y is removed from the model"):
        tilegraph.inferenceModel(Remove())(torch.tensor([5.0]))


class _Dropouts(nn.Module):
    """Dropout as models write it: nn.Dropout, a functional call on self.training, and
    attention dropout through scaled_dot_product_attention's dropout_p."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        h = self.drop(self.fc(x))
        h = nn.functional.dropout(h, 0.3, training=self.training)
        q = h.reshape(2, 1, 4, 8)
        a = nn.functional.scaled_dot_product_attention(
            q, q, q, None, 0.4 if self.training else 0.0)
        return a.reshape(8, 8), a.sum()


def test_inference_models_run_dropout_as_identity_as_poptorch():
    """PopTorch's inference models run dropout as the identity whatever the module's mode
    (its MNIST example calls inferenceModel on a model still training); tilegraph does too,
    warning once where eager would have dropped. Training models keep their dropout."""
    torch.manual_seed(0)
    model, x = _Dropouts().train(), torch.randn(8, 8)
    with pytest.warns(UserWarning, match="run dropout as the identity"):
        got = tilegraph.inferenceModel(model)(x)
    assert model.training  # the module's own mode is untouched
    want = copy.deepcopy(model).eval()(x)
    torch.testing.assert_close(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in eval mode nothing is dropped: no warning
        torch.testing.assert_close(tilegraph.inferenceModel(copy.deepcopy(model).eval())(x),
                                   want)
    run = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0))
    out, _ = run(x)
    assert not torch.allclose(out, want[0])  # still dropping while training


def test_rrelu_in_training_draws_a_slope_per_negative_element():
    # torch.nn.RReLU in training: slopes ~ U[lower, upper) per element (tilegraph's Philox
    # stream, so not torch's bits: the distribution is checked), identity for x >= 0.
    rrelu = nn.RReLU(0.1, 0.3).train()
    x = torch.cat([-torch.ones(100, 1000), torch.rand(1, 1000)])
    got, _ = _run(rrelu, x)
    slopes = got[:100] / x[:100]
    assert slopes.min() >= 0.1 and slopes.max() < 0.3
    assert abs(slopes.mean().item() - 0.2) < 5 * (0.2 / 12 ** 0.5) / 1000 ** 0.5 / 10 ** 0.5
    assert torch.equal(got[100:], x[100:])
    assert len(set(slopes[:, :50].flatten().tolist())) > 4000  # one draw per element


class ProductsAndBilinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.bilinear = nn.Bilinear(8, 8, 8)

    def forward(self, x):
        y = self.lin(x)
        z = torch.cumprod(y.reshape(-1, 2, 4), dim=2).reshape(y.shape)
        return self.bilinear(z, y)


def test_cumprod_and_bilinear_train_like_eager():
    torch.manual_seed(0)
    body, reference = _train_both(ProductsAndBilinear(), lr=0.01)
    for got, want in zip(body.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_cumprod_through_zeros_and_integers():
    x = torch.tensor([[2.0, 0.0, 3.0, -1.5, 4.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    got, want = _run(lambda x: (torch.cumprod(x, 1), torch.cumprod(x.long(), 0)), x)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    assert got[1].dtype == torch.int64 and torch.equal(got[1], want[1])


class Seq2Seq(nn.Module):
    """nn.Transformer with the standard causal target mask (torch checks whether a mask is
    causal by comparing values; tilegraph takes the mask as given)."""

    def __init__(self):
        super().__init__()
        self.t = nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                dim_feedforward=16, dropout=0.0)

    def forward(self, x):
        src, tgt = x.reshape(4, 4, 8), (0.5 * x).flip(0).reshape(4, 4, 8)  # [seq, batch, 8]
        mask = nn.Transformer.generate_square_subsequent_mask(4)
        return self.t(src, tgt, tgt_mask=mask).reshape(16, 8)


def test_a_transformer_with_a_causal_target_mask_trains_like_eager():
    torch.manual_seed(0)
    body, reference = _train_both(Seq2Seq(), lr=0.05)
    for got, want in zip(body.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("conv,shape", [
    (lambda: nn.Conv3d(3, 4, (2, 3, 4), padding="valid"), (2, 3, 6, 5, 4)),
    (lambda: nn.Conv2d(3, 4, 3, padding="valid"), (2, 3, 6, 5)),
    (lambda: nn.Conv1d(3, 4, 3, padding="same"), (2, 3, 6))])
def test_convolution_padding_strings(conv, shape):
    torch.manual_seed(0)
    got, want = _run(conv(), torch.randn(*shape))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


class MarginLoss(nn.Module):
    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def forward(self, x, target):
        return self.loss(x, target, reduction="none")


_MULTILABEL = nn.functional.multilabel_margin_loss
_MULTI = nn.functional.multi_margin_loss


@pytest.mark.parametrize("loss,x,target", [
    (_MULTILABEL, torch.randn(()), torch.tensor(0)),
    (_MULTILABEL, torch.randn(10), torch.tensor([3, 1, -1, 0, 0, 0, 0, 0, 0, 0])),
    (_MULTILABEL, torch.randn(2, 4), torch.tensor([[3, 1, -1, 0], [0, -1, 0, 0]])),
    (_MULTI, torch.randn(()), torch.tensor(0)),
    (_MULTI, torch.randn(10), torch.tensor(4)),
    (_MULTI, torch.randn(10), torch.tensor([4])),
    (_MULTI, torch.randn(3, 10), torch.tensor([4, 1, 2]))])
def test_margin_losses_without_reduction_have_eagers_shape(loss, x, target):
    """Eager's kernels give a 0-d loss for one sample (multi_margin_loss: a 0-d target;
    multilabel_margin_loss: a 0-d or 1-d one) where torch's shape function says [1]."""
    got = tilegraph.inferenceModel(MarginLoss(loss))(x, target)
    want = MarginLoss(loss)(x, target)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("size,channels", [(5, 3), (5, 16), (2, 7), (12, 8)])
def test_cross_map_lrn2d_matches_eager(size, channels):
    """nn.CrossMapLRN2d's legacy in-place Function: same values as eager (its quirky window
    included); the gradient is the forward's true one, checked in float64 (eager's own
    backward formula is not its forward's gradient: gradcheck fails on it)."""
    from tilegraph._capture_patches import cross_map_lrn2d
    torch.manual_seed(0)
    module = nn.CrossMapLRN2d(size, 5e-3, 0.75, 2)
    x = torch.rand(2, channels, 6, 5)
    torch.testing.assert_close(tilegraph.inferenceModel(module)(x), module(x),
                               rtol=1e-5, atol=1e-6)
    x64 = torch.rand(1, channels, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: cross_map_lrn2d(t, size, 5e-3, 0.75, 2), (x64,))


class Dropped(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        y = nn.functional.dropout(x, 0.5) * self.scale
        return y, tilegraph.identity_loss(y.sum(), "none")


def _dropout_mask(seed, options=None):
    torch.manual_seed(seed)
    model = Dropped()
    run = tilegraph.trainingModel(model, options or tilegraph.Options(),
                                  torch.optim.SGD(model.parameters(), lr=0.0))
    return run(torch.ones(64, 64))[0] == 0


def test_the_random_stream_follows_torch_manual_seed_unless_options_set_one():
    """As in eager PyTorch: dropout masks repeat under the same torch.manual_seed and change
    with it; Options().randomSeed(n) fixes the stream whatever torch's seed."""
    assert torch.equal(_dropout_mask(1), _dropout_mask(1))
    assert not torch.equal(_dropout_mask(1), _dropout_mask(2))
    fixed = tilegraph.Options().randomSeed(7)
    first = _dropout_mask(1, fixed)
    assert torch.equal(first, _dropout_mask(2, tilegraph.Options().randomSeed(7)))


class LossThenMetric(nn.Module):
    """PopTorch's user-guide example returns (loss, accuracy): the loss function's result
    is the training loss wherever it is in the result, as PopTorch finds it."""

    def __init__(self, loss_first=True):
        super().__init__()
        self.fc = nn.Linear(20, 10)
        self.loss_first = loss_first

    def forward(self, x, target):
        logits = self.fc(x)
        loss = nn.functional.cross_entropy(logits, target)
        accuracy = (logits.argmax(-1) == target).float().mean()
        return (loss, accuracy) if self.loss_first else (loss, logits)


@pytest.mark.parametrize("loss_first", [True, False], ids=["loss-accuracy", "loss-logits"])
def test_the_loss_functions_result_is_the_loss_wherever_it_is(loss_first):
    torch.manual_seed(0)
    model = LossThenMetric(loss_first)
    reference = copy.deepcopy(model)
    run = tilegraph.trainingModel(model, tilegraph.Options(),
                                  torch.optim.SGD(model.parameters(), lr=0.1))
    opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, t = torch.randn(16, 20, generator=g), torch.randint(0, 10, (16,), generator=g)
        loss = run(x, t)[0]
        opt.zero_grad()
        want = reference(x, t)[0]
        want.backward()
        opt.step()
        torch.testing.assert_close(loss, want.detach(), rtol=1e-5, atol=1e-6)
    run.copyWeightsToHost()
    torch.testing.assert_close(model.fc.weight, reference.fc.weight, rtol=1e-5, atol=1e-6)


def test_a_last_output_computed_from_the_loss_functions_result_is_the_loss():
    """`return ce, ce + aux` (and a test harness's `return out, out ** 2` over a loss
    function's result): the last output, which the loss function's result feeds, is what
    trains; the loss function's result alone trained before (a CTC gradient 50x too small)."""
    class CeAndTotal(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(20, 10)

        def forward(self, x, target):
            ce = nn.functional.cross_entropy(self.fc(x), target)
            return ce, ce * ce + 0.1 * self.fc.weight.abs().mean()

    torch.manual_seed(0)
    assert_trains_like_eager(CeAndTotal(), (torch.randn(16, 20), torch.randint(0, 10, (16,))))


def test_a_loss_that_depends_on_no_parameter_is_flagged_and_runs_as_in_poptorch():
    class MetricLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x, t):
            out = self.fc(x)
            return ((out - 1) ** 2).mean(), (out.argmax(-1) == t).float().mean()

    model = MetricLast()
    w0 = model.fc.weight.detach().clone()
    run = tilegraph.trainingModel(model, tilegraph.Options(),
                                  torch.optim.SGD(model.parameters(), lr=0.1))
    x, t = torch.randn(5, 4), torch.randint(0, 3, (5,))
    with pytest.warns(UserWarning, match="does not depend on any trainable parameter"):
        mse, accuracy = run(x, t)
    # The metric was taken as the loss: zero gradients, plain SGD leaves the weights alone,
    # and the outputs are the forward's.
    assert torch.equal(model.fc.weight.detach(), w0)
    want = MetricLast()
    want.load_state_dict(model.state_dict())
    torch.testing.assert_close((mse, accuracy), want(x, t))


def test_buffers_an_inference_model_updates_are_on_the_module_after_each_call():
    """PopTorch's buffers_test / inputs_test: a forward that updates a buffer, run by an
    inferenceModel, leaves the module (and the executor's state_dict) with the updated value
    after every call, as eager does; a train-mode batch norm's statistics too. (The engine
    kept them; the module showed the values from before the first call.)"""
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("x", torch.tensor([1.]))
            self.bn = nn.BatchNorm1d(3)

        def forward(self, y):
            self.x += 1.0
            return self.x * 1.0, self.bn(y)

    torch.manual_seed(0)
    y = torch.randn(4, 3)
    eager, model = Counter(), Counter()
    run = tilegraph.inferenceModel(model)
    for expect in (2.0, 3.0):
        out, _ = run(y)
        eager(y)
        assert out.item() == expect and model.x.item() == expect
        assert run.state_dict()["x"].item() == expect
    torch.testing.assert_close(model.bn.running_mean, eager.bn.running_mean)
    torch.testing.assert_close(model.bn.running_var, eager.bn.running_var)
    assert not run.copyWeightsToHostIfNeeded()
