"""The seams between dora_otel and its storage and exchange adapters, as Protocols.

This module owns the interfaces other parts implement or call, and the types that cross them:

* :class:`Sink` — where the execution ledger's records end up (DynamoDB, SQLite, memory).
* :class:`LedgerReader` — the queries ``explain`` and ``reconcile`` run against a ledger store.
* :class:`OrderReader` — the one optional query more: the records that carry given order_ids (the
  read-time join of fills and cancels recorded by a later run, see docs/ARCHITECTURE.md "Order index").
* ``OrderSource`` — the exchange's view of orders, for reconciliation (see the marked place below).
* :class:`WriteResult` and the sink error hierarchy.

Records are flat dicts as described in ``docs/ARCHITECTURE.md`` ("Ledger records"): JSON types only,
``kind`` is ``"execution"`` or ``"decision"``. Time arguments are ISO-8601 UTC strings in the
records' own format (``2026-11-24T04:47:54.123456Z``) or timezone-aware ``datetime`` objects.

Errors raised by a sink, as a tree::

    SinkError                      base: the sink could not do what was asked
    ├── RetryableSinkError         throttling, 5xx, timeouts, lost connections, a locked database:
    │                              the same call may succeed later; nothing was lost
    └── PermanentSinkError         the same call cannot succeed as it is (missing table, no
        │                          credentials, access denied, a broken database file)
        ├── InvalidRecordError     one record can never be stored (NaN/inf, an item over 400 KB,
        │                          a missing key field); ``.record`` and ``.field`` name it
        ├── BatchTooLargeError     more records in one call than the sink takes (also a ValueError)
        └── MissingIndexError      a read needs an index the store lacks (``gsi_order`` on tables
                                   created by an older dora-otel); ``.index`` and ``.table`` name it

Every ``SinkError`` raised for a backend failure is raised ``from`` the original botocore or sqlite3
exception, so the cause stays in the traceback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "BatchTooLargeError",
    "InvalidRecordError",
    "LedgerReader",
    "MissingIndexError",
    "OrderReader",
    "OrderSource",
    "PermanentSinkError",
    "Record",
    "RetryableSinkError",
    "Sink",
    "SinkError",
    "TimeArg",
    "WriteResult",
]

Record = dict[str, Any]
"""One ledger record: a flat, JSON-serialisable dict (see docs/ARCHITECTURE.md)."""

TimeArg = str | datetime
"""An ISO-8601 UTC string in the records' format, or a timezone-aware datetime."""


class SinkError(Exception):
    """A sink could not do what was asked. See the module docstring for the tree."""


class RetryableSinkError(SinkError):
    """A transient failure (throttling, 5xx, timeout, connection, locked database): retry later."""


class PermanentSinkError(SinkError):
    """Retrying the same call unchanged cannot succeed (configuration, permissions, schema)."""


class InvalidRecordError(PermanentSinkError):
    """One record can never be stored by this sink.

    ``record`` is the record as given, ``field`` the offending field (``None`` when the record as a
    whole is the problem, e.g. its size), and the message says what is wrong and with which value.
    """

    def __init__(self, message: str, *, record: Mapping[str, Any], field: str | None = None) -> None:
        super().__init__(message)
        self.record = record
        self.field = field


class BatchTooLargeError(PermanentSinkError, ValueError):
    """``write_batch`` was given more records than the sink accepts in one call."""


class MissingIndexError(PermanentSinkError):
    """A read needs an index the store does not have (yet): ``index`` on ``table``. The message
    says how to add it. Readers fall back to what they can answer without it and say so."""

    def __init__(self, message: str, *, index: str, table: str) -> None:
        super().__init__(message)
        self.index = index
        self.table = table


@dataclasses.dataclass(frozen=True)
class WriteResult:
    """What one ``Sink.write_batch`` call did with its records.

    Every record given is in exactly one of the three outcomes:

    * ``written`` — how many records are now stored (a replay of a stored record counts again:
      writes overwrite by key, they never duplicate);
    * ``unprocessed`` — records the backend did not take this time (DynamoDB ``UnprocessedItems``):
      retry them later, as they are;
    * ``failed`` — records that can never be stored, one :class:`InvalidRecordError` each.
    """

    written: int
    unprocessed: list[Record] = dataclasses.field(default_factory=list)
    failed: list[InvalidRecordError] = dataclasses.field(default_factory=list)


@runtime_checkable
class Sink(Protocol):
    """Durable storage for ledger records.

    Thread: the ledger's shipper thread calls ``write_batch`` and ``close``; nothing on the bot's
    trading thread calls a sink. Calls may block on the network or disk for as long as the backend's
    timeouts allow. Implementations need not be thread-safe for concurrent ``write_batch`` calls.
    """

    max_batch: int
    """The most records one ``write_batch`` call takes (25 for DynamoDB's BatchWriteItem)."""

    def write_batch(self, records: Sequence[Record]) -> WriteResult:
        """Store ``records`` (at most ``max_batch``), routed by their ``kind``.

        Writes are idempotent: a record with the key of a stored one replaces it (execution records
        are keyed by ``bot_run_id`` + ``sk``, i.e. by ``event_id``; decisions by ``decision_id``).
        Fields whose value is ``None`` are not stored (absent, per the record contract).

        Per-record problems do not raise: they are returned in ``WriteResult.failed``.

        Raises:
            BatchTooLargeError: more than ``max_batch`` records; nothing was written.
            RetryableSinkError: a transient failure of the whole call; retry the same records later.
            PermanentSinkError: the call cannot succeed as configured (missing table, access
                denied, ...); the records were not written.
        """
        ...

    def close(self) -> None:
        """Release connections and files. Idempotent; ``write_batch`` must not be called after."""
        ...


@runtime_checkable
class LedgerReader(Protocol):
    """The questions asked of a ledger store ("decision X: what did we attempt, what happened?").

    Thread: any thread except the bot's trading thread (reads block on the network or disk). A
    reader may run in another process than the one writing. Reads never Scan a DynamoDB table:
    each method is one or a few Queries on the table or an index. Time ranges are inclusive at both
    ends. Records come back as they were written (numbers as int/float), execution records with
    their ``sk``.

    Raises the :class:`SinkError` hierarchy, like :class:`Sink`.
    """

    def decision(self, decision_id: str) -> Record | None:
        """The decision record with this id, or ``None``."""
        ...

    def events_for_decision(self, decision_id: str) -> list[Record]:
        """The decision's execution records (GSI ``gsi1``), ordered by ``event_ts`` then ``seq``."""
        ...

    def decisions_for_market(self, market: str, start_ts: TimeArg, end_ts: TimeArg) -> list[Record]:
        """Decision records of ``market`` with ``start_ts <= decision_ts <= end_ts`` (GSI
        ``market_ts``), ordered by ``decision_ts``."""
        ...

    def decisions_between(self, start_ts: TimeArg, end_ts: TimeArg) -> list[Record]:
        """Decision records of all markets with ``start_ts <= decision_ts <= end_ts``, ordered by
        ``decision_ts``: one Query of GSI ``day_ts`` per UTC day in the range, never a Scan."""
        ...

    def events_for_run(
        self, bot_run_id: str, start_ts: TimeArg | None = None, end_ts: TimeArg | None = None
    ) -> list[Record]:
        """The run's execution records (partition ``bot_run_id``), optionally limited to
        ``start_ts <= event_ts <= end_ts``, ordered by ``event_ts`` then ``seq``."""
        ...


@runtime_checkable
class OrderReader(Protocol):
    """A ledger reader that can also find records by the exchange's order id (all three sinks).

    Thread: as :class:`LedgerReader`. On DynamoDB one Query of the sparse GSI ``gsi_order`` per
    order_id (never a Scan); on SQLite one indexed SELECT.
    """

    def records_for_orders(self, order_ids: Sequence[str]) -> list[Record]:
        """Every execution record whose ``order_id`` is one of ``order_ids``, whatever its
        decision_id (also ``unmatched:<market>``), ordered by ``event_ts`` then ``seq``.

        Raises:
            MissingIndexError: the store has no order_id index (a DynamoDB table created before it).
        """
        ...


# --- OrderSource -----------------------------------------------------------------------------
@runtime_checkable
class OrderSource(Protocol):
    """The exchange's own view of orders, for ``dora-otel reconcile --live``.

    An adapter over the exchange's API (Kalshi: GetOrders with ``status=resting``, GetOrder by
    client order id); the demo's paper exchange implements it. Orders are plain dicts in the
    exchange's shape with at least ``client_order_id``, ``order_id`` and ``status`` (``resting``
    for an open order; other values are the exchange's own: ``canceled``, ``executed``, ...).

    Thread: the reconciler's (never a bot's trading thread); calls block on the exchange's API and
    may raise its errors, which end the reconcile run with a message.
    """

    def open_orders(self) -> list[dict[str, Any]]:
        """Every order resting on the exchange now (for the markets this bot trades)."""
        ...

    def order_status(self, client_order_id: str) -> dict[str, Any] | None:
        """The exchange's record of the order with this client_order_id (with ``status`` and, where
        known, ``filled``), or ``None`` when the exchange does not know it."""
        ...


# ---------------------------------------------------------------------------------------------
