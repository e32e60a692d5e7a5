"""Failures keep the module and the engine in agreement and leave the executor usable; bad
indices are caught as eager catches them; Ctrl-C stops a long call at a step boundary;
threads get the sequential result; data-dependent shapes are explained at the user's line."""
import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.nn.functional as F

import tilegraph
from models import MLP, batches

HERE = os.path.dirname(__file__)


def _eager_sgd(model, x, t, steps, batch, lr=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for s in range(steps):
        opt.zero_grad()
        model(x[s * batch:(s + 1) * batch], t[s * batch:(s + 1) * batch])[1].backward()
        opt.step()


def test_a_bad_label_in_step_three_keeps_the_first_two_steps_and_the_executor_usable():
    torch.manual_seed(0)
    model = MLP()
    reference = copy.deepcopy(model)
    x, t = batches("mlp", 4, 4, torch.Generator().manual_seed(0))
    bad = t.clone()
    bad[9] = 7  # step 2 (of 0..3) holds a label >= 5 classes
    trainer = tilegraph.trainingModel(model, tilegraph.Options().deviceIterations(4),
                                      torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError) as info:
        trainer(x, bad)
    message = str(info.value) + "".join(getattr(info.value, "__notes__", []))
    assert "out of range" in message and "models.py" in message, message
    assert "2 of the 4 steps of this call were applied" in message, message
    _eager_sgd(reference, x, t, 2, 4)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    trainer(x, t)  # the executor goes on from the weights the module holds
    _eager_sgd(reference, x, t, 4, 4)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


class _Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x, y):
        return F.cross_entropy(self.fc(x), y)


@pytest.mark.parametrize("optimizer,accumulation", [("sgd", 2), ("adam", 1), ("adam", 2)])
def test_a_failed_step_counts_for_nothing_in_the_optimizers_counters(optimizer, accumulation):
    """A step that fails (here: a label out of range) leaves the optimizer's step counter
    where it was, and with gradient accumulation the optimizer step in progress is discarded
    (its accumulated micro-batches and counters reset): the next calls continue as if the
    failed call never ran (Adam's bias correction, the accumulation's phase), like an eager
    loop whose forward raised before optimizer.step()."""
    torch.manual_seed(0)
    base = _Classifier()
    x, y = torch.randn(4 * accumulation, 4), torch.randint(0, 3, (4 * accumulation,))
    bad = y.clone()
    bad[-1] = 7

    def make():
        model = copy.deepcopy(base)
        make_opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1),
                    "adam": lambda p: torch.optim.Adam(p, lr=0.01)}[optimizer]
        opts = tilegraph.Options()
        opts.Training.gradientAccumulation(accumulation)
        return model, tilegraph.trainingModel(model, opts, make_opt(model.parameters()))

    (failed_model, failed), (clean_model, clean) = make(), make()
    failed(x, y)
    clean(x, y)
    before = copy.deepcopy(failed_model.state_dict())
    with pytest.raises(RuntimeError, match="out of range"):
        failed(x, bad)
    for name, value in failed_model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    for _ in range(3):
        failed(x, y)
        clean(x, y)
    for p, q in zip(failed_model.parameters(), clean_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert not torch.equal(failed_model.fc.weight, before["fc.weight"])  # it did train


class Picker(torch.nn.Module):
    def forward(self, x, i, j):
        return x[i, j] * 2


def test_advanced_indexing_checks_every_index_dimension():
    x = torch.randn(4, 5)
    infer = tilegraph.inferenceModel(Picker())
    i, j = torch.tensor([0, 1, -1]), torch.tensor([4, -5, 2])
    torch.testing.assert_close(infer(x, i, j), Picker()(x, i, j))
    # The folded index 0 * 5 + 7 = 7 is inside x, but 7 is not a valid column: eager raises.
    for i, j in ((torch.tensor([0, 1, 2]), torch.tensor([7, 1, 1])),
                 (torch.tensor([4, 0, 0]), torch.tensor([0, 0, 0])),
                 (torch.tensor([0, 0, -5]), torch.tensor([0, 0, 0]))):
        with pytest.raises(IndexError):
            Picker()(x, i, j)
        with pytest.raises(RuntimeError, match="out of bounds for dimension") as info:
            infer(x, i, j)
        assert "test_failures.py" in str(info.value)
    torch.testing.assert_close(infer(x, i * 0, j * 0), Picker()(x, i * 0, j * 0))


def test_boolean_mask_indexing_names_the_users_line_and_what_to_write():
    """x[mask] reduced compiles (test_masked_selection.py); returned, its size is the
    data's, which a compiled program cannot hold."""
    class Reduced(torch.nn.Module):
        def forward(self, x):
            return x[x > 0].sum()

    x = torch.randn(4, 3)
    torch.testing.assert_close(tilegraph.inferenceModel(Reduced())(x).reshape(()),
                               Reduced()(x))

    class Masked(torch.nn.Module):
        def forward(self, x):
            return x[x > 0] * 2  # the line the message names

    with pytest.raises(NotImplementedError) as info:
        tilegraph.inferenceModel(Masked())(torch.randn(4, 3))
    message = str(info.value)
    assert isinstance(info.value, tilegraph.Error)  # what PopTorch code catches
    assert "boolean-mask indexing" in message and "torch.where" in message, message
    assert "test_failures.py:" in message
    assert "sym_size" not in message and "_assert_scalar" not in message, message


def test_a_data_dependent_model_is_refused_without_torchs_partial_graph_dump(capfd):
    """torch.export prints the partial graph of a data-dependent capture to stderr (240 KB
    for a torchvision detection model) ahead of tilegraph's error: held back, so the error,
    with the user's line, is what the user sees."""
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            n = int((x > 0).sum())  # the line the message names
            return x[:n] * 2

    with pytest.raises(NotImplementedError) as info:
        tilegraph.inferenceModel(DataDependent())(torch.randn(8))
    assert "test_failures.py:" in str(info.value), str(info.value)
    stderr = capfd.readouterr().err
    assert "def forward(self" not in stderr, stderr[:2000]


class _StraightThrough(torch.autograd.Function):
    """Rounds in the forward, passes the gradient through unchanged (a straight-through
    estimator, as quantization-aware training writes it)."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x * 4) / 4

    @staticmethod
    def backward(ctx, grad):
        return grad


class _TrueGradientSquare(torch.autograd.Function):
    tilegraph_differentiate_forward = True  # its backward is the forward's true gradient

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class _Quantized(torch.nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function
        self.w = torch.nn.Parameter(torch.tensor([0.3, 0.7, 1.1]))

    def forward(self, x):
        return (self.function.apply(self.w * x) ** 2).sum()  # the line the message names


def test_a_custom_autograd_functions_backward_is_refused_in_training_not_ignored():
    """torch.export keeps a Function's forward and drops its backward: differentiated, the
    straight-through estimator's gradient would be 0 (round's) where eager's is 2 * w * x *
    x, with no error. Training refuses it and names the class and line; inference runs the
    forward; a class marked as having its forward's true gradient trains as in eager."""
    x = torch.tensor([1.0, 2.0, 3.0])
    model = _Quantized(_StraightThrough)
    with pytest.raises(NotImplementedError) as info:
        tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))(x)
    message = str(info.value)
    assert "_StraightThrough" in message and "test_failures.py:" in message, message
    assert "tilegraph_differentiate_forward" in message, message
    torch.testing.assert_close(tilegraph.inferenceModel(_Quantized(_StraightThrough))(x),
                               _Quantized(_StraightThrough)(x))
    model = _Quantized(_TrueGradientSquare)
    reference = copy.deepcopy(model)
    trainer = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(),
                                                                       lr=0.01))
    eager = torch.optim.SGD(reference.parameters(), lr=0.01)
    for _ in range(3):
        loss = trainer(x)
        eager.zero_grad()
        reference(x).backward()
        eager.step()
    trainer.copyWeightsToHost()
    torch.testing.assert_close(model.w, reference.w)


class _Hooked(torch.nn.Module):
    def __init__(self, reverse=False):
        super().__init__()
        self.fc1, self.fc2, self.reverse = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3), reverse

    def forward(self, x, y):
        h = torch.relu(self.fc1(x))
        if self.reverse and h.requires_grad:
            h.register_hook(lambda g: -g)  # a gradient reversal (domain adaptation)
        out = self.fc2(h)
        return out, F.cross_entropy(out, y)


@pytest.mark.parametrize("hook", ["tensor", "parameter", "module", "module_pre"])
def test_gradient_hooks_are_refused_in_training_not_ignored(hook):
    """torch.export keeps no gradient hook and tilegraph differentiates the forward: a
    hooked model trained differently from eager with no error (a reversed activation
    gradient: weights 0.36 apart after 3 steps). Training refuses it and says where;
    inference runs the model (no gradients to hook)."""
    model = _Hooked(reverse=hook == "tensor")
    if hook == "parameter":
        model.fc2.weight.register_hook(lambda g: g * 10)
    elif hook == "module":
        model.fc2.register_full_backward_hook(lambda m, gi, go: (gi[0] * 0,))
    elif hook == "module_pre":
        model.fc2.register_full_backward_pre_hook(lambda m, go: (go[0] * 3,))
    x, y = torch.randn(4, 4), torch.tensor([0, 1, 2, 0])
    with pytest.raises(NotImplementedError, match="gradient hooks") as info:
        tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5))(x, y)
    if hook == "tensor":
        assert "test_failures.py:" in str(info.value)
    want = model.eval()(x, y)[0]
    torch.testing.assert_close(tilegraph.inferenceModel(model)(x, y)[0], want)


class _ChecksItsData(torch.nn.Module):
    """Validates in Python as Hugging Face's CTC heads do, and with an assert."""

    def forward(self, x, labels):
        if labels is not None and labels.max() >= 5:
            raise ValueError("labels must be < 5")
        assert torch.isfinite(x).all(), "x must be finite"
        return x * 2 + labels.float().sum()


def test_data_checks_that_raise_compile_into_run_time_assertions():
    """`if <tensor condition>: raise` and `assert <tensor condition>` stop torch.export (the
    condition is the data's); the capture answers them with the value that does not raise
    and the program asserts it at run time: good data gives eager's values, data eager
    would refuse fails with the check's line, and the executor stays usable. A branch
    that computes something on a tensor's value is still refused."""
    model = _ChecksItsData()
    run = tilegraph.inferenceModel(model)
    x, labels = torch.randn(3), torch.tensor([1, 4])
    torch.testing.assert_close(run(x, labels), model(x, labels))
    with pytest.raises(ValueError, match=r"test_failures.py:\d+ failed \(if labels is not None"):
        run(x, torch.tensor([1, 7]))
    with pytest.raises(ValueError, match=r"failed \(assert torch.isfinite"):
        run(torch.tensor([1.0, float("nan"), 0.0]), labels)
    torch.testing.assert_close(run(-x, labels), model(-x, labels))

    class Branches(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # computes either way: not a check
                return x * 2
            return -x

    with pytest.raises(NotImplementedError, match="decides on a tensor's value"):
        tilegraph.inferenceModel(Branches())(torch.randn(3))


class _SortedIndex(torch.nn.Module):
    """torch_geometric's aggregation check: `if index is not None and not <sorted>: raise`."""

    def forward(self, x, index):
        if index is not None and not torch.all(index[:-1] <= index[1:]):
            raise ValueError("index must be sorted")
        return x * 2


def test_a_negated_check_behind_a_python_condition_is_a_run_time_assertion():
    run = tilegraph.inferenceModel(_SortedIndex())
    torch.testing.assert_close(run(torch.ones(3), torch.tensor([0, 1, 2])), torch.full((3,), 2.0))
    with pytest.raises(ValueError, match=r"test_failures.py:\d+ failed \(if index is not None"):
        run(torch.ones(3), torch.tensor([2, 1, 2]))


class _ChecksWithItem(torch.nn.Module):
    """ProphetNet's label check: the condition read as a Python bool with .item()."""

    def forward(self, ids):
        assert torch.all(ids >= 0).item(), "Verify that ids are positive"
        return ids * 2


def test_a_check_read_with_item_is_a_run_time_assertion():
    run = tilegraph.inferenceModel(_ChecksWithItem())
    torch.testing.assert_close(run(torch.tensor([0, 3])), torch.tensor([0, 6]))
    with pytest.raises(ValueError, match=r"test_failures.py:\d+ failed \(assert torch.all"):
        run(torch.tensor([1, -2]))


def test_a_python_value_computed_from_data_is_refused_at_the_users_line():
    class Equal(torch.nn.Module):
        def forward(self, x, e):
            if torch.equal(e[0], e[1]):  # a Python bool of the data
                return x
            return x * 2

    with pytest.raises(NotImplementedError, match=r"test_failures.py:\d+: aten.equal"):
        tilegraph.inferenceModel(Equal())(torch.randn(3), torch.randint(0, 3, (2, 5)))


def test_a_library_file_is_a_users_file_and_generated_code_is_not():
    """The location in a message is the innermost frame outside torch and tilegraph: a
    torchvision file counts (its path starts like torch's, ".../torch" + "vision"), code
    torch generated at run time ("<string>") does not."""
    from tilegraph import _capture
    site = os.path.dirname(os.path.dirname(torch.__file__))
    assert _capture._is_user_file(os.path.join(site, "torchvision", "ops", "boxes.py"))
    assert not _capture._is_user_file(os.path.join(site, "torch", "nn", "functional.py"))
    assert not _capture._is_user_file("<string>")
    assert not _capture._is_user_file(_capture.__file__)


def test_two_threads_calling_one_training_model_give_the_sequential_result():
    x, t = batches("mlp", 1, 8, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    sequential, threaded = MLP(), MLP()
    threaded.load_state_dict(sequential.state_dict())
    opts = tilegraph.Options()
    seq = tilegraph.trainingModel(sequential, opts, torch.optim.SGD(sequential.parameters(), lr=0.05))
    for _ in range(20):
        seq(x, t)
    par = tilegraph.trainingModel(threaded, opts, torch.optim.SGD(threaded.parameters(), lr=0.05))
    count = tilegraph.compilation_count()
    errors = []

    def worker():
        try:
            for _ in range(10):  # the first calls of both threads race to compile
                par(x, t)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert tilegraph.compilation_count() == count + 1
    # The same batch every call: 20 SGD steps in any order are the same 20 steps.
    for p, q in zip(threaded.parameters(), sequential.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_training_and_an_inference_model_in_two_threads():
    torch.manual_seed(0)
    model = MLP()
    x, t = batches("mlp", 1, 8, torch.Generator().manual_seed(0))
    trainer = tilegraph.trainingModel(model, None, torch.optim.SGD(model.parameters(), lr=0.05))
    infer = tilegraph.inferenceModel(model)
    outputs, errors = [], []

    def train():
        try:
            for _ in range(15):
                trainer(x, t)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    def serve():
        try:
            for _ in range(15):
                outputs.append(infer(x, t)[0])
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=train), threading.Thread(target=serve)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert all(torch.isfinite(o).all() for o in outputs)
    torch.testing.assert_close(infer(x, t)[0], model(x, t)[0])  # after both: the trained weights


def test_ctrl_c_stops_a_long_call_at_a_step_boundary_with_the_module_in_sync():
    child = subprocess.Popen([sys.executable, os.path.join(HERE, "interrupt_child.py")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline()  # "running": compiled, the long call has started
    assert line.strip() == "running", line + child.stderr.read()
    time.sleep(1.0)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"  # stdout: did it crash at exit?
    report = json.loads(out.strip().splitlines()[-1])
    assert report["interrupted"], report
    assert 0 < report["steps_done"] < report["steps"], report
    assert report["module_matches_engine"], report
    assert report["note"].startswith(f"tilegraph: {report['steps_done']} of the"), report


def test_an_output_of_an_unknown_class_is_explained():
    class Box:
        def __init__(self, tensor):
            self.tensor = tensor

    class Boxed(torch.nn.Module):
        def forward(self, x):
            return Box(x * 2)

    with pytest.raises(NotImplementedError, match="cannot take apart into tensors.*Box.*"
                                                  "register_pytree_node"):
        tilegraph.inferenceModel(Boxed())(torch.ones(2))


def test_random_numbers_from_an_explicit_generator_are_refused_at_the_users_line():
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return torch.normal(x, x.abs(), generator=torch.Generator())

    with pytest.raises(tilegraph.Error, match=r"test_failures.py:\d+: random numbers from an "
                                              r"explicit torch.Generator"):
        tilegraph.inferenceModel(Noisy())(torch.ones(3))


class _UpdatesItsFirstInput(torch.nn.Module):
    def forward(self, a, b):
        a.mul_(2)
        return a + b


def test_an_input_updated_in_place_through_an_alias_is_refused_and_the_executor_recovers():
    """`ex(t, t)` (or overlapping views) with a forward that updates its first input in
    place: eager sees the update through both names ([0, 4, 8, 12]); the program reads each
    input as given and returned [0, 3, 6, 9], silently (and a first call like that failed
    inside torch.export). Refused with what to do, the caller's tensors untouched; separate
    tensors, and disjoint views of one tensor, run as in eager."""
    ex = tilegraph.inferenceModel(_UpdatesItsFirstInput())
    t = torch.arange(6.0)
    with pytest.raises(ValueError, match="shares memory with input 1"):
        ex(t[:4], t[2:])
    assert t.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="shares memory"):
        ex(t[:4], t[:4])
    a, b = torch.arange(4.0), torch.ones(4)
    want_a, want_b = a.clone(), b.clone()
    want = _UpdatesItsFirstInput()(want_a, want_b)
    torch.testing.assert_close(ex(a, b), want)
    torch.testing.assert_close(a, want_a)  # the update comes back to the caller's tensor
    u = torch.arange(8.0)
    want_u = u.clone()
    want = _UpdatesItsFirstInput()(want_u[:4], want_u[4:])
    torch.testing.assert_close(ex(u[:4], u[4:]), want)
    torch.testing.assert_close(u, want_u)


class _ClipsItsWeights(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        with torch.no_grad():
            self.fc.weight.clamp_(-0.1, 0.1)  # WGAN's weight clipping
        return self.fc(x)


def test_a_parameter_updated_in_the_forward_is_refused_naming_it():
    with pytest.raises(NotImplementedError, match="updates parameter 'fc.weight' in place"):
        tilegraph.inferenceModel(_ClipsItsWeights())(torch.randn(2, 4))


def test_an_index_out_of_range_is_an_index_error_as_in_eager():
    """Eager raises IndexError for an embedding index or a loss target out of range; code
    that catches it must see one (it is also PopTorch's RecoverableError, and the executor
    stays usable)."""
    emb = torch.nn.Embedding(5, 3)
    ex = tilegraph.inferenceModel(emb)
    with pytest.raises(IndexError, match="index 7 out of range") as info:
        ex(torch.tensor([1, 7]))
    assert isinstance(info.value, tilegraph.RecoverableError)
    ids = torch.tensor([0, 4])
    torch.testing.assert_close(ex(ids), emb(ids))


def test_float64_input_into_float32_weights_is_a_clear_error():
    """numpy data (float64) fed to a float32 model: eager raises (mat1 and mat2 must have
    the same dtype); tilegraph too, a tilegraph.Error that is a RuntimeError as eager's (and
    a ValueError, as the core's checks), naming the op and saying what to cast."""
    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x).relu()
    model = tilegraph.inferenceModel(Head())
    with pytest.raises(RuntimeError, match=r"mix float32 and float64.*x\.float\(\)") as info:
        model(torch.randn(3, 4, dtype=torch.float64))
    assert isinstance(info.value, tilegraph.Error) and isinstance(info.value, ValueError)
    assert "test_failures.py" in str(info.value)
    assert model(torch.randn(3, 4)).shape == (3, 2)  # the float32 call still compiles
