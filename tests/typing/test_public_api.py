"""The public API type-checks under `mypy --strict` the way the docs use it (tests/typing/usage.py).

mypy runs with `--follow-imports=silent`: dora_otel's own modules are checked by `mypy dora_otel`
(default mode, .ci/lint); here only what a strict user sees counts. `KNOWN_GAPS` lists the errors
still open, each with the module that must fix it; the test fails on any other error and on a
listed one that no longer occurs (delete it then).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import dora_otel

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
USAGE = HERE / "usage.py"

KNOWN_GAPS = {
    # dora_otel/decorators.py (decor): decision_cycle(...) with arguments returns Any, so a strict
    # user's decorated method loses its signature. Fix: overloads returning Callable[[F], F].
    'usage.py:{line}: error: Untyped decorator makes function "quote" untyped  [untyped-decorator]',
}
_ERROR = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+): error: (?P<text>.*)$")


def strict_errors(path: Path) -> list[str]:
    """mypy --strict errors for `path`, as 'usage.py:LINE: error: ...'."""
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                           "--no-error-summary", "--hide-error-context", "--no-color-output", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 2: mypy itself failed
    out = []
    for line in proc.stdout.splitlines():
        m = _ERROR.match(line)
        if m:
            out.append(f"{Path(m['file']).name}:{m['line']}: error: {m['text']}")
    return out


def _expected_gaps() -> set[str]:
    text = USAGE.read_text(encoding="utf-8").splitlines()
    quote = next(i for i, line in enumerate(text, 1) if "@dora_otel.decision_cycle(" in line)
    return {gap.format(line=quote) for gap in KNOWN_GAPS}


def test_documented_usage_is_clean_under_mypy_strict_apart_from_the_known_gaps():
    assert set(strict_errors(USAGE)) == _expected_gaps()


def test_usage_covers_every_public_name():
    text = USAGE.read_text(encoding="utf-8")
    missing = [name for name in dora_otel.__all__ if not re.search(rf"\b{re.escape(name)}\b", text)]
    assert missing == []


def test_the_strict_check_catches_a_misuse(tmp_path):
    misuse = tmp_path / "misuse.py"
    misuse.write_text(
        "import dora_otel\n"
        "from dora_otel import OrderStatus, Outcome\n"
        "telemetry = dora_otel.setup()\n"
        "telemetry.shutdown(reason=5)\n"
        "Outcome(status='ACCEPTED')\n"
        "flushed: str = telemetry.shutdown()\n", encoding="utf-8")
    errors = strict_errors(misuse)
    assert any("misuse.py:4:" in e and "[arg-type]" in e for e in errors), errors
    assert any("misuse.py:5:" in e and "[arg-type]" in e for e in errors), errors
    assert any("misuse.py:6:" in e and "[assignment]" in e for e in errors), errors
