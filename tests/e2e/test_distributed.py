"""Data parallelism (issue 11): replicas in one process, and processes over Open MPI, give
the numbers of one replica training on the whole batch; the DataLoader shards the dataset;
mismatched processes and failing processes stop the run with an error, never a hang."""
import copy
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import tilegraph
from models import MLP, batches
from tilegraph._dataloader import ShardSampler

HERE = os.path.dirname(__file__)


def _optimizer(kind, params):
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return torch.optim.AdamW(params, lr=0.01, weight_decay=0.01)


@pytest.mark.parametrize("replicas", [2, 4])
@pytest.mark.parametrize("kind", ["sgd", "adamw"])
@pytest.mark.parametrize("accumulation", [1, 2])
def test_replicas_in_one_process_equal_one_replica_on_the_whole_batch(replicas, kind,
                                                                      accumulation):
    torch.manual_seed(0)
    model, reference = MLP(), None
    reference = copy.deepcopy(model)
    micro, steps = 3, 2
    opts = (tilegraph.Options().deviceIterations(steps).replicationFactor(replicas)
            .outputMode(tilegraph.OutputMode.All))
    opts.Training.gradientAccumulation(accumulation)
    trainer = tilegraph.trainingModel(model, opts, _optimizer(kind, model.parameters()))
    eager = _optimizer(kind, reference.parameters())
    g = torch.Generator().manual_seed(1)
    micro_steps = steps * accumulation
    for _ in range(5):  # 10 optimizer steps
        x, t = batches("mlp", micro_steps * replicas, micro, g)
        _, losses = trainer(x, t)
        assert losses.shape == (micro_steps * replicas,)  # one per micro-step and replica
        # The combined batch is [micro_steps, replicas, micro]: micro-step k's global batch
        # is its replicas' micro-batches together.
        xs, ts = x.reshape(micro_steps, -1, 20), t.reshape(micro_steps, -1)
        for s in range(steps):
            eager.zero_grad()
            for a in range(accumulation):
                k = s * accumulation + a
                loss = reference(xs[k], ts[k])[1]
                torch.testing.assert_close(losses.reshape(micro_steps, replicas)[k].mean(),
                                           loss.detach(), rtol=1e-5, atol=1e-6)
                (loss / accumulation).backward()
            eager.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_batch_norm_statistics_are_per_replica_and_the_module_keeps_replica_0s():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm1d(4)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x, t):
            out = self.fc(self.bn(x))
            return out, torch.nn.functional.cross_entropy(out, t)

    torch.manual_seed(0)
    net = Net()
    ref = copy.deepcopy(net.bn)
    opts = tilegraph.Options().replicationFactor(2)
    trainer = tilegraph.trainingModel(net, opts, torch.optim.SGD(net.parameters(), lr=0.0))
    x = torch.cat([torch.zeros(5, 4), torch.full((5, 4), 10.0)])  # replica 1 sees 10s
    out, loss = trainer(x, torch.zeros(10, dtype=torch.long))
    assert loss.shape == (2,) and out.shape == (10, 2)  # output mode Final: per replica
    ref(x[:5])  # replica 0's micro-batch alone
    torch.testing.assert_close(net.bn.running_mean, ref.running_mean)


def test_shards_are_disjoint_cover_the_dataset_and_agree_on_the_shuffle():
    n, procs = 103, 3
    for epoch_shuffle in (False, True):
        samplers = [ShardSampler(n, procs, p, epoch_shuffle, seed=5) for p in range(procs)]
        for _ in range(2):  # two epochs
            parts = [list(s) for s in samplers]
            assert all(len(part) == n // procs for part in parts)
            flat = sum(parts, [])
            assert len(set(flat)) == len(flat)  # disjoint
            assert len(flat) == n - n % procs   # covers all but the remainder
    a = list(ShardSampler(n, procs, 0, True, seed=5))
    b = list(ShardSampler(n, procs, 0, True, seed=5))
    assert a == b  # the same shuffle in every process (same seed, same epoch)


def test_the_dataloader_reads_this_processes_part():
    data = torch.utils.data.TensorDataset(torch.arange(40).float()[:, None])
    seen = []
    for rank in range(2):
        opts = tilegraph.Options().deviceIterations(2)
        opts.Distributed.configureProcessId(rank, 2)
        loader = tilegraph.DataLoader(opts, data, batch_size=5)
        seen.append(torch.cat([b[0] for b in loader]).flatten().tolist())
    assert len(seen[0]) == len(seen[1]) == 20
    assert not set(seen[0]) & set(seen[1])


# ---- across processes (Open MPI) -----------------------------------------------------------

def _launch(tmp_path, n, *args, timeout=240, env=None):
    full_env = dict(os.environ, **(env or {}))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tilegraph.run", "-n", str(n),
                           os.path.join(HERE, "distributed_child.py"),
                           "--report-dir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=timeout, env=full_env)
    reports = [json.loads(f.read_text()) for f in tmp_path.glob("report*.json")]
    return proc, time.monotonic() - start, sorted(reports, key=lambda r: r["rank"])


@pytest.mark.parametrize("n, replicas, kind, accumulation, extra", [
    (2, 1, "sgd", 1, []), (2, 2, "adamw", 2, []), (4, 1, "sgd", 2, []),
    (4, 1, "adamw", 1, []), (2, 2, "adamw", 1, ["--shard"]),
    (2, 2, "sgd", 2, ["--stages"]),  # 2 stages x 2 replicas x 2 processes
    (2, 2, "adamw", 3, ["--stages", "--pipelined"]),  # the same, pipelined
    (4, 1, "adamw", 3, ["--stages", "--pipelined", "--spread"])])  # 2 pipelines x 2 processes
def test_processes_equal_one_replica_on_the_whole_batch(tmp_path, n, replicas, kind,
                                                       accumulation, extra):
    proc, _, reports = _launch(tmp_path, n, "--replicas", str(replicas), "--optimizer", kind,
                               "--accumulation", str(accumulation), *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["rank"] for r in reports] == list(range(n))
    for r in reports:
        assert r["pipelined"] == ("--pipelined" in extra), r
        if "--pipelined" in extra:  # one device per process when spread, else both here
            assert r["devices_here"] == (1 if "--spread" in extra else 2), r
        # Started from different models: process 0's was broadcast; 10 steps match eager.
        assert r["weight_error"] < 1e-5, r
        assert r["state"] == reports[0]["state"]  # the same checkpoint on every process
    micro_steps = len(reports[0]["ref_losses"])
    pipelines = n // 2 if "--spread" in extra else n  # processes of one pipeline agree
    leaders = [r for r in reports if "--spread" not in extra or r["rank"] % 2 == 0]
    for r in reports:  # the processes of one pipeline return the same outputs
        assert r["losses"] == reports[r["rank"] - r["rank"] % (n // pipelines)]["losses"]
    for k in range(micro_steps):  # mean over every pipeline's replicas = the global loss
        ours = sum(sum(r["losses"][k]) for r in leaders) / (pipelines * replicas)
        assert abs(ours - reports[0]["ref_losses"][k]) < 1e-5 * (1 + abs(ours)), k


def test_popdist_scripts_run_under_tilegraph_run(tmp_path):
    """Graphcore's popdist API on tilegraph.run's launch (--num-replicas: 4 replicas over 2
    processes): popdist.poptorch.Options() gives each process its 2 replicas and its place,
    and the run equals one replica on the whole batch."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tilegraph.run", "-n", "2", "--num-replicas",
                           "4", os.path.join(HERE, "distributed_child.py"), "--report-dir",
                           str(tmp_path), "--replicas", "2", "--popdist"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = sorted((json.loads(f.read_text()) for f in tmp_path.glob("report*.json")),
                     key=lambda r: r["rank"])
    assert [r["rank"] for r in reports] == [0, 1] and time.monotonic() - start < 240
    assert all(r["weight_error"] < 1e-5 for r in reports), reports


def test_popdist_reads_the_launch_and_refuses_what_does_not_fit(monkeypatch):
    import tilegraph.popdist as popdist
    for name in ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "POPDIST_NUM_TOTAL_REPLICAS",
                 "POPDIST_NUM_IPUS_PER_REPLICA"):
        monkeypatch.delenv(name, raising=False)
    assert not popdist.isPopdistEnvSet() and popdist.getNumLocalReplicas() == 1
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("POPDIST_NUM_TOTAL_REPLICAS", "8")
    assert popdist.isPopdistEnvSet()
    assert (popdist.getNumInstances(), popdist.getInstanceIndex(), popdist.getNumTotalReplicas(),
            popdist.getNumLocalReplicas(), popdist.getReplicaIndexOffset()) == (4, 3, 8, 2, 6)
    opts = popdist.poptorch.Options(ipus_per_replica=1)
    assert opts.replication_factor == 2
    assert (opts.Distributed.processId, opts.Distributed.numProcesses) == (3, 4)
    monkeypatch.setenv("POPDIST_NUM_IPUS_PER_REPLICA", "2")
    with pytest.raises(ValueError, match="the launch gave 2"):
        popdist.poptorch.Options(ipus_per_replica=1)
    monkeypatch.setenv("POPDIST_NUM_TOTAL_REPLICAS", "6")
    with pytest.raises(ValueError, match="do not divide"):
        popdist.getNumLocalReplicas()
    from tilegraph.run import main
    with pytest.raises(SystemExit):
        main(["-n", "2", "--num-replicas", "3", "x.py"])


def test_processes_train_in_mixed_precision_alike(tmp_path):
    """setMixedPrecision(bf16) over two processes: every process builds the same program (the
    bf16 copies of the weights, passes/half_weight_shadows.cc, in the same order; the program
    hash check would stop the run otherwise), ends with the same model, and follows eager
    autocast on the whole global batch within bf16 rounding. (Every matmul in bf16, as
    eager autocast's: the policy would keep this small model's few-row and shallow matmuls
    in f32.)"""
    proc, _, reports = _launch(tmp_path, 2, "--optimizer", "sgd", "--mixed",
                               env={"TILEGRAPH_AMP_MIN_ROWS": "0", "TILEGRAPH_AMP_MIN_DEPTH": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in reports:
        assert r["state"] == reports[0]["state"]
        assert r["weight_error"] < 3e-3, r  # measured 5.7e-4 (fp32 runs: 2e-8)
    for k, ref in enumerate(reports[0]["ref_losses"]):
        ours = sum(sum(r["losses"][k]) for r in reports) / 2
        assert abs(ours - ref) < 2e-3 * (1 + abs(ref)), k  # measured 2.8e-4


def test_processes_that_compiled_different_programs_stop_with_a_clear_error(tmp_path):
    proc, _, _ = _launch(tmp_path, 2, "--mismatch")
    assert proc.returncode != 0
    assert "process(es) 1 compiled a different program than process 0" in proc.stderr


@pytest.mark.parametrize("fault", ["raise", "hang"])
def test_a_failing_process_stops_the_others_with_its_error(tmp_path, fault):
    proc, seconds, reports = _launch(tmp_path, 2, "--fail", fault,
                                     env={"TILEGRAPH_COLLECTIVE_TIMEOUT": "10"})
    assert proc.returncode != 0
    assert seconds < 60 + 30, seconds  # start-up included; never the 240 s test timeout
    if fault == "raise":
        assert "process 1 fails on purpose" in proc.stderr
        assert "process 1 of 2 failed" in proc.stderr
    else:  # process 1 is alive but silent: process 0's collective times out and names it
        assert "mpi rank 0 of 2: an MPI all-reduce did not complete within 10 s" in proc.stderr
    assert not reports  # nobody reported a finished run


def test_sharded_optimizer_state_gives_the_same_weights_with_a_quarter_of_the_state():
    torch.manual_seed(0)
    plain_model = MLP()
    sharded_model = copy.deepcopy(plain_model)
    x, t = batches("mlp", 4 * 3, 2, torch.Generator().manual_seed(3))
    runs = {}
    for name, model, shard in (("plain", plain_model, False), ("sharded", sharded_model, True)):
        opts = tilegraph.Options().deviceIterations(3).replicationFactor(4)
        opts.TensorLocations.setOptimizerLocation(
            tilegraph.TensorLocationSettings().useReplicatedTensorSharding(shard))
        trainer = tilegraph.trainingModel(model, opts, torch.optim.Adam(model.parameters(),
                                                                        lr=0.01))
        for _ in range(3):
            trainer(x, t)
        exe = trainer.executable
        # Adam's moments, per replica, from the compiled program's variables.
        runs[name] = sum(np.asarray(exe.read_variable(v)).nbytes for v in exe.variables
                         if v.endswith((".exp_avg", ".exp_avg_sq")))
    for p, q in zip(sharded_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # 4 replicas: each keeps a quarter of the state (up to the padding of uneven tensors).
    assert runs["sharded"] <= runs["plain"] / 4 + 4 * 4 * 4, runs
    print(f"Adam state per replica: {runs['plain']} B unsharded, {runs['sharded']} B sharded")


def test_the_data_parallel_example_runs_on_two_processes_and_agrees():
    example = os.path.join(HERE, "..", "..", "examples", "data_parallel.py")
    proc = subprocess.run([sys.executable, "-m", "tilegraph.run", "-n", "2", example,
                           "--epochs", "1", "--train-samples", "1024"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # mpirun may join the two processes' last lines: match the pattern, not whole lines.
    sums = dict(re.findall(r"process (\d+): weights checksum ([0-9.]+e[+-]\d+)", proc.stdout))
    assert sorted(sums) == ["0", "1"] and sums["0"] == sums["1"], proc.stdout
    assert "samples/s over all replicas" in proc.stdout


def test_the_pipelined_bert_example_runs_a_process_per_stage_and_matches_eager():
    example = os.path.join(HERE, "..", "..", "examples", "pipelined_bert.py")
    proc = subprocess.run([sys.executable, "-m", "tilegraph.run", "-n", "4", example,
                           "--calls", "2", "--stages-on-processes"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    placed = set(re.findall(r"process (\d): device (\d) of pipeline 0", proc.stdout))
    assert placed == {(str(p), str(p)) for p in range(4)}, proc.stdout
    assert "schedule: pipelined (1F1B)" in proc.stdout
    # mpirun may join another process's output onto the line: match the number only.
    found = re.search(r"largest weight difference from the unannotated model: "
                      r"([0-9.]+(?:e[+-]?\d+)?)", proc.stdout)
    assert found, proc.stdout
    worst = float(found.group(1))
    assert worst < 1e-5, proc.stdout


def test_stages_on_processes_must_match_the_model_and_the_launch():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[1] = tilegraph.BeginBlock(model[1], ipu_id=1)
    opts = tilegraph.Options().setExecutionStrategy(tilegraph.PipelinedExecution())
    opts.deviceIterations(2)  # a pipelined inference model runs >= one batch per stage
    opts.Distributed.placeStagesOnProcesses(3)
    with pytest.raises(ValueError, match=r"placeStagesOnProcesses\(3\), but the model's blocks "
                                         r"use 2 device\(s\)"):
        tilegraph.inferenceModel(model, opts)(torch.randn(2, 4))
    opts = opts.clone()  # options are frozen once a model is wrapped with them
    opts.Distributed.placeStagesOnProcesses(2)  # a single process: no room for 2 stages
    with pytest.raises(ValueError, match="1 processes are not a whole number of 2-stage"):
        tilegraph.inferenceModel(model, opts)(torch.randn(2, 4))
    with pytest.raises(ValueError, match=">= 2"):
        opts.clone().Distributed.placeStagesOnProcesses(1)


INFERENCE_CHILD = '''
import torch, tilegraph
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
m[2] = tilegraph.BeginBlock(m[2], ipu_id=1)
opts = tilegraph.Options().deviceIterations(5).setExecutionStrategy(
    tilegraph.PipelinedExecution())
opts.Distributed.placeStagesOnProcesses(2)
x = torch.randn(5 * 3, 8, generator=torch.Generator().manual_seed(1))
infer = tilegraph.inferenceModel(m, opts)
out = infer(x)
with torch.no_grad():
    want = m(x)
print(f"process {opts.Distributed.processId}: error {(out - want).abs().max().item():.3g} "
      f"pipelined {infer.executable.pipelined}")
'''


def test_pipelined_inference_with_a_process_per_stage_returns_the_outputs_everywhere(tmp_path):
    script = tmp_path / "infer.py"
    script.write_text(INFERENCE_CHILD)
    proc = subprocess.run([sys.executable, "-m", "tilegraph.run", "-n", "2", str(script)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.findall(r"process (\d): error (\S+) pipelined True", proc.stdout)
    assert sorted(p for p, _ in found) == ["0", "1"], proc.stdout
    assert all(float(e) < 1e-5 for _, e in found), proc.stdout
