"""The live state the decorators and event helpers share while telemetry is set up (private).

`ACTIVE` is None until `setup()` and after `shutdown()`; decorators then pass calls straight through.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    Tracer,
    set_span_in_context,
)

from dora_otel import context, events, identity, logs
from dora_otel.exchange import safe_text
from dora_otel.spans import LiteSpan as _LiteSpan

EVENTS_LOGGER = "dora_otel"
_ROOT = logging.getLogger()
_time = time.time
_next_seq = identity.next_seq


# blake2b(digest_size=16) before any data: copied per id (cheaper than the constructor's argument
# parsing; the same digest as blake2b(data, digest_size=16)). Never updated itself.
_BLAKE2B_16 = hashlib.blake2b(digest_size=16)


def client_order_id_for(decision_id: str, slot: int) -> str:
    """Deterministic from decision id and slot, so a retried slot reuses its id (UUID-shaped)."""
    digest = _BLAKE2B_16.copy()
    digest.update(f"{decision_id}:{slot}".encode())
    h = digest.hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def price_key(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def size_key(value: Any) -> float | None:
    return price_key(value)


# Slot states. A slot is one order the decision expects (a target) or saw placed.
FREE = "free"  # a target nobody has placed yet
IN_FLIGHT = "in_flight"  # a place call for it is running
OPEN = "open"  # last outcome non-terminal (UNKNOWN, ERROR) or suppressed: placing it again is a retry
SETTLED = "settled"  # ACCEPTED, REJECTED or DUPLICATE: the exchange answered for good
TERMINAL_STATUSES = frozenset({"ACCEPTED", "REJECTED", "DUPLICATE"})


def order_key(side: Any, price: Any, size: Any) -> tuple[Any, float | None, float | None]:
    """What makes two orders "the same target": side, price and size (numbers compared as floats)."""
    if type(side) is not str:
        try:
            hash(side)
        except TypeError:
            side = str(side)
    # (price_key / size_key inlined for the usual float and int: every order and target asks)
    return (side, price if type(price) is float else price_key(price), float(size) if type(size) is int
            else size_key(size))


@dataclasses.dataclass(slots=True)
class Slot:
    key: tuple[Any, Any, Any]
    client_order_id: str
    state: str = FREE
    planned: bool = False  # one of the strategy's targets (else an order the strategy did not return)


class Decision:
    """One decision and its slots, from the moment `@decision_cycle` starts until it is superseded.

    Every order of the decision gets its own slot and client_order_id, wherever it is placed from
    (inside the decision body, under `asyncio.gather`, from threads, or after the strategy returned).
    All methods run under `Runtime.lock` (any thread). It is also what `context.current_decision`
    holds while the strategy runs (decision_id, market, span_context).
    """

    __slots__ = ("_parent_context", "decided", "decision_id", "market", "next_slot", "sampled", "slots",
                 "span_context", "span_id", "targets", "trace_id")

    def __init__(self, decision_id: str, market: Any, span_context: SpanContext) -> None:
        self.decision_id = decision_id
        self.market = market
        self.span_context = span_context
        # The ids again as plain ints / bool: every order span of the decision starts from them.
        self.trace_id: int = span_context.trace_id
        self.span_id: int = span_context.span_id
        self.sampled: bool = span_context.trace_flags.sampled
        self.targets: list[dict[str, Any]] = []
        self.slots: dict[int, Slot] = {}
        self.next_slot = 0
        self.decided = False  # the strategy returned: `targets` are known
        self._parent_context: Any = None

    @property
    def parent_context(self) -> Any:
        """An OTel Context whose current span is this decision (made on first use)."""
        ctx = self._parent_context
        if ctx is None:
            ctx = self._parent_context = set_span_in_context(NonRecordingSpan(self.span_context))
        return ctx

    def _new_slot(self, key: tuple[Any, Any, Any], client_order_id: Any, state: str, planned: bool) -> int:
        slot = self.next_slot
        self.next_slot += 1
        self.slots[slot] = Slot(key, client_order_id or client_order_id_for(self.decision_id, slot), state, planned)
        return slot

    def claim(self, side: Any, price: Any, size: Any, client_order_id: str | None = None,
              slot: Any = None, state: str = IN_FLIGHT) -> tuple[Any, str | None]:
        """The slot and client_order_id of an order about to be placed (or suppressed: `state=OPEN`).

        - `slot` given by the bot: that slot (its id is kept on a retry);
        - `client_order_id` given: the slot that already has it (a retry), else the first free
          matching target, which takes this id;
        - else: the first slot with the same side/price/size that is free or whose last outcome was
          non-terminal and has no attempt in flight (a retry keeps its id);
        - else a new slot past every slot seen so far.
        """
        key = order_key(side, price, size)
        if slot is not None:
            if not isinstance(slot, int) or isinstance(slot, bool):
                return slot, client_order_id or client_order_id_for(self.decision_id, slot)
            entry = self.slots.get(slot)
            if entry is None:
                self.slots[slot] = entry = Slot(key, client_order_id or client_order_id_for(self.decision_id, slot))
                self.next_slot = max(self.next_slot, slot + 1)
            entry.state = state
            return slot, client_order_id or entry.client_order_id
        if client_order_id is not None:
            for number, entry in self.slots.items():
                if entry.client_order_id == client_order_id:
                    entry.state = state
                    return number, client_order_id
        for number in sorted(self.slots):
            entry = self.slots[number]
            if entry.key == key and entry.state in (FREE, OPEN):
                entry.state = state
                if client_order_id is not None:
                    entry.client_order_id = client_order_id
                return number, entry.client_order_id
        number = self._new_slot(key, client_order_id, state, planned=False)
        return number, self.slots[number].client_order_id

    def settle(self, slot: Any, status: str) -> None:
        """Record a place call's outcome for `slot`: terminal answers close it, others leave it open."""
        entry = self.slots.get(slot) if isinstance(slot, int) else None
        if entry is not None:
            entry.state = SETTLED if status in TERMINAL_STATUSES else OPEN

    def decide(self, raw: list[tuple[Any, Any, Any, Any]]) -> list[dict[str, Any]]:
        """The strategy returned these targets (side, price, size, client_order_id or None). Each
        is matched to an order already placed inside the decision (same client_order_id, else same
        side/price/size), else given the next free slot. Returns the targets with their slots."""
        if not self.slots:  # nothing placed inside the decision (the usual case): one new slot each
            targets = []
            for side, price, size, coid in raw:
                number = self._new_slot(order_key(side, price, size), coid, FREE, planned=True)
                targets.append({"slot": number, "side": side, "price": price, "size": size,
                                "client_order_id": self.slots[number].client_order_id})
            self.targets = targets
            self.decided = True
            return targets
        targets = []
        for side, price, size, coid in raw:
            key = order_key(side, price, size)
            found = None
            unplanned = [n for n in sorted(self.slots) if not self.slots[n].planned]
            if coid is not None:
                found = next((n for n in unplanned if self.slots[n].client_order_id == coid), None)
            if found is None:
                found = next((n for n in unplanned if self.slots[n].key == key
                              and (coid is None or self.slots[n].client_order_id == coid)), None)
            if found is None:
                found = self._new_slot(key, coid, FREE, planned=True)
            self.slots[found].planned = True
            targets.append({"slot": found, "side": side, "price": price, "size": size,
                            "client_order_id": self.slots[found].client_order_id})
        self.targets = targets
        self.decided = True
        return targets


class OrderRef(NamedTuple):
    """Where an order came from: joins ORDER_RESULT, ORDER_CANCEL and FILL to their decision."""

    decision_id: str
    span_context: SpanContext
    market: str | None
    slot: Any  # an int, or whatever a bot names its slots with (`slot=`: any storable value)
    side: Any
    price: Any
    size: Any
    client_order_id: str


class OrderLookup(Protocol):
    """What the decorators need of `Runtime.orders`: the in-memory `OrderBook`, or the ledger's
    `OrderIndex` (which also remembers orders on disk)."""

    def add(self, key: str, ref: OrderRef) -> None: ...

    def find(self, *keys: Any) -> OrderRef | None: ...


class OrderBook:
    """client_order_id / order_id → OrderRef, bounded, thread-safe without a lock on the order
    path (see `add`): fills arrive on other threads, loops later.

    Remembers at least the newest `capacity` keys and at most twice that: keys go into a young
    dict; when it holds `capacity` keys it becomes the old one, and the previous old one is
    forgotten: no longer searched, and emptied one entry per later add (freeing 100k entries at once
    stalled every Python thread for ~30 ms).

    Why plain dicts of plain tuples: the book lives as long as the bot and holds up to 2x100k
    orders, and a full garbage collection walks every object the collector tracks. An OrderRef is
    a tuple subclass holding a SpanContext: both stay tracked for good, and an OrderedDict walks
    its keys too (measured: ~30-40 ms per full collection at 100k orders, a pause for every thread).
    CPython stops tracking an exact tuple of strs and numbers at its first collection (`_pack`),
    and a full collection then only glances at each through its dict (~1 ms at 100k).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._young: dict[str, tuple[Any, ...]] = {}
        self._old: dict[str, tuple[Any, ...]] = {}
        self._forgotten: dict[str, tuple[Any, ...]] = {}  # emptied one entry per add
        self._capacity = max(1, capacity)
        self._turn = threading.Lock()  # only when the young dict is full (once per `capacity` adds)
        self._last: tuple[Any, Any] = (None, None)  # the last ref packed: an order's second key reuses it

    def add(self, key: str, ref: OrderRef) -> None:
        # No lock: a dict store is atomic for str keys; a store into a dict that another thread
        # has just made the old one is still found. (`_last` is one tuple: read and set atomically.)
        last = self._last
        if last[0] is ref:
            packed = last[1]
        else:
            packed = _pack(ref)
            self._last = (ref, packed)
        young = self._young
        young[key] = packed
        forgotten = self._forgotten
        if forgotten:
            try:
                forgotten.popitem()  # (the newest entry: O(1), no hole left to skip later)
            except KeyError:  # another thread took the last one
                pass
        if len(young) >= self._capacity:
            with self._turn:
                if self._young is young:
                    # (what is left of the forgotten dict, if anything, is freed here: at most
                    # what the adds since the last turn did not empty, i.e. nothing, unless
                    # threads raced)
                    self._forgotten, self._old, self._young = self._old, young, {}

    def find(self, *keys: Any) -> OrderRef | None:
        young, old = self._young, self._old
        for key in keys:
            if key is not None:
                if type(key) is not str:
                    key = str(key)
                packed = young.get(key) or old.get(key)
                if packed is not None:
                    return _unpack(packed)
        return None

    def __len__(self) -> int:
        """Orders the book can still find."""
        return len(self._young) + len(self._old)


def _pack(ref: OrderRef) -> tuple[Any, ...]:
    """An OrderRef as a plain tuple of plain values: its span context as ids and flags."""
    ctx = ref.span_context  # (a SpanContext is a tuple: trace_id, span_id, is_remote, trace_flags, ...)
    return (ref[0], ctx[0], ctx[1], ctx[2], int(ctx[3]), ref[2], ref[3], ref[4], ref[5], ref[6], ref[7])


def _unpack(packed: tuple[Any, ...]) -> OrderRef:
    decision_id, trace_id, span_id, remote, flags, market, slot, side, price, size, client_order_id = packed
    return OrderRef(decision_id, SpanContext(trace_id, span_id, remote, TraceFlags(flags)),
                    market, slot, side, price, size, client_order_id)


class Runtime:
    """Everything a decorator needs at call time. Created by `setup()`, dropped by `shutdown()`."""

    def __init__(self, *, tracer: Tracer, strict: bool, identity_fields: dict[str, str],
                 stats: Callable[[], dict[str, Any]], ttl_days: int) -> None:
        from dora_otel.spans import LiteTracer

        self.tracer = LiteTracer(tracer)
        self.strict = strict
        self.identity = identity_fields
        self.stats = stats
        self.ttl_days = ttl_days
        self.log = logging.getLogger(EVENTS_LOGGER)
        self.orders: OrderLookup = OrderBook()
        self.latest: dict[Any, Decision] = {}  # market -> its last decision that returned
        self.running: dict[Any, Decision] = {}  # market -> its decision whose strategy is running now
        self.loops: collections.Counter[Any] = collections.Counter()
        self.lock = threading.Lock()
        self.watchdog: Any = None
        self._check_later = self._late_check  # (one bound method, made once: passed with every line)

    def emit(self, level: int, event_type: str, message: str | logs.Template, fields: dict[str, Any],
             span: Any = None) -> dict[str, Any]:
        """Log one event line. Raises SchemaError only in strict mode. Runs on the caller's thread.

        The caller hands `fields` over: it becomes the line's own dict (no copy: one dict per event
        is shared by its line, its span and its ledger record) and must not be changed after this
        call, because the event thread reads it. `event_type`, `seq` and the decision are added to
        it here. `span`: the span the line belongs to (None: the current one). `message`: text, or
        a `logs.Template` rendered from the fields.

        When dora's pipeline is a root handler and no logger filter is in the way (the usual case),
        the line is completed here with what only this thread knows (decision, bound fields, the
        current span when `span` is None) and queued as one compact `logs._Line`: no LogRecord, no
        logging dispatch on this thread (other root handlers, the bot's own, still get a LogRecord
        here); the event thread formats the span's ids, renders the message and checks the key
        fields (strict mode checks them here, to raise). Otherwise the key fields are checked here
        and a LogRecord goes through `Logger.handle`, the same filters and handlers as `logger.log`
        (skipping the caller-frame walk).
        """
        fields["event_type"] = event_type
        if "seq" not in fields:
            fields["seq"] = _next_seq()
        log = self.log
        pipeline = logs.ACTIVE_PIPELINE
        handlers = _ROOT.handlers
        if (pipeline is not None and pipeline.handler in handlers and not log.handlers and not log.filters
                and not _ROOT.filters and log.propagate and not log.disabled and not pipeline.handler.filters):
            if not log.isEnabledFor(level):
                self._check_now(event_type, fields)
                return fields
            # The usual case: the line is completed on the event thread (`logs._Line`): its span's
            # ids formatted, its message rendered from a template, its key fields checked (one
            # ERROR line if one is missing). Strict mode checks here, to raise into the bot.
            if self.strict:
                self._check_now(event_type, fields)
                check = None
            else:
                check = self._check_later
            ids = _ids(span)
            if len(handlers) > 1:  # the bot's (or pytest's) own root handlers get a LogRecord, as before
                record = logging.LogRecord(log.name, level, "dora_otel", 0, logs.render(message, fields), None, None)
                record._dora = _with_ids(dict(fields), ids)  # type: ignore[attr-defined]
                for handler in handlers:
                    if handler is not pipeline.handler and level >= handler.level:
                        handler.handle(record)
            line = fields
            if context.has_bound_fields():
                bound = context.bound_fields()
                if bound:
                    line = context.rename_reserved(bound)
                    line.update(fields)
            if ids is None:
                logs.add_trace_context(line)
            elif "decision_id" not in line or "market" not in line:  # (dora's own events name both)
                logs.add_decision_context(line)
            pipeline.put_line(level, message, line, _time(), ids, check)
            return fields
        self._check_now(event_type, fields)  # raises SchemaError in strict mode
        _with_ids(fields, _ids(span))
        if not log.isEnabledFor(level):
            return fields
        record = logging.LogRecord(log.name, level, "dora_otel", 0, logs.render(message, fields), None, None)
        record._dora = fields  # type: ignore[attr-defined]
        log.handle(record)
        return fields

    def _check_now(self, event_type: str, fields: dict[str, Any]) -> None:
        """The event's key-field check: raises SchemaError in strict mode, else logs one ERROR."""
        if not _well_formed(event_type, fields):  # the full check only when it may find something
            events.check(event_type, fields, strict=self.strict, logger=self.log)

    def _late_check(self, fields: dict[str, Any]) -> None:
        """`_check_now` on the event thread, for a line queued unchecked (never strict there)."""
        event_type = fields.get("event_type")
        if type(event_type) is str and not _well_formed(event_type, fields):
            events.check(event_type, fields, strict=False, logger=self.log)


def _ids(span: Any) -> tuple[int, int] | None:
    """(trace_id, span_id) of the span an event line belongs to (None: the current one)."""
    if span is None:
        return None
    if type(span) is _LiteSpan:
        return span.trace_id, span.span_id
    ctx = span.get_span_context()
    return ctx.trace_id, ctx.span_id


def _with_ids(fields: dict[str, Any], ids: tuple[int, int] | None) -> dict[str, Any]:
    if ids is not None:
        fields["trace_id"], fields["span_id"] = logs.hex_ids(ids)
    return fields


ACTIVE: Runtime | None = None

# events.py's rules as lookup tables, for `_well_formed` (built once; events.check stays the judge):
# per event type, (names that must not be None, names that must be int/float).
_Rule = tuple[tuple[str, ...], tuple[str, ...]]


def _rule(names: tuple[str, ...]) -> _Rule:
    return names, tuple(n for n in names if n in events._NUMERIC)


_REQUIRED: dict[str, _Rule] = {et: _rule(names) for et, names in events.KEY_FIELDS.items()}
_CONDITIONAL: dict[str, dict[str, _Rule]] = {}
for (_et, _status), _names in events._CONDITIONAL.items():
    _CONDITIONAL.setdefault(_et, {})[_status] = _rule(_names)
_ONE_OF = dict(events._ONE_OF)
_NUMBER = frozenset({int, float})


def _well_formed(event_type: str, fields: dict[str, Any]) -> bool:
    """True when `events.problems` would certainly find nothing (every key field present, numbers
    numeric); False sends the event through the full check, which words and reports any problem.
    A cheaper pre-test for the events dora-otel itself builds (on the trading thread, or on the
    event thread for a line queued unchecked): C-level, by itemgetters made once per event type
    and status (`_Formed`; a missing name raises KeyError: not well formed)."""
    formed = _FORMED.get(event_type)
    if formed is None:
        return False
    if type(fields) is not dict:  # (the pickers index: a dict subclass's own get is not asked)
        fields = dict(fields)
    names, numeric = formed.default
    if formed.by_status is not None:
        status = fields.get("status")
        if type(status) is not str and status is not None:
            return False
        names, numeric = formed.by_status.get(str(status), formed.default)
    try:
        if names is not None and None in names(fields):
            return False
        if numeric is not None and not _NUMBER.issuperset(map(type, numeric(fields))):
            return False
    except KeyError:
        return False
    one_of = formed.one_of
    return one_of is None or any(fields.get(name) not in (None, "") for name in one_of)


class _Formed:
    """`_well_formed`'s rules for one event type: `default` (pickers of the names that must not be
    None and of those that must be numbers), `by_status` (the same, with the status's conditional
    names added, by status; None when the type has none) and `one_of`."""

    __slots__ = ("by_status", "default", "one_of")

    def __init__(self, event_type: str) -> None:
        names, numeric = _REQUIRED[event_type]
        self.default = _picker(names), _picker(numeric)
        conditional = _CONDITIONAL.get(event_type)
        self.by_status = None if conditional is None else {
            status: (_picker(names + more), _picker(numeric + more_numeric))
            for status, (more, more_numeric) in conditional.items()}
        self.one_of = _ONE_OF.get(event_type)


def _picker(names: tuple[str, ...]) -> Any:
    """An itemgetter of `names` that answers a tuple (for one name, itemgetter answers the value:
    the name is asked twice); None for no names."""
    return itemgetter(*names, names[0]) if len(names) == 1 else itemgetter(*names) if names else None


_FORMED = {event_type: _Formed(event_type) for event_type in _REQUIRED}  # (events.KEY_FIELDS' types)


def attr(value: Any) -> Any:
    """A value an OTel attribute can hold (str, bool, int, float); None stays None (skipped)."""
    kind = type(value)
    if kind in (str, int, float, bool) or value is None:
        return value
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, (int, float, str)):  # enums and other subclasses
        try:
            return value.value if hasattr(value, "value") else kind.__mro__[1](value)
        except Exception:
            return safe_text(value)
    return safe_text(value)


_FIELD_LIMIT = 1_000
_INT_RANGE = (-(2**63), 2**64)  # orjson's range (DynamoDB keeps 38 digits: inside it)
_FLOAT_RANGE = (1e-130, 1e126)  # DynamoDB: 1E-130 <= |n| < 1E+126


def _storable_float(value: float) -> bool:
    return _FLOAT_RANGE[0] <= abs(value) < _FLOAT_RANGE[1] or value == 0.0  # False for NaN and inf


def safe_value(value: Any, limit: int = _FIELD_LIMIT) -> Any:
    """A bot's argument as a field value every output (line, span, journal, SQLite, DynamoDB) can
    hold: None, bools, numbers every store keeps (else their text: NaN, inf, 1e300, 50-digit ints),
    Decimals as floats, and valid-UTF-8 text cut at `limit`; any other object becomes its (safe) text.
    Never raises."""
    kind = type(value)
    if kind is str:  # the common cases first: this runs for every field of every order
        return value if len(value) <= limit and value.isascii() else safe_text(value, limit)
    if kind is float:
        return value if _storable_float(value) else repr(value)
    if kind is int:
        return value if _INT_RANGE[0] <= value < _INT_RANGE[1] else safe_text(value, 100)
    if value is None or kind is bool:
        return value
    if kind is Decimal:
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return str(value)
        return number if _storable_float(number) else str(value)
    if isinstance(value, (str, int, float)):  # enums and other subclasses: their plain value
        try:
            plain = value.value if hasattr(value, "value") else kind.__mro__[1](value)
        except Exception:
            return safe_text(value, limit)
        return safe_value(plain, limit) if type(plain) in (str, int, float, bool) else safe_text(plain, limit)
    return safe_text(value, limit)


def span_event(event_type: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The event a dora span carries: its type and the decorator's fields (kept as they are: the
    ledger record is built from them on this thread, the span's flat attributes on the event
    thread, see spans.py)."""
    return (event_type, fields)

