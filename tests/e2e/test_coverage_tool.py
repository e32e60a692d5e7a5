"""python -m tilegraph.coverage: the ops a model uses, which are supported, and --run."""
import json

import torch

from tilegraph import coverage


class _Unsupported(torch.nn.Module):
    def forward(self, x):
        return torch.special.bessel_j0(x).relu()  # bessel_j0: not in the table


def mlp_case():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    return model, (torch.randn(3, 4),)


def unsupported_case():
    return _Unsupported(), (torch.randn(3),)


def test_lists_ops_and_compiles_with_run(tmp_path, capsys):
    out = tmp_path / "mlp.json"
    assert coverage.main(["test_coverage_tool:mlp_case", "--run", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["status"] == "compiled" and result["missing"] == []
    assert result["ops"]["aten.addmm.default"]["count"] == 2
    assert result["ops"]["aten.gelu.default"]["supported"]
    assert result["max_rel_error"] < 1e-5
    assert "0 unsupported" in capsys.readouterr().out


def test_names_unsupported_ops_with_the_users_line(capsys):
    assert coverage.main(["test_coverage_tool:unsupported_case"]) == 1
    text = capsys.readouterr().out
    line = next(l for l in text.splitlines() if "bessel_j0" in l)
    assert line.lstrip().startswith("✗") and "test_coverage_tool.py:" in line
    assert "1 unsupported" in text


def test_the_chaos_reference_widens_the_bound_by_eagers_own_spread():
    """judge_against_float64 with `perturbed` (eager trained from weights moved by ~1 ulp)
    bounds tilegraph's error by 4x the larger of eager's two errors: an error 3 where eager
    is 0.5 off fails, and passes where eager from the moved weights is 1 off."""
    exact = torch.zeros(4, dtype=torch.float64)
    got, eager, moved = (torch.tensor([v, 0.0, 0.0, 0.0]) for v in (3.0, 0.5, 1.0))
    ours, allowed = coverage.judge_against_float64(got, eager, exact)
    assert ours == 3.0 and ours > allowed
    ours, allowed = coverage.judge_against_float64(got, eager, exact, moved)
    assert allowed == 4.0 + 1e-7 and ours <= allowed


def test_compare_training_names_the_tensors_only_the_chaos_reference_passes():
    """An MLP trained three steps: every tensor matches eager float64 by the strict bound,
    so none is named chaotic; the moved copy the reference trains starts an ulp or two away."""
    model, (x,) = mlp_case()
    wrapped = _MeanLoss(model)
    moved = coverage._perturbed(wrapped)
    for p, q in zip(wrapped.parameters(), moved.parameters()):
        change = ((q - p) / p).abs()  # 1 +- 1e-7 is itself rounded: one or two ulp
        assert bool((change > 0).all()) and float(change.max()) < 3e-7
    verdict = coverage.compare_training(wrapped, (x,), chaos_reference=True)
    assert verdict["passed"] and verdict["chaotic"] == []


class _MeanLoss(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).square().mean()
