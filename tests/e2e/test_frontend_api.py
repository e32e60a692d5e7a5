"""The executor's contract: errors users must get, weights shared with the module,
setOptimizer without recompiling, device attach/detach, DataLoader batch arithmetic."""
import copy

import pytest
import torch

import tilegraph
from models import MLP, batches


def test_unsupported_ops_are_listed_with_user_locations():
    class Odd(torch.nn.Module):
        def forward(self, x):
            a = torch.special.bessel_j0(x)  # line A
            b = torch.fft.fft(x).real       # line B
            return (a + b).sum()

    with pytest.raises(NotImplementedError) as info:
        tilegraph.inferenceModel(Odd())(torch.randn(2, 4))
    message = str(info.value)
    assert "bessel_j0" in message and "fft" in message
    assert message.count("test_frontend_api.py:") >= 2, message


def test_call_time_errors_leave_the_executor_usable():
    model = MLP()
    infer = tilegraph.inferenceModel(model.eval())
    x, t = batches("mlp", 1, 4, torch.Generator().manual_seed(0))
    out, _ = infer(x, t)
    with pytest.raises(ValueError, match=r"expected shape \[4, 20\], got \[4, 21\]") as info:
        infer(torch.randn(4, 21), t)
    # The factors of the combined batch that apply: no gradient accumulation in inference.
    assert ("micro-batch x deviceIterations (1) x replicationFactor (1)" in str(info.value)
            and "gradientAccumulation" not in str(info.value)), str(info.value)
    with pytest.raises(TypeError, match="expected dtype torch.float32, got torch.float64"):
        infer(x.double(), t)
    with pytest.raises(TypeError, match="forward.*missing a required argument: 't'"):
        infer(x)
    out2, _ = infer(x, t)
    torch.testing.assert_close(out, out2)


def test_training_model_without_a_loss_says_what_to_return():
    class NoLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 4)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(RuntimeError, match="must return the loss"):
        tilegraph.trainingModel(NoLoss())(torch.randn(2, 3))


def test_identity_loss_marks_a_custom_loss():
    torch.manual_seed(0)

    class Custom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 1)

        def forward(self, x):
            return tilegraph.identity_loss((self.fc(x) ** 2), reduction="mean")

    model = Custom()
    reference = copy.deepcopy(model)
    x = torch.randn(4, 3)
    tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))(x)
    opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    (reference.fc(x) ** 2).mean().backward()
    opt.step()
    torch.testing.assert_close(model.fc.weight, reference.fc.weight, rtol=1e-5, atol=1e-6)


def test_set_optimizer_does_not_recompile_and_changes_lr():
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = tilegraph.trainingModel(model, optimizer=opt)
    x, t = batches("mlp", 1, 4, torch.Generator().manual_seed(0))
    trainer(x, t)
    before = tilegraph.compilation_count()
    trainer.setOptimizer(torch.optim.SGD(model.parameters(), lr=0.0))
    w = model.fc1.weight.detach().clone()
    trainer(x, t)
    assert tilegraph.compilation_count() == before
    torch.testing.assert_close(model.fc1.weight, w)  # lr 0: no change
    with pytest.raises(ValueError, match="expected a sgd optimizer"):
        trainer.setOptimizer(torch.optim.Adam(model.parameters()))


def test_weights_flow_both_ways():
    torch.manual_seed(0)
    model = MLP()
    trainer = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    x, t = batches("mlp", 1, 4, torch.Generator().manual_seed(0))
    w0 = model.fc2.bias.detach().clone()
    trainer(x, t)
    assert not torch.equal(model.fc2.bias, w0), "module parameters must hold trained values"
    with torch.no_grad():
        model.fc2.bias.fill_(3.0)
    trainer.copyWeightsToDevice()
    trainer.detachFromDevice()
    assert not trainer.isAttachedToDevice()
    with torch.no_grad():
        model.fc2.bias.fill_(5.0)
    trainer.attachToDevice()  # pushes the host value (5.0) back in
    trainer.setOptimizer(torch.optim.SGD(model.parameters(), lr=0.0))
    trainer(x, t)
    torch.testing.assert_close(model.fc2.bias, torch.full_like(model.fc2.bias, 5.0))


def test_a_training_call_copies_back_only_what_it_changed():
    """After a training call the module holds the engine's trained weights; weights the
    program never writes (a frozen layer) are not copied back, so a host edit of one between
    calls is what the next call uses and what the module keeps."""
    torch.manual_seed(0)
    model = MLP()
    model.fc1.requires_grad_(False)
    reference = copy.deepcopy(model)
    x, t = batches("mlp", 2, 4, torch.Generator().manual_seed(0))
    trainer = tilegraph.trainingModel(model, tilegraph.Options().deviceIterations(2),
                                      torch.optim.SGD(model.parameters(), lr=0.1))
    opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    trainer(x, t)
    _eager_steps(reference, opt, x, t, 2, 4)
    written = trainer._written
    assert any("fc2" in name for name in written), written
    assert not any("fc1" in name for name in written), written
    with torch.no_grad():  # edit the frozen layer on both sides
        model.fc1.weight.mul_(0.5)
        reference.fc1.weight.mul_(0.5)
    trainer(x, t)
    _eager_steps(reference, opt, x, t, 2, 4)
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_dataloader_yields_the_combined_batch():
    opts = tilegraph.Options().deviceIterations(3).Training.gradientAccumulation(2)
    data = torch.utils.data.TensorDataset(torch.randn(100, 2), torch.arange(100))
    loader = tilegraph.DataLoader(opts, data, batch_size=4)
    x, y = next(iter(loader))
    assert x.shape == (24, 2)
    assert len(loader) == 100 // 24
    async_loader = tilegraph.DataLoader(opts, data, batch_size=4,
                                        mode=tilegraph.DataLoaderMode.Async)
    assert sum(b[0].shape[0] for b in async_loader) == 24 * (100 // 24)


def test_poptorch_style_import():
    import tilegraph as poptorch
    opts = poptorch.Options().deviceIterations(2)
    opts.Training.gradientAccumulation(1)
    assert poptorch.trainingModel and poptorch.inferenceModel and poptorch.optim.SGD
    assert opts.device_iterations == 2


def _eager_steps(model, opt, x, t, steps, micro):
    for s in range(steps):
        opt.zero_grad()
        model(x[s * micro:(s + 1) * micro], t[s * micro:(s + 1) * micro])[1].backward()
        opt.step()


def test_parameter_groups_keep_their_own_hyperparameters():
    torch.manual_seed(0)
    model = MLP()
    reference = copy.deepcopy(model)

    def groups(m):
        return [{"params": m.fc1.parameters(), "lr": 0.2, "weight_decay": 0.01},
                {"params": m.fc2.parameters()}]
    x, t = batches("mlp", 5, 4, torch.Generator().manual_seed(0))
    opts = tilegraph.Options().deviceIterations(5)
    tilegraph.trainingModel(model, opts, torch.optim.SGD(groups(model), lr=0.05, momentum=0.5))(x, t)
    _eager_steps(reference, torch.optim.SGD(groups(reference), lr=0.05, momentum=0.5), x, t, 5, 4)
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_loss_scaling_leaves_the_trained_weights_unchanged():
    torch.manual_seed(0)
    model = MLP()
    reference = copy.deepcopy(model)
    x, t = batches("mlp", 4, 4, torch.Generator().manual_seed(0))
    opts = tilegraph.Options().deviceIterations(4)
    opt = tilegraph.optim.SGD(model.parameters(), lr=0.1, loss_scaling=1024.0)
    tilegraph.trainingModel(model, opts, opt)(x, t)
    _eager_steps(reference, torch.optim.SGD(reference.parameters(), lr=0.1), x, t, 4, 4)
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_sum_reduction_accumulates_unscaled_gradients():
    torch.manual_seed(0)
    model = MLP()
    reference = copy.deepcopy(model)
    x, t = batches("mlp", 3, 4, torch.Generator().manual_seed(0))
    opts = (tilegraph.Options().Training.gradientAccumulation(3)
            .Training.accumulationAndReplicationReductionType(tilegraph.ReductionType.Sum))
    tilegraph.trainingModel(model, opts, torch.optim.SGD(model.parameters(), lr=0.05))(x, t)
    opt = torch.optim.SGD(reference.parameters(), lr=0.05)
    for s in range(3):
        reference(x[s * 4:(s + 1) * 4], t[s * 4:(s + 1) * 4])[1].backward()
    opt.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_runtime_errors_name_the_node_and_the_users_line():
    class Lookup(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)

        def forward(self, i):
            return self.emb(i)  # the line the error must name

    infer = tilegraph.inferenceModel(Lookup().eval())
    infer(torch.tensor([[1, 2]]))
    with pytest.raises(RuntimeError, match=r"index 12 out of range \[0, 10\)") as info:
        infer(torch.tensor([[1, 12]]))
    assert "embedding" in str(info.value) and "test_frontend_api.py:" in str(info.value)
    assert infer(torch.tensor([[3, 4]])).shape == (1, 2, 4)


def test_profile_counts_every_instruction_and_writes_json(tmp_path):
    """enableProfiling: per-op and per-instruction rows (calls = steps run, FLOPs of each
    matmul from its shapes), a printable report, and dir/profile.json after each call."""
    import json
    torch.manual_seed(0)
    class TwoLayers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(12, 16), torch.nn.Linear(16, 3)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))  # each instruction names this line

    model = TwoLayers()
    opts = tilegraph.Options().deviceIterations(4).enableProfiling(str(tmp_path))
    engine = tilegraph.inferenceModel(model, opts)
    engine(torch.randn(4 * 5, 12))
    rows = {r["op"]: r for r in engine.profile()}
    # two linear layers (matmul + bias [+ relu], fused into matmul_epilogue) x 4 steps
    assert rows["matmul_epilogue"]["calls"] == 2 * 4
    assert rows["matmul_epilogue"]["flops"] == 4 * 2 * 5 * (12 * 16 + 16 * 3)
    assert all(r["seconds"] >= 0 for r in rows.values())
    instrs = engine.profile(per_instruction=True)
    assert sum(r["calls"] for r in instrs) == sum(r["calls"] for r in rows.values())
    assert any("test_frontend_api.py" in r["source"] for r in instrs)
    report = engine.profileReport()
    assert "matmul" in report and "slowest instructions" in report
    saved = json.loads((tmp_path / "profile.json").read_text())
    assert saved["steps"] == 4 and saved["by_op"] == engine.profile()
    engine.resetProfile()  # e.g. to leave out the first call's one-time work
    assert all(r["calls"] == 0 and r["seconds"] == 0 for r in engine.profile())
    engine(torch.randn(4 * 5, 12))
    assert {r["op"]: r["calls"] for r in engine.profile()}["matmul_epilogue"] == 2 * 4


def test_a_module_has_one_live_training_model_until_destroyed(tmp_path):
    """PopTorch's rule: a second trainingModel on a module its first one still trains is
    refused (two engines would train it apart, the second from fresh optimizer state);
    `model.destroy()` (or the executor's) unwraps it, and the next wrap continues from the
    trained weights and the tilegraph.optim optimizer's state, as eager continues."""
    torch.manual_seed(0)
    model = MLP()
    eager = copy.deepcopy(model)
    opt = tilegraph.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    eager_opt = torch.optim.SGD(eager.parameters(), lr=0.1, momentum=0.9)
    x, t = batches("mlp", 1, 8, torch.Generator().manual_seed(3))

    def eager_step():
        eager_opt.zero_grad()
        eager(x, t)[1].backward()
        eager_opt.step()

    first = tilegraph.trainingModel(model, optimizer=opt)
    for _ in range(2):
        first(x, t)
        eager_step()
    with pytest.raises(RuntimeError, match=r"already been wrapped in 'poptorch.trainingModel'"):
        tilegraph.trainingModel(model, optimizer=opt)
    inference = tilegraph.inferenceModel(model)  # another kind of executor is fine
    torch.testing.assert_close(inference(x, t)[0], eager(x, t)[0], rtol=1e-5, atol=1e-6)
    # A copy or a pickle of the wrapped module is not wrapped.
    clone = copy.deepcopy(model)
    clone.destroy()  # does nothing
    torch.save(model, tmp_path / "m.pt")
    torch.load(tmp_path / "m.pt", weights_only=False).destroy()
    first(x, t)  # still the live one
    eager_step()

    model.destroy()
    assert "destroy" not in model.__dict__
    second = tilegraph.trainingModel(first, optimizer=opt)  # an executor's module, again
    for _ in range(2):
        second(x, t)
        eager_step()
    second.destroy()
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


def test_poptorch_helper_names_its_tests_use(tmp_path):
    """compileAndExport into a directory writes one file there (PopTorch's older form);
    Options.checkIsFrozen; the executor's _user_model."""
    model = MLP()
    x, t = batches("mlp", 1, 4, torch.Generator().manual_seed(1))
    run = tilegraph.inferenceModel(model)
    run.compileAndExport(str(tmp_path), x, t)
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    torch.testing.assert_close(tilegraph.load(str(files[0]))(x, t)[0], model(x, t)[0])
    assert run._user_model is model
    opts = tilegraph.Options()
    opts.checkIsFrozen()  # not frozen: no error
    tilegraph.inferenceModel(MLP(), opts)
    with pytest.raises(AttributeError, match="frozen"):
        opts.checkIsFrozen()
