"""Attention: tilegraph's two ways to compile F.scaled_dot_product_attention, against eager.

    python3 bench/attention.py [--quick]

1. Training step of a BERT-style classifier (Hugging Face BertForSequenceClassification,
   4 layers, hidden 256, 4 heads, sequence 128, batch 8; its default sdpa attention):
   eager PyTorch, tilegraph with attention written out as matmul / softmax / matmul (what
   "auto" picks at this size), and tilegraph's fused attention op forced
   (TILEGRAPH_FUSED_ATTENTION=always). Interleaved rounds, median seconds per step.
2. Memory of one long causal attention (4 heads, 4096 x 4096, width 32): the planned arena
   of the fused op against the written-out form's (which stores the 256 MiB score matrix),
   and the time of each.

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


def markdown(info, bert, long, seq):
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
    md = markdown(info, bert, long, seq)
    save_results("attention", info, dict(bert=bert, long=long), md)


if __name__ == "__main__":
    main()
