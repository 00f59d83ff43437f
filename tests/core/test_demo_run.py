"""`dora-otel demo` end to end, in a subprocess exactly as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dora_otel.spanfile import read_spans

BASE = ("ts", "level", "service", "env", "bot_version", "bot_run_id", "message", "event_type", "seq")


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DORA_DATA_DIR=str(tmp_path / "data"))
    env.pop("CONTAINER_MODE", None)
    return subprocess.run([sys.executable, "-m", "dora_otel.cli", "demo", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)


def test_demo_prints_only_json_lines_joined_to_their_decision_traces(tmp_path):
    proc = run_demo(tmp_path, "--cycles", "50", "--fault-rate", "0.2")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]  # every stdout line is JSON
    assert len(lines) > 500
    for line in lines:
        assert all(field in line for field in BASE), line
    assert lines[0]["event_type"] == "STARTUP" and lines[0]["bot_version"] and lines[0]["bot_run_id"]
    assert lines[-1]["event_type"] == "SHUTDOWN"
    assert len({l["bot_run_id"] for l in lines}) == 1

    decisions = {l["decision_id"]: l for l in lines if l["event_type"] == "DECISION_MADE"}
    orders = [l for l in lines if l["event_type"] in ("ORDER_PLACE", "ORDER_RESULT")]
    assert orders and all(o["decision_id"] in decisions for o in orders)
    for order in orders:  # the decision an order joins is the latest for its market before it
        assert decisions[order["decision_id"]]["market"] == order["market"]
        assert decisions[order["decision_id"]]["seq"] < order["seq"]

    span_traces = {s["traceId"] for s in read_spans(tmp_path / "data" / "spans" / "spans.jsonl")
                   if s["name"].startswith("decision ")}
    assert set(decisions) == span_traces

    statuses = {l["status"] for l in lines if l["event_type"] == "ORDER_RESULT"}
    assert {"ACCEPTED", "REJECTED", "UNKNOWN"} <= statuses
    kinds = {l["event_type"] for l in lines}
    assert {"FILL", "RISK_HALT", "HEARTBEAT", "ORDER_CANCEL"} <= kinds
    assert any(l["event_type"] == "FILL" and l.get("matched") for l in lines)
    assert "a952bcbe-ec3b" not in proc.stdout  # the client's API key id never reaches a line

    assert "decisions" in proc.stderr and "dora-otel explain" in proc.stderr


def test_demo_help_explains_its_options():
    proc = subprocess.run([sys.executable, "-m", "dora_otel.cli", "demo", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for option in ("--cycles", "--markets", "--seed", "--fault-rate", "--ledger"):
        assert option in proc.stdout


def test_demo_rejects_a_bad_option_with_usage_exit_code():
    proc = subprocess.run([sys.executable, "-m", "dora_otel.cli", "demo", "--fault-rate", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "between 0 and 1" in proc.stderr
