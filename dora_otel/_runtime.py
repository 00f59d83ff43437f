"""The live state the decorators and event helpers share while telemetry is set up (private).

`ACTIVE` is None until `setup()` and after `shutdown()`; decorators then pass calls straight through.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import threading
from decimal import Decimal
from typing import Any, Callable, NamedTuple

import orjson
from opentelemetry.trace import NonRecordingSpan, SpanContext, Tracer, set_span_in_context

from dora_otel import events, identity

EVENTS_LOGGER = "dora_otel"


def client_order_id_for(decision_id: str, slot: int) -> str:
    """Deterministic from decision id and slot, so a retried slot reuses its id (UUID-shaped)."""
    h = hashlib.blake2b(f"{decision_id}:{slot}".encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def price_key(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def size_key(value: Any) -> float | None:
    return price_key(value)


@dataclasses.dataclass
class Decision:
    """A decision the strategy made: its trace, its target orders and what became of each slot."""

    decision_id: str
    market: str | None
    span_context: SpanContext
    targets: list[dict[str, Any]]
    keys: list[tuple[Any, Any, Any]]
    settled: set[int] = dataclasses.field(default_factory=set)
    next_extra_slot: int = 0
    parent_context: Any = None  # an OTel Context whose current span is this decision (children start here)

    def __post_init__(self) -> None:
        self.parent_context = set_span_in_context(NonRecordingSpan(self.span_context))

    def claim_slot(self, side: Any, price: Any, size: Any) -> int:
        """The target slot an order belongs to: the first unsettled target with the same side,
        price and size; else a new slot past the targets (an order the strategy did not plan)."""
        key = (side, price_key(price), size_key(size))
        for slot, target_key in enumerate(self.keys):
            if target_key == key and slot not in self.settled:
                return slot
        slot = len(self.targets) + self.next_extra_slot
        self.next_extra_slot += 1
        return slot


class OrderRef(NamedTuple):
    """Where an order came from: joins ORDER_RESULT, ORDER_CANCEL and FILL to their decision."""

    decision_id: str
    span_context: SpanContext
    market: str | None
    slot: int
    side: Any
    price: Any
    size: Any
    client_order_id: str


class OrderBook:
    """client_order_id / order_id → OrderRef, bounded (oldest forgotten first), thread-safe:
    fills arrive on other threads, loops later."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._refs: dict[str, OrderRef] = {}
        self._capacity = capacity
        self._lock = threading.Lock()

    def add(self, key: str, ref: OrderRef) -> None:
        with self._lock:
            self._refs[key] = ref
            if len(self._refs) > self._capacity:
                del self._refs[next(iter(self._refs))]

    def find(self, *keys: Any) -> OrderRef | None:
        with self._lock:
            for key in keys:
                if key is not None:
                    ref = self._refs.get(str(key))
                    if ref is not None:
                        return ref
        return None


class Runtime:
    """Everything a decorator needs at call time. Created by `setup()`, dropped by `shutdown()`."""

    def __init__(self, *, tracer: Tracer, strict: bool, identity_fields: dict[str, str],
                 stats: Callable[[], dict[str, Any]], ttl_days: int) -> None:
        self.tracer = tracer
        self.strict = strict
        self.identity = identity_fields
        self.stats = stats
        self.ttl_days = ttl_days
        self.log = logging.getLogger(EVENTS_LOGGER)
        self.orders = OrderBook()
        self.latest: dict[Any, Decision] = {}
        self.loops: collections.Counter[Any] = collections.Counter()
        self.lock = threading.Lock()
        self.watchdog: Any = None

    def emit(self, level: int, event_type: str, message: str, fields: dict[str, Any], span: Any = None) -> dict[str, Any]:
        """Log one event line. Raises SchemaError only in strict mode.

        The record is built directly and passed to `Logger.handle` (the same filters and handlers
        as `logger.log`): it skips the caller-frame walk, which says nothing useful for lines that
        dora_otel itself writes, and that measured ~15% of an event line's cost.
        """
        fields["event_type"] = event_type
        if "seq" not in fields:
            fields["seq"] = identity.next_seq()
        events.check(event_type, fields, strict=self.strict, logger=self.log)
        if span is not None:  # the caller knows the current span: spare the formatter the lookup
            ctx = span.get_span_context()
            fields["trace_id"] = format(ctx.trace_id, "032x")
            fields["span_id"] = format(ctx.span_id, "016x")
        log = self.log
        if log.isEnabledFor(level):
            record = logging.LogRecord(log.name, level, "dora_otel", 0, message, None, None)
            record._dora = fields  # type: ignore[attr-defined]
            log.handle(record)
        return fields


ACTIVE: Runtime | None = None


def attr(value: Any) -> Any:
    """A value an OTel attribute can hold (str, bool, int, float); None stays None (skipped)."""
    kind = type(value)
    if kind in (str, int, float, bool) or value is None:
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (int, float, str)):  # enums and other subclasses
        return value.value if hasattr(value, "value") else kind.__mro__[1](value)
    return str(value)


def attrs(values: dict[str, Any]) -> dict[str, Any]:
    """Span attributes without the None values (OTel rejects None, with a warning per value)."""
    return {k: v for k, v in values.items() if v is not None}


_RECORD_EXCLUDE = frozenset({"stack"})


def _record_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else str(value)
    return str(value)


def span_attributes(event_type: str, fields: dict[str, Any], searchable: tuple[str, ...] = ()) -> dict[str, Any]:
    """Attributes of an execution span: the event type, a few flat searchable fields (what an
    operator filters on in Jaeger / X-Ray), and the whole event as one JSON attribute `dora.record`
    that the ledger processor reads. One JSON attribute instead of ~15 flat ones: the SDK validates
    every attribute value, and that measured ~1.5 us each on the hot path."""
    record = {k: v for k, v in fields.items() if v is not None and k not in _RECORD_EXCLUDE}
    out: dict[str, Any] = {
        "dora.event_type": event_type,
        "dora.record": orjson.dumps(record, default=_record_default, option=orjson.OPT_NON_STR_KEYS).decode(),
    }
    for key in searchable:
        value = fields.get(key)
        if value is not None:
            out["dora." + key] = attr(value)
    return out
