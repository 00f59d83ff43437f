"""The ledger's background shipper: one daemon thread that moves journal records into the sink.

Owns batching (up to the sink's ``max_batch``, 25), retries with capped exponential backoff and
jitter, the outage state (one ERROR line when an outage starts, one INFO line when it ends), the
dead-lettering of records a sink can never store, periodic fsync of the journal, and the waiting
behind ``Ledger.flush`` / ``Ledger.shutdown``.

Order and delivery: the shipper reads the journal oldest segment first and ships one batch at a
time; a batch is retried until every record in it is written or dead-lettered (per-record permanent
errors), so a record is never skipped because the sink is down — it waits in the journal. Only then
is the batch acknowledged to the journal, which deletes fully shipped segments. Records that could
not be journaled (the disk failed) wait in a bounded in-memory queue and are shipped after the
journal's records; the outage ERROR line says how many wait where.

Retries: ``RetryableSinkError`` (throttling, 5xx, timeouts), ``UnprocessedItems`` and also
``PermanentSinkError`` for a whole batch (a missing table or revoked permissions can be fixed while
the bot runs; dropping the batch would lose ORDER_RESULT/FILL). Each retried ``write_batch`` call
counts in ``retried``. An outage starts at the first permanent batch error or after
``outage_after_failures`` consecutive retryable failures.

Everything here runs on the shipper thread except ``wake``, ``start``, ``stop`` and ``wait_until``
(called from the bot's or the caller's thread; ``wake`` never blocks, ``stop``/``wait_until`` block up
to their timeouts). Sink calls run with OpenTelemetry instrumentation suppressed, so an instrumented
botocore does not trace the ledger's own writes.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from dora_otel.ledger.journal import Journal
from dora_otel.ledger.records import expand
from dora_otel.protocols import InvalidRecordError, RetryableSinkError, Sink, SinkError

__all__ = ["Shipper"]


@contextlib.contextmanager
def _instrumentation_suppressed() -> Iterator[None]:
    try:
        from opentelemetry.instrumentation.utils import suppress_instrumentation
    # Optional for this purpose; a broken install of it must not stop the shipper thread either.
    except Exception:  # noqa: BLE001
        yield
        return
    with suppress_instrumentation():
        yield


class _UnprocessedItems(RetryableSinkError):
    """The sink took none of a batch's records (DynamoDB UnprocessedItems for all of them)."""


class Shipper:
    """The background thread between a :class:`Journal` and a :class:`Sink`.

    Args:
        journal: where records come from; acknowledged batches are deleted from it.
        sink: where they go.
        fallback: records (``(line, appended_at)``) that could not be journaled; shipped last.
        max_batch: records per ``write_batch`` (capped at ``sink.max_batch``).
        retry_base_s, retry_max_s: the backoff: attempt *n* waits
            ``min(retry_max_s, retry_base_s * 2**(n-1))`` times a random factor in [0.5, 1).
        outage_after_failures: consecutive retryable failures that make an outage (logged once).
        fsync_interval_s: how often dirty journal segments are fsynced (``None``: never here).
        idle_rotate_s: rotate a fully shipped active segment after this long, so it is deleted.
        linger_s: after being woken, wait this long so that a cycle's records ship as one batch.
    """

    def __init__(
        self,
        journal: Journal,
        sink: Sink,
        *,
        fallback: collections.deque[tuple[bytes, float]],
        max_batch: int = 25,
        retry_base_s: float = 0.1,
        retry_max_s: float = 5.0,
        outage_after_failures: int = 3,
        fsync_interval_s: float | None = 1.0,
        idle_rotate_s: float = 30.0,
        linger_s: float = 0.02,
        logger: logging.Logger | None = None,
    ) -> None:
        self.journal = journal
        self.sink = sink
        self.fallback = fallback
        self.max_batch = max(1, min(max_batch, getattr(sink, "max_batch", max_batch)))
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.outage_after_failures = max(1, outage_after_failures)
        self.fsync_interval_s = fsync_interval_s
        self.idle_rotate_s = idle_rotate_s
        self.linger_s = linger_s
        self.log = logger or logging.getLogger("dora_otel.ledger")
        # counters, written on the shipper thread only
        self.shipped = 0
        self.retried = 0
        self.failed = 0
        self.replayed = 0
        self.fallback_handled = 0
        self.internal_errors = 0
        self._init_sync()

    def _init_sync(self) -> None:
        self._wake = threading.Event()
        self._stop_now = threading.Event()
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self._draining = False
        self._flushing = 0
        self._started = False
        self._consecutive_failures = 0
        self._first_failure_at: float | None = None
        self._outage_since: float | None = None
        self._next_sync = 0.0

    # --- control (other threads) -------------------------------------------------------------
    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def in_outage(self) -> bool:
        return self._outage_since is not None

    def start(self) -> None:
        """Start the thread (idempotent). Thread: the caller's; does not block."""
        if self._started:
            return
        self._started = True
        self._draining = False
        self._stop_now.clear()
        self._thread = threading.Thread(target=self._run, name="dora-otel-ledger-shipper", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Tell the thread there is something to ship. Thread: any; never blocks."""
        if not self._wake.is_set():
            self._wake.set()

    def wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Block the caller until ``done()`` is true, the thread stops, or ``timeout_s`` passes."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._progress:
            self._flushing += 1
        self.wake()
        try:
            with self._progress:
                while not done():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self.running:
                        return done()
                    self._progress.wait(min(remaining, 0.25))
                return True
        finally:
            with self._progress:
                self._flushing -= 1

    def stop(self, timeout_s: float) -> bool:
        """Ship what is left within ``timeout_s``, then stop the thread. Returns True when the
        thread has ended (a sink call stuck on the network can keep it alive past the budget).
        Thread: the caller's; blocks up to ``timeout_s`` (+ 0.1 s)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        thread = self._thread
        self._draining = True
        self.wake()
        if thread is None:
            return True
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            self._stop_now.set()
            self.wake()
            thread.join(0.1)
        return not thread.is_alive()

    def after_fork_in_child(self) -> None:
        """Re-create the synchronisation objects and the thread in a forked child."""
        was_started = self._started and not self._draining
        self._init_sync()
        if was_started:
            self.start()

    # --- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            with _instrumentation_suppressed():
                while not self._stop_now.is_set():
                    try:
                        progressed = self._step()
                    except Exception as exc:  # a bug here must not end the thread silently
                        self.internal_errors += 1
                        self.log.error(
                            "execution ledger shipper failed unexpectedly; retrying in 1 s: %s",
                            exc,
                            exc_info=exc,
                            extra={
                                "event_type": "ERROR",
                                "target": "execution_log",
                                "error_type": type(exc).__name__,
                                "error_msg": str(exc),
                            },
                        )
                        self._stop_now.wait(1.0)
                        continue
                    if progressed:
                        continue
                    if self._draining:
                        break
                    self._idle_wait()
        finally:
            if self.fsync_interval_s is not None:
                with contextlib.suppress(Exception):
                    self.journal.sync()
            with self._progress:
                self._progress.notify_all()

    def _idle_wait(self) -> None:
        timeout = self.fsync_interval_s if self.fsync_interval_s is not None else 1.0
        woken = self._wake.wait(timeout)
        self._wake.clear()
        if woken and self.linger_s > 0 and not self._draining and not self._flushing:
            self._stop_now.wait(self.linger_s)

    def _step(self) -> bool:
        """Ship one batch if there is one. Returns whether anything was handled."""
        now = time.monotonic()
        if self.fsync_interval_s is not None and now >= self._next_sync:
            self._next_sync = now + self.fsync_interval_s
            self.journal.sync()
        batch = self.journal.read_batch(self.max_batch)
        if batch is not None and (batch.records or batch.stop > batch.start):
            if batch.records and not self._ship(batch.records, replayed=batch.replayed):
                return False  # stopped before the batch was handled: it stays in the journal
            self.journal.ack(batch)
            self._notify()
            return True
        if self.fallback:
            entries = list(itertools.islice(self.fallback, self.max_batch))
            records = [expand(orjson.loads(line)) for line, _ in entries]
            if not self._ship(records, replayed=False):
                return False
            for _ in entries:
                self.fallback.popleft()
            self.fallback_handled += len(entries)
            self._notify()
            return True
        self.journal.maintain(self.idle_rotate_s)
        return False

    def _notify(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def _ship(self, records: list[dict[str, Any]], *, replayed: bool) -> bool:
        """Write ``records`` until each is written or dead-lettered. False if stopped first."""
        pending = records
        attempt = 0
        while True:
            if self._stop_now.is_set():
                return False
            try:
                result = self.sink.write_batch(pending)
            # Any Sink may fail in its own way (boto3, sqlite3, a user's): each failure is counted
            # (_note_failure), backed off and retried until the shipper stops; the thread never dies.
            except Exception as exc:  # noqa: BLE001
                attempt += 1
                self._note_failure(exc)
                if not self._backoff(attempt):
                    return False
                self.retried += 1
                continue
            self.shipped += result.written
            if result.written:
                self._consecutive_failures = 0  # progress, even if partial
            if replayed:
                self.replayed += result.written
            for error in result.failed:
                self._dead_letter(error)
            if not result.unprocessed:
                self._note_success()
                return True
            attempt += 1
            if result.written == 0 and not result.failed:
                self._note_failure(
                    _UnprocessedItems(f"the sink left all {len(result.unprocessed)} records unprocessed")
                )
            pending = result.unprocessed
            if not self._backoff(attempt):
                return False
            self.retried += 1

    def _backoff(self, attempt: int) -> bool:
        delay = min(self.retry_max_s, self.retry_base_s * 2 ** min(attempt - 1, 30))
        delay *= 0.5 + random.random() / 2
        return not self._stop_now.wait(delay)

    def _note_failure(self, exc: BaseException) -> None:
        now = time.time()
        self._consecutive_failures += 1
        if self._first_failure_at is None:
            self._first_failure_at = now
        if self._outage_since is not None:
            return
        permanent = not isinstance(exc, RetryableSinkError)
        if not permanent and self._consecutive_failures < self.outage_after_failures:
            return
        self._outage_since = self._first_failure_at
        on_disk = self.journal.stats()
        in_memory = len(self.fallback)
        where = (
            f"{on_disk.records} records wait in the journal on disk ({on_disk.bytes} bytes of journal files)"
        )
        if in_memory:
            where += f" and {in_memory} in memory only (not durable: lost if the process exits)"
        self.log.error(
            "execution ledger sink %s is failing (%s: %s); %s and are retried until it recovers",
            type(self.sink).__name__,
            type(exc).__name__,
            exc,
            where,
            # a sink error says enough; anything else is a bug worth its stack
            exc_info=None if isinstance(exc, SinkError) else exc,
            extra={
                "event_type": "ERROR",
                "target": "execution_log",
                "error_type": type(exc).__name__,
                "error_msg": str(exc),
                "journal_bytes": on_disk.bytes,
                "journal_records": on_disk.records,
                "memory_records": in_memory,
            },
        )

    def _note_success(self) -> None:
        self._consecutive_failures = 0
        self._first_failure_at = None
        if self._outage_since is None:
            return
        lasted = time.time() - self._outage_since
        self._outage_since = None
        self.log.info(
            "execution ledger sink %s recovered after %.1f s; shipping the backlog",
            type(self.sink).__name__,
            lasted,
            extra={"event_type": "LOG", "target": "execution_log", "outage_s": round(lasted, 3)},
        )

    def _dead_letter(self, error: InvalidRecordError) -> None:
        record = dict(error.record)
        self.failed += 1
        self.journal.dead_letter(record, str(error))
        self.log.error(
            "execution ledger record %s cannot be stored and was moved to %s: %s",
            record.get("event_id", record.get("decision_id")),
            "dead-letter.jsonl",
            error,
            extra={
                "event_type": "ERROR",
                "target": "execution_log",
                "error_type": type(error).__name__,
                "error_msg": str(error),
                "event_id": record.get("event_id"),
                "field": error.field,
            },
        )
