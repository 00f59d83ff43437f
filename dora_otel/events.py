"""The event schema: every event type dora-otel emits and the key fields each must carry.

This module is the one place that knows the table (PLAN.md §1.4 plus RECONCILIATION_RESULT). An event
missing a key field logs one ERROR naming the event type and the field; in strict mode (tests,
development: `setup(strict=True)` or `DORA_STRICT=true`) it raises `SchemaError` instead.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Any


class EventType(str, enum.Enum):
    STARTUP = "STARTUP"
    SHUTDOWN = "SHUTDOWN"
    HEARTBEAT = "HEARTBEAT"
    DECISION_MADE = "DECISION_MADE"
    ORDER_PLACE = "ORDER_PLACE"
    ORDER_CANCEL = "ORDER_CANCEL"
    ORDER_RESULT = "ORDER_RESULT"
    FILL = "FILL"
    RISK_HALT = "RISK_HALT"
    ORDER_SUPPRESSED = "ORDER_SUPPRESSED"  # a target the bot deliberately did not send, and why
    ERROR = "ERROR"
    RECONCILIATION_RESULT = "RECONCILIATION_RESULT"
    LOG = "LOG"  # a plain logger call from bot code

    def __str__(self) -> str:  # so f-strings and JSON show the bare name
        return self.value


class OrderStatus(str, enum.Enum):
    """The outcome of an order placement, as dora-otel classifies it (see exchange.py)."""

    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"  # a definitive reject by the exchange: the order is not live
    DUPLICATE = "DUPLICATE"  # 409 duplicate client_order_id: an earlier attempt exists on the exchange
    ERROR = "ERROR"  # our own code failed before or around the call
    UNKNOWN = "UNKNOWN"  # timeout, disconnect, 5xx: the order may be live

    def __str__(self) -> str:
        return self.value


KEY_FIELDS: Mapping[str, tuple[str, ...]] = {
    "STARTUP": ("bot_version", "env"),
    "SHUTDOWN": ("reason", "graceful"),
    "HEARTBEAT": ("markets_active", "open_orders_count"),
    "DECISION_MADE": ("market", "decision_id", "target_count", "spread"),
    "ORDER_PLACE": ("market", "decision_id", "side", "price", "size", "client_order_id"),
    "ORDER_CANCEL": ("order_id",),  # market too when known; a cancel of an order from an earlier run may lack it
    "ORDER_RESULT": ("status", "latency_ms", "client_order_id"),
    # A fill names its order by order_id (Kalshi fills since 2026-03-30), client_order_id or market: see
    # _ONE_OF. market and side come from the matched order; an unmatched fill keeps what it has.
    "FILL": ("price", "size", "pnl_delta"),
    "RISK_HALT": ("reason", "daily_pnl"),
    "ORDER_SUPPRESSED": ("market", "reason"),
    "ERROR": ("error_type", "error_msg"),
    "RECONCILIATION_RESULT": ("decision_id", "mismatches"),
    "LOG": (),
}

# ORDER_RESULT's other key fields depend on the status: an accepted order has an order_id, every
# other outcome says why in error_msg.
_CONDITIONAL = {
    ("ORDER_RESULT", "ACCEPTED"): ("order_id",),
    ("ORDER_RESULT", "REJECTED"): ("error_msg",),
    ("ORDER_RESULT", "ERROR"): ("error_msg",),
    ("ORDER_RESULT", "UNKNOWN"): ("error_msg",),
    ("ORDER_RESULT", "DUPLICATE"): ("error_msg",),
    # ORDER_CANCEL: the request line has no status; the outcome line has one, with its latency and why.
    ("ORDER_CANCEL", "CANCELLED"): ("latency_ms",),
    ("ORDER_CANCEL", "CANCEL_FAILED"): ("latency_ms", "reason"),
    ("ORDER_CANCEL", "CANCEL_UNKNOWN"): ("latency_ms", "reason"),
}

# At least one of these names the thing the event is about.
_ONE_OF = {"FILL": ("order_id", "client_order_id", "market")}

_NUMERIC = frozenset({"price", "size", "latency_ms", "pnl_delta", "daily_pnl", "target_count",
                      "markets_active", "open_orders_count"})


class SchemaError(ValueError):
    """An event is missing a key field or carries a value of the wrong kind (strict mode only)."""


def problems(event_type: str, fields: Mapping[str, Any]) -> list[str]:
    """What is wrong with an event, as sentences naming the field; empty when it is well formed."""
    required = KEY_FIELDS.get(event_type)
    if required is None:
        return [f"unknown event_type {event_type!r}; known: {', '.join(KEY_FIELDS)}"]
    extra = _CONDITIONAL.get((event_type, str(fields.get("status"))), ())
    found = []
    for name in (*required, *extra) if extra else required:
        value = fields.get(name, _MISSING)
        if value is _MISSING or (value is None and name != "spread"):
            found.append(f"{event_type} event is missing key field {name!r}")
        elif name in _NUMERIC and type(value) not in (int, float) and not _is_decimal(value):
            found.append(f"{event_type} field {name!r} must be a number, got {type(value).__name__} {_repr(value)}")
    one_of = _ONE_OF.get(event_type)
    if one_of and all(fields.get(name) in (None, "") for name in one_of):
        found.append(f"{event_type} event names no order: it needs one of {', '.join(map(repr, one_of))}")
    return found


_MISSING = object()


def _repr(value: Any) -> str:
    """repr() for an error message: never raises (a bot's object may refuse), never huge."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001  a bot's __repr__ may raise anything; this message must still go out
        return f"<unprintable {type(value).__name__}>"
    return text if len(text) <= 200 else text[:200] + "…"


def _is_decimal(value: Any) -> bool:
    return type(value).__name__ == "Decimal" and value.is_finite()


def check(event_type: str, fields: Mapping[str, Any], *, strict: bool, logger: logging.Logger) -> None:
    """Validate an event about to be emitted: raise in strict mode, else log one ERROR. Never raises otherwise."""
    found = problems(event_type, fields)
    if not found:
        return
    if strict:
        raise SchemaError("; ".join(found))
    logger.error(
        "malformed %s event: %s", event_type, "; ".join(found),
        extra={"_dora": {"event_type": "ERROR", "error_type": "SchemaError",
                         "error_msg": "; ".join(found), "schema_event_type": event_type}},
    )
