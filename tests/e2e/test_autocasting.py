"""PopTorch's automatic casting (tilegraph/autocasting.py): autocast regions, module.autocast(),
Options().Precision.autocastPolicy / autocastEnabled.

Each compiled result is compared with an eager forward that writes the same casts by hand,
so the test checks which ops ran in which dtype (the values differ when a cast is missing or
extra) as well as the output dtypes."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tilegraph
from tilegraph import autocasting

F16_TOL = dict(rtol=2e-3, atol=2e-3)  # a few float16 roundings of values ~1


class ConvMulRelu(nn.Module):
    """PopTorch's own autocast policy test model: conv, then a multiply, then a relu (0.3:
    a product by 0.5 would be exact in float16 and hide the multiply's dtype)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 5)

    def forward(self, x):
        return torch.relu(0.3 * self.conv(x))


def _eager_conv_mul_relu(model, x, conv_dtype, mul_dtype, relu_dtype):
    c = model.conv
    y = F.conv2d(x.to(conv_dtype), c.weight.to(conv_dtype), c.bias.to(conv_dtype))
    y = 0.3 * y.to(mul_dtype)
    return torch.relu(y.to(relu_dtype))


H, Fl = torch.float16, torch.float32


@pytest.mark.parametrize("fp16,fp32,dtypes", [
    ([nn.Conv2d], [torch.mul, torch.relu], (H, Fl, Fl)),
    ([nn.Conv2d, torch.relu], [torch.mul], (H, Fl, H)),
    ([torch.mul], [nn.Conv2d, torch.relu], (Fl, H, Fl)),
    ([], [], (Fl, Fl, Fl))])
def test_policy_lists_choose_each_ops_dtype(fp16, fp32, dtypes):
    """`dtypes`: the dtype conv, mul and relu run in. Module classes (nn.Conv2d) and
    operators (torch.mul, reached here through `0.3 * y`) both count; an empty policy casts
    nothing."""
    torch.manual_seed(0)
    model = ConvMulRelu()
    model.autocast()
    x = torch.randn(2, 1, 12, 12)
    opts = tilegraph.Options()
    opts.Precision.autocastPolicy(autocasting.Policy(fp16, fp32))
    got = tilegraph.inferenceModel(copy.deepcopy(model), opts)(x)
    want = _eager_conv_mul_relu(model, x, *dtypes)
    assert got.dtype == want.dtype == dtypes[2]
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)
    # Any other choice of dtypes for conv and mul gives other numbers (by >= 1e-4 here), so
    # each cast is checked; except that with relu in float16 the product is rounded to
    # float16 either way, and mul's own dtype does not show.
    for conv_dtype in (H, Fl):
        for mul_dtype in (H, Fl):
            if (conv_dtype, mul_dtype) == dtypes[:2] or (dtypes[2] == H and
                                                         conv_dtype == dtypes[0]):
                continue
            other = _eager_conv_mul_relu(model, x, conv_dtype, mul_dtype, dtypes[2])
            assert (got.float() - other.float()).abs().max().item() > 8e-5


def test_a_listed_module_called_through_its_forward_runs_in_its_dtype():
    """PopTorch's autocast policy test calls `self.conv.forward(x)` (no __call__, no module
    hooks): a module class in `fp16` still runs in float16, as PopTorch wraps its forward."""
    class DirectForward(ConvMulRelu):
        def forward(self, x):
            return torch.relu(0.3 * self.conv.forward(x))

    torch.manual_seed(0)
    model = DirectForward()
    model.autocast()
    x = torch.randn(2, 1, 12, 12)
    opts = tilegraph.Options()
    opts.Precision.autocastPolicy(autocasting.Policy([nn.Conv2d], [torch.mul, torch.relu]))
    got = tilegraph.inferenceModel(copy.deepcopy(model), opts)(x)
    want = _eager_conv_mul_relu(model, x, H, Fl, Fl)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)
    assert (got - _eager_conv_mul_relu(model, x, Fl, Fl, Fl)).abs().max().item() > 8e-5


def test_promote_runs_ops_with_mixed_inputs_in_float32():
    class Concat(nn.Module):
        def forward(self, a, b):
            with tilegraph.autocast():
                return torch.cat([a, b]) * 3

    a, b = torch.randn(4).half(), torch.randn(4)
    promote = autocasting.Policy(promote=[torch.cat])
    demote = autocasting.Policy(demote=[torch.cat])
    for policy, dtype in ((promote, torch.float32), (demote, torch.float16)):
        opts = tilegraph.Options()
        opts.Precision.autocastPolicy(policy)
        got = tilegraph.inferenceModel(Concat(), opts)(a, b)
        want = torch.cat([a.to(dtype), b.to(dtype)]) * 3
        assert got.dtype == dtype
        torch.testing.assert_close(got, want)


def test_autocast_enabled_false_turns_every_region_off():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        @tilegraph.autocast()
        def forward(self, x):
            return self.fc(x)

    torch.manual_seed(0)
    net, x = Net(), torch.randn(3, 8)
    on = tilegraph.inferenceModel(copy.deepcopy(net))(x)
    opts = tilegraph.Options()
    opts.Precision.autocastEnabled(False)
    off = tilegraph.inferenceModel(copy.deepcopy(net), opts)(x)
    assert on.dtype == torch.float16 and off.dtype == torch.float32
    torch.testing.assert_close(off, F.linear(x, net.fc.weight, net.fc.bias))
    # With a policy too: no region casts.
    opts = opts.clone()
    opts.Precision.autocastPolicy(autocasting.default)
    assert tilegraph.inferenceModel(copy.deepcopy(net), opts)(x).dtype == torch.float32


def test_marked_module_runs_its_forward_in_a_region():
    """module.autocast() on a submodule: its forward is a region (torch.autocast's lists with
    no policy set), the rest of the model is not."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(8, 4)
            self.outer = nn.Linear(4, 2)

        def forward(self, x):
            return self.inner(x), self.outer(self.inner(x).float())

    torch.manual_seed(0)
    net, x = Net(), torch.randn(3, 8)
    assert net.inner.autocast() is net.inner
    inner, outer = tilegraph.inferenceModel(copy.deepcopy(net))(x)
    with torch.autocast("cpu", dtype=torch.float16):
        want_inner = net.inner(x)
    assert inner.dtype == torch.float16 and outer.dtype == torch.float32
    torch.testing.assert_close(inner, want_inner)
    torch.testing.assert_close(outer, net.outer(want_inner.float()), **F16_TOL)
    # The model is left as it was: no forward patched after the compile.
    assert "forward" not in net.inner.__dict__ and net.inner(x).dtype == torch.float32


def test_training_under_a_policy_keeps_float32_master_weights():
    """Linear layers in float16 by the policy, relu in float32: three SGD steps match an eager
    run of the same casts written by hand, and the weights stay float32."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(8, 16)
            self.fc2 = nn.Linear(16, 4)

        def forward(self, x, y):
            with tilegraph.autocast():
                out = self.fc2(torch.relu(self.fc1(x)))
            return out, F.mse_loss(out.float(), y)

    def eager_forward(net, x, y):
        h = F.linear(x.half(), net.fc1.weight.half(), net.fc1.bias.half())
        out = F.linear(torch.relu(h.float()).half(), net.fc2.weight.half(), net.fc2.bias.half())
        return out, F.mse_loss(out.float(), y)

    torch.manual_seed(0)
    net = Net()
    x, y = torch.randn(6, 8), torch.randn(6, 4)
    opts = tilegraph.Options()
    opts.Precision.autocastPolicy(autocasting.Policy(fp16=[nn.Linear], fp32=[F.relu]))
    model = copy.deepcopy(net)
    trained = tilegraph.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=0.1))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        out, loss = trained(x, y)
        optimizer.zero_grad()
        want_out, want_loss = eager_forward(net, x, y)
        want_loss.backward()
        optimizer.step()
        assert out.dtype == torch.float16
        torch.testing.assert_close(loss, want_loss.reshape(loss.shape), rtol=1e-5, atol=1e-6)
    trained.copyWeightsToHost()
    for (name, got), want in zip(model.named_parameters(), net.parameters()):
        assert got.dtype == torch.float32, name
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_operator_names_cover_methods_operators_and_functional_forms():
    names = [autocasting.op_name(f) for f in (
        torch.mul, torch.Tensor.mul, torch.Tensor.__rmul__, torch.Tensor.__imul__,
        torch.Tensor.mul_, torch.Tensor.__truediv__, F.relu, torch.relu, F.linear)]
    assert names == ["mul"] * 5 + ["div", "relu", "relu", "linear"]
    assert autocasting.op_name(torch.Tensor.__getitem__) is None


@pytest.mark.parametrize("bad", [[3], "mul", [lambda t: t], [nn.Linear(2, 2)]])
def test_policy_refuses_what_is_not_an_operator_or_module_class(bad):
    with pytest.raises(TypeError, match="autocasting.Policy"):
        autocasting.Policy(fp16=bad)
    with pytest.raises(TypeError, match="autocastPolicy"):
        tilegraph.Options().Precision.autocastPolicy([torch.mul])


@pytest.mark.parametrize("behavior,dtype", [
    (tilegraph.HalfFloatCastingBehavior.Default, torch.float32),
    (tilegraph.HalfFloatCastingBehavior.HalfUpcastToFloat, torch.float32),
    (tilegraph.HalfFloatCastingBehavior.FloatDowncastToHalf, torch.float16)])
def test_half_float_casting_of_mixed_operands(behavior, dtype):
    """Default follows torch's promotion (PopTorch 3's dispatcher frontend did too);
    FloatDowncastToHalf runs every op with mixed float16 / float32 operands in float16."""
    class Adder(nn.Module):
        def forward(self, x, y):
            return x + y, x * 0.1 + y

    a, b = torch.randn(5).half(), torch.randn(5)
    opts = tilegraph.Options()
    opts.Precision.halfFloatCasting(behavior)
    for x, y in ((a, b), (b, a)):
        got = tilegraph.inferenceModel(Adder(), opts.clone())(x, y)
        want = Adder()(x, y) if dtype == torch.float32 else Adder()(x.half(), y.half())
        for g, w in zip(got, want):
            assert g.dtype == dtype
            torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize("layer,shape", [(lambda: nn.Linear(10, 20), (3, 10)),
                                         (lambda: nn.Conv1d(4, 5, 2), (1, 4, 4)),
                                         (lambda: nn.ConvTranspose2d(3, 2, 3), (1, 3, 5, 5))],
                         ids=["linear", "conv1d", "conv_transpose2d"])
def test_weights_follow_their_inputs_float_type(layer, shape):
    """PopTorch's half_float_test: float16 activations through float32 weights give float16
    (the weights cast to float16), float32 through float16 weights float32, where eager raises
    a dtype mismatch; the numbers are eager's on the weights so cast."""
    torch.manual_seed(0)
    module, x = layer(), torch.randn(*shape)
    for weights, inputs in ((torch.float32, torch.float16), (torch.float16, torch.float32)):
        m = copy.deepcopy(module).to(weights)
        got = tilegraph.inferenceModel(m)(x.to(inputs))
        assert got.dtype == inputs
        want = copy.deepcopy(m).to(inputs)(x.to(inputs))
        torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)  # an f16 ulp or two
    # Training float16 activations through float32 weights: the weights stay float32
    # (master weights) and get float32 gradients through the cast.
    m = copy.deepcopy(module)
    run = tilegraph.trainingModel(_WithLoss(m), optimizer=torch.optim.SGD(m.parameters(), lr=0.1))
    w0 = m.weight.detach().clone()
    run(x.half())
    assert m.weight.dtype == torch.float32 and not torch.equal(m.weight.detach(), w0)


class _WithLoss(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        out = self.m(x)
        return out, out.float().square().mean()


@pytest.mark.parametrize("setting", ["FloatDowncastToHalf", "policy"])
def test_casting_never_redirects_an_in_place_write(setting):
    """Ops that write an operand (buffer += x, relu(inplace=True), x.mul_()) are not cast,
    under FloatDowncastToHalf (the float32 buffer plus a float16 sum) or a policy listing
    them: the write lands in the tensor the model wrote to, as in eager."""
    class Accumulate(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("total", torch.zeros(4))

        def forward(self, x):
            with tilegraph.autocast():
                h = x * 2
                self.total += h.sum(0)
                F.relu(h, inplace=True)
                h.mul_(3)
            return h, self.total * 1

    x = torch.randn(3, 4).half()
    opts = tilegraph.Options()
    if setting == "policy":
        opts.Precision.autocastPolicy(autocasting.Policy(fp32=[torch.add, torch.relu,
                                                               torch.mul]))
        h = x.float() * 2  # the policy's float32 mul; the in-place ops as written
    else:
        opts.Precision.halfFloatCasting(tilegraph.HalfFloatCastingBehavior.FloatDowncastToHalf)
        h = x * 2
    want = F.relu(h).mul(3), torch.zeros(4) + h.sum(0).float()
    got = tilegraph.inferenceModel(Accumulate(), opts)(x)
    assert [g.dtype for g in got] == [w.dtype for w in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_a_product_of_float16_and_float32_activations_runs_in_float32():
    """HalfUpcastToFloat (PopTorch's default): Graphcore's BERT multiplies a float32 one-hot
    matrix with float16 hidden states in a .half() model; eager raises, the op runs in
    float32 (as eager does with the half operand cast); FloatDowncastToHalf runs it in
    float16."""
    class Gather(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, seq, pos):
            h = self.lin(seq)
            g = torch.matmul(F.one_hot(pos, seq.shape[1]).float(), h)
            return g, tilegraph.identity_loss(g.float().square().mean(), reduction="none")
    torch.manual_seed(0)
    seq, pos = torch.randn(2, 8, 4).half(), torch.randint(0, 8, (2, 3))
    model = Gather().half()
    with pytest.raises(RuntimeError):
        model(seq, pos)  # eager refuses the mixed product
    out, _ = tilegraph.inferenceModel(copy.deepcopy(model))(seq, pos)
    h = model.lin(seq)
    want = torch.matmul(F.one_hot(pos, 8).float(), h.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, want, rtol=1e-3, atol=1e-3)
    opts = tilegraph.Options()
    opts.Precision.halfFloatCasting(tilegraph.HalfFloatCastingBehavior.FloatDowncastToHalf)
    out16, _ = tilegraph.inferenceModel(copy.deepcopy(model), opts)(seq, pos)
    assert out16.dtype == torch.float16
    trained = copy.deepcopy(model)
    tilegraph.trainingModel(trained, optimizer=torch.optim.SGD(trained.parameters(), lr=0.1))(
        seq, pos)
    assert not torch.equal(trained.lin.weight, model.lin.weight)
