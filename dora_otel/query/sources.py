"""Where `explain` and `reconcile` read from: a ledger reader plus a source of log lines.

Owns the :class:`Source` protocol both backends implement (:mod:`~dora_otel.query.local`: SQLite
ledger + the JSON log file + the spans file; :mod:`~dora_otel.query.aws`: DynamoDB + CloudWatch
Logs Insights), the :class:`LogLines` answer type, and the conversion of log lines (or spans) into
ledger-shaped records for when the ledger does not have a decision (ledger off, not yet shipped).

All reads block on disk or network; run them on the caller's thread, never on a bot's trading thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson

from dora_otel.protocols import LedgerReader

__all__ = [
    "EXECUTION_EVENTS",
    "LogLines",
    "LogsUnavailable",
    "Region",
    "Source",
    "describe_reader",
    "merge_regions",
    "records_from_lines",
    "records_from_spans",
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


def describe_reader(reader: Any) -> str:
    """How a ledger reader is named in output: the DynamoDB tables, the SQLite file, or its type."""
    if reader is None:
        return "(none)"
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


def records_from_lines(lines: Iterable[Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
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
                record.update(status=err.get("status"), error_type=err.get("error_type"), error_msg=err.get("error_msg"))
            else:
                record["status"] = "CANCELLED"
        events.setdefault(decision_id, []).append(record)
    for recs in events.values():
        recs.sort(key=lambda r: (r.get("event_ts", ""), r.get("seq") or 0))
    return decisions, events


def records_from_spans(spans: Iterable[Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
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
