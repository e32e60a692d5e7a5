"""The Core ATen opset (the overloads PyTorch tags `torch.Tag.core`, which
`ExportedProgram.run_decompositions()` targets) against tilegraph's ATen table.

Every core overload is either translated by the table (`tilegraph._aten.TABLE`) or listed in
`NOT_IN_TABLE` with the reason it is not; tests/e2e/test_core_aten.py fails when an
overload is neither (a new PyTorch adding one, or a table entry removed).

    python -m tilegraph.core_aten        # prints the table that ends docs/COVERAGE.md
"""
import torch

from ._aten import TABLE

# overload name -> why the table has no entry, and what happens when a model uses it.
NOT_IN_TABLE = {
}


def core_overloads():
    """Every OpOverload tagged torch.Tag.core in this PyTorch, sorted by name."""
    found = []
    for packet_name in dir(torch.ops.aten):
        packet = getattr(torch.ops.aten, packet_name, None)
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            continue
        for overload_name in packet.overloads():
            overload = getattr(packet, overload_name)
            if torch.Tag.core in overload.tags:
                found.append(overload)
    return sorted(found, key=str)


def status():
    """[(overload name, "table" | "not in table" | "unaccounted", reason)] for every core
    overload."""
    rows = []
    for overload in core_overloads():
        name = str(overload)
        if overload in TABLE:
            rows.append((name, "table", ""))
        elif name in NOT_IN_TABLE:
            rows.append((name, "not in table", NOT_IN_TABLE[name]))
        else:
            rows.append((name, "unaccounted", ""))
    return rows


def markdown_table():
    rows = status()
    in_table = [r for r in rows if r[1] == "table"]
    lines = ["## Core ATen opset", "",
             f"Of the {len(rows)} overloads tagged `torch.Tag.core` in torch "
             f"{torch.__version__}, the ATen table translates {len(in_table)}; the others, "
             "and why:", "", "| overload | status |", "|---|---|"]
    for name, state, reason in rows:
        if state != "table":
            lines.append(f"| `{name}` | {reason or '**no entry and no reason**'} |")
    lines += ["", "Translated: " + ", ".join(f"`{n.replace('aten.', '')}`"
                                             for n, _, _ in in_table) + "."]
    return lines


if __name__ == "__main__":
    print("\n".join(markdown_table()))
