"""Where `explain` and `reconcile` read from: a ledger reader plus a source of log lines.

Owns the :class:`Source` protocol both backends implement (:mod:`~dora_otel.query.local`: SQLite
ledger + the JSON log file + the spans file; :mod:`~dora_otel.query.aws`: DynamoDB + CloudWatch
Logs Insights), the :class:`LogLines` answer type, the conversion of log lines (or spans) into
ledger-shaped records for when the ledger does not have a decision (ledger off, not yet shipped),
and :class:`OrderJoin`, the read-time join by order_id (docs/ARCHITECTURE.md, "Order index"): both
backends wrap their ledger reader in it, so explain, reconcile and report see a fill or cancel that a
later run recorded as unmatched (a new host, an empty data directory) on the slot of its decision.

All reads block on disk or network; run them on the caller's thread, never on a bot's trading thread.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson

from dora_otel.protocols import LedgerReader, MissingIndexError

__all__ = [
    "EXECUTION_EVENTS",
    "LogLines",
    "LogsUnavailable",
    "OrderJoin",
    "Region",
    "Source",
    "describe_reader",
    "merge_regions",
    "reader_notes",
    "records_from_lines",
    "records_from_spans",
    "with_order_join",
]

EXECUTION_EVENTS = frozenset({"ORDER_PLACE", "ORDER_RESULT", "ORDER_CANCEL", "FILL", "ORDER_SUPPRESSED"})
Region = tuple[datetime, datetime]


class LogsUnavailable(Exception):
    """The log lines could not be read (no file, CloudWatch unreachable or too slow). The message
    says why; explain and reconcile go on with the ledger alone and report it."""


@dataclasses.dataclass
class LogLines:
    """Log lines (flat dicts as the JSON formatter writes them) and whether the read was complete.

    ``available`` is False when the lines could not be read at all; ``note`` then says why (or,
    when available, anything the reader wants the operator to know, e.g. CloudWatch's ingestion lag).
    """

    lines: list[dict[str, Any]]
    available: bool = True
    note: str | None = None


class Source(Protocol):
    """One backend for the query commands: a ledger reader and a log line reader.

    ``reader`` is None when there is no ledger to read (then records come from log lines).
    """

    name: str
    env: str
    reader: LedgerReader | None

    def decision_lines(self, decision_ids: set[str], regions: Sequence[Region], market: str | None) -> LogLines:
        """Lines carrying one of ``decision_ids`` within ``regions`` (time ranges), plus — when
        ``market`` is given — lines of that market that carry no decision_id (context)."""
        ...

    def run_lines(self, start: datetime, end: datetime) -> LogLines:
        """Every line between ``start`` and ``end`` (for sequence gaps and ledger/log cross-checks)."""
        ...

    def find_decision_lines(self, decision_id: str) -> LogLines:
        """Lines of ``decision_id`` wherever they are (a decision the ledger does not know)."""
        ...

    def spans_for(self, decision_id: str) -> list[dict[str, Any]]:
        """The decision's spans from a local spans file (empty where there is none)."""
        ...

    def close(self) -> None:
        ...


UNMATCHED_PREFIX = "unmatched:"
_JOINABLE = frozenset({"FILL", "ORDER_CANCEL"})


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class OrderJoin:
    """A ledger reader whose ``events_for_decision`` also returns the fills and cancels of the
    decision's orders that were recorded without knowing the order (by order_id alone, in a later run
    on another host or with an empty data directory: decision_id ``unmatched:<market>``, or another
    decision of that run, no slot). Everything else is the wrapped reader's (attributes too).

    The join runs at read time, so the bot's order path and ``record_fill`` pay nothing for it:

    * the decision's order ids are those of its ORDER_RESULTs (and of its records that have a slot);
      an order its own FILL records already fill completely is skipped (nothing can change it);
    * one ``records_for_orders`` call for the rest (DynamoDB: one Query of GSI ``gsi_order`` per
      order id; SQLite: one indexed SELECT);
    * a record found there that belongs to another decision id and has no slot is attached, copied,
      with ``decision_id`` = this decision, the slot and client_order_id of the order,
      ``joined_by = "order_id"`` and ``recorded_as`` = the decision id it was stored under. Fills then
      count toward FILLED / PARTIAL and cancel outcomes toward CANCELLED (query/verdicts.py unchanged).

    ``events_for_decision("unmatched:<market>")`` leaves out the records already joined to a decision
    read through this object (they are on their slot now). When the store has no order_id index (a
    DynamoDB table made before ``gsi_order``), the join is skipped and :attr:`join_notes` says so
    once; the records stay visible as unmatched. Thread: any (reconcile reads from a pool).
    """

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._lock = threading.Lock()
        self._joined: set[tuple[Any, Any]] = set()
        self._index_missing: MissingIndexError | None = None
        self.join_notes: list[str] = []
        self.joined = 0  # records attached to their decision so far

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    @property
    def wrapped(self) -> Any:
        """The reader this one wraps."""
        return self._reader

    def events_for_decision(self, decision_id: str) -> list[dict[str, Any]]:
        events = list(self._reader.events_for_decision(decision_id))
        if decision_id.startswith(UNMATCHED_PREFIX):
            with self._lock:
                joined = set(self._joined)
            return [r for r in events if _record_key(r) not in joined]
        return events + self._join(decision_id, events)

    def _join(self, decision_id: str, events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if self._index_missing is not None:
            return []
        orders = _open_orders(events)
        if not orders:
            return []
        try:
            found = self._reader.records_for_orders(sorted(orders))
        except MissingIndexError as exc:
            with self._lock:
                if self._index_missing is None:
                    self._index_missing = exc
                    self.join_notes.append(
                        f"the order_id index {exc.index} is missing on {exc.table}: fills and cancels a later "
                        "run recorded by order_id alone (a restart on another host or with an empty data "
                        "directory) are not joined to their decisions and show as unmatched; "
                        f"{str(exc).split('; ', 1)[-1]}")
            return []
        have = {_record_key(r) for r in events}
        out = []
        for record in found:
            order_id = str(record.get("order_id"))
            if (record.get("decision_id") == decision_id or record.get("slot") not in (None, "")
                    or record.get("event_type") not in _JOINABLE or order_id not in orders
                    or _record_key(record) in have):
                continue
            slot, coid, placed = orders[order_id]
            joined = dict(record, decision_id=decision_id, joined_by="order_id",
                          recorded_as=record.get("decision_id"))
            if slot is not None:
                joined["slot"] = slot
            if coid and not joined.get("client_order_id"):
                joined["client_order_id"] = coid
            for key in ("market", "side"):  # what the later run could not know, from the placement
                if joined.get(key) in (None, "") and placed.get(key) not in (None, ""):
                    joined[key] = placed[key]
            out.append(joined)
        if out:
            with self._lock:
                self._joined.update(_record_key(r) for r in out)
                self.joined += len(out)
        return out


def _record_key(record: Mapping[str, Any]) -> tuple[Any, Any]:
    return (record.get("bot_run_id"), record.get("event_id") or record.get("seq"))


def _open_orders(events: Sequence[Mapping[str, Any]]) -> dict[str, tuple[Any, Any, Mapping[str, Any]]]:
    """order_id -> (slot, client_order_id, its ORDER_PLACE record or {}) for the decision's orders
    that its own records do not show completely filled."""
    place_of: dict[Any, Mapping[str, Any]] = {}
    for r in events:
        if r.get("event_type") == "ORDER_PLACE" and r.get("client_order_id"):
            place_of[r["client_order_id"]] = r
    orders: dict[str, tuple[Any, Any, Mapping[str, Any]]] = {}
    sizes: dict[str, float | None] = {}
    for r in events:
        order_id = r.get("order_id")
        if order_id in (None, ""):
            continue
        if r.get("event_type") != "ORDER_RESULT" and r.get("slot") in (None, ""):
            continue
        key = str(order_id)
        slot, coid, _ = orders.get(key, (None, None, {}))
        coid = coid or r.get("client_order_id")
        placed = place_of.get(coid, {})
        orders[key] = (slot if slot is not None else r.get("slot"), coid, placed)
        if sizes.get(key) is None:
            sizes[key] = _num(placed.get("size"))
    filled: dict[str, float] = {}
    for r in events:
        if r.get("event_type") == "FILL" and r.get("order_id") not in (None, ""):
            filled[str(r["order_id"])] = filled.get(str(r["order_id"]), 0.0) + (_num(r.get("size")) or 0.0)
    done = {k for k, size in sizes.items() if size is not None and filled.get(k, 0.0) >= size > 0}
    return {k: v for k, v in orders.items() if k not in done}


def with_order_join(reader: Any) -> Any:
    """``reader`` wrapped in :class:`OrderJoin` when it can look records up by order_id (all three
    sinks can); otherwise (a test double, None) unchanged."""
    if reader is None or isinstance(reader, OrderJoin) or not callable(getattr(reader, "records_for_orders", None)):
        return reader
    return OrderJoin(reader)


def reader_notes(reader: Any) -> list[str]:
    """What the reader wants said with an answer (e.g. the order_id index is missing)."""
    notes = getattr(reader, "join_notes", None) if isinstance(reader, OrderJoin) else None
    return list(notes or [])


def describe_reader(reader: Any) -> str:
    """How a ledger reader is named in output: the DynamoDB tables, the SQLite file, or its type."""
    if reader is None:
        return "(none)"
    if isinstance(reader, OrderJoin):
        reader = reader.wrapped
    if hasattr(reader, "decision_table") and hasattr(reader, "execution_table"):
        return f"DynamoDB {reader.decision_table} + {reader.execution_table}"
    if hasattr(reader, "path"):
        return str(reader.path)
    return type(reader).__name__


def merge_regions(regions: Iterable[Region], gap: timedelta = timedelta(seconds=5)) -> list[Region]:
    """Sort and merge time ranges that overlap or lie within ``gap`` of each other."""
    out: list[Region] = []
    for start, end in sorted(regions):
        if out and start <= out[-1][1] + gap:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def line_ts_to_record_ts(ts: str) -> str:
    """A line's `2026-11-24T05:04:26.797Z` as a record's `2026-11-24T05:04:26.797000Z`."""
    if ts.endswith("Z") and len(ts) == 24:
        return ts[:-1] + "000Z"
    return ts


_LINE_ONLY = frozenset({"ts", "level", "service", "message", "logger", "event_type", "stack", "trace_id", "span_id"})


Rebuilt = tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]


def records_from_lines(lines: Iterable[Mapping[str, Any]]) -> Rebuilt:
    """Rebuild ledger-shaped records from log lines (the same fields, the same seq).

    Returns ``(decisions by id, execution records by decision_id)``. A run that logs cancel
    outcomes (an ORDER_CANCEL line with a ``status``, after the request line without one) is read as
    written. For a run from before that (request lines only), a cancel is CANCEL_FAILED /
    CANCEL_UNKNOWN when an ERROR line for the same order says so, else taken as CANCELLED.
    Records carry ``"source": "log"``.
    """
    lines = list(lines)
    cancel_errors: dict[tuple[Any, Any], dict[str, Any]] = {}
    runs_with_outcomes: set[Any] = set()
    for line in lines:
        if line.get("event_type") == "ERROR" and str(line.get("status", "")).startswith("CANCEL_"):
            cancel_errors[(line.get("bot_run_id"), line.get("order_id"))] = dict(line)
        if line.get("event_type") == "ORDER_CANCEL" and line.get("status"):
            runs_with_outcomes.add(line.get("bot_run_id"))
    decisions: dict[str, dict[str, Any]] = {}
    events: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        kind = line.get("event_type")
        if kind != "DECISION_MADE" and kind not in EXECUTION_EVENTS:
            continue
        ts = line_ts_to_record_ts(str(line.get("ts", "")))
        record = {k: v for k, v in line.items() if k not in _LINE_ONLY}
        record.update(event_ts=ts, source="log")
        if line.get("trace_id"):
            record["trace_id"] = line["trace_id"]
        if kind == "DECISION_MADE":
            decision_id = line.get("decision_id")
            if not decision_id:
                continue
            record.update(kind="decision", decision_ts=ts, decision_day=ts[:10],
                          execution_log_partition=line.get("bot_run_id"),
                          target_orders=record.pop("targets", []) or [])
            decisions[decision_id] = record
            continue
        decision_id = line.get("decision_id") or (f"unmatched:{line.get('market')}" if kind == "FILL" else None)
        if not decision_id:
            continue
        record.update(kind="execution", event_type=kind, decision_id=decision_id)
        if kind == "ORDER_CANCEL" and line.get("bot_run_id") not in runs_with_outcomes:
            err = cancel_errors.get((line.get("bot_run_id"), line.get("order_id")))
            if err is not None and int(err.get("seq") or 0) > int(line.get("seq") or 0):
                record.update(status=err.get("status"), error_type=err.get("error_type"),
                              error_msg=err.get("error_msg"))
            else:
                record["status"] = "CANCELLED"
        events.setdefault(decision_id, []).append(record)
    for recs in events.values():
        recs.sort(key=lambda r: (r.get("event_ts", ""), r.get("seq") or 0))
    return decisions, events


def records_from_spans(spans: Iterable[Mapping[str, Any]]) -> Rebuilt:
    """Rebuild ledger-shaped records from spans (as `dora_otel.spanfile.read_spans` returns them),
    the way the ledger's span processor builds them. Records carry ``"source": "spans"``."""
    from dora_otel.ledger.records import iso_from_ns

    decisions: dict[str, dict[str, Any]] = {}
    events: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        attrs = span.get("attributes") or {}
        kind = attrs.get("dora.event_type")
        if kind != "DECISION_MADE" and kind not in EXECUTION_EVENTS:
            continue
        record: dict[str, Any] = {}
        raw = attrs.get("dora.record")
        if raw:
            try:
                record.update(orjson.loads(raw))
            except orjson.JSONDecodeError:
                pass
        for key, value in attrs.items():
            if key.startswith("dora.") and key not in ("dora.event_type", "dora.record") and value is not None:
                record[key[5:]] = value
        if isinstance(record.get("targets"), str):  # flat span attributes hold the targets as JSON text
            try:
                record["targets"] = orjson.loads(record["targets"])
            except orjson.JSONDecodeError:
                record["targets"] = []
        start_ns, end_ns = int(span.get("startTimeUnixNano") or 0), int(span.get("endTimeUnixNano") or 0)
        record["trace_id"] = span.get("traceId")
        record["source"] = "spans"
        if kind == "DECISION_MADE":
            decision_id = str(span.get("traceId"))
            record.update(kind="decision", decision_id=decision_id, decision_ts=iso_from_ns(start_ns),
                          event_ts=iso_from_ns(end_ns), target_orders=record.pop("targets", []) or [])
            record["decision_day"] = record["decision_ts"][:10]
            decisions[decision_id] = record
            continue
        record["event_ts"] = iso_from_ns(end_ns if kind == "ORDER_CANCEL" else start_ns)
        record.setdefault("decision_id", span.get("traceId"))
        record.update(kind="execution", event_type=kind)
        events.setdefault(str(record["decision_id"]), []).append(record)
    for recs in events.values():
        recs.sort(key=lambda r: (r.get("event_ts", ""), r.get("seq") or 0))
    return decisions, events


def unique_lines(lines: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lines without repeats (local file regions and CloudWatch query windows can overlap), keyed by run and seq."""
    seen: set[tuple[Any, Any]] = set()
    out = []
    for line in lines:
        key = (line.get("bot_run_id"), line.get("seq"))
        if key[1] is not None and key in seen:
            continue
        seen.add(key)
        out.append(line)
    return out
