"""The Core ATen opset (the overloads PyTorch tags `torch.Tag.core`, which
`ExportedProgram.run_decompositions()` targets) against tilegraph's ATen table.

Every core overload is either translated by the table (`tilegraph._aten.TABLE`) or listed in
`NOT_IN_TABLE` with the reason it is not; tests/e2e/test_core_aten.py fails when an
overload is neither (a new PyTorch adding one, or a table entry removed).

    python -m tilegraph.core_aten        # prints the table that ends docs/COVERAGE.md
"""
import torch

from ._aten import TABLE

# Backward overloads a model may call itself (its own autograd Function) that PyTorch's
# decompositions (torch._decomp) rewrite into ops the table translates; capture applies them.
DECOMPOSED_AT_CAPTURE = {
    "aten.native_layer_norm_backward.default": "layer norm's input, weight and bias "
    "gradients from its saved mean and rstd",
    "aten.native_group_norm_backward.default": "group norm's gradients from its saved "
    "mean and rstd",
}
# Ops outside Core ATen that torch.export keeps whole and PyTorch's own rules rewrite into
# table ops (the default decompositions leave them alone).
NON_CORE_DECOMPOSED_AT_CAPTURE = {
    "aten.ldexp.Tensor": "x * 2 ** exponent",
}

_DATA_DEPENDENT = ("its result's size (or value) depends on the data, which a static "
                   "graph cannot hold: capture names the user's line and what to write "
                   "instead (tilegraph._capture._DATA_DEPENDENT_ADVICE)")
_SIZE_QUERY = ("a symbolic size query: tilegraph compiles for static shapes, so torch.export "
               "resolves sizes to integers before translation")
_FUNCTIONALIZED = ("not in a captured graph: torch.export functionalizes it into {}, which "
                   "the table translates")

# overload name -> why the table has no entry, and what happens when a model uses it.
NOT_IN_TABLE = {
    **{name: "decomposed at capture by PyTorch's own rule into table ops: " + what
       for name, what in DECOMPOSED_AT_CAPTURE.items()},
    "aten.nonzero.default": _DATA_DEPENDENT,
    "aten._local_scalar_dense.default": _DATA_DEPENDENT + " (.item(), float(t), bool(t))",
    "aten.sym_size.int": _SIZE_QUERY,
    "aten.sym_stride.int": _SIZE_QUERY,
    "aten.sym_numel.default": _SIZE_QUERY,
    "aten.sym_storage_offset.default": _SIZE_QUERY,
    "aten.sym_is_contiguous.default": _SIZE_QUERY,
    "aten._native_batch_norm_legit.default": _FUNCTIONALIZED.format(
        "_native_batch_norm_legit_functional (running statistics as outputs)"),
    "aten.atan2.out": _FUNCTIONALIZED.format("atan2.default (an out= variant)"),
    "aten.resize_.default": ("in-place storage resizing: torch.export's functional graphs do "
                             "not hold it; a model whose export does gets the unsupported-op "
                             "error with its line"),
    "aten._fft_r2c.default": ("FFT: its results are complex tensors, which tilegraph's IR "
                              "has no dtype for; a model using torch.fft gets the "
                              "unsupported-op error with its line"),
    "aten._fft_c2r.default": "FFT (complex input): as _fft_r2c",
}


def overload_named(name):
    """"aten.packet.overload" -> the OpOverload."""
    _, packet, overload = name.split(".")
    return getattr(getattr(torch.ops.aten, packet), overload)


def core_overloads():
    """Every OpOverload tagged torch.Tag.core in this PyTorch, sorted by name (from the
    dispatcher's registry: `dir(torch.ops.aten)` lists only the packets already loaded)."""
    found = []
    for qualified in torch._C._dispatch_get_all_op_names():
        if not qualified.startswith("aten::"):
            continue
        name, _, overload_name = qualified[len("aten::"):].partition(".")
        overload = getattr(getattr(torch.ops.aten, name), overload_name or "default")
        if torch.Tag.core in overload.tags:
            found.append(overload)
    return sorted(set(found), key=str)


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
