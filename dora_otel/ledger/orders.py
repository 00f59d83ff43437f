"""The order index: client_order_id / order_id -> the decision slot that placed the order, kept across
restarts, so a fill or cancel for an order placed by an EARLIER run of the bot still joins its decision.

Owns :class:`OrderIndex` (the runtime's order book when the ledger is on) and its file
``<data_dir>/ledger/orders.sqlite3``. Why a local index file (and not a query of the ledger, a DynamoDB
GSI or an extra "order item" per order) is argued in docs/ARCHITECTURE.md ("Order index"). In short:

- the order path pays nothing new: ``add`` (called by ``@order_place`` for the client_order_id and, when
  the answer arrives, for the order_id) is the same dict insert as before plus one ``deque.append``;
  a writer thread (``dora-otel-orders``) writes the index file every 50 ms, in one transaction;
- ``find`` looks in memory first (this run's orders: the usual case, nothing new either), and only on a
  miss runs one primary-key SELECT on the index file (measured by ``bench/record_fill.py``);
- the file is bounded: rows older than ``retention_s`` (7 days) are pruned, and at most ``max_rows``
  are kept (oldest first out). SQLite in WAL mode, so bots sharing a data directory share the index.

Lost joins, counted: orders added in the last flush interval before a ``kill -9`` are not in the file
(their fills are recorded unmatched, with their order_id); a host that starts with an empty data
directory has no index (same as for the journal).
"""

from __future__ import annotations

import collections
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.trace import SpanContext, TraceFlags

from dora_otel._forks import AfterFork
from dora_otel._runtime import OrderBook, OrderRef, attr

__all__ = ["INDEX_FILE", "OrderIndex", "index_path", "open_index"]

INDEX_FILE = "orders.sqlite3"
_log = logging.getLogger("dora_otel.ledger")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS order_index (
    key     TEXT PRIMARY KEY,   -- a client_order_id or an order_id (both are unique per exchange account)
    created INTEGER NOT NULL,   -- unix seconds, for pruning
    ref     TEXT NOT NULL       -- the OrderRef as JSON (decision_id, span_id, slot, market, side, ...)
);
CREATE INDEX IF NOT EXISTS order_index_created ON order_index (created);
"""
_INSERT = "INSERT OR REPLACE INTO order_index (key, created, ref) VALUES (?, ?, ?)"
_PRUNE_EVERY_S = 600.0


def index_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where the order index lives under a data directory."""
    return Path(data_dir) / "ledger" / INDEX_FILE


def _encode(ref: OrderRef) -> str:
    ctx = ref.span_context
    return orjson.dumps({
        "decision_id": ref.decision_id, "span_id": format(ctx.span_id, "016x"),
        "trace_id": format(ctx.trace_id, "032x"), "trace_flags": int(ctx.trace_flags),
        "market": attr(ref.market), "slot": attr(ref.slot), "side": attr(ref.side), "price": attr(ref.price),
        "size": attr(ref.size), "client_order_id": attr(ref.client_order_id),
    }).decode()


def _decode(text: str) -> OrderRef | None:
    try:
        row = orjson.loads(text)
        ctx = SpanContext(trace_id=int(row["trace_id"], 16), span_id=int(row["span_id"], 16), is_remote=True,
                          trace_flags=TraceFlags(int(row.get("trace_flags") or 0)))
        values = {"decision_id": row["decision_id"], "span_context": ctx}
        for name in OrderRef._fields:  # tolerate a field added to OrderRef later (None until written)
            if name not in values:
                values[name] = row.get(name)
        return OrderRef(**values)
    except (ValueError, KeyError, TypeError):
        return None


class OrderIndex:
    """A drop-in for the runtime's in-memory ``OrderBook`` that also remembers orders on disk.

    Threads: ``add`` runs on the bot's order path (memory only); ``find`` / ``link`` on any thread
    (memory, then the file on a miss); the writer thread owns all writes. ``close`` on the caller's.
    Never raises: a failing file is logged once and counted (``write_errors``); lookups then answer
    from memory only.
    """

    def __init__(self, path: str | os.PathLike[str], *, capacity: int = 100_000,
                 retention_s: float = 7 * 86_400, max_rows: int = 2_000_000,
                 flush_interval_s: float = 0.05) -> None:
        self.path = Path(path)
        self.retention_s = retention_s
        self.max_rows = max_rows
        self.flush_interval_s = flush_interval_s
        self._book = OrderBook(capacity)
        self._pending: collections.deque[tuple[str, OrderRef]] = collections.deque()
        self._local = threading.local()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._passes = 0  # writer passes completed
        self._closed = False
        self._last_prune = 0.0
        self.disk_lookups = 0
        self.disk_hits = 0
        self.write_errors = 0
        self._thread: threading.Thread | None = None
        self._start_writer()
        self._after_fork = AfterFork(self._after_fork_in_child)

    # --- the order path --------------------------------------------------------------------------
    def add(self, key: str, ref: OrderRef) -> None:
        """Remember ``key`` -> ``ref``. Thread: the bot's (order path): a dict insert and a deque append."""
        self._book.add(key, ref)
        self._pending.append((key, ref))

    # --- lookups ---------------------------------------------------------------------------------
    def find(self, *keys: Any) -> OrderRef | None:
        """The order for the first key known: in memory, else in the index file. Thread: any."""
        ref = self._book.find(*keys)
        if ref is not None:
            return ref
        wanted = [str(k) for k in keys if k is not None and k != ""]
        if not wanted:
            return None
        ref = self._find_on_disk(wanted)
        if ref is not None:
            for key in wanted:  # the next fill of this order is answered from memory
                self._book.add(key, ref)
        return ref

    def link(self, client_order_id: Any, order_id: Any) -> OrderRef | None:
        """Learn that ``order_id`` is the exchange's id of the order sent as ``client_order_id``
        (e.g. after a 409 duplicate, when the bot fetched the order by client_order_id). Returns the
        order's ref, or None when neither id is known. Thread: any."""
        if client_order_id in (None, "") or order_id in (None, ""):
            return None
        ref = self.find(client_order_id)
        if ref is None:
            return self.find(order_id)
        if self._book.find(order_id) is None:
            self.add(str(order_id), ref)
        return ref

    def _find_on_disk(self, keys: list[str]) -> OrderRef | None:
        self.disk_lookups += 1
        try:
            conn = self._reader()
            marks = ",".join("?" * len(keys))
            query = f"SELECT key, ref FROM order_index WHERE key IN ({marks})"
            rows = dict(conn.execute(query, keys).fetchall())
        except sqlite3.Error:
            return None  # no file yet, no table yet, locked beyond the timeout: a miss
        for key in keys:
            if key in rows:
                ref = _decode(rows[key])
                if ref is not None:
                    self.disk_hits += 1
                    return ref
        return None

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            if not self.path.exists():
                raise sqlite3.OperationalError(f"{self.path} does not exist yet")
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=0.05,
                                   check_same_thread=False)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    # --- the writer thread -----------------------------------------------------------------------
    def _start_writer(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dora-otel-orders", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            closing = self._closed
            batch = []
            created = int(time.time())  # to the second, for pruning: the writer's clock is close enough
            while self._pending:
                try:
                    key, ref = self._pending.popleft()
                except IndexError:
                    break
                batch.append((key, created, _encode(ref)))
            if batch:
                try:
                    conn = conn or self._open_writer()
                    with conn:
                        conn.executemany(_INSERT, batch)
                    self._maybe_prune(conn)
                except (sqlite3.Error, OSError) as exc:
                    self._write_failed(exc, len(batch))
                    conn = None
            with self._idle:
                self._passes += 1
                self._idle.notify_all()
            if closing and not self._pending:
                break
        if conn is not None:
            conn.close()

    def _open_writer(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        conn.isolation_level = "DEFERRED"  # `with conn:` commits each batch as one transaction
        return conn

    def _maybe_prune(self, conn: sqlite3.Connection) -> None:
        now = time.time()
        if now - self._last_prune < _PRUNE_EVERY_S:
            return
        self._last_prune = now
        with conn:
            conn.execute("DELETE FROM order_index WHERE created < ?", (int(now - self.retention_s),))
            conn.execute("DELETE FROM order_index WHERE key IN (SELECT key FROM order_index "
                         "ORDER BY created DESC LIMIT -1 OFFSET ?)", (self.max_rows,))

    def _write_failed(self, exc: BaseException, lost: int) -> None:
        self.write_errors += lost
        if self.write_errors == lost:  # the first failure: one line, not one per batch
            _log.error("order index %s cannot be written (%s): fills and cancels of this run's orders "
                       "will not join their decision after a restart", self.path, exc,
                       extra={"_dora": {"event_type": "ERROR", "error_type": type(exc).__name__,
                                        "error_msg": str(exc), "target": "order_index"}})

    # --- lifecycle -------------------------------------------------------------------------------
    def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait until every add so far is in the file. Thread: not the trading loop (blocks)."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            target = self._passes + 2  # a whole pass that began after this call
        self._wake.set()
        with self._idle:
            while self._passes < target or self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._wake.set()
                self._idle.wait(min(left, self.flush_interval_s))
        return True

    def close(self, timeout_s: float = 2.0) -> bool:
        """Write what is pending and stop the writer. Idempotent. Thread: the caller's (shutdown)."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout_s)
        return not self._pending

    def stats(self) -> dict[str, int]:
        """Counters: lookups that went to the file, how many found the order, rows that could not be written."""
        return {"disk_lookups": self.disk_lookups, "disk_hits": self.disk_hits,
                "write_errors": self.write_errors}

    def _after_fork_in_child(self) -> None:
        self._local = threading.local()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        if not self._closed:
            self._start_writer()


def open_index(data_dir: str | os.PathLike[str], previous: Any = None) -> Any:
    """The order index for a data directory, or ``previous`` (the in-memory book) when it cannot be
    made (logged once). Thread: setup's."""
    try:
        return OrderIndex(index_path(data_dir))
    except Exception as exc:  # noqa: BLE001  (a thread that cannot start, a bad path: joins stay in memory)
        _log.error("order index under %s unavailable (%s): fills after a restart will not join",
                   data_dir, exc)
        return previous if previous is not None else OrderBook()
