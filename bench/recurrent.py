"""LSTM and GRU training: tilegraph's lstm_layer / gru_layer ops against the same model
unrolled over its time steps (torch's decomposition, what tilegraph compiled before the
ops), eager PyTorch and torch.compile, in one process. Compile time (first call: capture and
compilation) and the median training step, interleaved.

    python3 bench/recurrent.py [--rounds 7] [--steps 100] [--batch 16]

Model: a 2-layer bidirectional LSTM (or GRU), 64 -> 128 per direction, over `--steps` time
steps, then a Linear on the last step and cross entropy; SGD. Results:
bench/results/recurrent_<date>_<commit>.{json,md}.
"""
import argparse
import copy
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import interleaved, machine, save_results  # noqa: E402

import tilegraph  # noqa: E402
from tilegraph import _recurrent  # noqa: E402


class Tagger(torch.nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(64, 128, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = torch.nn.Linear(256, 10)

    def forward(self, x, y):
        logits = self.fc(self.rnn(x)[0][:, -1])
        return logits, F.cross_entropy(logits, y)


def _tilegraph(model, args, unrolled):
    saved = _recurrent.lstm, _recurrent.gru
    if unrolled:  # torch's decompositions: a cell per time step
        _recurrent.lstm, _recurrent.gru = _recurrent._torch_lstm, _recurrent._torch_gru
    try:
        engine = tilegraph.trainingModel(model, optimizer=torch.optim.SGD(model.parameters(),
                                                                          lr=0.01))
        start = time.perf_counter()
        engine(*args)
        compile_s = time.perf_counter() - start
    finally:
        _recurrent.lstm, _recurrent.gru = saved
    return (lambda: engine(*args)), compile_s


def _eager(model, args, compiled):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    forward = torch.compile(model) if compiled else model

    def step():
        opt.zero_grad()
        forward(*args)[1].backward()
        opt.step()
    start = time.perf_counter()
    step()
    return step, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    info = machine(torch.get_num_threads())
    info["command"] = (f"python3 bench/recurrent.py --rounds {args.rounds} --steps "
                       f"{args.steps} --batch {args.batch}")
    lines = [f"# LSTM / GRU training — {info['date']}, commit {info['commit']}", "",
             f"{info['cpu']}, {info['threads']} threads; `{info['command']}`", "",
             "| cell | engine | compile s | median step s | step vs eager |",
             "|---|---|---|---|---|"]
    results = {}
    for cell in (torch.nn.LSTM, torch.nn.GRU):
        torch.manual_seed(0)
        base = Tagger(cell)
        g = torch.Generator().manual_seed(1)
        data = (torch.randn(args.batch, args.steps, 64, generator=g),
                torch.randint(0, 10, (args.batch,), generator=g))
        fns, compile_s = {}, {}
        for name, make in (("tilegraph", lambda m: _tilegraph(m, data, False)),
                           ("tilegraph unrolled", lambda m: _tilegraph(m, data, True)),
                           ("eager", lambda m: _eager(m, data, False)),
                           ("torch.compile", lambda m: _eager(m, data, True))):
            fns[name], compile_s[name] = make(copy.deepcopy(base))
            print(cell.__name__, name, f"first call {compile_s[name]:.1f} s", flush=True)
        timed = interleaved(fns, args.rounds, warmup=1)
        eager = timed["eager"]["median"]
        results[cell.__name__] = {name: dict(t, compile_s=compile_s[name])
                                  for name, t in timed.items()}
        for name, t in timed.items():
            lines.append(f"| {cell.__name__} | {name} | {compile_s[name]:.1f} | "
                         f"{t['median']:.4f} | {eager / t['median']:.2f}x |")
        print("\n".join(lines[-4:]), flush=True)
    save_results("recurrent", info, dict(results=results), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
