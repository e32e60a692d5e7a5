"""Measurement helpers shared by the benchmark suite (rules: ../shared/BENCHMARKS.md).

- `machine()`: what ran the numbers (lscpu model line, cores, threads, commit, versions).
- `interleaved(fns, rounds)`: runs every engine's call in turn (A B C A B C ...) after
  warm-up and returns per-engine median and min/max of the per-call seconds.
- `MemoryWatch`: samples this process's resident set (/proc/self/statm) from a thread, so
  an engine's memory is "RSS it keeps after its first call" + "growth during a call" (a
  call watched apart from the timed ones).
"""
import os
import platform
import statistics
import subprocess
import threading
import time

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class MemoryWatch:
    """Peak RSS while the `with` block runs, sampled every `interval` seconds."""

    def __init__(self, interval=0.002):
        self.interval = interval
        self.start = self.peak = 0

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.end = rss_bytes()

    @property
    def growth(self):
        return self.peak - self.start


def _run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def tilegraph_build():
    """Which ISA build of tilegraph's core this process runs (python/tilegraph/_isa.py)."""
    from tilegraph import _core
    return f"{_core.isa} (-march={_core.march})"


def isa_line(info):
    """The CPU's vector ISAs and tilegraph's build, for every report's header."""
    return (f"AVX2: {info['avx2']}, AVX-512: {info['avx512f']}, AMX: {info.get('amx')}; "
            f"tilegraph build: {info.get('tilegraph_build')}")


def machine(threads):
    import torch
    model = ""
    for line in _run(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    flags = open("/proc/cpuinfo").read()
    here = os.path.dirname(os.path.abspath(__file__))
    commit = _run(["git", "-C", here, "rev-parse", "--short", "HEAD"])
    dirty = bool(_run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"]))
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("onnxruntime", "torchvision", "transformers"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "threads": threads,
        "avx512f": " avx512f" in flags,
        "avx2": " avx2" in flags,
        "amx": " amx_tile" in flags,
        "tilegraph_build": tilegraph_build(),
        "commit": commit + ("+dirty" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "versions": versions,
    }


# Pause between two engines' timed calls: the previous engine's worker threads (ONNX
# Runtime's pool spins after a run, OpenMP's briefly) must go idle before the next engine
# starts, or on 2 cores the next engine is timed against spinning threads.
SETTLE_SECONDS = 0.05


def interleaved(fns, rounds, warmup=1):
    """fns: {engine: callable}. Returns {engine: {"median", "min", "max", "samples"}} (s)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(SETTLE_SECONDS)
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: summarize(s) for name, s in samples.items()}


def summarize(seconds):
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
            "samples": seconds}


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    if not xs:
        return None
    prod = 1.0
    for x in xs:
        prod *= x
    return prod ** (1.0 / len(xs))


def save_results(kind, info, data, md):
    """Writes bench/results/<kind>_<date>_<commit>.{json,md} (data: JSON-able, next to info)
    and prints the markdown."""
    import json
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(os.path.join(here, "results"), exist_ok=True)
    stem = os.path.join(here, "results", time.strftime(f"{kind}_%Y-%m-%d_%H%M_")
                        + info["commit"].replace("+", "_"))
    with open(stem + ".json", "w") as f:
        json.dump(dict(info=info, **data), f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print(md)

