"""Which ATen ops a model uses, and which of them tilegraph supports.

    python -m tilegraph.coverage tilegraph.zoo:resnet50            # ops, supported or not
    python -m tilegraph.coverage mymodels:build --run              # also compile, compare
    python -m tilegraph.coverage tilegraph.zoo:bert_pretraining --train --json out.json

`module:callable` names a function returning a `tilegraph.zoo.ModelCase`, or a tuple
(model, example_inputs). The model is exported exactly as trainingModel/inferenceModel
export it (torch.export + Core ATen decompositions), so the list is what tilegraph sees.
With --run the model is also compiled by tilegraph (inference) and its outputs compared with
eager PyTorch. `--train` exports the training wrapper in train mode instead; with --run it
then trains 3 SGD-momentum steps in tilegraph, eager fp32 and eager float64 and judges
losses and weights against float64 (judge_against_float64).
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
    """({aten overload name: (count, supported, first user location)}, the data-dependent
    ops' descriptions) for the exported model."""
    from . import _ragged
    from ._capture import _unsupported_report
    gm = export(model, inputs).graph_module
    usage = collections.OrderedDict()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        count, supported, where = usage.get(name, (0, node.target in TABLE or
                                                   _ragged.is_bookkeeping(node), ""))
        usage[name] = (count + 1, supported, where or user_location(node))
    return usage, [line.strip() for line in _unsupported_report(gm)[0]]


def _flat(x):
    if hasattr(x, "to_tuple"):  # a Hugging Face ModelOutput
        x = x.to_tuple()
    if isinstance(x, dict):
        x = tuple(x.values())
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def compare_inference(model, inputs):
    """Compiles `model` with tilegraph and compares its outputs with eager fp32 and eager
    float64 (judge_against_float64). Returns (max error relative to each output's largest
    magnitude against eager fp32, passed, compile + first call seconds)."""
    import copy

    import tilegraph
    model.eval()
    exact_model = copy.deepcopy(model).double()
    with torch.no_grad():
        expected = _flat(model(*inputs))
        exact = _flat(exact_model(*[x.double() if x.is_floating_point() else x
                                    for x in inputs]))
    start = time.perf_counter()
    engine = tilegraph.inferenceModel(model)
    got = _flat(engine(*inputs))
    seconds = time.perf_counter() - start
    engine.destroy()
    worst, passed = 0.0, len(got) == len(expected)
    for e, g, x in zip(expected, got, exact):
        if not e.is_floating_point():
            passed = passed and torch.equal(e, g)
            continue
        scale = max(float(e.abs().max()), 1e-30)
        worst = max(worst, float((e - g).abs().max()) / scale)
        ours, allowed = judge_against_float64(g, e, x)
        passed = passed and ours <= allowed
    return worst, passed, seconds


def loss_of(output):
    """The loss in a training model's output: a ModelOutput's / dict's "loss", a tuple's
    last element, or the tensor itself."""
    if isinstance(output, dict) or hasattr(output, "loss"):
        return output["loss"] if isinstance(output, dict) else output.loss
    return output[-1] if isinstance(output, (tuple, list)) else output


def judge_against_float64(got, eager, exact, perturbed=None):
    """The parity criterion that tells a bug from fp32 noise: tilegraph's fp32 result `got`
    and eager's fp32 result `eager` are both measured against eager float64 (`exact`).
    Returns (ours, allowed): tilegraph's largest error, and 4x eager fp32's largest error on
    the same tensor plus fp32 tolerance (1e-4 of the tensor's scale, 1e-7 absolute for
    tensors whose true value is ~0). See tests/e2e/test_models.py for why 4x. With
    `perturbed` (eager fp32 trained from weights moved by about an ulp, see
    compare_training), eager's error is the larger of its two runs': a chaotic tensor (one
    that a max-pool tie or a batch statistic of a few values amplifies) is judged against
    the spread eager itself shows under rounding-sized changes."""
    got, eager, exact = got.double(), eager.double(), exact.double()
    scale = float(exact.abs().max()) if exact.numel() else 0.0
    ours = float((got - exact).abs().max()) if exact.numel() else 0.0
    theirs = float((eager - exact).abs().max()) if exact.numel() else 0.0
    if perturbed is not None and exact.numel():
        theirs = max(theirs, float((perturbed.double() - exact).abs().max()))
    return ours, 4 * theirs + 1e-4 * scale + 1e-7


def _sgd(params, lr):
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def _eager_losses(model, inputs, steps, lr):
    opt = _sgd(model.parameters(), lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of(model(*inputs))
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return torch.tensor(losses, dtype=torch.float64)


def _perturbed(model, seed=1):
    """A deep copy of `model` with every floating-point parameter scaled by 1 +- 1e-7 (about
    an ulp of fp32; signs drawn from `seed`)."""
    import copy
    moved = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moved.parameters():
            if p.is_floating_point():
                sign = torch.randint(0, 2, p.shape, generator=g).to(p.dtype) * 2 - 1
                p.mul_(1 + 1e-7 * sign)
    return moved


def compare_training(model, inputs, steps=3, lr=1e-3, chaos_reference=False):
    """Trains `model` (its output holds the loss, see loss_of) for `steps` SGD-momentum
    steps with tilegraph, and deep copies in eager fp32 and eager float64; judges the losses
    and every floating-point entry of the state dict with judge_against_float64.
    chaos_reference: also trains eager fp32 from weights moved by 1e-7 (_perturbed) and
    judges each tensor against the larger of eager's two errors; "chaotic" then names the
    tensors that pass only that way (eager's own spread under ulp-sized changes exceeds
    4x its error from the unperturbed start).
    Returns {"passed", "worst": (name, ours, allowed), "chaotic", "seconds"}."""
    import copy

    import tilegraph
    model.train()
    eager, exact = copy.deepcopy(model), copy.deepcopy(model).double()
    moved = _perturbed(model) if chaos_reference else None
    eager_losses = _eager_losses(eager, inputs, steps, lr)
    exact_losses = _eager_losses(exact, [x.double() if x.is_floating_point() else x
                                         for x in inputs], steps, lr)
    moved_losses = _eager_losses(moved, inputs, steps, lr) if chaos_reference else None
    start = time.perf_counter()
    trainer = tilegraph.trainingModel(model, tilegraph.Options(),
                                      _sgd(model.parameters(), lr))
    losses = torch.tensor([float(loss_of(trainer(*inputs))) for _ in range(steps)],
                          dtype=torch.float64)
    seconds = time.perf_counter() - start
    trainer.destroy()
    verdicts, chaotic = [], []

    def judge(name, got, eager_value, exact_value, moved_value):
        ours, allowed = judge_against_float64(got, eager_value, exact_value, moved_value)
        if moved_value is not None and ours > judge_against_float64(
                got, eager_value, exact_value)[1] and ours <= allowed:
            chaotic.append(name)
        verdicts.append((name, ours, allowed))

    judge("loss", losses, eager_losses, exact_losses, moved_losses)
    eager_state, exact_state = eager.state_dict(), exact.state_dict()
    moved_state = moved.state_dict() if chaos_reference else {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            judge(key, value, eager_state[key], exact_state[key], moved_state.get(key))
        elif not torch.equal(value, eager_state[key]):  # e.g. num_batches_tracked
            verdicts.append((key, 1.0, 0.0))
    worst = max(verdicts, key=lambda v: v[1] / v[2])
    return {"passed": all(ours <= allowed for _, ours, allowed in verdicts),
            "worst": worst, "chaotic": chaotic, "seconds": seconds}


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
        usage, data_dependent = op_usage(model, inputs)
    except Exception as e:  # noqa: BLE001 - the export's own failure is the result
        result.update(status="export failed", error=f"{type(e).__name__}: {e}".splitlines()[0])
        return result
    result["ops"] = {k: {"count": c, "supported": s, "at": w} for k, (c, s, w) in usage.items()}
    missing = [k for k, (_, s, _) in usage.items() if not s]
    result["missing"] = missing
    result["status"] = "unsupported ops" if missing else "supported"
    if data_dependent:  # its size bookkeeping (sym_size, _assert_scalar) is not the point
        result.update(status="data-dependent shape", error="; ".join(data_dependent))
    if run and not missing and not data_dependent:
        try:
            if train:
                verdict = compare_training(model, inputs, chaos_reference=True)
                result.update(status="trained" if verdict["passed"] else "parity failed",
                              worst=verdict["worst"], chaotic=verdict["chaotic"],
                              compile_s=verdict["seconds"])
            else:
                err, passed, seconds = compare_inference(model, inputs)
                result.update(status="compiled" if passed else "parity failed",
                              max_rel_error=err, compile_s=seconds)
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
    if "worst" in result:
        name, ours, allowed = result["worst"]
        print(f"  trained in {result['compile_s']:.1f} s; closest to its bound: {name} "
              f"(error vs float64 {ours:.2e}, allowed {allowed:.2e})")
        if result.get("chaotic"):
            print("  within eager's own spread under 1e-7 weight changes only: "
                  + ", ".join(result["chaotic"]))
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
    return 0 if result["status"] in ("supported", "compiled", "trained") else 1


if __name__ == "__main__":
    sys.exit(main())
