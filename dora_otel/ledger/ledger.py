"""The execution ledger's front door: :class:`Ledger` takes records on the bot's thread and makes
sure they reach the sink — at least once, idempotently, across kill -9 and sink outages.

Owns the hot-path contract of ``Ledger.append`` (validate, serialise, journal, wake the shipper; never
block on the network, never raise), the ledger's counters (``stats()``), and the lifecycle of the
journal (:mod:`dora_otel.ledger.journal`) and shipper (:mod:`dora_otel.ledger.shipper`) beneath it:
``start`` (replays earlier runs' unshipped segments), ``flush``, ``shutdown``, and re-creation of
the shipper thread in a forked child.

Records are those of docs/ARCHITECTURE.md; ``ExecutionLedgerProcessor`` (``processor.py``) journals
events as compact lines (``append_line``; the journal's reader expands them into records) or, when
their fields need scrubbing, as full records (``append``).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from dora_otel._forks import AfterFork
from dora_otel.ledger.journal import DROPPED, Journal
from dora_otel.ledger.shipper import Shipper
from dora_otel.protocols import Sink

__all__ = ["DEFAULT_CRITICAL_EVENT_TYPES", "STATS_KEYS", "Ledger"]

logger = logging.getLogger("dora_otel.ledger")

DEFAULT_CRITICAL_EVENT_TYPES = frozenset({"ORDER_RESULT", "FILL", "ORDER_CANCEL"})
"""Event types the journal bound never drops (see :mod:`dora_otel.ledger.journal`)."""

STATS_KEYS = (
    "enqueued",
    "shipped",
    "retried",
    "rejected",
    "dropped",
    "over_bound",
    "journal_bytes",
    "journal_records",
    "oldest_unshipped_age_s",
    "memory_records",
    "failed",
    "torn",
    "replayed",
    "unjournaled",
    "errors",
    "outage",
    "durable",
)

_REQUIRED = ("bot_run_id", "decision_id")
_LOG_EVERY_S = 60.0


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _sanitise(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, Mapping):
        return {str(k): _sanitise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_sanitise(v) for v in value]
    return _json_default(value)


def _dumps_sanitised(record: Mapping[str, Any]) -> bytes:
    """The slow path for what orjson refuses (ints beyond 64 bits, non-str keys, deep nesting):
    such values become strings, so the record is still kept."""
    return orjson.dumps(_sanitise(record), option=orjson.OPT_APPEND_NEWLINE)


class Ledger:
    """The durable execution ledger: a journal on local disk and a shipper thread to a sink.

    Args:
        sink: where records end up (see :func:`dora_otel.sinks.make_sink`).
        journal_dir: the journal directory, normally ``<data_dir>/ledger/journal``.
        fsync: ``"interval"`` (default: the shipper thread fsyncs every ``fsync_interval_s``),
            ``"always"`` (every append waits for the disk) or ``"never"``. Every policy survives
            kill -9 of the process; they differ on a machine crash.
        fsync_interval_s: the interval for ``fsync="interval"``.
        max_journal_bytes: the journal's size bound. At it, decision and ORDER_PLACE records are
            dropped (``dropped``, one ERROR line); ``critical_event_types`` are still written
            (``over_bound``). See :mod:`dora_otel.ledger.journal`.
        segment_bytes: journal segment size (the most a crash makes the next start re-ship).
        critical_event_types: event types never dropped at the bound.
        max_batch: records per sink call (at most the sink's ``max_batch``, 25).
        retry_base_s, retry_max_s: backoff of the shipper's retries (capped exponential, jitter).
        outage_after_failures: consecutive retryable failures before an outage is logged.
        max_memory_records: bound of the in-memory queue used only when the journal cannot be
            written (broken disk); past it records are dropped and counted.
        linger_s: how long the shipper waits after a wake-up to batch a cycle's records.
        close_sink: close the sink in ``shutdown``.
        memory_only: do not use ``journal_dir`` at all (it is known to be unusable, and the caller
            has said so): every record waits in the bounded memory queue, not durable, and what is
            still there at shutdown is counted in ``dropped``.

    Raises ValueError for a bad setting (naming it); never raises for I/O problems, which are
    logged and counted instead.

    ``stats()`` keys: ``enqueued`` (accepted into the journal or the memory queue), ``shipped``
    (records written to the sink by this process, replays included), ``retried`` (sink calls
    repeated after a failure or UnprocessedItems), ``rejected`` (no bot_run_id/decision_id),
    ``dropped`` (lost: at the journal bound, at the memory queue bound, unserialisable, or held only
    in memory when ``shutdown`` returned), ``over_bound`` (critical records written past the bound),
    ``journal_bytes`` (bytes of this journal's segment files on disk), ``journal_records`` (records
    in them not yet shipped), ``oldest_unshipped_age_s`` (0 when caught up; journal and memory),
    ``memory_records`` (records waiting in memory only), ``failed`` (records the sink can never
    store, kept in ``dead-letter.jsonl``), ``torn`` (unparseable journal lines skipped),
    ``replayed`` (records from earlier runs shipped), ``unjournaled`` (records that went to the
    memory queue because the journal failed, not durable), ``errors`` (internal errors in
    ``append``), ``outage`` (bool), ``durable`` (False while records go to memory because the
    journal cannot be written).
    """

    def __init__(
        self,
        sink: Sink,
        journal_dir: str | os.PathLike[str],
        *,
        fsync: str = "interval",
        fsync_interval_s: float = 1.0,
        max_journal_bytes: int = 256 * 1024 * 1024,
        segment_bytes: int = 4 * 1024 * 1024,
        critical_event_types: Iterable[str] = DEFAULT_CRITICAL_EVENT_TYPES,
        max_batch: int = 25,
        retry_base_s: float = 0.1,
        retry_max_s: float = 5.0,
        outage_after_failures: int = 3,
        max_memory_records: int = 100_000,
        linger_s: float = 0.02,
        close_sink: bool = True,
        memory_only: bool = False,
    ) -> None:
        if not isinstance(fsync_interval_s, (int, float)) or not fsync_interval_s > 0:
            raise ValueError(f"fsync_interval_s ({fsync_interval_s!r}) must be > 0")
        if not 0 < retry_base_s <= retry_max_s:
            raise ValueError(
                f"retry_base_s ({retry_base_s!r}) must be > 0 and <= retry_max_s ({retry_max_s!r})"
            )
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or not 1 <= max_batch <= 25:
            raise ValueError(f"max_batch ({max_batch!r}) must be <= 25 for BatchWriteItem (and >= 1)")
        self.sink = sink
        self.close_sink = close_sink
        self._critical = frozenset(critical_event_types)
        self.memory_only = memory_only
        self._journal = Journal(
            journal_dir,
            fsync=fsync,
            max_bytes=max_journal_bytes,
            segment_bytes=segment_bytes,
            critical_event_types=self._critical,
            logger=logger,
            open_directory=not memory_only,
        )
        self.journal_dir = self._journal.directory
        self._fallback: collections.deque[tuple[bytes, float]] = collections.deque()
        self._max_memory_records = max_memory_records
        self._shipper = Shipper(
            self._journal,
            sink,
            fallback=self._fallback,
            max_batch=max_batch,
            retry_base_s=retry_base_s,
            retry_max_s=retry_max_s,
            outage_after_failures=outage_after_failures,
            fsync_interval_s=fsync_interval_s if fsync == "interval" else None,
            linger_s=linger_s,
            logger=logger,
        )
        self._rejected = 0
        self._errors = 0
        self._dropped = 0  # outside the journal's own count
        self._fallback_appended = 0
        self._fallback_lock = threading.Lock()
        self._journal_down_since: float | None = None
        self._journal_retry_at = 0.0
        self._last_error_log = 0.0
        self._warned_non_finite: set[str] = set()
        self._started = False
        self._shut_down = False
        self._shutdown_result = False
        if memory_only:
            self._journal_down_since = time.monotonic()
            self._journal_retry_at = math.inf
        elif self._journal.init_error is not None:
            self._journal_failed(self._journal.init_error)
        self._after_fork = AfterFork(self._after_fork_in_child)

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the shipper thread; it first ships earlier runs' unshipped journal segments.

        Thread: the caller's (setup). Does not block. Idempotent; a no-op after ``shutdown``.
        """
        if self._started or self._shut_down:
            return
        self._started = True
        if self._journal.replayed_segments:
            journal = self._journal.stats()
            logger.info(
                "execution ledger: replaying %d journal segments (%d unshipped records, %d bytes) "
                "left by earlier runs",
                self._journal.replayed_segments,
                journal.records,
                journal.bytes,
                extra={"event_type": "LOG", "target": "execution_log"},
            )
        self._shipper.start()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every record appended before this call is shipped (or dead-lettered).

        Thread: any but the bot's trading loop (it blocks up to ``timeout_s``). Returns False on
        timeout, or when the shipper is not running and records are still unshipped.
        """
        position = self._journal.position()
        fallback_target = self._fallback_appended

        def done() -> bool:
            return self._journal.reached(position) and self._shipper.fallback_handled >= fallback_target

        if not self._shipper.running:
            return done()
        return self._shipper.wait_until(done, timeout_s)

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Ship what is left within ``timeout_s``, stop the shipper, fsync and close the journal.

        What was not shipped stays in the journal and is replayed by the next ``start``; what was
        held only in memory is lost: counted in ``dropped`` and reported in one ERROR line. Records
        appended afterwards are still journaled (for that replay) but not shipped (or, when the
        journal cannot be written, counted in ``dropped``). Returns True when nothing is left
        unshipped. Thread: the caller's; blocks up to ``timeout_s``.
        Idempotent.
        """
        if self._shut_down:
            return self._shutdown_result
        self._shut_down = True
        self._shutdown_result = self._shutdown(timeout_s)
        return self._shutdown_result

    def _shutdown(self, timeout_s: float) -> bool:
        stopped = self._shipper.stop(timeout_s)
        if not stopped:
            logger.warning(
                "execution ledger shipper still busy after the %.1f s shutdown budget; unshipped "
                "records stay in the journal for the next start",
                timeout_s,
                extra={"event_type": "LOG", "target": "execution_log"},
            )
            self._journal.sync()
            self._count_memory_lost()
            return False
        empty = self._journal.close()
        lost = self._count_memory_lost()
        if self.close_sink:
            try:
                self.sink.close()
            except Exception as exc:  # noqa: BLE001  any Sink (protocols.Sink) may fail to close; shutdown goes on
                logger.warning("closing the ledger sink failed: %s", exc, extra={"event_type": "LOG"})
        return empty and not lost

    def _count_memory_lost(self) -> int:
        """Count the records held only in memory as lost (the process is about to exit) and say so
        in one ERROR line. Thread: shutdown's."""
        with self._fallback_lock:
            lost = len(self._fallback)
            self._fallback.clear()
            self._dropped += lost
        if lost:
            journal = self._journal.stats()
            logger.error(
                "execution ledger: %d records held only in memory (the journal %s could not be "
                "written) were not shipped and are lost (counted in dropped); %d unshipped records "
                "stay in the journal on disk for the next start",
                lost,
                self._journal.directory,
                journal.records,
                extra={
                    "event_type": "ERROR",
                    "target": "execution_log",
                    "error_type": "RecordsLost",
                    "error_msg": f"{lost} ledger records lost at shutdown: held only in memory",
                    "dropped": lost,
                },
            )
        return lost

    def stats(self) -> dict[str, Any]:
        """The counters (see the class docstring). Thread: any; cheap, never blocks on I/O."""
        on_disk = self._journal.stats()
        age = on_disk.oldest_unshipped_age_s
        if self._fallback:
            try:
                age = max(age, time.monotonic() - self._fallback[0][1])
            except IndexError:
                pass
        journal = self._journal
        shipper = self._shipper
        return {
            "enqueued": journal.appended + self._fallback_appended,
            "shipped": shipper.shipped,
            "retried": shipper.retried,
            "rejected": self._rejected,
            "dropped": journal.dropped + self._dropped,
            "over_bound": journal.over_bound,
            "journal_bytes": on_disk.bytes,
            "journal_records": on_disk.records,
            "oldest_unshipped_age_s": round(age, 3),
            "memory_records": len(self._fallback),
            "failed": shipper.failed,
            "torn": journal.torn,
            "replayed": shipper.replayed,
            "unjournaled": self._fallback_appended,
            "errors": self._errors + shipper.internal_errors,
            "outage": shipper.in_outage,
            "durable": self._journal_down_since is None,
        }

    # --- the hot path --------------------------------------------------------------------------
    def append(self, record: Mapping[str, Any]) -> None:
        """Accept one ledger record.

        Thread: the bot's. O(1): a validation, one ``orjson.dumps``, then ``append_line``: one
        ``write`` to the journal (under a short lock), a wake-up of the shipper. It never waits for
        the network or a queue, and never raises: problems are counted in ``stats()`` and logged.
        A record without a non-empty ``bot_run_id`` or ``decision_id`` is
        rejected: not written, one ERROR line (``target=execution_log``), ``rejected`` + 1.
        """
        try:
            for name in _REQUIRED:
                value = record.get(name)
                if not value or not isinstance(value, str):
                    self._reject(record, name, value)
                    return
            try:
                line = orjson.dumps(record, default=_json_default, option=orjson.OPT_APPEND_NEWLINE)
            except orjson.JSONEncodeError:
                line = _dumps_sanitised(record)
            if b"null" in line:
                self._note_nulls(record)
            event_type = record.get("event_type")
        except Exception as exc:  # noqa: BLE001  runs in the bot's thread: count the drop, never raise
            self._append_failed(exc)
            return
        self.append_line(line, event_type)

    def append_line(self, line: bytes, event_type: Any = None) -> None:
        """Accept one record already serialised: a full record's JSON or a compact journal line
        (``RecordBuilder.execution_line``), ending in a newline, validated by whoever built it.
        ``event_type`` decides whether the journal bound may drop it.

        Thread: the bot's. One ``write`` to the journal (under a short lock), a wake-up of the
        shipper; never raises (see ``append``).
        """
        try:
            down = self._journal_down_since is not None
            if down and time.monotonic() < self._journal_retry_at:
                self._to_memory(line)
                return
            try:
                outcome = self._journal.append(line, event_type in self._critical)
            except OSError as exc:
                self._errors += 1
                self._journal_failed(exc)
                self._to_memory(line)
                return
            if down and self._journal_down_since is not None:
                self._journal_recovered()
            if outcome != DROPPED:
                self._shipper.wake()
        except Exception as exc:  # noqa: BLE001  runs in the bot's thread: count the drop, never raise
            self._append_failed(exc)

    def _append_failed(self, exc: Exception) -> None:
        self._errors += 1
        self._dropped += 1
        self._log_rate_limited(
            "execution ledger could not accept a record (%s: %s); it was dropped",
            type(exc).__name__,
            exc,
        )

    def _reject(self, record: Any, field: str, value: Any) -> None:
        self._rejected += 1
        try:
            event_type = record.get("event_type") or record.get("kind")
            event_id = record.get("event_id")
        except Exception:  # noqa: BLE001  `record` is whatever the caller passed; the rejection is still logged
            event_type = event_id = None
        problem = "missing" if value is None or field not in record else f"empty or not a string ({value!r})"
        logger.error(
            "execution ledger rejected a record (event_type=%s): %s is %s",
            event_type,
            field,
            problem,
            extra={
                "event_type": "ERROR",
                "target": "execution_log",
                "error_type": "RecordRejected",
                "error_msg": f"ledger record rejected: required field {field!r} is {problem} "
                f"(event_type={event_type!r}, event_id={event_id!r})",
            },
        )

    def _note_nulls(self, record: Mapping[str, Any]) -> None:
        # orjson writes NaN and +-inf as null; sinks drop null fields. Say so once per field.
        for name, value in record.items():
            if isinstance(value, float) and not math.isfinite(value) and name not in self._warned_non_finite:
                self._warned_non_finite.add(name)
                logger.warning(
                    "execution ledger record field %r is %r; it is journaled as null and stored "
                    "without that field (NaN/inf cannot be stored). Further occurrences are not logged.",
                    name,
                    value,
                    extra={"event_type": "LOG", "target": "execution_log", "field": name},
                )

    def _to_memory(self, line: bytes) -> None:
        with self._fallback_lock:
            if self._shut_down and self._shipper_stopped():
                self._dropped += 1  # nothing will ship it, and the journal cannot keep it
                full = True
            elif len(self._fallback) >= self._max_memory_records:
                self._dropped += 1
                full = True
            else:
                self._fallback.append((line, time.monotonic()))
                self._fallback_appended += 1
                full = False
        if full:
            self._log_rate_limited(
                "execution ledger journal unavailable and the in-memory queue is full (%d records) "
                "or the ledger is shut down: a record was dropped (counted in dropped)",
                self._max_memory_records,
            )
        else:
            self._shipper.wake()

    def _journal_failed(self, exc: OSError) -> None:
        self._journal_retry_at = time.monotonic() + 1.0
        if self._journal_down_since is not None:
            return
        self._journal_down_since = time.monotonic()
        logger.error(
            "execution ledger journal %s cannot be written (%s); records are now kept in memory "
            "only (not durable: lost if the process exits before the sink takes them; bounded at "
            "%d; counted in unjournaled, and in dropped when lost) until it works again",
            self._journal.directory,
            exc,
            self._max_memory_records,
            extra={
                "event_type": "ERROR",
                "target": "execution_log",
                "error_type": type(exc).__name__,
                "error_msg": str(exc),
            },
        )

    def _journal_recovered(self) -> None:
        down_for = time.monotonic() - (self._journal_down_since or time.monotonic())
        self._journal_down_since = None
        logger.info(
            "execution ledger journal %s writable again after %.1f s",
            self._journal.directory,
            down_for,
            extra={"event_type": "LOG", "target": "execution_log"},
        )

    def _shipper_stopped(self) -> bool:
        return not self._shipper.running

    def _log_rate_limited(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_error_log < _LOG_EVERY_S:
            return
        self._last_error_log = now
        logger.error(
            message,
            *args,
            extra={"event_type": "ERROR", "target": "execution_log", "error_msg": message % args},
        )

    # --- fork ----------------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        self._fallback_lock = threading.Lock()
        self._fallback.clear()
        self._journal.after_fork_in_child()
        if not self._shut_down:
            self._shipper.after_fork_in_child()
