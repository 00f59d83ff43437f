"""`dora-otel reconcile`: clean runs exit 0; orders that failed exit 1 and are named; the exchange's
view (--live) catches a silently dropped order; telemetry loss is reported apart from trading failure."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import dora_otel
from dora_otel.demo.bot import DemoBot
from dora_otel.demo.exchange import PaperExchange
from dora_otel.protocols import OrderSource
from dora_otel.query.local import LocalSource
from dora_otel.query.reconcile import ReconcileError, reconcile, seq_gaps
from dora_otel.sinks.memory import MemorySink

from ._helpers import MARKETS, clean_env, dora_cli, run_demo


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def summary(lines: list[dict[str, Any]]) -> dict[str, Any]:
    return next(line for line in lines if "reconcile_since" in line)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("clean"), "--cycles", "25", "--seed", "3", "--fault-rate", "0")


def test_a_clean_run_reconciles_with_exit_0(clean_run):
    proc = dora_cli("reconcile", "--since", "10 minutes ago", "--data-dir", str(clean_run.data_dir))
    assert proc.returncode == 0, proc.stderr
    lines = json_lines(proc.stdout)
    assert not [line for line in lines if line["event_type"] == "RECONCILIATION_RESULT"]
    s = summary(lines)
    assert s["clean"] is True and s["decisions"] > 50 and s["mismatched_decisions"] == 0
    assert s["log_lines_missing"] == 0 and s["ledger_records_without_log_line"] == 0
    # the job's lines are its results only: no STARTUP/SHUTDOWN claiming "ledger": "off" while it reads one
    assert s["service"] == "dora-reconcile" and {line["event_type"] for line in lines} == {"LOG"}
    assert "clean (exit 0)" in proc.stderr


def test_failed_orders_exit_1_and_the_dropped_order_is_named_by_decision_and_slot(faulty_run):
    proc = dora_cli("reconcile", "--since", "10 minutes ago", "--data-dir", str(faulty_run.data_dir))
    assert proc.returncode == 1, proc.stderr
    results = [line for line in json_lines(proc.stdout) if line["event_type"] == "RECONCILIATION_RESULT"]
    named = {(r["decision_id"], m["slot"]): m for r in results for m in r["mismatches"]}
    places = {line["client_order_id"]: line for line in faulty_run.lines() if line["event_type"] == "ORDER_PLACE"}
    dropped = [coid for coid, t in faulty_run.truth.items() if t["outcome"] == "dropped" and t.get("cancel_requested")]
    assert dropped
    for coid in dropped:
        place = places[coid]
        mismatch = named[(place["decision_id"], place["slot"])]
        assert mismatch["verdict"] == "UNKNOWN" and "exchange does not know the order" in mismatch["detail"]
        assert mismatch["expected"]["client_order_id"] == coid
    # no NOT_SENT: the demo says why for every order it holds back (order_suppressed), and those are
    # reported apart, never as mismatches
    assert {m["verdict"] for m in named.values()} == {"REJECTED", "UNKNOWN"}
    loops = {line["decision_id"]: (line["market"], line["loop"])
             for line in faulty_run.lines() if line["event_type"] == "DECISION_MADE"}
    assert not [m for (decision_id, _), m in named.items() if faulty_run.held_back(*loops[decision_id], m["expected"])]
    assert all(r["level"] == "WARNING" and r["mismatch_count"] == len(r["mismatches"]) for r in results)
    s = summary(json_lines(proc.stdout))
    assert s["suppressed_slots"] == s["verdict_counts"]["SUPPRESSED"] == len(faulty_run.suppressed) > 0
    assert s["clean"] is False and s["mismatched_decisions"] == len(results)
    assert s["log_lines_missing"] == 0  # trading failures are not telemetry loss
    assert "MISMATCHES (exit 1)" in proc.stderr


def test_deleted_log_lines_are_reported_as_a_gap_not_as_failed_orders(clean_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(clean_run.data_dir, data)
    log = data / "logs" / "dora-bot.jsonl"
    lines = log.read_text().splitlines()
    # lose a block of 5 lines (one is an ORDER_RESULT) and one plain line further on
    start = next(i for i, line in enumerate(lines) if '"event_type":"ORDER_RESULT"' in line and i > 40)
    single = next(i for i, line in enumerate(lines) if '"event_type":"LOG"' in line and i > start + 20)
    lost = [json.loads(lines[i]) for i in [*range(start - 2, start + 3), single]]
    log.write_text("\n".join(line for i, line in enumerate(lines) if i not in {*range(start - 2, start + 3), single}) + "\n")

    proc = dora_cli("reconcile", "--since", "10 minutes ago", "--data-dir", str(data))
    assert proc.returncode == 0, proc.stderr  # every order is still accounted for: no trading failure
    s = summary(json_lines(proc.stdout))
    assert s["log_lines_missing"] == 6 and s["mismatched_decisions"] == 0
    (run, gaps), = s["log_gaps"].items()
    assert run == lost[0]["bot_run_id"]
    seqs = sorted(line["seq"] for line in lost)
    assert gaps == [[seqs[0], seqs[4]], [seqs[5], seqs[5]]]
    lost_events = [line for line in lost if line["event_type"] in ("ORDER_PLACE", "ORDER_RESULT", "ORDER_CANCEL", "FILL", "DECISION_MADE")]
    assert s["ledger_records_without_log_line"] == len(lost_events) >= 1
    assert "log loss" in proc.stderr and f"{seqs[0]}-{seqs[4]}" in proc.stderr


def test_a_record_missing_from_the_ledger_is_ledger_loss_and_its_log_line_still_counts(clean_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(clean_run.data_dir, data)
    with sqlite3.connect(data / "ledger" / "ledger.sqlite3") as db:
        (event_id, seq), = db.execute("SELECT event_id, seq FROM execution_log WHERE json_extract(record, '$.event_type') "
                                      "= 'ORDER_RESULT' ORDER BY seq LIMIT 1 OFFSET 10").fetchall()
        db.execute("DELETE FROM execution_log WHERE event_id = ?", (event_id,))
    proc = dora_cli("reconcile", "--since", "10 minutes ago", "--data-dir", str(data))
    assert proc.returncode == 0, proc.stderr
    s = summary(json_lines(proc.stdout))
    assert s["log_events_missing_from_ledger"] == 1 and s["log_lines_missing"] == 0


def _run_bot_in_process(tmp_path, cycles: int = 6) -> tuple[PaperExchange, MemorySink, datetime, datetime]:
    sink = MemorySink()
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    telemetry = dora_otel.setup(stream=io.StringIO(), data_dir=tmp_path, ledger_sink=sink, container_mode=False,
                                install_signal_handlers=False, watchdog_seconds=0)
    exchange = PaperExchange(list(MARKETS), seed=5, fault_rate=0.0)
    DemoBot(exchange, list(MARKETS)).run(cycles)
    telemetry.shutdown(reason="test")
    return exchange, sink, since, datetime.now(timezone.utc)


def test_live_reconcile_finds_a_resting_order_the_exchange_silently_dropped(tmp_path):
    exchange, sink, since, until = _run_bot_in_process(tmp_path)
    assert isinstance(exchange, OrderSource)
    source = LocalSource(tmp_path, reader=sink)
    assert reconcile(source, since, until, order_source=exchange).exit_code == 0

    victim = exchange.open_orders()[0]
    assert exchange.silently_drop(victim["client_order_id"])
    assert reconcile(source, since, until).exit_code == 0  # telemetry alone cannot see it
    events: list[tuple[int, str, str, dict[str, Any]]] = []
    report = reconcile(source, since, until, order_source=exchange, emit=lambda *e: events.append(e))
    assert report.exit_code == 1
    (found,) = report.mismatched
    (mismatch,) = found.mismatches
    place = next(r for r in sink.all_records() if r.get("client_order_id") == victim["client_order_id"]
                 and r.get("event_type") == "ORDER_PLACE")
    assert (found.decision_id, mismatch["slot"]) == (place["decision_id"], place["slot"])
    assert mismatch["verdict"] == "RESTING" and "exchange has no open order: it is dropped" in mismatch["detail"]
    kinds = [e[1] for e in events]
    assert kinds == ["RECONCILIATION_RESULT", "LOG"]
    assert events[0][3]["decision_id"] == found.decision_id and events[0][3]["mismatches"][0]["slot"] == mismatch["slot"]


def test_live_reconcile_flags_an_order_open_on_the_exchange_that_the_ledger_says_is_gone(tmp_path):
    exchange, sink, since, until = _run_bot_in_process(tmp_path)

    class Stale:
        """An exchange that still shows an order the bot cancelled."""

        def __init__(self, cancelled: dict[str, Any]) -> None:
            self.cancelled = cancelled

        def open_orders(self) -> list[dict[str, Any]]:
            return exchange.open_orders() + [dict(self.cancelled, status="resting")]

        def order_status(self, client_order_id: str) -> dict[str, Any] | None:
            return exchange.order_status(client_order_id)

    cancelled = next(o for o in exchange.by_client_id.values() if o.status == "canceled" and not o.filled)
    report = reconcile(LocalSource(tmp_path, reader=sink), since, until,
                       order_source=Stale(exchange.order_status(cancelled.client_order_id)))
    (found,) = report.mismatched
    assert found.mismatches[0]["verdict"] == "CANCELLED"
    assert "the exchange has this order open" in found.mismatches[0]["detail"]


def test_live_needs_an_order_source_factory(clean_run):
    proc = dora_cli("reconcile", "--since", "1h ago", "--live", "--data-dir", str(clean_run.data_dir))
    assert proc.returncode == 2 and "--order-source" in proc.stderr
    proc = dora_cli("reconcile", "--since", "1h ago", "--live", "--order-source", "os:getcwd",
                    "--data-dir", str(clean_run.data_dir))
    assert proc.returncode == 2 and "not an OrderSource" in proc.stderr
    proc = dora_cli("reconcile", "--since", "1h ago", "--live", "--order-source", "json:dumps",
                    "--data-dir", str(clean_run.data_dir))
    assert proc.returncode == 2 and "--order-source 'json:dumps' failed: TypeError" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_usage_errors_exit_2_and_a_missing_data_dir_3(clean_run, tmp_path):
    assert dora_cli("reconcile", "--since", "whenever", "--data-dir", str(clean_run.data_dir)).returncode == 2
    assert dora_cli("reconcile", "--since", "1h ago", "--data-dir", str(tmp_path / "missing")).returncode == 3
    proc = dora_cli("reconcile", "--since", "now", "--until", "1h ago", "--data-dir", str(clean_run.data_dir))
    assert proc.returncode == 2 and "before --since" in proc.stderr


def test_reconcile_without_a_ledger_says_so(tmp_path):
    (tmp_path / "logs").mkdir()
    with pytest.raises(ReconcileError, match="needs a ledger"):
        reconcile(LocalSource(tmp_path), datetime.now(timezone.utc) - timedelta(hours=1), datetime.now(timezone.utc))


def test_seq_gaps_are_inclusive_ranges():
    assert seq_gaps([1, 2, 5, 6, 9]) == [[3, 4], [7, 8]]
    assert seq_gaps([3, 4], lo=1, hi=6) == [[1, 2], [5, 6]]
    assert seq_gaps([]) == []


def test_live_from_the_command_line_uses_the_factory(clean_run, tmp_path):
    (tmp_path / "empty_exchange.py").write_text(
        "from dora_otel.demo.exchange import PaperExchange\n"
        "def source():\n"
        "    return PaperExchange(['KXBTCD-26NOV24-T97000'], seed=1, fault_rate=0.0)\n")
    env = clean_env(PYTHONPATH=str(tmp_path))
    proc = dora_cli("reconcile", "--since", "10 minutes ago", "--live", "--order-source", "empty_exchange:source",
                    "--data-dir", str(clean_run.data_dir), env=env)
    assert proc.returncode == 1, proc.stderr  # the ledger's resting orders are not open on a fresh exchange
    results = [line for line in json_lines(proc.stdout) if line["event_type"] == "RECONCILIATION_RESULT"]
    assert results and all("it does not know the order" in m["detail"] for r in results for m in r["mismatches"])


def test_an_unreachable_dynamodb_is_one_clear_line_not_a_traceback_exit_5(clean_run):
    env = clean_env(AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:9", AWS_REGION="us-east-1",
                    AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")
    proc = dora_cli("explain", "0123456789abcdef0123456789abcdef", "--ledger", "dynamodb", "--logs", "none", env=env)
    assert proc.returncode == 5 and "cannot read the ledger (ledger DynamoDB dora_decision_log_demo" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_progress_bar_shows_only_on_a_tty_for_long_ranges():
    from dora_otel.query.cli import _Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = _Progress(stream)
        for done in range(1, 41):
            bar(done, 40)
        bar.finish()
    assert "40/40" in tty.getvalue() and tty.getvalue().endswith("\r\033[K") and pipe.getvalue() == ""
    short = Tty()
    _Progress(short)(1, 3)
    assert short.getvalue() == ""
