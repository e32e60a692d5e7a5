"""Turns the suite's results into ratios, the summary against the issue's targets, and a
Markdown table. Ratios are tilegraph's throughput over the baseline's (> 1: tilegraph is
faster), from medians measured side by side in one process."""
from bench import common

TARGETS = [  # (key, description, threshold): issue 16's targets (issue 5's compile time)
    ("train_vs_eager", "training geomean vs eager PyTorch", 1.5),
    ("train_vs_compile", "training geomean vs torch.compile", 1.2),
    ("infer_vs_onnxruntime", "inference geomean vs ONNX Runtime", 1.0),
    ("infer_min_vs_onnxruntime", "inference vs ONNX Runtime, worst model", 1.0),
    ("mlp_train_vs_eager", "MLP training step vs eager", 5.0),
    ("small_cnn_train_vs_eager", "unseen-style small CNN training vs eager", 1.5),
    ("gemm_fraction_of_peak", "large GEMM, fraction of measured FMA peak", 0.8),
    ("gemm_vs_raw_onednn", "large GEMM vs raw oneDNN (same primitive, no graph)", 1.0),
    ("layernorm_gelu_fraction_of_triad", "layer norm + GELU, fraction of triad bandwidth", 0.5),
    ("silu_chain_fraction_of_triad", "SiLU chain (silu(x) * y + z), fraction of triad bandwidth", 0.5),
    ("sgd_update_fraction_of_triad", "SGD-momentum update, fraction of triad bandwidth", 0.5),
    ("adam_update_fraction_of_triad", "Adam update, fraction of triad bandwidth", 0.5),
    ("compile_time_vs_torch_compile", "compile time, torch.compile's / tilegraph's", 5.0),
]


def ratio(section, baseline):
    tg, base = section.get("tilegraph", {}), section.get(baseline, {})
    if "per_second" not in tg or "per_second" not in base:
        return None
    return tg["per_second"] / base["per_second"]


def summary(results):
    models = [m for m in results["models"] if "error" not in m]
    # The MLP and the small CNN have targets of their own (issue 16); the training geomean is
    # over the model families. Inference counts every model.
    own_targets = ("mlp", "small_cnn")
    train_models = [m for m in models if m["name"] not in own_targets]
    s = {
        "train_vs_eager": common.geomean([ratio(m["train"], "eager") for m in train_models]),
        "train_vs_compile": common.geomean(
            [ratio(m["train"], "torch.compile") for m in train_models]),
        "infer_vs_onnxruntime": common.geomean(
            [ratio(m["infer"], "onnxruntime") for m in models]),
        "infer_vs_eager": common.geomean([ratio(m["infer"], "eager") for m in models]),
    }
    mlp = [m for m in models if m["name"] == "mlp"]
    s["mlp_train_vs_eager"] = ratio(mlp[0]["train"], "eager") if mlp else None
    cnn = [m for m in models if m["name"] == "small_cnn"]
    s["small_cnn_train_vs_eager"] = ratio(cnn[0]["train"], "eager") if cnn else None
    infer = [ratio(m["infer"], "onnxruntime") for m in models]
    s["infer_min_vs_onnxruntime"] = min([r for r in infer if r is not None], default=None)
    micro = {r["name"].split("_")[0]: r for r in results.get("micro", []) if "engines" in r}
    gemm, lng = micro.get("gemm"), micro.get("layernorm")
    s["gemm_fraction_of_peak"] = gemm["engines"]["tilegraph"]["fraction_of_limit"] if gemm else None
    raw = gemm and gemm["engines"].get("oneDNN (raw)")
    s["gemm_vs_raw_onednn"] = (gemm["engines"]["tilegraph"]["rate"] / raw["rate"]
                               if raw else None)
    s["layernorm_gelu_fraction_of_triad"] = (
        lng["engines"]["tilegraph"]["fraction_of_limit"] if lng else None)
    silu = micro.get("silu")
    s["silu_chain_fraction_of_triad"] = (
        silu["engines"]["tilegraph"]["fraction_of_limit"] if silu else None)
    for update in ("sgd", "adam"):
        u = micro.get(update)
        s[f"{update}_update_fraction_of_triad"] = (
            u["engines"]["tilegraph"]["fraction_of_limit"] if u else None)
    compile_ratios = []
    for m in train_models:
        for section in ("train", "infer"):
            tg = m[section].get("tilegraph", {}).get("first_call_seconds")
            tc = m[section].get("torch.compile", {}).get("first_call_seconds")
            if tg and tc:
                compile_ratios.append(tc / tg)
    s["compile_time_vs_torch_compile"] = common.geomean(compile_ratios)
    s["targets"] = [{"target": d, "threshold": t, "measured": s.get(k),
                     "met": s.get(k) is not None and s[k] >= t} for k, d, t in TARGETS]
    return s


def _fmt(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def _cell(e, scale=1.0, digits=1):
    if "error" in e:
        return "error"
    if "median" not in e:
        return "–"
    per = e["per_second"]
    lo, hi = e["per_second"] * e["median"] / e["max"], e["per_second"] * e["median"] / e["min"]
    return f"{per * scale:.{digits}f} ({lo * scale:.{digits}f}–{hi * scale:.{digits}f})"


def model_line(m):
    if "error" in m:
        return f"{m['name']}: ERROR {m['error'][-300:]}"
    parts = [m["name"]]
    for section in ("train", "infer"):
        for eng, e in m[section].items():
            parts.append(f"{section}/{eng}={_fmt(e.get('per_second'), 1)}/s "
                         f"first={_fmt(e.get('first_call_seconds'), 1)}s")
    return "  ".join(parts)


def markdown(r):
    mc = r["machine"]
    lim = r["limits"]
    out = [f"# tilegraph benchmark ({r['suite']} suite)", "",
           f"- command: `{r['command']}`", f"- commit: `{mc['commit']}`, date: {mc['date']}",
           f"- machine: {mc['cpu']}, {mc['cores']} cores, {mc['threads']} threads for every "
           f"engine; {common.isa_line(mc)}",
           f"- versions: {', '.join(f'{k} {v}' for k, v in mc['versions'].items())}",
           f"- measured limits: FP32 FMA peak {lim['fma_peak_gflops']:.0f} GFLOP/s "
           f"({lim['fma_isa']}), triad bandwidth {lim['triad_gbs']:.1f} GB/s",
           f"- total time: {r.get('total_seconds', 0):.0f} s", "",
           "Throughput is samples/s, median of interleaved calls (min–max in brackets). "
           "Ratios are tilegraph over the baseline (> 1: tilegraph faster). First call = "
           "build + compile + one call.", "", "## Targets (issue 16; compile time: issue 5)", "",
           "| target | threshold | measured | met |", "|---|---|---|---|"]
    for t in r["summary"]["targets"]:
        out.append(f"| {t['target']} | {t['threshold']} | {_fmt(t['measured'])} | "
                   f"{'yes' if t['met'] else 'no'} |")
    out += ["", "## Models", ""]
    for section, title in (("train", "Training"), ("infer", "Inference")):
        engines = ["eager", "torch.compile"] + (["onnxruntime"] if section == "infer" else []) \
            + ["tilegraph"]
        out += [f"### {title} (samples/s)", "",
                "| model | " + " | ".join(engines) + " | tg/eager | tg/compile"
                + (" | tg/ORT" if section == "infer" else "") + " |",
                "|---" * (len(engines) + 3 + (section == "infer")) + "|"]
        for m in r["models"]:
            if "error" in m:
                out.append(f"| {m['name']} | error: {m['error'][:120]!r} |")
                continue
            s = m[section]
            row = [m["name"]] + [_cell(s.get(e, {})) for e in engines]
            row += [_fmt(ratio(s, "eager")), _fmt(ratio(s, "torch.compile"))]
            if section == "infer":
                row.append(_fmt(ratio(s, "onnxruntime")))
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    out += ["### First call (s) and memory (MiB: resident after the first call + growth "
            "during a call)", "",
            "| model | phase | " + " | ".join(["eager", "torch.compile", "onnxruntime",
                                                "tilegraph"]) + " |", "|---" * 6 + "|"]
    for m in r["models"]:
        if "error" in m:
            continue
        for section in ("train", "infer"):
            cells = []
            for e in ("eager", "torch.compile", "onnxruntime", "tilegraph"):
                v = m[section].get(e)
                if v is None or "first_call_seconds" not in v:
                    cells.append("–" if v is None else "error")
                else:
                    cells.append(f"{v['first_call_seconds']:.1f} s / "
                                 f"{v.get('peak_bytes', 0) / 2**20:.0f} MiB")
            out.append(f"| {m['name']} | {section} | " + " | ".join(cells) + " |")
    out += ["", "## Microbenchmarks", "",
            "| benchmark | config | engine | rate | fraction of limit | first call (s) |",
            "|---|---|---|---|---|---|"]
    for mb in r.get("micro", []):
        for eng, e in mb["engines"].items():
            out.append(f"| {mb['name']} | {mb['config']} | {eng} | {e['rate']:.1f} {mb['unit']}"
                       f" | {e['fraction_of_limit']:.2f} of {mb['limit_name']} "
                       f"({mb['limit']:.0f}) | {e['first_call_seconds']:.2f} |")
    out += ["", "## Configs", ""]
    for m in r["models"]:
        notes = f"; {m['notes']}" if m.get("notes") else ""
        out.append(f"- {m['name']}: {m.get('config', '')}; {m.get('steps_per_call', '?')} steps "
                   f"per call, {m.get('rounds', '?')} rounds{notes}")
    return "\n".join(out) + "\n"
