"""The order index file (dora_otel/ledger/orders.py): bounded, shared by processes, and never a
reason for the bot to fail when it cannot be written."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from opentelemetry.trace import SpanContext, TraceFlags

from dora_otel._runtime import OrderRef
from dora_otel.ledger.orders import OrderIndex


def _ref(i: int) -> OrderRef:
    ctx = SpanContext(trace_id=0xABC000 + i, span_id=0x10 + i, is_remote=False, trace_flags=TraceFlags(1))
    return OrderRef(format(ctx.trace_id, "032x"), ctx, "KXIDX", i % 3, "yes", 0.4, 10, f"coid-{i}")


def test_the_index_keeps_at_most_max_rows(tmp_path: Path) -> None:
    index = OrderIndex(tmp_path / "orders.sqlite3", max_rows=5)
    for i in range(20):
        index.add(f"ord-{i}", _ref(i))
    assert index.flush(10)
    index.close()
    rows = sqlite3.connect(tmp_path / "orders.sqlite3").execute("SELECT count(*) FROM order_index").fetchone()[0]
    assert rows == 5


def test_a_second_process_view_finds_orders_by_either_id_with_their_decision_and_slot(tmp_path: Path) -> None:
    first = OrderIndex(tmp_path / "orders.sqlite3")
    first.add("coid-7", _ref(7))
    first.add("ord-7", _ref(7))
    assert first.flush(10)
    later = OrderIndex(tmp_path / "orders.sqlite3")  # a restarted process: nothing in memory
    try:
        found = later.find(None, "ord-7")
        assert found is not None and found.decision_id == _ref(7).decision_id and found.slot == 1
        assert found.span_context.trace_id == _ref(7).span_context.trace_id
        assert later.find("coid-7") == found and later.find("nope") is None
        assert later.link("coid-7", "ord-7b") == found and later.find("ord-7b") == found
    finally:
        first.close()
        later.close()


def test_an_unwritable_index_never_raises_and_says_so_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a regular file where a directory should be")
    index = OrderIndex(blocker / "ledger" / "orders.sqlite3", flush_interval_s=0.01)
    with caplog.at_level(logging.ERROR, logger="dora_otel.ledger"):
        for i in range(3):
            index.add(f"ord-{i}", _ref(i))
            index.flush(2)
        assert index.find("ord-1") == _ref(1)  # memory still answers
        assert index.find("ord-unknown") is None
        index.close()
    assert index.write_errors == 3
    assert len([r for r in caplog.records if "order index" in r.getMessage()]) == 1
