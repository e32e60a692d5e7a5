"""The package's ISA builds of the C++ core (python/tilegraph/_isa.py): which one a CPU
loads, the errors for one it cannot run, and every build this CPU runs training and
inferring with eager parity (each in its own process, chosen by TILEGRAPH_ISA)."""
import json
import os
import subprocess
import sys

import pytest

import tilegraph
from tilegraph import _core, _isa

HERE = os.path.dirname(__file__)
BUILT = {"avx512": "/p/avx512/_core.so", "avx2": "/p/avx2/_core.so", "sse4": "/p/sse4/_core.so"}
SSE4 = _isa.LEVELS["sse4"]
AVX2 = _isa.LEVELS["avx2"]
AVX512 = _isa.LEVELS["avx512"]
FLAGS = _isa.cpu_flags()  # this CPU's


def test_the_widest_build_the_cpu_runs_is_chosen():
    assert _isa.choose("", BUILT, AVX512 | {"amx_tile"})[0] == "avx512"
    assert _isa.choose("", BUILT, AVX2 | {"avx512f"})[0] == "avx2"  # avx512f alone is not v4
    assert _isa.choose("", BUILT, SSE4)[0] == "sse4"
    assert _isa.choose("", {"avx2": "a", "sse4": "b"}, AVX512)[0] == "avx2"
    assert _isa.choose("", {"native": "n", "sse4": "b"}, SSE4)[0] == "native"
    # Without /proc/cpuinfo only the baseline is safe.
    assert _isa.choose("", BUILT, None)[0] == "sse4"


def test_asking_for_a_build_the_cpu_lacks_or_that_was_not_built_is_a_clear_error():
    assert _isa.choose("avx2", BUILT, AVX512) == ("avx2", BUILT["avx2"])
    with pytest.raises(_isa.IsaError, match="this CPU lacks avx512bw, avx512cd"):
        _isa.choose("avx512", BUILT, AVX2 | {"avx512f", "avx512dq", "avx512vl"})
    with pytest.raises(_isa.IsaError, match="'avx512' is not a build of this package"):
        _isa.choose("avx512", {"sse4": "b"}, AVX512)
    with pytest.raises(_isa.IsaError, match="runs none of the builds"):
        _isa.choose("", {"avx2": "a"}, SSE4)
    with pytest.raises(_isa.IsaError, match="no build of the C\\+\\+ core"):
        _isa.choose("", {}, AVX512)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx2\nbugs\t: x\n")
    assert _isa.cpu_flags(str(info)) == {"fpu", "sse4_2", "avx2"}
    assert _isa.cpu_flags(str(tmp_path / "missing")) is None


def test_this_process_loaded_the_build_the_chooser_picks():
    assert _core.isa == _isa.choose()[0]
    assert tilegraph.Executable is _core.Executable
    if os.environ.get("TILEGRAPH_ISA", "") == "":
        if "native" not in _isa.built_isas() and FLAGS is not None:
            widest = next(name for name, need in _isa.LEVELS.items() if need <= FLAGS)
            assert _core.isa == widest


def _child(isa):
    env = dict(os.environ, TILEGRAPH_ISA=isa)
    return subprocess.run([sys.executable, os.path.join(HERE, "isa_child.py")], env=env,
                          capture_output=True, text=True, timeout=600)


# Every build in this package that this CPU can run (a CPU runs the levels below its own).
RUNNABLE = [isa for isa in _isa.built_isas() if _isa.runs_on(isa, FLAGS)]


def test_this_cpu_runs_at_least_the_loaded_build():
    assert _core.isa in RUNNABLE


@pytest.mark.parametrize("isa", RUNNABLE)
def test_every_build_this_cpu_runs_matches_eager(isa):
    proc = _child(isa)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["isa"] == isa
    for kind in ("cnn", "encoder"):
        weights, outputs = result[kind]
        assert weights < 1e-4, (kind, weights)  # 6 SGD steps
        assert outputs < 1e-5, (kind, outputs)


def test_a_build_the_cpu_cannot_run_fails_at_import_with_the_reason():
    proc = _child("avx9000")
    assert proc.returncode != 0
    assert "TILEGRAPH_ISA='avx9000' is not a build of this package" in proc.stderr
