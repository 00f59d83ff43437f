"""Event → ledger record: the flat, append-only, JSON-serializable rows of the execution ledger.

The field list and key layout are in docs/ARCHITECTURE.md ("Ledger records"). Records hold only
str, int, float and bool (and, for decisions, one list of flat dicts), never a DynamoDB-only type,
so the same rows can later live as NDJSON in S3.

Two ways from an event to its record, both giving the same record:

* the fast path (trading thread): `RecordBuilder.execution_line` / `decision_line` write a
  **compact journal line** straight from the decorator's fields: the run's identity (one prebuilt
  prefix), the event type, the ids and times as numbers, and the fields as they are. The shipper
  thread expands it into the full record (`expand`: identity fields, ISO times, hex ids,
  `expires_at`, `event_id`, a decision's extras) when it reads the journal. The fields are checked
  once for anything the scrubbing policy would mask (`scrub.fields_clean`: ~0.5-1 us, strings seen
  clean before are skipped); a line is written only when there is nothing to mask, so the journal
  holds scrubbed data.
* the full path (`execution_event` / `decision_event`): the record built and scrubbed here
  (`scrub.scrub_record`), journaled as a full record. Taken when the fast path is unsure: a field
  that may hold a credential, a value that is not plain (a FILL's Decimal price), a NaN, a `stack`,
  no `decision_id`. Full records are also what earlier versions journaled; `expand` passes them
  through, so their journals still replay.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from dora_otel.scrub import fields_clean, scrub_record

EXECUTION_EVENTS = frozenset({"ORDER_PLACE", "ORDER_RESULT", "ORDER_CANCEL", "FILL", "ORDER_SUPPRESSED"})
_DAY = 86_400
# Fields an event carries that are not record fields (the line's own, or too big for the ledger).
_FIELD_SKIP = frozenset({"stack", "event_type", "trace_id", "span_id"})
_PLAIN = frozenset({str, int, float, bool})
# = _runtime._INT_RANGE / _FLOAT_RANGE (safe_value keeps such numbers as they are).
_INT_LO, _INT_HI = -(2**63), 2**64
_FLOAT_LO, _FLOAT_HI = 1e-130, 1e126
#: The key that marks a compact journal line (its format version). Full records never have it.
COMPACT = "_j"
_EVENT_JSON: dict[str, bytes] = {}


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


# strftime once per second: this runs for every record. The (second, text) pair is replaced as one
# tuple, so a thread never reads one second's text for another.
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


def _record(base: Mapping[str, Any], fields: Mapping[str, Any], trace_hex: str, span_hex: str, ts_ns: int,
            ttl_s: int, native: bool) -> dict[str, Any]:
    """The fields every record has. `native`: `fields` came from JSON (a compact line), so lists and
    dicts are already JSON-native."""
    record: dict[str, Any] = dict(base)
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
        elif native and (kind is list or kind is dict):
            record[key] = value
        else:
            record[key] = _storable(value)
    record["event_ts"] = iso_from_ns(ts_ns)
    record["trace_id"] = trace_hex
    record["span_id"] = span_hex
    record["expires_at"] = ts_ns // 1_000_000_000 + ttl_s
    seq = record.get("seq")
    if seq is not None:
        record["event_id"] = f"{record['bot_run_id']}:{seq}"
    return record


def _execution(record: dict[str, Any], event_type: str) -> dict[str, Any]:
    record["kind"] = "execution"
    record["event_type"] = event_type
    return record


def _decision(record: dict[str, Any], start_ns: int) -> dict[str, Any]:
    record["kind"] = "decision"
    record["decision_id"] = record["trace_id"]
    record["execution_log_partition"] = record["bot_run_id"]
    record["decision_ts"] = iso_from_ns(start_ns)
    record["decision_day"] = record["decision_ts"][:10]
    record["target_orders"] = record.pop("targets", [])
    record.setdefault("target_count", len(record["target_orders"]))
    return record


def expand(line: dict[str, Any]) -> dict[str, Any]:
    """The record a parsed journal line stands for: a compact line expanded (the same record
    `execution_event` / `decision_event` would have built), a full record as it is. Thread: the
    shipper's (or any reader of journal files). Raises KeyError/TypeError/ValueError for a compact
    line that is not one (the caller counts it as unparseable)."""
    if COMPACT not in line:
        return line
    base = {"bot_run_id": line["run"], "env": line["env"], "bot_version": line["ver"]}
    record = _record(base, line["f"], line["t"], line["s"], line["ns"], line["ttl"], True)
    if line["k"] == "d":
        return _decision(record, line["ns0"])
    return _execution(record, line["e"])


def _non_finite(fields: Mapping[str, Any]) -> bool:
    """A top-level NaN or +-inf (orjson writes them as null; the full path keeps their text).

    Runs for every ORDER_RESULT (its None fields are nulls too): a plain loop, and `v - v != 0`
    (nan for NaN and both infinities, 0.0 for any finite float) instead of a generator and a
    math.isfinite call per value: about 40 % fewer instructions."""
    for value in fields.values():  # noqa: SIM110  (any() over a generator: the slower form)
        if type(value) is float and value - value != 0:
            return True
    return False


class RecordBuilder:
    """Builds records (or compact journal lines) for one run from an event's fields. Called on the
    bot's thread from the ledger processor's event hooks (`on_event` / `on_decision`): cheap."""

    def __init__(self, *, bot_run_id: str, env: str, bot_version: str, ttl_days: int) -> None:
        self._base = {"bot_run_id": bot_run_id, "env": env, "bot_version": bot_version}
        self._ttl = ttl_days * _DAY
        # The run's part of every compact line, serialised once. None: no fast path (a bot_run_id
        # the ledger would reject, or identity values orjson cannot write): full records only.
        self._prefix: bytes | None = None
        if isinstance(bot_run_id, str) and bot_run_id:
            try:
                head = orjson.dumps({COMPACT: 1, "run": bot_run_id, "env": env, "ver": bot_version,
                                     "ttl": self._ttl})
                self._prefix = head[:-1] + b","
            except (orjson.JSONEncodeError, TypeError):
                pass

    # --- the fast path: compact journal lines ---------------------------------------------------
    def _body(self, fields: Mapping[str, Any]) -> bytes | None:
        """`fields` as the compact line holds them, or None when the full path must build the record."""
        if self._prefix is None or "stack" in fields or not fields_clean(fields):
            return None
        try:
            body = orjson.dumps(fields)
        except orjson.JSONEncodeError:  # an int beyond 64 bits, a str with a lone surrogate, ...
            return None
        if b"null" in body and _non_finite(fields):
            return None
        return body

    def execution_line(self, event_type: str, fields: Mapping[str, Any], trace_id: int, span_id: int,
                       ts_ns: int) -> bytes | None:
        """The compact journal line of one execution event (trading thread), or None when the full
        path must build it (`execution_event`): see the module docstring."""
        decision_id = fields.get("decision_id")
        if type(decision_id) is not str or not decision_id:
            return None  # the full path rejects it, with its ERROR line
        body = self._body(fields)
        if body is None:
            return None
        event = _EVENT_JSON.get(event_type)
        if event is None:
            event = _EVENT_JSON[event_type] = orjson.dumps(str(event_type))
        return b'%s"k":"x","e":%s,"t":"%032x","s":"%016x","ns":%d,"f":%s}\n' % (
            self._prefix, event, trace_id, span_id, ts_ns, body)

    def decision_line(self, fields: Mapping[str, Any], trace_id: int, span_id: int, start_ns: int,
                      end_ns: int) -> bytes | None:
        """The compact journal line of a decision (its span ended; trading thread), or None when the
        full path must build it (`decision_event`)."""
        body = self._body(fields)
        if body is None:
            return None
        return b'%s"k":"d","t":"%032x","s":"%016x","ns0":%d,"ns":%d,"f":%s}\n' % (
            self._prefix, trace_id, span_id, start_ns, end_ns, body)

    # --- the full path: scrubbed records ----------------------------------------------------------
    def execution_event(self, event_type: str, fields: Mapping[str, Any], trace_id: int, span_id: int,
                        ts_ns: int) -> dict[str, Any]:
        """The execution record of one event, straight from the decorator's fields, scrubbed."""
        record = _record(self._base, fields, format(trace_id, "032x"), format(span_id, "016x"), ts_ns,
                         self._ttl, False)
        return scrub_record(_execution(record, event_type))

    def decision_event(self, fields: Mapping[str, Any], trace_id: int, span_id: int, start_ns: int,
                       end_ns: int) -> dict[str, Any]:
        """The decision record, from DECISION_MADE's fields when its span ended, scrubbed."""
        record = _record(self._base, fields, format(trace_id, "032x"), format(span_id, "016x"), end_ns,
                         self._ttl, False)
        return scrub_record(_decision(record, start_ns))
