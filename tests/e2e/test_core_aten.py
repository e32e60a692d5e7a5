"""The Core ATen opset is accounted for: every overload tagged torch.Tag.core has an ATen
table entry or a written reason in tilegraph.core_aten.NOT_IN_TABLE (and the reasons do
not outlive their ops)."""
import torch

from tilegraph import core_aten
from tilegraph._aten import TABLE


def test_every_core_aten_overload_has_an_entry_or_a_reason():
    rows = core_aten.status()
    assert len(rows) > 150  # the enumeration found the opset (189 in torch 2.14)
    unaccounted = [name for name, state, _ in rows if state == "unaccounted"]
    assert not unaccounted, f"Core ATen overloads with no table entry and no reason: {unaccounted}"


def test_reasons_are_only_for_core_ops_outside_the_table():
    core = {str(op): op for op in core_aten.core_overloads()}
    for name in core_aten.NOT_IN_TABLE:
        assert name in core, f"{name}: not a Core ATen overload in torch {torch.__version__}"
        assert core[name] not in TABLE, f"{name}: has a table entry and a reason"


def test_the_coverage_page_lists_the_opset():
    text = "\n".join(core_aten.markdown_table())
    assert "## Core ATen opset" in text and "no entry and no reason" not in text
    for name in core_aten.NOT_IN_TABLE:
        assert f"`{name}`" in text
