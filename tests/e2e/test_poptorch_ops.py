"""PopTorch's functions inside a forward (poptorch.for_loop, cond, dynamic_slice, ...), the
executor's API beyond calls (attribute pass-through, pickling, tensor names, perf counters,
loadExecutable, compile hooks), and custom argument types. Each compiled result is checked
against the same function run eagerly or written out in plain PyTorch."""
import copy
import io
import pickle

import pytest
import torch
import torch.nn as nn

import tilegraph
from tilegraph import enums


def _compiled(fn, *args):
    class Wrap(nn.Module):
        def forward(self, *a):
            return fn(*a)
    return tilegraph.inferenceModel(Wrap())(*args)


def test_for_loop_runs_its_body_count_times():
    def body(x, acc):
        return x * 0.5, acc + x

    def model(x):
        x, acc = tilegraph.for_loop(4, body, [x, torch.zeros_like(x)])
        return x, acc

    x = torch.randn(3, 2)
    got = _compiled(model, x)
    ref = model(x)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(ref[1], x * (1 + 0.5 + 0.25 + 0.125))
    with pytest.raises(tilegraph.Error, match="returned 1 tensor"):
        tilegraph.for_loop(2, lambda a, b: a, [x, x])
    with pytest.raises(ValueError, match="list of tensors"):
        tilegraph.for_loop(2, lambda a: a, x)


def test_cond_selects_the_branch_at_run_time():
    def model(x, flag):
        return tilegraph.cond(flag, lambda a: a * 2, [x], lambda a: a - 1, [x])[0]

    class Wrap(nn.Module):
        def forward(self, x, flag):
            return model(x, flag)

    run = tilegraph.inferenceModel(Wrap())
    x = torch.randn(4)
    torch.testing.assert_close(run(x, torch.tensor([True])), x * 2)
    torch.testing.assert_close(run(x, torch.tensor([False])), x - 1)  # same program
    assert model(x, torch.tensor([False])).equal(x - 1)  # eager: the Python branch


def test_dynamic_slice_and_update_at_a_tensor_offset():
    class Window(nn.Module):
        def forward(self, x, start, patch):
            part = tilegraph.dynamic_slice(x, 1, start, 3, 1)
            # size is the span (PopTorch's at::slice(start, start + size, step))
            strided = tilegraph.dynamic_slice(x, 1, start, 3, 2)
            return part, strided, tilegraph.dynamic_update(x, patch, 1, start, 2)

    run = tilegraph.inferenceModel(Window())
    x = torch.arange(24.0).reshape(3, 8)
    patch = -torch.ones(3, 2)
    for s in (0, 2, 5):
        part, strided, updated = run(x, torch.tensor([s]), patch)
        torch.testing.assert_close(part, x[:, s:s + 3])
        torch.testing.assert_close(strided, x[:, s:s + 3:2])
        expected = x.clone()
        expected[:, s:s + 2] = patch
        torch.testing.assert_close(updated, expected)


def test_dynamic_slice_of_no_or_negative_span_says_so():
    x, start = torch.arange(8.0), torch.tensor([1])
    with pytest.raises(tilegraph.Error, match="start and end of a slice must be different"):
        tilegraph.dynamic_slice(x, 0, start, 0, 1)
    with pytest.raises(tilegraph.Error, match="end less than the start is not supported"):
        tilegraph.dynamic_slice(x, 0, start, -2, 1)


def test_serialized_matmul_overlap_and_print_pass_values_through():
    a, b = torch.randn(4, 6), torch.randn(6, 5)

    def model(a, b):
        a = tilegraph.set_overlap_for_input(a, enums.OverlapMode.OverlapAccumulationLoop)
        y = tilegraph.serializedMatMul(a, b, enums.MatMulSerializationMode.OutputChannels, 2)
        y = tilegraph.ipu_print_tensor(y, "y")
        return tilegraph.set_overlap_for_output(y, enums.OverlapMode.NoOverlap)

    with pytest.warns(UserWarning):
        got = _compiled(model, a, b)
    torch.testing.assert_close(got, a @ b)
    with pytest.raises(ValueError, match="OverlapMode"):
        tilegraph.set_overlap_for_input(a, "overlap")


def test_cpu_multiconv_namescope_and_is_running_on_ipu():
    seen = []

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList([nn.Conv2d(2, 3, 3, padding=1) for _ in range(2)])
            self.host = tilegraph.CPU(lambda t: t.relu(), "relu_on_host")

        def forward(self, x):
            seen.append(tilegraph.isRunningOnIpu())
            with tilegraph.MultiConv().planType(enums.MultiConvPlanType.Serial), \
                    tilegraph.NameScope("body"):
                y = self.convs[0](x) + self.convs[1](x)
            return self.host(y)

    net = Net()
    x = torch.randn(2, 2, 5, 5)
    with pytest.warns(UserWarning, match="MultiConv"):
        got = tilegraph.inferenceModel(net)(x)
    ref = net(x)
    torch.testing.assert_close(got, ref)
    assert seen[0] is True and seen[-1] is False  # compiled, then eager
    with pytest.raises(ValueError, match="availableMemoryProportions"):
        tilegraph.MultiConv().availableMemoryProportions(1.5)
    with pytest.raises(ValueError, match="availableMemoryProportions"):
        tilegraph.MultiConv().availableMemoryProportions((0.5, 1.5))
    per_conv = tilegraph.MultiConv().availableMemoryProportions((0.8, 0.7))  # list or tuple
    assert per_conv.settings["availableMemoryProportions"] == (0.8, 0.7)


def test_identity_loss_in_inference_is_a_reduction_as_often_as_the_model_calls_it():
    """Only a training model has one loss; an inference model (PopTorch's own tests call
    identity_loss inside a poptorch.CPU function too) may reduce with it any number of times."""

    class TwoReductions(nn.Module):
        def forward(self, x):
            return (tilegraph.identity_loss(x, reduction="sum"),
                    tilegraph.identity_loss(x * 2, reduction="mean"))

    x = torch.tensor([1.0, 2.0, 4.0])
    total, mean = tilegraph.inferenceModel(TwoReductions())(x)
    torch.testing.assert_close(total, x.sum())
    torch.testing.assert_close(mean, (x * 2).mean())


def test_ipu_software_ops_raise_saying_why():
    with pytest.raises(tilegraph.Error, match="Poplar code"):
        tilegraph.custom_op([torch.ones(2)], "LeakyRelu", "custom.ops", 1, [torch.ones(2)])


class Pair:
    """A user type holding two tensors and a name (PopTorch's ICustomArgParser example)."""

    def __init__(self, a, b, name):
        self.a, self.b, self.name = a, b, name


class PairParser(tilegraph.ICustomArgParser):
    def yieldTensors(self, struct):
        yield struct.a
        yield struct.b

    def reconstruct(self, original_structure, tensor_iterator):
        return Pair(next(tensor_iterator), next(tensor_iterator), original_structure.name)


def test_custom_argument_types_in_and_out():
    tilegraph.registerCustomArgParser(Pair, PairParser())

    class Swap(nn.Module):
        def forward(self, p):
            return Pair(p.b * 2, p.a + 1, p.name)

    p = Pair(torch.randn(3), torch.randn(3), "x")
    out = tilegraph.inferenceModel(Swap())(p)
    assert isinstance(out, Pair) and out.name == "x"
    torch.testing.assert_close(out.a, p.b * 2)
    torch.testing.assert_close(out.b, p.a + 1)


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x):
        return self.linear(x).sum()


def test_attributes_pass_through_to_the_module_and_hold_trained_weights():
    model = Small()
    run = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5))
    before = run.linear.weight.detach().clone()
    assert run.linear is model.linear
    assert [n for n, _ in run.named_parameters()] == ["linear.weight", "linear.bias"]
    run(torch.ones(2, 3))
    assert not torch.equal(run.linear.weight.detach(), before)  # trained, seen through run
    assert torch.equal(run.state_dict()["linear.weight"], model.linear.weight.detach())
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        run.nonexistent


def test_pickled_executors_recompile_and_agree(tmp_path):
    model = Small()
    run = tilegraph.inferenceModel(model)
    x = torch.randn(4, 3)
    expected = run(x)
    buffer = io.BytesIO()
    torch.save(run, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    assert isinstance(again, tilegraph.PoplarExecutor) and not again.isCompiled()
    torch.testing.assert_close(again(x), expected)
    assert pickle.loads(pickle.dumps(run)).options.device_iterations == 1


def test_tensor_names_perf_counters_latency_and_cycle_count():
    run = tilegraph.inferenceModel(Small(), tilegraph.Options().deviceIterations(2))
    with pytest.raises(tilegraph.Error, match="not been compiled"):
        run.getTensorNames()
    run(torch.randn(4, 3))
    run(torch.randn(4, 3))
    names = run.getTensorNames()
    assert "input0" in names and "linear.weight" in names
    counters = run.getPerfCounters()
    assert set(counters) == {"input", "input_complete", "output", "output_complete"}
    assert len(counters["input"]) == 1 and len(counters["input"][0]) == 4  # 2 calls x 2 steps
    for i in range(4):
        times = [counters[k][0][i] for k in ("input", "input_complete", "output",
                                             "output_complete")]
        assert times == sorted(times)
    low, high, mean = run.getLatency()
    assert 0 < low <= mean <= high
    with pytest.raises(tilegraph.Error, match="logCycleCount"):
        run.cycleCount()
    counting = tilegraph.inferenceModel(Small(), tilegraph.Options().logCycleCount(True))
    counting(torch.randn(2, 3))
    with pytest.raises(tilegraph.Error, match="no IPU cycle counter"):
        counting.cycleCount()


def test_load_executable_uses_the_exported_program(tmp_path):
    model = Small()
    path = str(tmp_path / "small.tg")
    x = torch.randn(4, 3)
    tilegraph.inferenceModel(model).compileAndExport(path, x, export_model=False)  # PopTorch's
    other = Small()  # other weights: loadExecutable runs the file's program with these
    assert not torch.equal(other(x), model(x))
    fresh = tilegraph.inferenceModel(other)
    before = tilegraph.compilation_count()
    fresh.loadExecutable(path)
    assert fresh.isCompiled()
    torch.testing.assert_close(fresh(x), other(x))
    other = tilegraph.inferenceModel(model, tilegraph.Options().deviceIterations(2))
    with pytest.raises(tilegraph.Error, match="other options.*device_iterations"):
        other.loadExecutable(path)
    assert tilegraph.compilation_count() == before + 1  # the loaded program, compiled once


def test_compile_hooks_run_around_every_capture():
    calls = []
    pre = tilegraph.registerPreCompileHook(lambda: calls.append("pre"))
    post = tilegraph.registerPostCompileHook(lambda: calls.append("post"))
    try:
        tilegraph.inferenceModel(Small())(torch.randn(2, 3))
    finally:
        pre.remove()
        post.remove()
    assert calls == ["pre", "post"]
    tilegraph.inferenceModel(Small())(torch.randn(2, 3))
    assert calls == ["pre", "post"]  # removed
    with pytest.raises(RuntimeError, match="callable"):
        tilegraph.registerPreCompileHook(3)


def test_wrapping_an_executor_wraps_its_module():
    model = Small()
    train = tilegraph.trainingModel(model)
    infer = tilegraph.inferenceModel(train)
    assert infer.model is model


def test_anchored_tensors_return_gradients_and_weights():
    torch.manual_seed(0)
    model = Small()
    reference = __import__("copy").deepcopy(model)
    opts = tilegraph.Options()
    opts.anchorTensor("grad_bias", "Gradient___linear.bias")
    opts.anchorTensor("weight", "linear.weight")
    opts.anchorTensor("updated", "UpdatedVar___linear.weight")  # PopART's name for it
    run = tilegraph.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=0.1))
    x = torch.randn(4, 3)
    run(x)
    reference(x).backward()
    torch.testing.assert_close(run.getAnchoredTensor("grad_bias"), reference.linear.bias.grad)
    # A parameter's name anchors its value after the step (what the module now holds).
    torch.testing.assert_close(run.getAnchoredTensor("weight"), model.linear.weight.detach())
    torch.testing.assert_close(run.getAnchoredTensor("updated"), model.linear.weight.detach())
    with pytest.raises(tilegraph.Error, match="no tensor anchored as 'nope'"):
        run.getAnchoredTensor("nope")
    bad = tilegraph.Options()
    bad.anchorTensor("g", "Gradient___missing.weight")
    with pytest.raises(tilegraph.Error, match="not a trained parameter"):
        tilegraph.trainingModel(Small(), bad)(x)


def test_poptorch_tensor_names_list_and_anchor_gradients_updates_and_learning_rates(capfd):
    """PopTorch's tensor names: getTensorNames() lists Gradient___ / UpdatedVar___ names with
    PopTorch's "model." prefix and the learning rates (scaledLearningRate___group<i>), asserts
    (AssertionError) before compiling; anchors take the prefixed names; with DEBUG logging
    each anchor is logged as PopTorch's log shows it (name, mode / period)."""
    model = Small()
    reference = __import__("copy").deepcopy(model)
    eager = __import__("copy").deepcopy(model)
    run = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(AssertionError):
        run.getTensorNames()
    x = torch.randn(4, 3)
    run(x)
    names = run.getTensorNames()
    assert {"Gradient___model.linear.bias", "UpdatedVar___model.linear.weight",
            "scaledLearningRate___group0"} <= set(names)
    opts = tilegraph.Options().outputMode(tilegraph.OutputMode.All)
    opts.anchorTensor("grad_bias", "Gradient___model.linear.bias", tilegraph.OutputMode.EveryN, 4)
    opts.anchorTensor("updated", "UpdatedVar___model.linear.weight")
    opts.anchorTensor("lr", "scaledLearningRate___group0")
    tilegraph.setLogLevel("DEBUG")
    try:
        again = tilegraph.trainingModel(reference, opts, torch.optim.SGD(
            reference.parameters(), lr=0.1))
        again(x)
    finally:
        tilegraph.setLogLevel("WARN")
    assert "Gradient___model.linear.bias EVERYN/4" in capfd.readouterr().err
    eager(x).backward()
    torch.testing.assert_close(again.getAnchoredTensor("grad_bias"), eager.linear.bias.grad)
    torch.testing.assert_close(again.getAnchoredTensor("updated"), model.linear.weight.detach())
    assert float(again.getAnchoredTensor("lr")) == pytest.approx(0.1)


def test_train_then_infer_shares_weights_copying_only_when_they_changed():
    """PopTorch's documented pattern: a training and an inference model of one module; the
    inference model sees the trained weights, and they are copied only when changed."""
    torch.manual_seed(0)
    model = Small()
    train = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(),
                                                                    lr=0.1))
    infer = tilegraph.inferenceModel(model)
    x = torch.randn(4, 3)
    train(x)
    assert train.weight_copies["to_host"] == 1
    torch.testing.assert_close(infer(x), model(x))  # compiled with trained weights
    copies = infer.weight_copies["to_device"]
    infer(x)
    infer(x)
    assert infer.weight_copies["to_device"] == copies  # nothing changed: nothing copied
    train(x)
    expected = model(x)
    torch.testing.assert_close(infer(x), expected)  # trained again: copied once
    assert infer.weight_copies["to_device"] == copies + 1
    with torch.no_grad():
        model.linear.bias.add_(1.0)  # edited by hand
    torch.testing.assert_close(infer(x), model(x))
    assert infer.weight_copies["to_device"] == copies + 2


def test_training_calls_write_the_engine_weights_into_the_module_tensors():
    """After each training call the module's tensors hold the engine's weights: contiguous
    ones are written in place by one copy (read_variable_into), others (a transposed
    parameter here) the slow way; either way the version counters move like copy_'s."""
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 4)
            self.wt = nn.Parameter(torch.randn(5, 4).t())  # non-contiguous

        def forward(self, x):
            return (self.linear(x) @ self.wt).pow(2).mean()

    torch.manual_seed(0)
    model = Odd()
    assert not model.wt.is_contiguous()
    reference = copy.deepcopy(model)
    train = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    x = torch.randn(2, 3)
    for _ in range(2):
        versions = {n: p._version for n, p in model.named_parameters()}
        train(x)
        opt.zero_grad()
        reference(x).backward()
        opt.step()
        for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
            assert p._version > versions[name], name
    assert train.weight_copies["to_host"] == 2

def test_rng_state_replays_the_random_stream():
    class Noisy(nn.Module):  # (dropout would not do: an inference program runs it as identity)
        def forward(self, x):
            return x * torch.rand_like(x)

    run = tilegraph.inferenceModel(Noisy(), tilegraph.Options().randomSeed(3))
    x = torch.ones(64)
    run(x)
    state = run.rng_state
    first = run(x)
    second = run(x)
    assert not torch.equal(first, second)  # the stream moves on
    run.rng_state = state
    torch.testing.assert_close(run(x), first)  # and replays from a saved state
    assert run.rng_state[0] == 3
    with pytest.raises(ValueError, match=r"\[seed, step\]"):
        run.rng_state = 5


def test_updatable_named_buffers_are_written_alone():
    """optimum-graphcore's pattern: an encoder output held in a buffer of the decoder,
    refreshed with copyNamedBuffersToDevice between calls."""
    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.register_buffer("memory", torch.zeros(2, 4))

        def forward(self, x):
            return self.fc(x) + self.memory

    model = Decoder()
    run = tilegraph.inferenceModel(model, tilegraph.Options().updatableNamedBuffers(["memory"]))
    x = torch.randn(2, 4)
    run(x)
    copies = run.weight_copies["to_device"]
    model.memory.copy_(torch.ones(2, 4))
    run.copyNamedBuffersToDevice()
    torch.testing.assert_close(run(x), model(x))
    assert run.weight_copies["to_device"] == copies  # the buffer alone, no model copy
    with pytest.raises(tilegraph.Error, match="not buffers"):
        tilegraph.inferenceModel(model, tilegraph.Options().updatableNamedBuffers(
            ["nope"])).compile(x).copyNamedBuffersToDevice()


def test_each_anchor_comes_back_with_its_own_output_mode():
    """anchorTensor(..., output_mode, output_return_period): per anchor All (every step),
    Final, EveryN (every n-th step) and Sum (the steps added), next to the executor's mode for
    the model's outputs and for anchors that name none; compared with eager's per-step
    gradients and weights over 4 steps of one call."""
    torch.manual_seed(0)
    model = Small()
    reference = copy.deepcopy(model)
    opts = tilegraph.Options().deviceIterations(4)  # training: the executor's mode is Final
    opts.anchorTensor("grads", "Gradient___linear.bias", tilegraph.OutputMode.All)
    opts.anchorTensor("grad_sum", "Gradient___linear.bias", tilegraph.OutputMode.Sum)
    opts.anchorTensor("every2", "Gradient___linear.weight", tilegraph.OutputMode.EveryN, 2)
    opts.anchorTensor("weight", "linear.weight")  # the executor's mode: the last step's
    run = tilegraph.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=0.1))
    x = torch.randn(4 * 5, 3)
    loss = run(x)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    bias_grads, weight_grads, losses = [], [], []
    for step in x.split(5):
        optimizer.zero_grad()
        out = reference(step)
        out.backward()
        losses.append(out.detach())
        bias_grads.append(reference.linear.bias.grad.clone())
        weight_grads.append(reference.linear.weight.grad.clone())
        optimizer.step()
    torch.testing.assert_close(loss, losses[-1])
    torch.testing.assert_close(run.getAnchoredTensor("grads"), torch.cat(bias_grads))
    torch.testing.assert_close(run.getAnchoredTensor("grad_sum"),
                               bias_grads[0] + bias_grads[1] + bias_grads[2] + bias_grads[3])
    torch.testing.assert_close(run.getAnchoredTensor("every2"),
                               torch.cat([weight_grads[1], weight_grads[3]]))
    torch.testing.assert_close(run.getAnchoredTensor("weight"), reference.linear.weight.detach())
    # Inference with the executor in All: a Final anchor is the last step's value alone.
    infer_opts = tilegraph.Options().deviceIterations(4)
    infer_opts.anchorTensor("last_weight", "linear.weight", tilegraph.OutputMode.Final)
    infer = tilegraph.inferenceModel(Small(), infer_opts)
    sums = infer(x)
    assert sums.shape == (4,)
    assert infer.getAnchoredTensor("last_weight").shape == (2, 3)
    bad = tilegraph.Options().deviceIterations(3)
    bad.anchorTensor("g", "Gradient___linear.bias", tilegraph.OutputMode.EveryN, 2)
    other = Small()
    with pytest.raises(ValueError, match="must be a multiple of its period"):
        tilegraph.trainingModel(other, bad, torch.optim.SGD(other.parameters(), lr=0.1))(
            torch.randn(6, 3))
    with pytest.raises(ValueError, match="output_return_period must be >= 1"):
        tilegraph.Options().anchorTensor("g", "linear.weight", tilegraph.OutputMode.EveryN, 0)


def test_slices_with_tensor_bounds_become_dynamic_slices():
    """t[s:s + 4] with s a tensor (an input, or computed from constants in the forward):
    the span is the constant 4, the start is read at run time (other starts, same program);
    training through it matches eager. A zero, negative or non-constant span is refused in
    PopTorch's words."""
    class Window(nn.Module):
        def forward(self, t, s):
            return t[s:s + 4], t[s - 2:s + 1:2, s + 1:s + 2] * 2

    run = tilegraph.inferenceModel(Window())
    t = torch.arange(64.0).reshape(8, 8)
    for start in (2, 4):
        s = torch.tensor([start])
        for got, want in zip(run(t, s), Window()(t, s)):
            torch.testing.assert_close(got, want)

    class FromConstants(nn.Module):
        def forward(self, x):
            s = torch.sum(torch.tensor([1, 2, 3])) // 3 - 2  # a 0-d tensor, 0
            return x[s:s + 3]

    torch.testing.assert_close(tilegraph.inferenceModel(FromConstants())(t[0]), t[0, :3])

    class Trained(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x, s):
            y = self.lin(x)[:, s:s + 3]
            return y, tilegraph.identity_loss((y ** 2).sum(), reduction="sum")

    torch.manual_seed(0)
    model = Trained()
    eager = __import__("copy").deepcopy(model)
    x, s = torch.randn(2, 8), torch.tensor([3])
    tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))(x, s)
    opt = torch.optim.SGD(eager.parameters(), lr=0.1)
    eager(x, s)[1].backward()
    opt.step()
    torch.testing.assert_close(model.lin.weight.detach(), eager.lin.weight.detach(),
                               rtol=1e-5, atol=1e-6)
    for body, message in ((lambda t, s: t[s:s], "start and end of a slice must be different"),
                          (lambda t, s: t[s + 2:s], "end less than the start"),
                          (lambda t, s: t[s:s * 2], "must be a constant for each execution")):
        with pytest.raises(tilegraph.Error, match=message):
            _compiled(body, t[0], torch.tensor([2]))


def test_torch_ops_poptorch_calls_from_model_code_have_no_effect():
    """torch.ops.poptorch.set_attribute / clear_attribute / begin_autocast (Hugging Face
    optimum-graphcore's fx transformations insert them around layers) and nop: defined, no
    effect in eager or compiled programs; training through them matches eager."""
    class Outlined(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            torch.ops.poptorch.set_attribute("__outline", "layer", "lin")
            torch.ops.poptorch.begin_autocast()
            y = torch.ops.poptorch.nop(self.lin(x))
            torch.ops.poptorch.restore_autocast()
            torch.ops.poptorch.clear_attribute("__outline", "layer")
            return y, tilegraph.identity_loss((y ** 2).sum(), reduction="sum")

    torch.manual_seed(0)
    model = Outlined()
    eager = __import__("copy").deepcopy(model)
    x = torch.randn(2, 4)
    run = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    _, loss = run(x)
    opt = torch.optim.SGD(eager.parameters(), lr=0.1)
    _, ref = eager(x)
    ref.backward()
    opt.step()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.lin.weight.detach(), eager.lin.weight.detach(),
                               rtol=1e-5, atol=1e-6)


def test_slice_bounds_cast_to_another_integer_type_are_one_bound():
    """PopTorch's slice_test::test_dynamic_slice_two_dims: `t[e.to(torch.int32):
    e.to(torch.int32) + 1]` casts the same index twice; the two casts are one bound, so the
    span is the constant 1 (it was refused as not provably constant)."""
    class M(torch.nn.Module):
        def forward(self, t, e):
            return t[e.to(torch.int32):e.to(torch.int32) + 1]
    t = torch.arange(16.).reshape(2, 8)
    run = tilegraph.inferenceModel(M())
    for i in (1, 0):
        e = torch.tensor([i])
        torch.testing.assert_close(run(t, e), M()(t, e))


def test_slice_bounds_computed_from_the_forwards_constants_are_static():
    """PopTorch's slice_test::test_slice_with_sum: bounds made by ops on constant tensors
    (`torch.sum(torch.tensor([1, 2, 3])) // 3 - 2`) are numbers to PopTorch's tracer; the
    capture computes them on real values and slices statically (they were refused)."""
    class M(torch.nn.Module):
        def forward(self, x):
            start = torch.sum(torch.tensor([1, 2, 3])) // 3 - 2
            end = torch.sum(torch.tensor([1, 2, 3])) // 3 + 1
            return x[start:end] * 2, x[torch.tensor([2]).max():torch.tensor(7)]
    x = torch.arange(8.)
    got = tilegraph.inferenceModel(M())(x)
    for g, w in zip(got, M()(x)):
        torch.testing.assert_close(g, w)
