"""The CLI on a terminal and in a pipe: colour on every verdict (padding outside the escape codes),
none when piped or with NO_COLOR, a closed pipe ends quietly, and the CLI's own telemetry never mixes
into what it prints on a terminal."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

from dora_otel.query.explain import DecisionReport, ExplainReport
from dora_otel.query.render import _VERDICT_COLOR, render_explain
from dora_otel.query.verdicts import Verdict, judge_decision
from tests.query._helpers import MARKETS, clean_env

from ._tty import run_on_tty

ANSI = re.compile(r"\x1b\[[0-9;]*[mK]")
D = "d" * 32


def _ev(event_type: str, slot: int, seq: int, **fields):
    return {"event_type": event_type, "slot": slot, "client_order_id": f"c{slot}", "seq": seq, "bot_run_id": "r1",
            "event_ts": f"2026-11-24T04:47:54.{seq:06d}Z", "decision_id": D, "order_id": f"o{slot}", **fields}


def _one_slot_per_verdict() -> DecisionReport:
    """A decision with one slot of each verdict."""
    targets = [{"slot": i, "side": "yes", "price": 0.4, "size": 10, "client_order_id": f"c{i}"} for i in range(8)]
    events = [
        # 0 NOT_SENT: nothing; 1 SUPPRESSED
        _ev("ORDER_SUPPRESSED", 1, 1, reason="risk: max position"),
        _ev("ORDER_PLACE", 2, 2), _ev("ORDER_RESULT", 2, 3, status="REJECTED", error_msg="insufficient_balance"),
        _ev("ORDER_PLACE", 3, 4), _ev("ORDER_RESULT", 3, 5, status="UNKNOWN", error_msg="read timed out"),
        _ev("ORDER_PLACE", 4, 6), _ev("ORDER_RESULT", 4, 7, status="ACCEPTED"),
        _ev("ORDER_PLACE", 5, 8), _ev("ORDER_RESULT", 5, 9, status="ACCEPTED"), _ev("FILL", 5, 10, size=10),
        _ev("ORDER_PLACE", 6, 11), _ev("ORDER_RESULT", 6, 12, status="ACCEPTED"), _ev("FILL", 6, 13, size=4),
        _ev("ORDER_PLACE", 7, 14), _ev("ORDER_RESULT", 7, 15, status="ACCEPTED"),
        _ev("ORDER_CANCEL", 7, 16, status="CANCELLED"),
    ]
    verdicts, _ = judge_decision(targets, events)
    assert [v.verdict.value for v in verdicts] == ["NOT_SENT", "SUPPRESSED", "REJECTED", "UNKNOWN", "RESTING",
                                                   "FILLED", "PARTIAL", "CANCELLED"]
    return DecisionReport(decision_id=D, market="M", decision_ts="2026-11-24T04:47:54.000000Z", bot_run_id="r1",
                          loop=1, targets=targets, spread=0.1, verdicts=verdicts, timeline=[], errors=[],
                          unassigned=[], notes=[], telemetry={}, records_from="ledger", env="demo")


def test_every_verdict_is_coloured_with_the_padding_outside_the_escape_codes():
    report = ExplainReport({"decision_id": D}, "test", [_one_slot_per_verdict()], [], [], True)
    out = io.StringIO()
    render_explain(report, out, color=True)
    text = out.getvalue()
    width = len("SUPPRESSED")
    for verdict in Verdict:
        code = _VERDICT_COLOR[verdict.value]
        # the bare name inside the colour codes, then the column's padding after the reset
        assert f"\x1b[{code}m{verdict.value}\x1b[0m{' ' * (width - len(verdict.value) + 2)}" in text, verdict
    assert not re.search(r"[A-Z_]+ +\x1b\[0m", text)  # never padding inside a colour
    # stripped of colour, the verdict column still lines up
    plain = [ANSI.sub("", line) for line in text.splitlines()]
    header = next(line for line in plain if line.strip().startswith("slot "))
    rows = [line for line in plain if line.startswith("  ") and line.strip()[:1].isdigit()]
    column = header.index("verdict")
    assert [row[column:].split()[0] for row in rows] == ["NOT_SENT", "SUPPRESSED", "REJECTED", "UNKNOWN", "RESTING",
                                                        "FILLED", "PARTIAL", "CANCELLED"]


def test_on_a_terminal_verdicts_are_coloured_and_with_no_color_or_a_pipe_they_are_not(cli_run):
    args = ("explain", "--market", MARKETS[0], "--at", "now", "--window", "1h", "--all",
            "--data-dir", str(cli_run.data_dir))
    code, tty = run_on_tty(*args, env=clean_env(TERM="xterm"))
    assert code == 0, tty
    # the demo holds orders back with a reason (SUPPRESSED) and has no NOT_SENT; the rendering of
    # NOT_SENT is checked on judged records above
    for verdict in ("SUPPRESSED", "REJECTED", "UNKNOWN", "FILLED", "CANCELLED", "PARTIAL"):
        assert f"\x1b[{_VERDICT_COLOR[verdict]}m{verdict}\x1b[0m" in tty, verdict
    code, no_color = run_on_tty(*args, env=clean_env(TERM="xterm", NO_COLOR="1"))
    assert code == 0 and "\x1b[" not in no_color and "SUPPRESSED" in no_color
    piped = subprocess.run([sys.executable, "-m", "dora_otel.cli", *args], capture_output=True, text=True,
                           env=clean_env(), timeout=60, check=False)
    assert piped.returncode == 0 and "\x1b[" not in piped.stdout and "SUPPRESSED" in piped.stdout


def test_reconcile_on_a_terminal_prints_the_answer_first_in_colour_and_no_telemetry_lines(cli_run):
    code, out = run_on_tty("reconcile", "--since", "1h ago", "--data-dir", str(cli_run.data_dir),
                           env=clean_env(TERM="xterm"))
    assert code == 1, out
    lines = [ANSI.sub("", line.rsplit("\r", 1)[-1]) for line in out.split("\n")]  # the progress bar erases itself
    lines = [line for line in lines if line.strip()]
    assert lines[0].startswith("dora-otel reconcile") and "result      MISMATCHES (exit 1)" in lines[2]
    assert not [line for line in lines if line.lstrip().startswith("{")]  # no JSON lines on the terminal
    assert "STARTUP" not in out and '"ledger"' not in out
    assert f"\x1b[{_VERDICT_COLOR['UNKNOWN']}mUNKNOWN\x1b[0m" in out


def test_piped_reconcile_job_lines_are_json_and_never_claim_ledger_off(cli_run):
    proc = subprocess.run([sys.executable, "-m", "dora_otel.cli", "reconcile", "--since", "1h ago",
                           "--data-dir", str(cli_run.data_dir)], capture_output=True, text=True, env=clean_env(),
                          timeout=60, check=False)
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines and {line["event_type"] for line in lines} == {"RECONCILIATION_RESULT", "LOG"}
    assert not any(line.get("ledger") == "off" for line in lines)
    assert "MISMATCHES (exit 1)" in proc.stderr and "{" not in proc.stderr


def _closed_early(*args: str) -> subprocess.CompletedProcess:
    """`dora-otel ARGS | head -3`: read three lines, then close the pipe."""
    with subprocess.Popen([sys.executable, "-m", "dora_otel.cli", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=clean_env()) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        head = [proc.stdout.readline() for _ in range(3)]
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=60)
    assert all(head)
    return subprocess.CompletedProcess(args, proc.returncode, b"".join(head).decode(), err)


def test_a_closed_pipe_ends_quietly_with_141(big_run):
    data = str(big_run.data_dir)
    # outputs (2.7 MB, 1.7 MB) larger than a pipe can hold (1 MiB at most), so the reader goes away mid-write
    for args in (("explain", "--market", MARKETS[0], "--at", "now", "--window", "1h", "--json", "--data-dir", data),
                 ("report", "--since", "1h ago", "--out", "-", "--data-dir", data)):
        done = _closed_early(*args)
        assert done.returncode == 141, (args, done.stderr)
        assert done.stderr == "", (args, done.stderr)  # no BrokenPipeError traceback, no "Exception ignored"
