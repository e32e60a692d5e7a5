"""Child of test_onnx.py's fuzz test: mutates an ONNX file N times (truncation, byte flips,
insertions, varint-sized garbage) and loads + runs each through tilegraph.onnx. Exceptions
are expected outcomes; a crash or hang of this process is the failure the parent detects.

    python3 onnx_fuzz_child.py MODEL.onnx N
"""
import collections
import random
import sys
import warnings

import numpy as np

import tilegraph.onnx as tgx

warnings.filterwarnings("ignore")


def mutate(data, rng):
    b = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(b[: rng.randrange(len(b))]), "truncated"
    if kind == 1:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b), "flipped"
    if kind == 2:
        at = rng.randrange(len(b))
        return bytes(b[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + b[at:]), "inserted"
    at = rng.randrange(len(b))  # a huge length prefix
    return bytes(b[:at] + b"\xff\xff\xff\xff\x0f" + b[at:]), "length"


def main():
    data = open(sys.argv[1], "rb").read()
    n = int(sys.argv[2])
    rng = random.Random(1234)
    outcomes = collections.Counter()
    for i in range(n):
        blob, kind = mutate(data, rng)
        print(f"case {i} ({kind})", file=sys.stderr, flush=True)
        try:
            sess = tgx.InferenceSession(blob)
            feed = {}
            for inp in sess.get_inputs():
                shape = [d if isinstance(d, int) and 0 < d < 64 else 1 for d in inp.shape]
                feed[inp.name] = np.zeros(shape, np.float32)
            sess.run(None, feed)
            outcomes["ran"] += 1
        except Exception as e:  # noqa: BLE001 - any Python exception is a handled outcome
            outcomes[type(e).__name__] += 1
    print("outcomes:", dict(outcomes))


if __name__ == "__main__":
    main()
