#!/usr/bin/env python3
"""The layering of src/ as the build states it (docs/DESIGN.md, "may depend on").

Checks, for every library folder of src/:
  1. each #include "folder/..." in its sources names a folder it may depend on;
  2. CMakeLists.txt links it (directly or through its dependencies) to exactly the libraries
     of those folders, so that the link lines and the include graph say the same thing.
Exits 1 naming every violation. Run by ctest as `layering`.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# folder -> folders its sources may include (besides itself)
ALLOWED = {
    "support": set(),
    "ir": {"support"},
    "kernels": {"support"},
    "ops": {"ir", "kernels", "support"},
    "autodiff": {"ops", "ir", "kernels", "support"},
    "passes": {"ops", "ir", "kernels", "support"},
    "parallel": {"ops", "ir", "kernels", "support"},
    "lowering": {"ops", "ir", "kernels", "support"},
    "tiles": {"lowering", "ops", "ir", "kernels", "support"},
    "devices": {"kernels", "support"},
    "runtime": {"tiles", "lowering", "passes", "parallel", "devices", "ops", "ir", "kernels",
                "support"},
    "onnx": {"runtime", "autodiff", "tiles", "lowering", "passes", "parallel", "devices", "ops",
             "ir", "kernels", "support"},
}
LIBRARY = {"support": "tg_support", "ir": "tg_ir", "kernels": "tg_kernels_cpu", "ops": "tg_ops",
           "autodiff": "tg_autodiff", "passes": "tg_passes", "parallel": "tg_parallel", "lowering": "tg_lowering",
           "tiles": "tg_tiles", "devices": "tg_devices", "runtime": "tg_runtime", "onnx": "tg_onnx"}
INCLUDE = re.compile(r'^\s*#include\s+"([a-z_]+)/', re.M)


def include_violations():
    bad = []
    for folder, allowed in ALLOWED.items():
        for path in sorted((ROOT / "src" / folder).rglob("*")):
            if path.suffix not in (".cc", ".h"):
                continue
            for used in INCLUDE.findall(path.read_text()):
                if used != folder and used not in allowed:
                    bad.append(f"{path.relative_to(ROOT)} includes {used}/, which {folder}/ "
                               f"may not depend on (allowed: {sorted(allowed)})")
    return bad


def link_violations():
    text = (ROOT / "CMakeLists.txt").read_text()
    links = {}
    for name, rest in re.findall(r"tg_module\((\w+)\s+[\w/]+([^)]*)\)", text):
        links[name] = {d for d in rest.split() if d.startswith("tg_")}
    folder_of = {lib: folder for folder, lib in LIBRARY.items()}

    def closure(lib, seen=None):
        seen = set() if seen is None else seen
        for dep in links.get(lib, ()):
            if dep not in seen:
                seen.add(dep)
                closure(dep, seen)
        return seen

    bad = []
    for folder, lib in LIBRARY.items():
        if lib not in links:
            bad.append(f"CMakeLists.txt has no tg_module({lib} ...)")
            continue
        linked = {folder_of.get(dep, dep) for dep in closure(lib)}
        if linked != ALLOWED[folder]:
            bad.append(f"{lib} links {sorted(linked)}, but {folder}/ may depend on exactly "
                       f"{sorted(ALLOWED[folder])}")
    return bad


def main():
    problems = include_violations() + link_violations()
    for p in problems:
        print(p)
    print(f"layering: {len(problems)} violation(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
