"""SQLite specifics: file location, WAL, an index behind every query, readers in other threads and
processes."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dora_otel.protocols import RetryableSinkError
from dora_otel.sinks import make_sink
from dora_otel.sinks.sqlite import SQLiteSink, sqlite_path

Factory = Callable[..., dict[str, Any]]


def test_the_database_lives_under_the_data_dir_in_wal_mode(
    tmp_path: Path, ledger_execution_record: Factory
) -> None:
    sink = make_sink("sqlite", env="test", data_dir=tmp_path)
    sink.write_batch([ledger_execution_record()])
    path = tmp_path / "ledger" / "ledger.sqlite3"
    assert sqlite_path(tmp_path) == path and path.exists()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    sink.close()


@pytest.mark.parametrize(
    ("sql", "index"),
    [
        ("SELECT record FROM decision_log WHERE decision_id = ?", "sqlite_autoindex_decision_log_1"),
        (
            "SELECT record FROM execution_log WHERE decision_id = ? ORDER BY event_ts, seq",
            "execution_log_gsi1",
        ),
        (
            "SELECT record FROM decision_log WHERE market = ? AND decision_ts BETWEEN ? AND ? "
            "ORDER BY decision_ts, decision_id",
            "decision_log_market_ts",
        ),
        (
            "SELECT record FROM decision_log WHERE decision_day BETWEEN ? AND ? "
            "AND decision_ts BETWEEN ? AND ? ORDER BY decision_ts, decision_id",
            "decision_log_day_ts",
        ),
        (
            "SELECT record FROM execution_log WHERE bot_run_id = ? AND event_ts >= ? AND event_ts <= ? "
            "ORDER BY event_ts, seq",
            "execution_log_run_ts",
        ),
    ],
)
def test_every_reader_query_uses_an_index(tmp_path: Path, sql: str, index: str) -> None:
    sink = SQLiteSink(tmp_path / "l.sqlite3")
    sink.decision("x")  # creates the schema
    with contextlib.closing(sqlite3.connect(tmp_path / "l.sqlite3")) as conn:
        plan = " | ".join(
            row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [None] * sql.count("?"))
        )
    assert index in plan, plan
    sink.close()


def test_the_shipper_thread_writes_while_another_thread_reads(
    tmp_path: Path, ledger_execution_record: Factory
) -> None:
    sink = SQLiteSink(tmp_path / "l.sqlite3")
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for start in range(0, 200, 25):
                sink.write_batch(
                    [ledger_execution_record(seq=i, decision_id="t" * 32) for i in range(start, start + 25)]
                )
        except BaseException as exc:  # noqa: BLE001  pragma: no cover - any failure is asserted below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    while writer.is_alive():
        sink.events_for_decision("t" * 32)
    writer.join()
    assert not errors, errors
    assert len(sink.events_for_decision("t" * 32)) == 200
    sink.close()


def test_a_reader_in_another_process_sees_the_records(
    tmp_path: Path, ledger_execution_record: Factory
) -> None:
    sink = SQLiteSink(sqlite_path(tmp_path))
    sink.write_batch([ledger_execution_record(seq=i, decision_id="o" * 32) for i in range(5)])
    code = (
        "import sys\n"
        "from dora_otel.sinks import make_sink\n"
        f"reader = make_sink('sqlite', env='test', data_dir={str(tmp_path)!r})\n"
        f"print(len(reader.events_for_decision({'o' * 32!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "5"
    sink.close()


def test_a_locked_database_is_a_retryable_error(tmp_path: Path, ledger_execution_record: Factory) -> None:
    path = tmp_path / "l.sqlite3"
    sink = SQLiteSink(path, timeout_s=0.1)
    sink.decision("x")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(RetryableSinkError, match="database is locked") as raised:
            sink.write_batch([ledger_execution_record()])
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert sink.write_batch([ledger_execution_record()]).written == 1
    sink.close()


def test_rows_past_expires_at_are_pruned_like_dynamodb_ttl(
    tmp_path: Path, ledger_execution_record: Factory, ledger_decision_record: Factory
) -> None:
    """The first write prunes expired rows (execution and decision logs), then at most once per
    prune_every_s: rows that expire later wait for the next turn, or for prune()."""
    import time

    now = int(time.time())
    sink = SQLiteSink(sqlite_path(tmp_path), prune_every_s=3600)
    old = SQLiteSink(sqlite_path(tmp_path), prune_every_s=None)  # another writer that never prunes
    expired = [ledger_execution_record(seq=i, expires_at=now - 10) for i in range(30)]
    old.write_batch(expired[:25])
    old.write_batch([*expired[25:], ledger_decision_record(decision_id="d" * 32, expires_at=now - 10)])
    live = [ledger_execution_record(seq=100 + i, expires_at=now + 86400) for i in range(3)]
    sink.write_batch([*live, ledger_decision_record(decision_id="e" * 32, expires_at=now + 86400)])
    with contextlib.closing(sqlite3.connect(sqlite_path(tmp_path))) as conn:
        assert conn.execute("SELECT count(*) FROM execution_log").fetchone()[0] == 3
        assert [r[0] for r in conn.execute("SELECT decision_id FROM decision_log")] == ["e" * 32]
    assert sink.pruned == 31
    old.write_batch([ledger_execution_record(seq=200, expires_at=now - 10)])
    sink.write_batch([ledger_execution_record(seq=201, expires_at=now + 86400)])
    assert sink.pruned == 31  # within the interval: not pruned again
    assert sink.prune() == 1 and sink.pruned == 32
    assert sink.prune(now=now + 2 * 86400) == 5  # everything has expired by then
    sink.close()
    old.close()


def test_pruning_finds_expired_rows_through_an_index(tmp_path: Path, ledger_execution_record: Factory) -> None:
    sink = SQLiteSink(sqlite_path(tmp_path))
    sink.write_batch([ledger_execution_record()])
    with contextlib.closing(sqlite3.connect(sqlite_path(tmp_path))) as conn:
        for table, index in (("execution_log", "execution_log_expires"), ("decision_log", "decision_log_expires")):
            plan = " ".join(
                str(row[-1])
                for row in conn.execute(f"EXPLAIN QUERY PLAN SELECT rowid FROM {table} WHERE expires_at < 1 LIMIT 5")
            )
            assert index in plan, plan
    sink.close()
