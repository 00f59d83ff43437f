"""An in-memory ledger store: a :class:`~dora_otel.protocols.Sink` and
:class:`~dora_otel.protocols.LedgerReader` in one object, for tests and for users who want the
ledger without storage.

It applies the same validation, keys and ordering as the SQLite and DynamoDB sinks, so a test
written against it holds for them. Thread-safe (one lock); nothing blocks beyond that lock.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any

from dora_otel.protocols import InvalidRecordError, Record, TimeArg, WriteResult
from dora_otel.sinks import _records

__all__ = ["MemorySink"]


class MemorySink:
    """Ledger records in two dicts, keyed like the DynamoDB tables.

    ``query_count`` counts reader calls' index/table lookups the way the DynamoDB sink counts
    Queries (one per call, one per day for ``decisions_between``).
    """

    def __init__(self, *, max_batch: int = _records.MAX_BATCH) -> None:
        self.max_batch = _records.check_max_batch(max_batch)
        self.query_count = 0
        self.write_calls = 0
        self._lock = threading.Lock()
        self._executions: dict[tuple[str, str], Record] = {}
        self._decisions: dict[str, Record] = {}
        self._closed = False

    # --- Sink --------------------------------------------------------------------------------
    def write_batch(self, records: Sequence[Record]) -> WriteResult:
        """Store ``records``; never blocks beyond the lock. See :meth:`Sink.write_batch`."""
        _records.check_batch(records, self.max_batch)
        failed: list[InvalidRecordError] = []
        written = 0
        with self._lock:
            self.write_calls += 1
            for record in records:
                try:
                    kind, item = _records.prepare(record)
                except InvalidRecordError as exc:
                    failed.append(exc)
                    continue
                item = copy.deepcopy(item)
                if kind == "execution":
                    self._executions[(item["bot_run_id"], item["sk"])] = item
                else:
                    self._decisions[item["decision_id"]] = item
                written += 1
        return WriteResult(written=written, failed=failed)

    def close(self) -> None:
        """Nothing to release; the stored records stay readable."""
        self._closed = True

    # --- LedgerReader ------------------------------------------------------------------------
    def decision(self, decision_id: str) -> Record | None:
        with self._lock:
            self.query_count += 1
            found = self._decisions.get(decision_id)
            return copy.deepcopy(found) if found is not None else None

    def events_for_decision(self, decision_id: str) -> list[Record]:
        with self._lock:
            self.query_count += 1
            hits = [r for r in self._executions.values() if r["decision_id"] == decision_id]
        return _sorted_copies(hits, _records.event_order)

    def decisions_for_market(self, market: str, start_ts: TimeArg, end_ts: TimeArg) -> list[Record]:
        start, end = _records.iso(start_ts), _records.iso(end_ts)
        with self._lock:
            self.query_count += 1
            hits = [
                r
                for r in self._decisions.values()
                if r.get("market") == market and "decision_ts" in r and start <= r["decision_ts"] <= end
            ]
        return _sorted_copies(hits, _records.decision_order)

    def decisions_between(self, start_ts: TimeArg, end_ts: TimeArg) -> list[Record]:
        start, end = _records.iso(start_ts), _records.iso(end_ts)
        days = set(_records.days_between(start, end))
        with self._lock:
            self.query_count += len(days)
            hits = [
                r
                for r in self._decisions.values()
                if r.get("decision_day") in days and "decision_ts" in r and start <= r["decision_ts"] <= end
            ]
        return _sorted_copies(hits, _records.decision_order)

    def events_for_run(
        self, bot_run_id: str, start_ts: TimeArg | None = None, end_ts: TimeArg | None = None
    ) -> list[Record]:
        start = _records.iso(start_ts) if start_ts is not None else None
        end = _records.iso(end_ts) if end_ts is not None else None
        with self._lock:
            self.query_count += 1
            hits = [
                r
                for (run, _), r in self._executions.items()
                if run == bot_run_id
                and (start is None or r["event_ts"] >= start)
                and (end is None or r["event_ts"] <= end)
            ]
        return _sorted_copies(hits, _records.event_order)

    def records_for_orders(self, order_ids: Sequence[str]) -> list[Record]:
        """Execution records carrying one of ``order_ids`` (any decision_id); one "query" per id."""
        wanted = {str(o) for o in order_ids if o not in (None, "")}
        with self._lock:
            self.query_count += len(wanted)
            hits = [r for r in self._executions.values() if str(r.get("order_id")) in wanted]
        return _sorted_copies(hits, _records.event_order)

    # --- for tests ---------------------------------------------------------------------------
    def all_records(self) -> list[Record]:
        """Every stored record (executions then decisions), copied. Not part of the protocols."""
        with self._lock:
            return copy.deepcopy([*self._executions.values(), *self._decisions.values()])


def _sorted_copies(records: list[Record], key: Any) -> list[Record]:
    return [copy.deepcopy(r) for r in sorted(records, key=key)]
