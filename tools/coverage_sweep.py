"""Generates docs/COVERAGE.md (and docs/coverage.json): which models tilegraph handles.

    python3 tools/coverage_sweep.py                 # the sweep (~1 h on 2 cores)
    python3 tools/coverage_sweep.py --quick         # a few models of each source
    python3 tools/coverage_sweep.py --only bert/QuestionAnswering,resnet18  # re-run some
    python3 tools/coverage_sweep.py --resume        # finish an interrupted sweep

For each model (tilegraph.zoo / tilegraph.zoo_wide builders, each in its own process with
a time limit): export as the front end does and list the ops tilegraph lacks; when every op
is supported, *inference parity* (compile, compare with eager fp32 and eager float64) and
*training parity* (3 SGD-momentum steps in tilegraph, eager fp32 and eager float64; losses
and every weight / running statistic judged against float64), see tilegraph.coverage.
The page ends with the Core ATen opset table (tilegraph.core_aten). `--only` re-runs the
named models and keeps the other rows of docs/coverage.json; `--resume` runs only the
models not in it yet.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))

import torch  # noqa: E402

from tilegraph import core_aten, zoo_wide  # noqa: E402

FAMILIES = ["resnet50", "resnext50_32x4d", "efficientnet_b0", "bert", "wav2vec2"]
SEGMENTATION = ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]
TIMM = ["resnet18", "resnet50d", "mobilenetv3_small_100", "efficientnet_b0", "convnext_atto",
        "vit_tiny_patch16_224", "deit_tiny_patch16_224", "regnetx_002", "densenet121",
        "dla34", "ghostnet_100", "levit_128s", "poolformer_s12", "mobilevit_xxs",
        "edgenext_xx_small", "lcnet_050", "swin_tiny_patch4_window7_224", "cspresnet50",
        "rexnet_100", "mixer_s16_224", "efficientformer_l1", "hrnet_w18_small"]
# torchvision: each architecture family's small variants and a few large ones (every
# classification model with --all-torchvision, ~1.5 h more on 2 cores).
TORCHVISION = ["alexnet", "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
               "densenet121", "densenet161", "efficientnet_b0", "efficientnet_v2_s",
               "googlenet", "inception_v3", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small",
               "regnet_x_400mf", "regnet_y_400mf", "resnet18", "resnet50", "resnext50_32x4d",
               "shufflenet_v2_x1_0", "squeezenet1_1", "swin_t", "swin_v2_t", "vgg11_bn",
               "vit_b_16", "wide_resnet50_2"]
QUICK = {"torchvision": ["resnet18", "mobilenet_v2", "squeezenet1_0"],
         "segmentation": ["lraspp_mobilenet_v3_large"], "timm": TIMM[:2],
         "transformers": ["gpt2/CausalLM", "bert/SequenceClassification"]}

# Too large for the 2-core sweep machine: inference of these is not run (the float64
# reference of a 600M-parameter model alone needs ~5 GiB and minutes per call).
TOO_LARGE = {"vit_h_14", "regnet_y_128gf"}
# Training parity is swept for models up to this many parameters; larger variants of a
# family are represented by their smaller siblings (the table says so).
TRAIN_MAX_PARAMS = 60e6
TIMEOUT_S = 600

_BUILDERS = {
    "family": "functools.partial(zoo_wide.family, {name!r})",
    "torchvision": "functools.partial(zoo_wide.torchvision_classifier, {name!r})",
    "segmentation": "functools.partial(zoo_wide.torchvision_segmenter, {name!r})",
    "timm": "functools.partial(zoo_wide.timm_classifier, {name!r})",
    "transformers": "functools.partial(zoo_wide.hf_model, {name!r})",
}

_CHILD = """
import functools, json, torch
torch.set_num_threads(2)
from tilegraph import coverage, zoo, zoo_wide
fn = {builder}
fn.__name__ = {name!r}
case = fn()
params = sum(p.numel() for p in case.model.parameters())
print('@@' + json.dumps(coverage.report(fn, run=True)), flush=True)
if params <= {max_params} and case.train_model is not None:
    print('@@' + json.dumps(coverage.report(fn, train=True, run=True)), flush=True)
else:
    print('@@' + json.dumps({{"status": "not run", "mode": "train", "params": params}}))
"""


def run_isolated(source, name):
    """(inference result, training result) for one model, in a child process with a time
    limit, so one slow or crashing model cannot stop the sweep."""
    code = _CHILD.format(builder=_BUILDERS[source].format(name=name), name=name,
                         max_params=int(TRAIN_MAX_PARAMS))
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "python"))
    results, error = [], "no output"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=TIMEOUT_S, env=env)
        stdout = out.stdout
        error = (out.stderr.strip().splitlines() or [error])[-1]
    except subprocess.TimeoutExpired as e:
        stdout = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        error = f"not finished in {TIMEOUT_S} s"
    for line in stdout.splitlines():
        if line.startswith("@@"):
            results.append(json.loads(line[2:]))
    while len(results) < 2:
        status = error if error.startswith("not finished") else "crashed"
        results.append({"status": status, "error": "" if status == error else error})
    return results[0], results[1]


def model_list(quick, all_torchvision=False):
    import torchvision.models as tvm
    torchvision = tvm.list_models(module=tvm) if all_torchvision else TORCHVISION
    lists = {"family": FAMILIES,
             "transformers": QUICK["transformers"] if quick else zoo_wide.HF_MODELS,
             "timm": QUICK["timm"] if quick else TIMM,
             "segmentation": QUICK["segmentation"] if quick else SEGMENTATION,
             "torchvision": QUICK["torchvision"] if quick else torchvision}
    return [(source, name) for source, names in lists.items() for name in names]


def _save_json(rows, out_json):
    with open(out_json, "w") as f:
        json.dump([{"source": s, "model": n, "inference": i, "train": t}
                   for s, n, i, t in rows], f, indent=1)


def sweep(models, previous, out_json):
    """Runs every model not in `previous`; the JSON is rewritten after each model so an
    interrupted sweep can --resume."""
    rows = []
    for source, name in models:
        if (source, name) in previous:
            rows.append(previous[(source, name)])
            continue
        if name in TOO_LARGE:
            skipped = {"status": "not run (too large for the 2-core sweep)"}
            rows.append((source, name, skipped, dict(skipped)))
        else:
            rows.append((source, name, *run_isolated(source, name)))
        print(source, name, rows[-1][2]["status"], "/", rows[-1][3]["status"], flush=True)
        _save_json(rows, out_json)
    return rows


def _cell(result):
    status = result["status"]
    if status == "compiled":
        return f"matches, max err {result['max_rel_error']:.1e}"
    if status == "trained":
        chaotic = result.get("chaotic", [])
        if chaotic:  # see tilegraph.coverage.compare_training(chaos_reference=True)
            return (f"matches (3 steps) within eager's spread: {len(chaotic)} tensor(s) "
                    f"chaotic, e.g. `{chaotic[0]}`")
        return "matches (3 steps)"
    if status == "parity failed":
        if "worst" in result:
            name, ours, allowed = result["worst"]
            return f"**differs**: `{name}` {ours:.1e} from float64 (allowed {allowed:.1e})"
        return f"**differs**: max err {result['max_rel_error']:.1e}"
    if status == "not run" and "params" in result:
        return f"not swept ({result['params'] / 1e6:.0f}M parameters)"
    if status == "unsupported ops":
        return "missing: " + ", ".join(f"`{m.replace('aten.', '')}`" for m in result["missing"])
    error = result.get("error", "")
    return (f"{status}: {error[:120]}" if error else status).replace("|", "\\|")


def _passed(result, good):
    return result["status"] == good


def summary(rows):
    infer = [r[2] for r in rows if not r[2]["status"].startswith("not run")]
    train = [r[3] for r in rows if not r[3]["status"].startswith("not run")]
    n_inf = sum(_passed(r, "compiled") for r in infer)
    n_train = sum(_passed(r, "trained") for r in train)
    return [f"**Inference parity: {n_inf} of {len(infer)} swept models "
            f"({100 * n_inf / max(len(infer), 1):.0f}%). Training parity: {n_train} of "
            f"{len(train)} swept models ({100 * n_train / max(len(train), 1):.0f}%).**"]


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
        "Each model is built as its users build it (tilegraph/zoo.py, tilegraph/zoo_wide.py: "
        "random weights, dropout and stochastic depth 0, 64x64 images unless the model needs "
        "more, 16 tokens, Hugging Face models with their own `labels=` losses and the default "
        "attention). *Inference*: compile with tilegraph and compare with eager fp32 and eager "
        "float64; *training*: 3 SGD-momentum steps (lr 1e-3) in tilegraph, eager fp32 and eager "
        "float64. A result *matches* when, for every output (inference) or for the losses and "
        "every weight and running statistic (training), tilegraph's largest error against "
        "float64 is within 4x eager fp32's own error plus fp32 tolerance (1e-4 of the tensor's "
        "scale) — the criterion that tells a bug from fp32 noise "
        "(`tilegraph.coverage.judge_against_float64`). In training, eager fp32's error is the "
        "larger of two runs: from the model's weights and from the weights moved by 1e-7 "
        "(about an ulp); a tensor that passes only by the second is *chaotic* (a max-pool tie "
        "or a batch statistic over a few values amplifies rounding: eager disagrees with itself "
        "by as much) and the cell names it. The inference error shown is against "
        "eager fp32, relative to the output's largest value.",
        "",
        *summary(rows),
        "",
        "| source | model | inference | training |",
        "|---|---|---|---|",
    ]
    for source, name, infer, train in rows:
        lines.append(f"| {source} | {name} | {_cell(infer)} | {_cell(train)} |")
    lines += ["", f"*not swept*: training parity is swept for models up to "
              f"{TRAIN_MAX_PARAMS / 1e6:.0f}M parameters (their float64 reference trains "
              "too slowly on 2 cores); each larger model's family is represented by a smaller "
              "variant in the table. *too large*: inference is not run either."]
    missing = {}
    for _, name, infer, train in rows:
        for r in (infer, train):
            for op in r.get("missing", []):
                missing.setdefault(op, set()).add(name)
    if missing:
        lines += ["", "## Missing ops, by how many models need them", ""]
        for op, models in sorted(missing.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"- `{op}`: {len(models)} ({', '.join(sorted(models)[:6])}"
                         f"{', …' if len(models) > 6 else ''})")
    lines += ["", *core_aten.markdown_table()]
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    _save_json(rows, out_json)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated model names to re-run")
    parser.add_argument("--all-torchvision", action="store_true",
                        help="every torchvision classification model, not the sample")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already in the JSON, run the rest")
    parser.add_argument("--out", default="docs/COVERAGE.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    out_json = os.path.splitext(args.out)[0].lower() + ".json"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    models, previous = model_list(args.quick, args.all_torchvision), {}
    if args.only or args.resume:
        wanted = set(args.only.split(",")) if args.only else set()
        with open(out_json) as f:
            previous = {(r["source"], r["model"]): (r["source"], r["model"], r["inference"],
                                                    r["train"])
                        for r in json.load(f) if r["model"] not in wanted}
    rows = sweep(models, previous, out_json)
    command = "python3 tools/coverage_sweep.py" + (" --quick" if args.quick else "") + (
        " --all-torchvision" if args.all_torchvision else "")
    write(rows, args.out, out_json, command)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
