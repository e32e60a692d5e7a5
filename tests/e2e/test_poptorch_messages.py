"""PopTorch code that relies on PopTorch's error classes and words: refusals raise
tilegraph.Error (also reachable as poptorch_core.Error) with the phrases PopTorch's own tests
match, and keep tilegraph's explanation of what to write instead. Also the constructor
PopTorch's test helpers call (PoplarExecutor with user_model / poptorch_version)."""
import copy

import pytest
import torch
import torch.nn.functional as F

import tilegraph
import tilegraph.poptorch_core


class _Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def test_for_loop_argument_errors_name_the_object():
    x = torch.ones(2)
    with pytest.raises(ValueError, match=r"\(Object is not list\)"):
        tilegraph.inferenceModel(_Fn(lambda x: tilegraph.for_loop(2, lambda a: a, x)))(x)
    with pytest.raises(ValueError, match=r"\(Object contained in list at index 1 is not "
                                         r"torch.tensor\)"):
        tilegraph.inferenceModel(_Fn(lambda x: tilegraph.for_loop(
            2, lambda a, b: (a, b), [x, 5])))(x)


def test_one_hot_without_num_classes_is_refused_by_name():
    with pytest.raises(tilegraph.poptorch_core.Error,
                       match="OneHot num classes must be specified and must be constant"):
        tilegraph.inferenceModel(_Fn(lambda x: F.one_hot(x)))(torch.tensor([1, 3]))
    out = tilegraph.inferenceModel(_Fn(lambda x: F.one_hot(x, 4)))(torch.tensor([1, 3]))
    assert torch.equal(out, F.one_hot(torch.tensor([1, 3]), 4))


def test_a_returned_mask_selection_is_refused_in_poptorchs_words():
    with pytest.raises(tilegraph.poptorch_core.Error,
                       match="Indexing using boolean or byte tensor masks is unsupported"):
        tilegraph.inferenceModel(_Fn(lambda t, m: t[m]))(torch.randn(2, 3),
                                                        torch.tensor([True, False]))


def test_training_without_a_loss_says_it_found_none():
    with pytest.raises(tilegraph.Error, match="Couldn't find a loss in graph"):
        tilegraph.trainingModel(torch.nn.Linear(3, 3))(torch.randn(2, 3))


def test_detaching_twice_and_a_changed_input_dtype_raise_poptorch_errors():
    model = torch.nn.Linear(3, 3)
    run = tilegraph.trainingModel(_Fn(lambda x: model(x).sum()),
                                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    run(torch.randn(2, 3))
    run.detachFromDevice()
    with pytest.raises(tilegraph.Error, match="Device is not attached"):
        run.detachFromDevice()
    infer = tilegraph.inferenceModel(torch.nn.Identity())
    infer(torch.ones(2))
    with pytest.raises(tilegraph.Error, match="One or more input data types have changed"):
        infer(torch.ones(2, dtype=torch.int64))
    with pytest.raises(TypeError):  # also a TypeError, as tilegraph raised before
        infer(torch.ones(2, dtype=torch.float64))


def test_gradient_accumulation_on_an_inference_model_in_poptorchs_words():
    opts = tilegraph.Options().Training.gradientAccumulation(2)
    with pytest.raises(tilegraph.Error, match=r"You must set poptorch.Options\(\).Training"
                                              r".gradientAccumulation to 1"):
        tilegraph.inferenceModel(torch.nn.Identity(), opts)


def test_training_through_sign_has_a_zero_gradient_there():
    """softshrink is lowered through sign; sign's gradient is zero (as torch's), so a loss
    through it trains like eager."""
    torch.manual_seed(0)

    class Shrink(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):
            y = F.softshrink(self.lin(x)) + torch.sign(x) * 0.1
            return y, tilegraph.identity_loss((y ** 2).sum(), reduction="sum")

    model = Shrink()
    eager = copy.deepcopy(model)
    run = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05))
    opt = torch.optim.SGD(eager.parameters(), lr=0.05)
    x = torch.randn(3, 4)
    for _ in range(3):
        _, loss = run(x)
        opt.zero_grad()
        ref = (eager(x)[0] ** 2).sum()
        ref.backward()
        opt.step()
        torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.lin.weight.detach(), eager.lin.weight.detach(), rtol=1e-5,
                               atol=1e-6)


def test_poptorchs_test_helper_constructor_trains_a_wrapped_model():
    """PopTorch's helpers.trainingModelWithLoss builds PoplarExecutor(model=wrapper, ...,
    user_model=model, poptorch_version=...) around a wrapper whose __call__ (not forward)
    adds the loss: it trains the user's module like eager."""
    class WithLoss(torch.nn.Module):
        def __init__(self, model, loss):
            super().__init__()
            self._real_call, self._model, self._loss = model.__call__, model, loss

        def forward(self, args, loss_inputs):
            raise AssertionError("the executor must call __call__")

        def __call__(self, args, loss_inputs):
            output = self._real_call(args)
            return output, self._loss(output, loss_inputs)

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 5)
    eager = copy.deepcopy(model)
    run = tilegraph.PoplarExecutor(model=WithLoss(copy.copy(model), torch.nn.MSELoss()),
                                   options=None, training=True,
                                   optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                   user_model=model, poptorch_version=tilegraph.__version__)
    opt = torch.optim.SGD(eager.parameters(), lr=0.1)
    x, y = torch.randn(4, 5), torch.randn(4, 5)
    for _ in range(3):
        run(x, y)
        opt.zero_grad()
        F.mse_loss(eager(x), y).backward()
        opt.step()
    torch.testing.assert_close(model.weight.detach(), eager.weight.detach(), rtol=1e-5,
                               atol=1e-6)


def test_poptorch_testing_and_core_helpers():
    """poptorch.testing.allclose compares nested results; poptorch_core names PopTorch's
    helpers its tests call."""
    a = (torch.ones(2), [torch.zeros(3), {"k": torch.tensor(1.0)}])
    assert tilegraph.testing.allclose(a, (torch.ones(2), [torch.zeros(3), {"k": 1.0}]))
    assert not tilegraph.testing.allclose(a, (torch.ones(2), [torch.ones(3), {"k": 1.0}]))
    assert not tilegraph.testing.allclose(torch.ones(2), torch.ones(3))
    tilegraph.testing.assert_allequal(actual=torch.arange(3), expected=torch.arange(3))
    with pytest.raises(AssertionError):
        tilegraph.testing.assert_allclose(actual=torch.ones(2), expected=torch.zeros(2))
    assert tilegraph.poptorch_core.isCompilingWithDispatcher()


def test_a_changed_input_shape_is_a_tilegraph_error():
    """PopTorch's inputs_test::test_shape_change expects its Error (it was a ValueError; it
    is both now, as the changed-dtype error is both Error and TypeError)."""
    class Adder(torch.nn.Module):
        def forward(self, x, y):
            return x + y
    m = tilegraph.inferenceModel(Adder())
    m(torch.tensor([1.]), torch.tensor([2.]))
    with pytest.raises(tilegraph.Error, match=r"input 0: expected shape \[1\], got \[2\]") as e:
        m(torch.tensor([1., 1.]), torch.tensor([2., 2.]))
    assert isinstance(e.value, ValueError)


def test_multiconv_partials_type_enum_and_nested_multiconv():
    """PopTorch 1's MultiConvPartialsType names a partials type; a MultiConv inside another
    is refused in PopTorch's words."""
    mc = tilegraph.MultiConv().partialsTypes([tilegraph.MultiConvPartialsType.Float,
                                              tilegraph.MultiConvPartialsType.Half])
    assert mc.settings["partialsTypes"][1] == tilegraph.MultiConvPartialsType.Half

    class Nested(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)

        def forward(self, x):
            with tilegraph.MultiConv():
                with tilegraph.MultiConv():
                    return self.conv(x)
    with pytest.warns(UserWarning, match="MultiConv"), \
            pytest.raises(tilegraph.Error, match="Nested poptorch.MultiConv is not supported"):
        tilegraph.inferenceModel(Nested())(torch.zeros(1, 1, 8, 8))
    # the failed capture left no block open
    with tilegraph.MultiConv():
        pass
    tilegraph.ops._warned.discard("MultiConv")  # the once-only warning, for other tests


def test_backward_on_an_output_explains_itself():
    """PopTorch's misc_test::test_torch_backward_error: the outputs' backward() raises its
    Error with its message (torch's was "does not require grad")."""
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1, 1)

        def forward(self, x):
            y = self.lin(x)
            return y, tilegraph.identity_loss(y ** 2, reduction="sum")
    out, loss = tilegraph.trainingModel(M())(torch.tensor([5.0]))
    for t in (out, loss):
        with pytest.raises(tilegraph.Error, match=r"backward\(\) cannot be called explicitly on "
                                                  r"outputs of a PopTorch model"):
            t.backward()
    assert float(loss) >= 0 and out.detach().numpy().shape == (1,)


def test_weight_copies_of_a_destroyed_executor_raise():
    """PopTorch's poplar_executor_test::test_explicit_destroy: after destroy(), the weight
    copies raise its Error (they did nothing); a call compiles again and trains on."""
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t):
            o = x + self.bias
            return o, tilegraph.identity_loss((o - t) ** 2, reduction="mean")
    run = tilegraph.trainingModel(M())
    run(torch.ones(3), torch.zeros(3))
    run.destroy()
    for copy_ in (run.copyWeightsToHost, run.copyWeightsToDevice):
        with pytest.raises(tilegraph.Error, match="has not been compiled or has been destroyed"):
            copy_()
    run(torch.ones(3), torch.zeros(3))
    run.copyWeightsToHost()
