"""Wheel build hook: the compiled hot path (opt-in).

`HATCH_BUILD_HOOK_ENABLE_CUSTOM=1 pip install .` (hatch's switch for this hook; `make
wheel-compiled` sets it) compiles the modules that run for every decision and order (`COMPILED`:
the trading thread's code, the ledger's journaling, scrubbing and span encoding) with mypyc into C
extensions shipped beside their sources; the wheel then is for this platform and Python only.
Measured: the trading thread's cost of a decision cycle drops by about 40% (README "Performance").
Without the switch, and always for editable installs (`pip install -e .`: a compiled module would
hide every later edit of its source), the package is pure Python, and the hook's build dependencies
are not even installed.

Why mypyc: it compiles the type-annotated Python we already keep mypy-clean, with no second
language to maintain; the same sources stay the pure-Python fallback. Why not the hatch-mypyc
plugin: it builds inside the project tree and renames pyproject.toml while it runs.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script (.ci/compiled-tests), outside a build environment
    BuildHookInterface = object

#: The modules compiled: the decorators and the runtime state they share, spans (start and end on the
#: trading thread, encoding on the event thread), the ledger's per-record path, scrubbing. Not here:
#: logs.py (its handlers subclass logging's and are weakly referenced by it; mypyc's native classes
#: cannot be) and context.py (mypyc fails on its contextmanager).
COMPILED = ("dora_otel/_runtime.py", "dora_otel/decorators.py", "dora_otel/spans.py", "dora_otel/spanfile.py",
            "dora_otel/scrub.py", "dora_otel/ledger/journal.py", "dora_otel/ledger/records.py",
            "dora_otel/ledger/ledger.py", "dora_otel/ledger/processor.py")


def compile_hot_path(project: str, dest: str) -> list[str]:
    """Compile `COMPILED` of the project at `project` and put the extension files under `dest`, at
    their paths in the package (`dest` may be the project itself). Returns those relative paths.
    mypyc runs on a copy of the package alone: its setuptools step must not read our pyproject.toml
    (setuptools rejects its PEP 639 licence fields). Raises RuntimeError with mypyc's output."""
    with tempfile.TemporaryDirectory(prefix="dora-otel-mypyc-") as tree:
        shutil.copytree(os.path.join(project, "dora_otel"), os.path.join(tree, "dora_otel"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        # (--ignore-missing-imports: boto3 ships no types; .ci/lint is where the package is type-checked)
        done = subprocess.run([sys.executable, "-m", "mypyc", "--ignore-missing-imports", *COMPILED], cwd=tree,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        made = glob.glob("*__mypyc*.so", root_dir=tree) + glob.glob("dora_otel/**/*.so", root_dir=tree, recursive=True)
        if done.returncode or len(made) < len(COMPILED):
            raise RuntimeError(f"mypyc could not compile the hot path ({', '.join(COMPILED)}):\n{done.stdout}")
        for relative in made:
            target = os.path.join(dest, relative)
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            shutil.copy2(os.path.join(tree, relative), target)
    return made


class CompiledHotPath(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        self._out = tempfile.mkdtemp(prefix="dora-otel-compiled-")
        for relative in compile_hot_path(self.root, self._out):
            build_data["force_include"][os.path.join(self._out, relative)] = relative
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        out = getattr(self, "_out", None)
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":  # python hatch_build.py TREE: compile the hot path in place in TREE
    if len(sys.argv) != 2:
        raise SystemExit("usage: python hatch_build.py TREE  (a copy of the project; never your working tree:\n"
                         "a compiled module hides every later edit of its source)")
    for path in compile_hot_path(sys.argv[1], sys.argv[1]):
        print(path)
