"""The demo's closing hints use absolute times and the ledger flag it ran with, so they still find the
run later: each hinted command runs and answers about this run."""

from __future__ import annotations

import shlex

from tests.query._helpers import clean_env, dora_cli, run_demo


def test_the_demos_hints_are_absolute_and_each_one_works(tmp_path):
    run = run_demo(tmp_path, "--cycles", "12", "--seed", "5")
    hints = [shlex.split(line.strip()) for line in run.stderr.splitlines() if line.strip().startswith("dora-otel ")]
    hints = [h for h in hints if h[1] in ("explain", "reconcile", "report")]
    assert [h[1] for h in hints] == ["explain", "reconcile", "report"], run.stderr
    for hint in hints:
        text = " ".join(hint)
        assert "ago" not in text and "--ledger sqlite" in text and f"--data-dir {run.data_dir}" in text
        assert any(part.endswith("Z") and part[:4].isdigit() for part in hint)  # absolute UTC times
    codes = {}
    for hint in hints:
        args = [a if a != "dora-otel-report.html" else str(tmp_path / "report.html") for a in hint[1:]]
        proc = dora_cli(*args, env=clean_env(), cwd=tmp_path)
        codes[hint[1]] = proc.returncode
        assert "no decisions" not in proc.stdout + proc.stderr, (hint, proc.stderr)
    assert codes["explain"] == 0 and codes["reconcile"] in (0, 1) and codes["report"] == 0
    assert (tmp_path / "report.html").stat().st_size > 10_000
