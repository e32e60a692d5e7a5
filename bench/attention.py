"""Attention: tilegraph's two ways to compile F.scaled_dot_product_attention, against eager.

    python3 bench/attention.py [--quick]

1. Training step of a BERT-style classifier (Hugging Face BertForSequenceClassification,
   4 layers, hidden 256, 4 heads, sequence 128, batch 8; its default sdpa attention):
   eager PyTorch, tilegraph with attention written out as matmul / softmax / matmul
   (TILEGRAPH_FUSED_ATTENTION=never) and with tilegraph's fused attention op (=always, what
   "auto" picks for f32 programs). Interleaved rounds, median seconds per step.
2. Memory of one long causal attention (4 heads, 4096 x 4096, width 32): the planned arena
   of the fused op against the written-out form's (which stores the 256 MiB score matrix),
   and the time of each.
3. Inference of a Hugging Face Llama (2 layers, hidden 64, 4 heads, batch 2, one row
   left-padded: the 4-D mask path) at long sequences: eager PyTorch, torch.compile (not with
   --quick) and tilegraph "auto" (the fused op in f32 inference) and "never" (written out),
   interleaved rounds, median seconds per call. (No ONNX Runtime column: not exported here.)

Results: bench/results/attention_<date>_<commit>.{json,md}.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import interleaved, isa_line, machine, save_results  # noqa: E402

import tilegraph  # noqa: E402


def _bert():
    import transformers as tf
    torch.manual_seed(0)
    cfg = tf.BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, vocab_size=1000, max_position_embeddings=128,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = tf.BertForSequenceClassification(cfg)

    class Loss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, ids, labels):
            return self.m(input_ids=ids, labels=labels).loss
    return Loss()


def _compiled(mode, model, args):
    os.environ["TILEGRAPH_FUSED_ATTENTION"] = mode
    run = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
    run(*args)  # compile
    return lambda: run(*args)


def measure_bert(rounds):
    ids, labels = torch.randint(0, 1000, (8, 128)), torch.randint(0, 2, (8,))
    eager_model = _bert()
    opt = torch.optim.SGD(eager_model.parameters(), lr=0.01)

    def eager():
        opt.zero_grad()
        eager_model(ids, labels).backward()
        opt.step()
    fns = {"eager": eager, "tilegraph written-out": _compiled("never", _bert(), (ids, labels)),
           "tilegraph fused": _compiled("always", _bert(), (ids, labels))}
    return {k: v["median"] for k, v in interleaved(fns, rounds).items()}


def measure_long(seq):
    class Causal(torch.nn.Module):
        def forward(self, q):
            return F.scaled_dot_product_attention(q, q, q, is_causal=True)

    q = torch.randn(1, 4, seq, 32) * 0.1
    out = {}
    for mode in ("always", "never"):
        os.environ["TILEGRAPH_FUSED_ATTENTION"] = mode
        run = tilegraph.inferenceModel(Causal())
        run(q)
        t0 = time.perf_counter()
        run(q)
        out["fused" if mode == "always" else "written-out"] = dict(
            seconds=time.perf_counter() - t0,
            arena_mib=run.executable.memory_stats["arena_bytes"] / 2 ** 20)
    return out


def measure_llama(seqs, rounds, with_compile):
    import transformers as tf
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=128, max_position_embeddings=2048, hidden_size=64,
                         intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4)
    model = tf.LlamaForCausalLM(cfg).eval()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, ids, mask):
            return self.m(input_ids=ids, attention_mask=mask, use_cache=False).logits

    out = {}
    for seq in seqs:
        ids = torch.randint(3, 128, (2, seq))
        mask = torch.ones(2, seq, dtype=torch.int64)
        mask[1, :seq // 5] = 0
        fns = {"eager": lambda: Logits()(ids, mask)}
        if with_compile:
            compiled = torch.compile(Logits())
            fns["torch.compile"] = lambda: compiled(ids, mask)
        for mode in ("auto", "never"):
            os.environ["TILEGRAPH_FUSED_ATTENTION"] = mode
            run = tilegraph.inferenceModel(Logits())
            run(ids, mask)  # compile
            fns[f"tilegraph {mode}"] = (lambda r: lambda: r(ids, mask))(run)
        with torch.no_grad():
            out[seq] = {k: v["median"] for k, v in interleaved(fns, rounds).items()}
    os.environ.pop("TILEGRAPH_FUSED_ATTENTION", None)
    return out


def markdown(info, bert, long, seq, llama):
    lines = [f"# Attention — {info['date']}, commit {info['commit']}", "",
             f"{info['cpu']}, {info['cores']} cores, {isa_line(info)}; `{info['command']}`", "",
             "## BERT-style training step (seq 128, batch 8), median s/step", "",
             "| engine | s/step | vs eager |", "|---|---|---|"]
    for name, s in bert.items():
        lines.append(f"| {name} | {s:.4f} | {bert['eager'] / s:.2f}x |")
    lines += ["", f"## One causal attention, 4 heads x {seq} x {seq}, width 32", "",
              "| form | planned arena (MiB) | s |", "|---|---|---|"]
    for name, r in long.items():
        lines.append(f"| {name} | {r['arena_mib']:.1f} | {r['seconds']:.3f} |")
    for n, times in llama.items():
        lines += ["", f"## Llama inference (2 layers, batch 2, padded row), {n} tokens, "
                  "median s/call", "", "| engine | s/call | eager / engine |", "|---|---|---|"]
        for name, s in times.items():
            lines.append(f"| {name} | {s:.4f} | {times['eager'] / s:.2f}x |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    info = machine(torch.get_num_threads())
    info["command"] = "python3 bench/attention.py" + (" --quick" if args.quick else "")
    seq = 2048 if args.quick else 4096
    bert = measure_bert(rounds=3 if args.quick else 8)
    long = measure_long(seq)
    llama = measure_llama((512,) if args.quick else (512, 1536), rounds=3 if args.quick else 5,
                          with_compile=not args.quick)
    md = markdown(info, bert, long, seq, llama)
    save_results("attention", info, dict(bert=bert, long=long,
                                         llama={str(k): v for k, v in llama.items()}), md)


if __name__ == "__main__":
    main()
