"""Event → ledger record: the flat, append-only, JSON-serializable rows of the execution ledger.

The field list and key layout are in docs/ARCHITECTURE.md ("Ledger records"). Records hold only
str, int, float and bool (and, for decisions, one list of flat dicts), never a DynamoDB-only type,
so the same rows can later live as NDJSON in S3.

Every record is scrubbed here, where it is built (scrub.scrub_record: a clean record costs ~1 us),
so the journal, SQLite, DynamoDB and the dead-letter file only ever hold scrubbed data.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from dora_otel.scrub import scrub_record

EXECUTION_EVENTS = frozenset({"ORDER_PLACE", "ORDER_RESULT", "ORDER_CANCEL", "FILL", "ORDER_SUPPRESSED"})
_PREFIX = "dora."
_SKIP = frozenset({"dora.event_type", "dora.record"})
_DAY = 86_400
# Fields an event carries that are not record fields (the line's own, or too big for the ledger).
_FIELD_SKIP = frozenset({"stack", "event_type", "trace_id", "span_id"})
_PLAIN = frozenset({str, int, float, bool})
# = _runtime._INT_RANGE / _FLOAT_RANGE (safe_value keeps such numbers as they are).
_INT_LO, _INT_HI = -(2**63), 2**64
_FLOAT_LO, _FLOAT_HI = 1e-130, 1e126


def _storable(value: Any) -> Any:
    """A non-plain field value as the ledger stores it: JSON-native (lists of flat dicts stay)."""
    from dora_otel._runtime import safe_value

    if isinstance(value, (list, tuple, dict)):
        return orjson.loads(orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS))
    return safe_value(value)


def _default(value: Any) -> Any:
    from dora_otel._runtime import safe_value

    out = safe_value(value)
    return out if type(out) in _PLAIN else str(out)


# strftime once per second: this runs on the bot's thread for every record. The (second, text)
# pair is replaced as one tuple, so a thread never reads one second's text for another.
_second_text: tuple[int, str] = (-1, "")


def iso_from_ns(ns: int) -> str:
    """ISO-8601 UTC with microseconds and Z: sortable as text, unique enough with `seq`."""
    global _second_text
    seconds, rest = divmod(ns, 1_000_000_000)
    cached = _second_text
    if cached[0] != seconds:
        cached = _second_text = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{cached[1]}.{rest // 1000:06d}Z"


def execution_sort_key(record: Mapping[str, Any]) -> str:
    """The execution table's sort key `decision_id#event_ts#seq` (seq zero-padded so it sorts as text)."""
    return f"{record['decision_id']}#{record['event_ts']}#{int(record['seq']):012d}"


class RecordBuilder:
    """Builds records for one run. Called on the bot's thread from span processor hooks: cheap."""

    def __init__(self, *, bot_run_id: str, env: str, bot_version: str, ttl_days: int) -> None:
        self._base = {"bot_run_id": bot_run_id, "env": env, "bot_version": bot_version}
        self._ttl = ttl_days * _DAY

    def _common(self, attrs: Mapping[str, Any], span_context: Any, ts_ns: int) -> dict[str, Any]:
        record: dict[str, Any] = dict(self._base)
        raw = attrs.get("dora.record")
        if raw:
            record.update(orjson.loads(raw))
        for key, value in attrs.items():  # flat attributes set later (a cancel's outcome) win
            if key.startswith(_PREFIX) and key not in _SKIP and value is not None:
                record[key[5:]] = value
        record["event_ts"] = iso_from_ns(ts_ns)
        record["trace_id"] = format(span_context.trace_id, "032x")
        record["span_id"] = format(span_context.span_id, "016x")
        record["expires_at"] = ts_ns // 1_000_000_000 + self._ttl
        seq = record.get("seq")
        if seq is not None:
            record["event_id"] = f"{record['bot_run_id']}:{seq}"
        return record

    def _from_fields(self, fields: Mapping[str, Any], trace_id: int, span_id: int, ts_ns: int) -> dict[str, Any]:
        record: dict[str, Any] = dict(self._base)
        for key, value in fields.items():
            if value is None or key in _FIELD_SKIP:
                continue
            kind = type(value)
            # Inline the common cases of `_storable` (what safe_value keeps as it is: text, bools,
            # ints in orjson's range, floats every store keeps); everything else goes through it.
            if kind is str or kind is bool:
                record[key] = value
            elif kind is int:
                record[key] = value if _INT_LO <= value < _INT_HI else _storable(value)
            elif kind is float:
                record[key] = value if _FLOAT_LO <= abs(value) < _FLOAT_HI or value == 0.0 else _storable(value)
            else:
                record[key] = _storable(value)
        record["event_ts"] = iso_from_ns(ts_ns)
        record["trace_id"] = format(trace_id, "032x")
        record["span_id"] = format(span_id, "016x")
        record["expires_at"] = ts_ns // 1_000_000_000 + self._ttl
        seq = record.get("seq")
        if seq is not None:
            record["event_id"] = f"{record['bot_run_id']}:{seq}"
        return record

    def execution_event(self, event_type: str, fields: Mapping[str, Any], trace_id: int, span_id: int,
                        ts_ns: int) -> dict[str, Any]:
        """The execution record of one event, straight from the decorator's fields (trading thread)."""
        record = self._from_fields(fields, trace_id, span_id, ts_ns)
        record["kind"] = "execution"
        record["event_type"] = event_type
        return scrub_record(record)

    def decision_event(self, fields: Mapping[str, Any], trace_id: int, span_id: int, start_ns: int,
                       end_ns: int) -> dict[str, Any]:
        """The decision record, from DECISION_MADE's fields when its span ended (trading thread)."""
        record = self._from_fields(fields, trace_id, span_id, end_ns)
        record["kind"] = "decision"
        record["decision_id"] = record["trace_id"]
        record["execution_log_partition"] = record["bot_run_id"]
        record["decision_ts"] = iso_from_ns(start_ns)
        record["decision_day"] = record["decision_ts"][:10]
        record["target_orders"] = record.pop("targets", [])
        record.setdefault("target_count", len(record["target_orders"]))
        return scrub_record(record)

    def execution(self, event_type: str, attrs: Mapping[str, Any], span_context: Any, ts_ns: int) -> dict[str, Any]:
        record = self._common(attrs, span_context, ts_ns)
        record["kind"] = "execution"
        record["event_type"] = event_type
        return scrub_record(record)

    def decision(self, attrs: Mapping[str, Any], span_context: Any, start_ns: int, end_ns: int) -> dict[str, Any]:
        record = self._common(attrs, span_context, end_ns)
        record["kind"] = "decision"
        record["decision_id"] = record["trace_id"]
        record["execution_log_partition"] = record["bot_run_id"]
        record["decision_ts"] = iso_from_ns(start_ns)
        record["decision_day"] = record["decision_ts"][:10]
        record["target_orders"] = record.pop("targets", [])
        record.setdefault("target_count", len(record["target_orders"]))
        return scrub_record(record)
