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
