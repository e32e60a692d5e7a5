"""Generates docs/COVERAGE.md (and docs/coverage.json): which models tilegraph handles.

    python3 tools/coverage_sweep.py                 # the whole sweep (~30+ min on 2 cores)
    python3 tools/coverage_sweep.py --quick         # the issue's families + a few others

For each model: export (torch.export + Core ATen, as the front end does), the ops tilegraph
lacks, and for fully supported models an inference compile whose outputs are compared with
eager (max error relative to the output's largest value). Training is exported for the
model families of tests/e2e/test_models.py (their training parity lives in that test).
"""
import argparse
import datetime
import functools
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))

import torch  # noqa: E402

from tilegraph import coverage, zoo  # noqa: E402

FAMILIES = [("resnet50", zoo.resnet50), ("resnext50_32x4d", zoo.resnext50_32x4d),
            ("efficientnet_b0", zoo.efficientnet_b0), ("bert (2 layers)", zoo.bert_pretraining),
            ("wav2vec2 (small)", zoo.wav2vec2_ctc)]
TIMM = ["resnet18", "mobilenetv3_small_100", "convnext_atto", "vit_tiny_patch16_224",
        "efficientnet_b0", "regnetx_002"]
HF = ["gpt2", "distilbert", "roberta", "albert", "t5", "llama"]
QUICK_TV = ["resnet18", "mobilenet_v2", "vgg11", "densenet121", "squeezenet1_0"]


def _named(fn, name):
    fn = functools.partial(fn, name)
    fn.__name__ = name
    return fn


# Too large to compile and compare on the 2-core sweep machine in reasonable time (the
# table says so rather than leaving them out).
TOO_LARGE = {"vit_h_14", "vit_l_16", "vit_l_32", "regnet_y_128gf", "regnet_y_32gf",
             "regnet_y_16gf", "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_b7",
             "efficientnet_b6", "swin_v2_b", "swin_b", "maxvit_t", "vit_b_16", "vit_b_32",
             "swin_v2_s", "swin_s", "regnet_x_32gf", "regnet_x_16gf", "wide_resnet101_2",
             "resnet152", "resnext101_64x4d", "resnext101_32x8d", "vgg19", "vgg19_bn",
             "vgg16", "vgg16_bn", "densenet201", "densenet169", "densenet161"}
TIMEOUT_S = 240


def _isolated(factory, name):
    """coverage.report(run=True) for one model in a child process with a time limit, so one
    slow or crashing model cannot stop the sweep."""
    code = ("import json, sys, functools, torch; torch.set_num_threads(2); "
            "from tilegraph import coverage, zoo; "
            f"fn = functools.partial(zoo.{factory}, {name!r}); fn.__name__ = {name!r}; "
            "print('@@' + json.dumps(coverage.report(fn, run=True)))")
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "python"))
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return {"model": name, "status": f"not finished in {TIMEOUT_S} s", "mode": "inference"}
    for line in out.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return {"model": name, "status": "crashed", "error": tail, "mode": "inference"}


def sweep(quick):
    rows = []
    for label, fn in FAMILIES:
        rows.append(("family", label, coverage.report(fn, run=True),
                     coverage.report(fn, train=True)))
    import torchvision.models as tvm
    names = QUICK_TV if quick else tvm.list_models(module=tvm)
    for name in names:
        if name in TOO_LARGE:
            result = {"model": name, "status": "not run (too large for the 2-core sweep)",
                      "mode": "inference"}
        else:
            result = _isolated("torchvision_classifier", name)
        rows.append(("torchvision", name, result, None))
        print(name, result["status"], flush=True)
    for name in TIMM[:2] if quick else TIMM:
        rows.append(("timm", name, _isolated("timm_classifier", name), None))
        print(name, rows[-1][2]["status"], flush=True)
    for name in HF[:2] if quick else HF:
        rows.append(("transformers", name, _isolated("hf_text_model", name), None))
        print(name, rows[-1][2]["status"], flush=True)
    return rows


def _cell(result):
    if result is None:
        return "—"
    status = result["status"]
    if status == "compiled":
        return f"compiled, max err {result['max_rel_error']:.1e}"
    if status == "supported":
        return "all ops supported"
    if status == "unsupported ops":
        return "missing: " + ", ".join(f"`{m.replace('aten.', '')}`" for m in result["missing"])
    error = result.get("error", "")
    return (f"{status}: {error[:120]}" if error else status).replace("|", "\\|")


def write(rows, out_md, out_json, command):
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    lines = [
        "# Model coverage",
        "",
        f"Generated by `{command}` at commit `{commit}` on "
        f"{datetime.date.today().isoformat()} ({platform.machine()}, torch {torch.__version__}).",
        "Do not edit by hand.",
        "",
        "*Inference*: export, then (when every op is supported) compile with tilegraph and "
        "compare with eager; the error is the largest absolute difference relative to the "
        "output's largest value. *Training* (the issue's families): the ops of the training "
        "export; the 3-step training parity of these models is tests/e2e/test_models.py. "
        "Random weights, small inputs (64x64 images unless the model needs more, 16 tokens).",
        "",
        "| source | model | inference | training export |",
        "|---|---|---|---|",
    ]
    for source, name, infer, train in rows:
        lines.append(f"| {source} | {name} | {_cell(infer)} | {_cell(train)} |")
    lines += ["", "Models marked *not run* are in the sweep's list but too large to compile and "
              "compare on the 2-core machine within the sweep's time; nothing is claimed for them."]
    compiled = sum(1 for r in rows if r[2]["status"] == "compiled")
    lines += ["", f"{compiled} of {len(rows)} models compile and run through tilegraph."]
    missing = {}
    for _, name, infer, train in rows:
        for r in (infer, train):
            for op in (r or {}).get("missing", []):
                missing.setdefault(op, set()).add(name)
    if missing:
        lines += ["", "## Missing ops, by how many models need them", ""]
        for op, models in sorted(missing.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"- `{op}`: {len(models)} ({', '.join(sorted(models)[:6])}"
                         f"{', …' if len(models) > 6 else ''})")
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(out_json, "w") as f:
        json.dump([{"source": s, "model": n, "inference": i, "train": t}
                   for s, n, i, t in rows], f, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="docs/COVERAGE.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = sweep(args.quick)
    command = "python3 tools/coverage_sweep.py" + (" --quick" if args.quick else "")
    write(rows, args.out, os.path.splitext(args.out)[0].lower() + ".json", command)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
