"""The embedded ledger store: the execution and decision logs in one SQLite file (stdlib sqlite3).

Owns the SQLite schema — the DynamoDB tables' logical schema, one index per DynamoDB key or GSI
query — and the sink/reader over it. The file is ``<data_dir>/ledger/ledger.sqlite3`` by default,
in WAL mode, so the ledger's shipper thread writes while a reader (``dora-otel explain``, another
process) reads.

Writes are ``INSERT OR REPLACE`` keyed by ``event_id`` (execution records; ``bot_run_id`` + ``sk`` is
unique too) and ``decision_id`` (decisions), so a journal replay overwrites and never duplicates.
Each stored row keeps the whole record as JSON next to the key columns.

Retention: like DynamoDB's TTL on ``expires_at``, rows whose ``expires_at`` (epoch seconds) has
passed are deleted — by ``write_batch`` itself (so on the ledger's shipper thread), at most once every
``prune_every_s`` (10 minutes by default), in chunks of ``_PRUNE_CHUNK`` rows through an index on
``expires_at``, after the batch's own transaction. Freed pages are reused by later inserts, so the
file stays about as large as the last TTL's worth of records (SQLite does not shrink it without
VACUUM). ``prune()`` runs it on demand.

Connections are per thread and per process (re-opened after ``fork``). Calls block on disk and on
the database lock (up to ``timeout_s``), never on the network.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from dora_otel.protocols import (
    InvalidRecordError,
    PermanentSinkError,
    Record,
    RetryableSinkError,
    TimeArg,
    WriteResult,
)
from dora_otel.sinks import _records

__all__ = ["SQLiteSink", "sqlite_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS execution_log (
    event_id    TEXT PRIMARY KEY,
    bot_run_id  TEXT NOT NULL,
    sk          TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    event_ts    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    expires_at  INTEGER,
    record      TEXT NOT NULL
);
-- the DynamoDB primary key (bot_run_id, sk); also serves events_for_run's time filter order
CREATE UNIQUE INDEX IF NOT EXISTS execution_log_pk ON execution_log (bot_run_id, sk);
CREATE INDEX IF NOT EXISTS execution_log_run_ts ON execution_log (bot_run_id, event_ts, seq);
-- GSI gsi1 (decision_id, event_ts)
CREATE INDEX IF NOT EXISTS execution_log_gsi1 ON execution_log (decision_id, event_ts, seq);

CREATE TABLE IF NOT EXISTS decision_log (
    decision_id  TEXT PRIMARY KEY,
    bot_run_id   TEXT,
    market       TEXT,
    decision_ts  TEXT,
    decision_day TEXT,
    expires_at   INTEGER,
    record       TEXT NOT NULL
);
-- GSI market_ts (market, decision_ts)
CREATE INDEX IF NOT EXISTS decision_log_market_ts ON decision_log (market, decision_ts);
-- GSI day_ts (decision_day, decision_ts)
CREATE INDEX IF NOT EXISTS decision_log_day_ts ON decision_log (decision_day, decision_ts);
-- GSI gsi_order (order_id, event_ts), sparse like the DynamoDB one: only records carrying an order_id.
-- An expression index, so ledger files made before it get it without a schema change.
CREATE INDEX IF NOT EXISTS execution_log_order ON execution_log (json_extract(record, '$.order_id'))
    WHERE json_extract(record, '$.order_id') IS NOT NULL;
-- retention (DynamoDB's TTL attribute): the pruning below finds expired rows through these
CREATE INDEX IF NOT EXISTS execution_log_expires ON execution_log (expires_at);
CREATE INDEX IF NOT EXISTS decision_log_expires ON decision_log (expires_at);
"""
_PRUNE_CHUNK = 5000
_log = logging.getLogger("dora_otel.ledger")

_INSERT_EXECUTION = (
    "INSERT OR REPLACE INTO execution_log "
    "(event_id, bot_run_id, sk, decision_id, event_ts, seq, expires_at, record) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_DECISION = (
    "INSERT OR REPLACE INTO decision_log "
    "(decision_id, bot_run_id, market, decision_ts, decision_day, expires_at, record) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def sqlite_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where the ledger's SQLite file lives under a data directory."""
    return Path(data_dir) / "ledger" / "ledger.sqlite3"


class SQLiteSink:
    """Sink and LedgerReader over one SQLite file.

    Args:
        path: the database file; its directory is created. ``sqlite_path(data_dir)`` gives the
            standard place.
        max_batch: records per ``write_batch`` (1..25, like DynamoDB).
        timeout_s: how long a call waits for another connection's write lock.
        prune_every_s: how often ``write_batch`` deletes rows past ``expires_at`` (``None``: never;
            see the module docstring). ``pruned`` counts the rows deleted.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_batch: int = _records.MAX_BATCH,
        timeout_s: float = 5.0,
        prune_every_s: float | None = 600.0,
    ) -> None:
        self.path = Path(path)
        self.prune_every_s = prune_every_s
        self.pruned = 0
        self._next_prune = 0.0  # monotonic; the first write prunes
        self.max_batch = _records.check_max_batch(max_batch)
        self.timeout_s = timeout_s
        self.query_count = 0
        self._local = threading.local()
        self._connections: list[tuple[int, sqlite3.Connection]] = []
        self._conn_lock = threading.Lock()
        self._closed = False

    # --- connections -------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        pid = os.getpid()
        if conn is not None and getattr(self._local, "pid", None) == pid:
            return conn
        if self._closed:
            raise PermanentSinkError(f"SQLite sink for {self.path} is closed")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise _sink_error(exc, f"opening {self.path}") from exc
        except OSError as exc:
            raise RetryableSinkError(f"cannot create the directory of {self.path}: {exc}") from exc
        try:
            with self._conn_lock:  # one setup at a time in this process
                self._setup(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise _sink_error(exc, f"opening {self.path}") from exc
        self._local.conn = conn
        self._local.pid = pid
        with self._conn_lock:
            self._connections.append((pid, conn))
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL, and creating the schema, can answer "database is locked"
        # without waiting on the busy handler when another connection (another thread or process)
        # does the same at the same moment: retry within timeout_s.
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    # --- Sink --------------------------------------------------------------------------------
    def write_batch(self, records: Sequence[Record]) -> WriteResult:
        """Store ``records`` in one transaction. Blocks on disk and on the write lock."""
        _records.check_batch(records, self.max_batch)
        failed: list[InvalidRecordError] = []
        executions: list[tuple[Any, ...]] = []
        decisions: list[tuple[Any, ...]] = []
        for record in records:
            try:
                kind, item = _records.prepare(record)
                body = orjson.dumps(item).decode()
            except InvalidRecordError as exc:
                failed.append(exc)
                continue
            except (TypeError, orjson.JSONEncodeError) as exc:
                failed.append(InvalidRecordError(f"record is not JSON-serialisable: {exc}", record=record))
                continue
            if kind == "execution":
                event_id = item.get("event_id") or f"{item['bot_run_id']}:{item['seq']}"
                executions.append(
                    (
                        str(event_id),
                        item["bot_run_id"],
                        item["sk"],
                        item["decision_id"],
                        item["event_ts"],
                        item["seq"],
                        _int_or_none(item.get("expires_at")),
                        body,
                    )
                )
            else:
                decisions.append(
                    (
                        item["decision_id"],
                        item.get("bot_run_id"),
                        item.get("market"),
                        item.get("decision_ts"),
                        item.get("decision_day"),
                        _int_or_none(item.get("expires_at")),
                        body,
                    )
                )
        if executions or decisions:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if executions:
                        conn.executemany(_INSERT_EXECUTION, executions)
                    if decisions:
                        conn.executemany(_INSERT_DECISION, decisions)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _sink_error(exc, f"writing {len(records)} records to {self.path}") from exc
            if self.prune_every_s is not None and time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + self.prune_every_s
                try:
                    self.prune()
                except RetryableSinkError as exc:  # the batch is stored; pruning waits for the next turn
                    _log.warning("pruning expired ledger rows failed: %s", exc, extra={"event_type": "LOG"})
        return WriteResult(written=len(executions) + len(decisions), failed=failed)

    def prune(self, now: float | None = None) -> int:
        """Delete rows whose ``expires_at`` is before ``now`` (epoch seconds; default: the current
        time), in short transactions of at most ``_PRUNE_CHUNK`` rows. Returns the rows deleted.
        Thread: the shipper (from ``write_batch``) or any caller; blocks on disk and the write lock."""
        cutoff = int(time.time() if now is None else now)
        conn = self._connection()
        deleted = 0
        try:
            for table in ("execution_log", "decision_log"):
                while True:
                    cursor = conn.execute(  # the table names are ours, not input
                        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "
                        "WHERE expires_at < ? LIMIT ?)",
                        (cutoff, _PRUNE_CHUNK),
                    )
                    deleted += cursor.rowcount
                    if cursor.rowcount < _PRUNE_CHUNK:
                        break
        except sqlite3.Error as exc:
            raise _sink_error(exc, f"pruning expired rows of {self.path}") from exc
        finally:
            self.pruned += deleted
        return deleted

    def close(self) -> None:
        """Close this process's connections (all threads). Idempotent."""
        self._closed = True
        with self._conn_lock:
            connections, self._connections = self._connections, []
        pid = os.getpid()
        for owner, conn in connections:
            if owner == pid:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
        self._local = threading.local()

    # --- LedgerReader ------------------------------------------------------------------------
    def _select(self, sql: str, params: Sequence[Any]) -> list[Record]:
        conn = self._connection()
        self.query_count += 1
        try:
            rows = conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _sink_error(exc, f"reading {self.path}") from exc
        return [orjson.loads(row[0]) for row in rows]

    def decision(self, decision_id: str) -> Record | None:
        rows = self._select("SELECT record FROM decision_log WHERE decision_id = ?", (decision_id,))
        return rows[0] if rows else None

    def events_for_decision(self, decision_id: str) -> list[Record]:
        return self._select(
            "SELECT record FROM execution_log WHERE decision_id = ? ORDER BY event_ts, seq",
            (decision_id,),
        )

    def decisions_for_market(self, market: str, start_ts: TimeArg, end_ts: TimeArg) -> list[Record]:
        return self._select(
            "SELECT record FROM decision_log WHERE market = ? AND decision_ts BETWEEN ? AND ? "
            "ORDER BY decision_ts, decision_id",
            (market, _records.iso(start_ts), _records.iso(end_ts)),
        )

    def decisions_between(self, start_ts: TimeArg, end_ts: TimeArg) -> list[Record]:
        start, end = _records.iso(start_ts), _records.iso(end_ts)
        days = _records.days_between(start, end)
        if not days:
            return []
        # One range scan of the day_ts index (the DynamoDB sink runs one Query per day).
        return self._select(
            "SELECT record FROM decision_log WHERE decision_day BETWEEN ? AND ? "
            "AND decision_ts BETWEEN ? AND ? ORDER BY decision_ts, decision_id",
            (days[0], days[-1], start, end),
        )

    def records_for_orders(self, order_ids: Sequence[str]) -> list[Record]:
        """Execution records carrying one of ``order_ids`` (any decision_id, also ``unmatched:``),
        through the order_id index; ordered by ``event_ts`` then ``seq``."""
        wanted = sorted({str(o) for o in order_ids if o not in (None, "")})
        out: list[Record] = []
        for i in range(0, len(wanted), 500):  # SQLite's bound-parameter limit is far above this
            chunk = wanted[i:i + 500]
            out.extend(self._select(
                "SELECT record FROM execution_log WHERE json_extract(record, '$.order_id') IN "
                f"({','.join('?' * len(chunk))}) ORDER BY event_ts, seq", chunk))
        return sorted(out, key=_records.event_order) if len(wanted) > 500 else out

    def events_for_run(
        self, bot_run_id: str, start_ts: TimeArg | None = None, end_ts: TimeArg | None = None
    ) -> list[Record]:
        sql = "SELECT record FROM execution_log WHERE bot_run_id = ?"
        params: list[Any] = [bot_run_id]
        if start_ts is not None:
            sql += " AND event_ts >= ?"
            params.append(_records.iso(start_ts))
        if end_ts is not None:
            sql += " AND event_ts <= ?"
            params.append(_records.iso(end_ts))
        return self._select(sql + " ORDER BY event_ts, seq", params)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _sink_error(exc: sqlite3.Error, doing: str) -> RetryableSinkError | PermanentSinkError:
    # OperationalError covers "database is locked", busy, disk I/O and disk full: transient.
    # Other sqlite3 errors (corrupt file, schema mismatch) will not go away on retry.
    if isinstance(exc, sqlite3.OperationalError):
        return RetryableSinkError(f"SQLite error {doing}: {exc}")
    return PermanentSinkError(f"SQLite error {doing}: {exc}")
