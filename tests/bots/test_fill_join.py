"""Fills and cancels of orders placed by an EARLIER run join the decision that placed them, by
order_id alone (Kalshi fills carry only order_id); a fill matching nothing is kept as unmatched.

Each "run" here is a fresh setup() on the same data directory: a new runtime with an empty in-memory
order book, exactly what a restarted process has (the subprocess restart is in test_second_bot.py).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

import dora_otel
from dora_otel.sinks.sqlite import SQLiteSink, sqlite_path


class Exchange:
    def __init__(self) -> None:
        self.n = 0
        self.fail_with: BaseException | None = None
        self.coids: list[str] = []

    @dora_otel.order_place
    def place(self, market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> Any:
        self.coids.append(str(client_order_id))
        if self.fail_with is not None:
            raise self.fail_with
        self.n += 1
        return {"order": {"order_id": f"ord-{self.n}", "status": "resting"}}

    @dora_otel.order_cancel
    def cancel(self, order_id: str) -> Any:
        return {"order": {"order_id": order_id, "status": "canceled"}}


@dora_otel.decision_cycle
def decide(market: str) -> list[dict[str, Any]]:
    return [{"side": "yes", "price": 0.40, "size": 10}, {"side": "no", "price": 0.55, "size": 5}]


class Run:
    """One run of the bot on `data_dir` (strict mode, SQLite ledger)."""

    def __init__(self, data_dir: Path) -> None:
        self.stream = io.StringIO()
        self.telemetry = dora_otel.setup(stream=self.stream, container_mode=True, data_dir=data_dir,
                                         ledger="sqlite", strict=True, install_signal_handlers=False,
                                         watchdog_seconds=0)

    def stop(self) -> list[dict[str, Any]]:
        self.telemetry.shutdown(reason="restart")
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line]


def _first_run(data_dir: Path) -> tuple[str, list[str]]:
    run = Run(data_dir)
    ex = Exchange()
    targets = decide("KXTEST-1")
    for t in targets:
        ex.place("KXTEST-1", t["side"], t["price"], t["size"])
    lines = run.stop()
    decision_id = next(line["decision_id"] for line in lines if line["event_type"] == "DECISION_MADE")
    return decision_id, [f"ord-{i}" for i in (1, 2)]


def _ledger_events(data_dir: Path, decision_id: str) -> list[dict[str, Any]]:
    sink = SQLiteSink(sqlite_path(data_dir))
    try:
        return sink.events_for_decision(decision_id)
    finally:
        sink.close()


def test_fill_by_order_id_alone_after_restart_joins_the_decision_and_its_slot(tmp_path: Path) -> None:
    decision_id, order_ids = _first_run(tmp_path)

    run = Run(tmp_path)  # the restarted bot: nothing in memory
    joined = dora_otel.record_fill(order_id=order_ids[1], price=0.55, size=5, pnl_delta=0.1)
    lines = run.stop()

    assert joined == decision_id
    fill = next(line for line in lines if line["event_type"] == "FILL")
    assert fill["decision_id"] == decision_id and fill["trace_id"] == decision_id
    assert fill["slot"] == 1 and fill["matched"] is True
    assert fill["market"] == "KXTEST-1" and fill["side"] == "no"
    assert not [line for line in lines if line["level"] == "ERROR"]
    fills = [r for r in _ledger_events(tmp_path, decision_id) if r["event_type"] == "FILL"]
    assert [(r["slot"], r["order_id"], r["size"]) for r in fills] == [(1, order_ids[1], 5)]


def test_cancel_of_an_order_of_an_earlier_run_joins_its_decision(tmp_path: Path) -> None:
    decision_id, order_ids = _first_run(tmp_path)

    run = Run(tmp_path)
    Exchange().cancel(order_ids[0])
    lines = run.stop()

    cancel = next(line for line in lines if line["event_type"] == "ORDER_CANCEL")
    assert cancel["decision_id"] == decision_id and cancel["slot"] == 0
    records = [r for r in _ledger_events(tmp_path, decision_id) if r["event_type"] == "ORDER_CANCEL"]
    assert records and all(r["slot"] == 0 for r in records)


def test_a_fill_that_matches_nothing_is_recorded_unmatched_without_an_error_in_strict_mode(
        tmp_path: Path) -> None:
    run = Run(tmp_path)
    joined = dora_otel.record_fill(order_id="never-seen", price=0.3, size=2, pnl_delta=-0.01)
    lines = run.stop()

    assert joined is None
    fill = next(line for line in lines if line["event_type"] == "FILL")
    assert fill["matched"] is False and fill["order_id"] == "never-seen" and fill["size"] == 2
    assert not [line for line in lines if line["level"] == "ERROR"]
    sink = SQLiteSink(sqlite_path(tmp_path))
    try:
        kept = sink.events_for_decision("unmatched:unknown")
    finally:
        sink.close()
    assert [(r["event_type"], r["order_id"]) for r in kept] == [("FILL", "never-seen")]


def test_a_fill_naming_no_order_at_all_is_still_a_schema_error_in_strict_mode(tmp_path: Path) -> None:
    run = Run(tmp_path)
    try:
        with pytest.raises(dora_otel.SchemaError, match="names no order"):
            dora_otel.record_fill(price=0.3, size=2, pnl_delta=0.0)
    finally:
        run.stop()


@pytest.mark.parametrize("how", ["link_order", "record_fill with both ids"])
def test_order_id_learned_after_a_timed_out_placement_joins_later_fills_after_restart(
        tmp_path: Path, how: str) -> None:
    run = Run(tmp_path)
    ex = Exchange()
    ex.fail_with = TimeoutError("read timed out")  # the order went live, the answer never came
    decide("KXTEST-2")
    with pytest.raises(TimeoutError):
        ex.place("KXTEST-2", "yes", 0.40, 10)
    coid = ex.coids[0]
    if how == "link_order":  # e.g. after GET /portfolio/orders?client_order_id=<coid>
        assert dora_otel.link_order(coid, "ord-late") is not None
    else:
        dora_otel.record_fill(client_order_id=coid, order_id="ord-late", price=0.40, size=4, pnl_delta=0.0)
    first = run.stop()
    decision_id = next(line["decision_id"] for line in first if line["event_type"] == "DECISION_MADE")

    run = Run(tmp_path)
    joined = dora_otel.record_fill(order_id="ord-late", price=0.40, size=6, pnl_delta=0.0)
    lines = run.stop()

    assert joined == decision_id
    fill = next(line for line in lines if line["event_type"] == "FILL")
    assert fill["slot"] == 0 and fill["client_order_id"] == coid
