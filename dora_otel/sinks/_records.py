"""What every ledger sink checks and derives before it stores a record, so all backends agree.

Owns: the per-call batch limit, the record validation (key fields, finite numbers, DynamoDB's
400 KB item size), the derived keys (``sk``, ``decision_day``), and the time-argument helpers the
readers share. Private to ``dora_otel.sinks``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from dora_otel.ledger.records import execution_sort_key
from dora_otel.protocols import BatchTooLargeError, InvalidRecordError, Record, TimeArg

MAX_BATCH = 25
"""DynamoDB BatchWriteItem takes at most 25 put requests; every sink keeps the same limit."""

MAX_ITEM_BYTES = 400 * 1024
"""DynamoDB's item size limit (400 KB, binary units), enforced by every sink."""

KINDS = ("execution", "decision")

# Key attributes of the tables and their GSIs: must be non-empty strings when present.
_EXECUTION_KEYS = ("bot_run_id", "decision_id", "event_ts")
_DECISION_INDEX_KEYS = ("market", "decision_ts", "decision_day")


def check_max_batch(max_batch: int) -> int:
    """Validate a configured batch size (1..25) and return it."""
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or not 1 <= max_batch <= MAX_BATCH:
        raise ValueError(
            f"max_batch ({max_batch!r}) must be an int between 1 and {MAX_BATCH} "
            f"(DynamoDB BatchWriteItem takes at most {MAX_BATCH} items)"
        )
    return max_batch


def check_batch(records: Sequence[Record], max_batch: int) -> None:
    """Refuse a ``write_batch`` call with more records than ``max_batch``."""
    if len(records) > max_batch:
        raise BatchTooLargeError(
            f"write_batch got {len(records)} records; at most {max_batch} per call "
            f"(DynamoDB BatchWriteItem takes at most {MAX_BATCH})"
        )


def prepare(record: Mapping[str, Any]) -> tuple[str, Record]:
    """Return ``(kind, item)``: the record to store, or raise :class:`InvalidRecordError`.

    The item is a new dict: ``None`` fields dropped, ``Decimal`` values made int/float, ``sk``
    added to execution records and ``decision_day`` to decisions that lack it. Checks: ``kind``,
    key fields (non-empty strings, ``seq`` an int), numbers finite and within DynamoDB's range,
    estimated DynamoDB item size <= 400 KB.
    """
    if not isinstance(record, Mapping):
        raise InvalidRecordError(
            f"a ledger record must be a dict, got {type(record).__name__}", record={}, field=None
        )
    item = {k: _plain(v) for k, v in record.items() if v is not None}
    kind = item.get("kind")
    if kind not in KINDS:
        raise InvalidRecordError(
            f"record field 'kind' is {kind!r}; expected one of {', '.join(KINDS)}",
            record=record,
            field="kind",
        )
    if kind == "execution":
        for name in _EXECUTION_KEYS:
            _require_key_string(record, item, name)
        seq = item.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise InvalidRecordError(
                f"execution record field 'seq' must be a non-negative int, got {seq!r}",
                record=record,
                field="seq",
            )
        if "sk" not in item:
            item["sk"] = execution_sort_key(item)
        else:
            _require_key_string(record, item, "sk")
    else:
        _require_key_string(record, item, "decision_id")
        if "decision_day" not in item and isinstance(item.get("decision_ts"), str):
            item["decision_day"] = item["decision_ts"][:10]
        for name in _DECISION_INDEX_KEYS:
            if name in item:
                _require_key_string(record, item, name)
    _check_numbers(record, item)
    size = item_size(item)
    if size > MAX_ITEM_BYTES:
        largest = max(item, key=lambda k: _attr_size(k, item[k]))
        raise InvalidRecordError(
            f"record {item.get('event_id', item.get('decision_id'))!r} is {size:,} bytes as a "
            f"DynamoDB item, over the {MAX_ITEM_BYTES:,}-byte (400 KB) item limit; largest field "
            f"{largest!r} is {_attr_size(largest, item[largest]):,} bytes",
            record=record,
            field=largest,
        )
    return kind, item


def _plain(value: Any) -> Any:
    """Decimals become int (integral) or float, so every backend stores and returns the same."""
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _require_key_string(record: Mapping[str, Any], item: Record, name: str) -> None:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        kind = item.get("kind")
        raise InvalidRecordError(
            f"{kind} record field {name!r} must be a non-empty string (a table or index key), got {value!r}",
            record=record,
            field=name,
        )


def _check_numbers(record: Mapping[str, Any], item: Record) -> None:
    for name, value in item.items():
        bad = _bad_number_path(value)
        if bad is not None:
            path, number = bad
            if isinstance(number, float) and not math.isfinite(number):
                why = "NaN and infinity cannot be stored (DynamoDB numbers must be finite)"
            else:
                why = "DynamoDB numbers hold at most 38 significant digits and magnitudes 1E-130 to 9.99E+125"
            raise InvalidRecordError(
                f"record field '{name}{path}' is {number!r}; {why}",
                record=record,
                field=f"{name}{path}",
            )


_MAX_INT = 10**38  # ints of 39+ digits lose precision in DynamoDB
_MIN_FLOAT, _MAX_FLOAT = 1e-130, 1e126  # DynamoDB: 1E-130 <= |n| < 1E+126


def _bad_number_path(value: Any) -> tuple[str, float | int] | None:
    if isinstance(value, float):
        if not math.isfinite(value) or (value != 0.0 and not _MIN_FLOAT <= abs(value) < _MAX_FLOAT):
            return "", value
        return None
    if isinstance(value, int):
        return ("", value) if not isinstance(value, bool) and abs(value) >= _MAX_INT else None
    if isinstance(value, list):
        for i, element in enumerate(value):
            bad = _bad_number_path(element)
            if bad is not None:
                return f"[{i}]{bad[0]}", bad[1]
    elif isinstance(value, dict):
        for key, element in value.items():
            bad = _bad_number_path(element)
            if bad is not None:
                return f".{key}{bad[0]}", bad[1]
    return None


def item_size(item: Mapping[str, Any]) -> int:
    """Estimated size of ``item`` as a DynamoDB item, by AWS's published rules (bytes)."""
    return sum(_attr_size(k, v) for k, v in item.items())


def _attr_size(name: str, value: Any) -> int:
    return len(name.encode("utf-8")) + _value_size(value)


def _value_size(value: Any) -> int:
    # AWS "DynamoDB item sizes and formats": strings UTF-8 bytes; numbers ~1 byte per two
    # significant digits + 1; bool/null 1; list/map 3 + 1 per element + elements (+ key names).
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        digits = sum(c.isdigit() for c in repr(value))
        return min(21, (digits + 1) // 2 + 1)
    if isinstance(value, list):
        return 3 + sum(1 + _value_size(v) for v in value)
    if isinstance(value, dict):
        return 3 + sum(1 + _attr_size(str(k), v) for k, v in value.items())
    return len(str(value).encode("utf-8"))


def iso(ts: TimeArg) -> str:
    """A time argument as the records' ISO-8601 UTC string (strings pass through unchanged)."""
    if isinstance(ts, str):
        return ts
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise ValueError(f"time argument {ts!r} is a naive datetime; give a timezone-aware one")
        return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raise TypeError(f"time argument must be an ISO-8601 string or a datetime, got {ts!r}")


def days_between(start_ts: str, end_ts: str) -> list[str]:
    """The UTC days (``YYYY-MM-DD``) from ``start_ts``'s day to ``end_ts``'s day, inclusive."""
    try:
        first = date.fromisoformat(start_ts[:10])
        last = date.fromisoformat(end_ts[:10])
    except ValueError as exc:
        raise ValueError(f"time range {start_ts!r}..{end_ts!r} must start with YYYY-MM-DD dates") from exc
    days = []
    day = first
    while day <= last:
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


def event_order(record: Mapping[str, Any]) -> tuple[str, int]:
    """Sort key for execution records: ``event_ts`` then ``seq``."""
    return (record.get("event_ts", ""), record.get("seq", 0))


def decision_order(record: Mapping[str, Any]) -> tuple[str, str]:
    """Sort key for decision records: ``decision_ts`` then ``decision_id``."""
    return (record.get("decision_ts", ""), record.get("decision_id", ""))
