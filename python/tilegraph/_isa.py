"""Which build of the C++ core this process loads.

The package carries one build of the core per instruction-set level (CMake's TILEGRAPH_ISAS,
installed as tilegraph/_builds/<isa>/_core.*.so): `avx512` (-march=x86-64-v4), `avx2`
(x86-64-v3) and `sse4` (x86-64-v2), or a single `native` build (-march=native, a developer's
build for the machine that built it). `import tilegraph` loads the widest build this CPU runs;
TILEGRAPH_ISA=<isa> asks for one (an error, not an illegal instruction, when the CPU lacks it
or it was not built). The choice must be made before the module is loaded: a build's static
initializers may already use its instructions.

Convolution and matmul kernels come from oneDNN, which chooses its own ISA (AVX2, AVX-512,
AVX512_BF16, AMX) at run time whatever the build; the levels here decide the instructions of
tilegraph's own kernels (elementwise, fused, norms, reductions, optimizer updates).
"""
import importlib.util
import os

# {name: the CPU features it requires, as /proc/cpuinfo names them}, widest first: the
# x86-64 micro-architecture levels of the System V psABI.
_SSE4 = {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}
_AVX2 = _SSE4 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
_AVX512 = _AVX2 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
LEVELS = {"avx512": _AVX512, "avx2": _AVX2, "sse4": _SSE4}
# The order in which builds are preferred: a native build (made for this machine), then the
# widest level.
PREFERENCE = ("native", *LEVELS)

_HERE = os.path.dirname(os.path.abspath(__file__))


class IsaError(ImportError):
    """No build of the core this CPU can run, or TILEGRAPH_ISA names one it cannot."""


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags as the kernel reports them (it leaves out what the OS does not
    enable, such as AVX-512 state), or None where /proc/cpuinfo is not available."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return set()


def built_isas():
    """{isa: path of its module} for every build present in the package (found through the
    import system, so that editable installs, whose modules live elsewhere, work too)."""
    out = {}
    for isa in PREFERENCE:
        try:
            spec = importlib.util.find_spec(f"{__package__}._builds.{isa}._core")
        except ImportError:
            spec = None
        if spec is not None and spec.origin:
            out[isa] = spec.origin
    return out


def runs_on(isa, flags):
    """Whether this CPU (flags from cpu_flags) runs build `isa`; `native` builds are trusted
    to be for this machine, and unknown flags (no /proc/cpuinfo) only allow the baseline."""
    if isa == "native":
        return True
    required = LEVELS.get(isa)
    if required is None:
        return False
    if flags is None:
        return isa == "sse4"
    return required <= flags


_THIS_CPU = object()


def choose(requested=None, built=None, flags=_THIS_CPU):
    """(isa, module path) to load: `requested` (default: $TILEGRAPH_ISA) if given, else the
    widest built level this CPU runs. `built` defaults to built_isas(), `flags` to this
    CPU's (None: unknown)."""
    requested = requested if requested is not None else os.environ.get("TILEGRAPH_ISA", "")
    built = built if built is not None else built_isas()
    flags = cpu_flags() if flags is _THIS_CPU else flags
    if not built:
        raise IsaError(f"tilegraph: no build of the C++ core in {_HERE}/_builds "
                       "(the package is not installed: run `pip install .`)")
    if requested:
        if requested not in built:
            raise IsaError(f"tilegraph: TILEGRAPH_ISA={requested!r} is not a build of this "
                           f"package (built: {', '.join(sorted(built))})")
        if not runs_on(requested, flags):
            missing = sorted(LEVELS[requested] - (flags or set()))
            raise IsaError(f"tilegraph: TILEGRAPH_ISA={requested!r}: this CPU lacks "
                           f"{', '.join(missing) or 'the features it needs'}")
        return requested, built[requested]
    for isa in PREFERENCE:
        if isa in built and runs_on(isa, flags):
            return isa, built[isa]
    raise IsaError(f"tilegraph: this CPU runs none of the builds of the C++ core "
                   f"({', '.join(sorted(built))}); it needs at least x86-64-v2 (SSE4.2)")
