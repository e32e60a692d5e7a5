"""Which ATen ops a model uses, and which of them tilegraph supports.

    python -m tilegraph.coverage tilegraph.zoo:resnet50            # ops, supported or not
    python -m tilegraph.coverage mymodels:build --run              # also compile, compare
    python -m tilegraph.coverage tilegraph.zoo:bert_pretraining --train --json out.json

`module:callable` names a function returning a `tilegraph.zoo.ModelCase`, or a tuple
(model, example_inputs). The model is exported exactly as trainingModel/inferenceModel
export it (torch.export + Core ATen decompositions), so the list is what tilegraph sees.
With --run the model is also compiled by tilegraph (inference) and its outputs compared with
eager PyTorch. `--train` exports the training wrapper in train mode instead.
"""
import argparse
import collections
import importlib
import json
import sys
import time

import torch

from ._aten import TABLE
from ._capture import export, user_location


def load_case(spec, *call_args):
    """Resolves "module:callable" (or takes a callable) and calls it -> (name, model, inputs,
    train_model, train_inputs)."""
    if callable(spec):
        result, attr = spec(*call_args), getattr(spec, "__name__", "model")
    else:
        if ":" not in spec:
            raise SystemExit(f"expected module:callable, got {spec!r}")
        module_name, attr = spec.split(":", 1)
        result = getattr(importlib.import_module(module_name), attr)(*call_args)
    if isinstance(result, tuple):
        model, inputs = result
        return attr, model, tuple(inputs), None, None
    return (result.name, result.model, tuple(result.inputs), result.train_model,
            result.train_inputs)


def op_usage(model, inputs):
    """{aten overload name: (count, supported, first user location)} for the exported model."""
    gm = export(model, inputs).graph_module
    usage = collections.OrderedDict()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        count, supported, where = usage.get(name, (0, node.target in TABLE, ""))
        usage[name] = (count + 1, supported, where or user_location(node))
    return usage


def compare_inference(model, inputs):
    """Compiles `model` with tilegraph and returns the max relative error of its outputs
    against eager (relative to each output's max magnitude) and the compile time."""
    import tilegraph
    model.eval()
    with torch.no_grad():
        expected = model(*inputs)
    start = time.perf_counter()
    engine = tilegraph.inferenceModel(model)
    got = engine(*inputs)
    seconds = time.perf_counter() - start
    flat_expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    flat_got = got if isinstance(got, (tuple, list)) else (got,)
    worst = 0.0
    for e, g in zip(flat_expected, flat_got):
        scale = max(float(e.abs().max()), 1e-30)
        worst = max(worst, float((e - g).abs().max()) / scale)
    engine.destroy()
    return worst, seconds


def report(spec, train=False, run=False):
    try:
        name, model, inputs, train_model, train_inputs = load_case(spec)
    except Exception as e:  # noqa: BLE001 - a model that cannot be built is a result too
        return {"model": str(spec), "mode": "train" if train else "inference",
                "status": "build failed", "error": f"{type(e).__name__}: {e}".splitlines()[0]}
    if train:
        if train_model is None:
            raise SystemExit(f"{spec} has no training wrapper")
        model, inputs = train_model, train_inputs
        model.train()
    else:
        model.eval()
    result = {"model": name, "mode": "train" if train else "inference"}
    try:
        usage = op_usage(model, inputs)
    except Exception as e:  # noqa: BLE001 - the export's own failure is the result
        result.update(status="export failed", error=f"{type(e).__name__}: {e}".splitlines()[0])
        return result
    result["ops"] = {k: {"count": c, "supported": s, "at": w} for k, (c, s, w) in usage.items()}
    missing = [k for k, (_, s, _) in usage.items() if not s]
    result["missing"] = missing
    result["status"] = "unsupported ops" if missing else "supported"
    if run and not missing and not train:
        try:
            err, seconds = compare_inference(model, inputs)
            result.update(status="compiled", max_rel_error=err, compile_s=seconds)
        except Exception as e:  # noqa: BLE001
            result.update(status="compile failed",
                          error=f"{type(e).__name__}: {e}".splitlines()[0])
    return result


def _print(result):
    print(f"{result['model']} ({result['mode']}): {result['status']}")
    if "error" in result:
        print("  " + result["error"])
    for op, info in result.get("ops", {}).items():
        mark = "  " if info["supported"] else "✗ "
        where = f"  first at {info['at']}" if not info["supported"] and info["at"] else ""
        print(f"  {mark}{op:55s} x{info['count']}{where}")
    if "max_rel_error" in result:
        print(f"  compiled in {result['compile_s']:.1f} s; max error vs eager "
              f"{result['max_rel_error']:.2e} (relative to each output's largest value)")
    ops = result.get("ops", {})
    print(f"  {len(ops)} distinct ops, {len(result.get('missing', []))} unsupported")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tilegraph.coverage",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", help="module:callable returning a ModelCase or (model, inputs)")
    parser.add_argument("--train", action="store_true", help="export the training wrapper")
    parser.add_argument("--run", action="store_true", help="compile and compare with eager")
    parser.add_argument("--json", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = report(args.spec, train=args.train, run=args.run)
    _print(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if result["status"] in ("supported", "compiled") else 1


if __name__ == "__main__":
    sys.exit(main())
