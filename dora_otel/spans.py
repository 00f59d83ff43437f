"""dora-otel's own spans: recorded on the trading thread as compact events, built as OTel spans on
the event thread (the log pipeline's writer, logs.LogPipeline).

On the trading thread a `LiteSpan` is a handful of slots: real W3C ids (trace id = decision_id),
the parent span id, start/end times, the event type and the fields the decorator already holds (no
SDK `_Span`, no attribute validation, no JSON). While the bot's code runs, the context holds a
`NonRecordingSpan(SpanContext(real ids))` (`LiteSpan.api_span`), so other OpenTelemetry
instrumentation (an HTTP client inside `order_place`) starts its spans as children in the same
trace and `trace.get_current_span()` gives the right ids.

Execution events reach the ledger synchronously, from the event itself (never from a span):
`ExecutionLedgerProcessor.on_event` journals ORDER_PLACE / ORDER_CANCEL (request) / FILL /
ORDER_SUPPRESSED when their span starts (before the exchange call), ORDER_RESULT when its span
starts (the moment the answer arrived, before its line is queued), a cancel's outcome when its span
ends, and the decision record when the decision span ends. Sampling never affects this.

One dict per event: the decorator builds an event's fields once and hands the same dict to its
span (here), its ledger record (built from it on this thread) and its line (`Runtime.emit`), and
never changes it once the line or the span is queued; the event thread only reads it.

When a span ends it is queued (bounded; a full queue drops it and counts `spans_dropped`) to the
event thread, which builds its `ReadableSpan` with flat attributes (`dora.market`, `dora.side`,
`dora.price`, ..., lists as JSON text), scrubs it (tracing.scrub_span) and hands it to the tracer
provider's span processors' `on_end` (whichever SDK TracerProvider that is: ours or the bot's), so
OTLP, the spans file, Jaeger and X-Ray see the same traces. Processors' `on_start` is not called
(they would get a finished span). When dora's spans file is the provider's only span output (the
embedded default), the event thread skips the SDK objects: it encodes the span straight to the
file's OTLP JSON, the same content, and writes each drained batch as one line (`export_later`).

Sampling: a root span (a decision, an unmatched fill) asks the provider's sampler once on the
trading thread; its children carry the root's sampled flag; spans
of an unsampled trace are not exported (the ledger still records their events). Span limits of the
provider are not applied (dora's spans have a fixed, small set of attributes).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
from opentelemetry import trace as trace_api
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    DEFAULT_TRACE_STATE,
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from dora_otel import logs as _logs
from dora_otel._forks import AfterFork
from dora_otel._version import __version__
from dora_otel.exchange import safe_text
from dora_otel.scrub import (
    TRUSTED_FIELDS,
    event_verdict,
    known_clean,
    needs_scrub,
    ordinary_key,
    ordinary_keys,
    scrub_record,
    scrub_text,
    texts_clean,
)
from dora_otel.spanfile import attribute_list, attribute_value, span_bytes, span_json

_log = logging.getLogger("dora_otel.internal")
_time_ns = time.time_ns
_get_current_span = trace_api.get_current_span
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
# Journaled when their span starts (ORDER_RESULT's span starts the moment the answer is known) ...
_LEDGER_START = frozenset({"ORDER_PLACE", "ORDER_CANCEL", "FILL", "ORDER_SUPPRESSED", "ORDER_RESULT"})
# ... and when it ends: a cancel's outcome, a decision.
_LEDGER_END = frozenset({"ORDER_CANCEL", "DECISION_MADE"})
# Fields that are the span's own ids / type (already the span's context and name) or too big.
_SPAN_SKIP = frozenset({"stack", "event_type", "trace_id", "span_id"})
_TRUSTED = TRUSTED_FIELDS - {"decision_id"}  # a span's decision_id may be "unmatched:<market>"
_UNSET = Status(StatusCode.UNSET)
_NO_PARENT = Context()
_tuple_new = tuple.__new__
_NO_TRACE_STATE = DEFAULT_TRACE_STATE
_current_context = get_current
# The key the OTel API keeps the current span under in a Context, found through the public API
# (`set_span_in_context`) once, so LiteSpan.context can build the same Context in one step.
_PROBE = NonRecordingSpan(INVALID_SPAN_CONTEXT)
_SPAN_KEY = next(k for k, v in set_span_in_context(_PROBE, Context()).items() if v is _PROBE)
_NOTHING: dict[str, Any] = {}  # shared, never written: a LiteSpan's fields / extra until it has its own
_NO_EVENTS: list[tuple[str, dict[str, Any], int]] = []  # shared, never written
_INTERNAL = SpanKind.INTERNAL.value + 1  # OTLP's SPAN_KIND_INTERNAL
_I64_MIN, _I64_MAX = -(2**63), 2**63  # the int range of an OTel attribute (flat_value)
#: The instrumentation scope of every dora span. A span with exactly this object as its scope was
#: built (and scrubbed) by `LiteTracer.readable`; `tracing.ScrubbingSpanExporter` skips it.
DORA_SCOPE = InstrumentationScope("dora_otel", __version__)


class LiteSpan:
    """One dora span on the trading thread. Methods run on the thread that owns the call (the
    decorated call's thread or task); `end()` hands it to the event thread."""

    __slots__ = (
        "_ctx",
        "end_ns",
        "ended",
        "event_type",
        "events",
        "extra",
        "fields",
        "name",
        "parent_id",
        "sampled",
        "span_id",
        "start_ns",
        "status",
        "trace_id",
        "tracer",
    )

    def __init__(self, tracer: LiteTracer, name: str, trace_id: int, span_id: int, parent_id: int | None,
                 sampled: bool) -> None:
        self.tracer = tracer
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.sampled = sampled
        self.start_ns = _time_ns()
        self.end_ns = 0
        self.event_type: str | None = None
        self.fields: dict[str, Any] = _NOTHING
        # Attributes set by name ("dora.status": they win) and span events; most spans have none, so
        # they start as shared empty containers and get their own on first use.
        self.extra: dict[str, Any] = _NOTHING
        self.status: Status | None = None
        self.events: list[tuple[str, dict[str, Any], int]] = _NO_EVENTS
        self.ended = False
        self._ctx: SpanContext | None = None

    # --- the parts of the OTel Span API the decorators use ---------------------------------------
    def get_span_context(self) -> SpanContext:
        ctx = self._ctx
        if ctx is None:
            # SpanContext's own __new__ validates the ids; ours are valid by construction (non-zero,
            # in range), so the tuple is made directly: (trace_id, span_id, is_remote, trace_flags,
            # trace_state, is_valid), the layout SpanContext's properties read.
            ctx = self._ctx = _tuple_new(SpanContext, (self.trace_id, self.span_id, False,
                                                       _SAMPLED if self.sampled else _UNSAMPLED,
                                                       _NO_TRACE_STATE, True))
        return ctx

    @property
    def api_span(self) -> NonRecordingSpan:
        """The lightweight OTel API span to make current while the bot's code runs."""
        return NonRecordingSpan(self.get_span_context())

    def context(self) -> Context:
        """The current Context with this span's `api_span` as its span: what a decorator attaches
        while the bot's code runs. (`set_span_in_context` without its call layers: one copy of the
        current context's values with the span under the API's own key.)"""
        values = dict(_current_context())
        values[_SPAN_KEY] = NonRecordingSpan(self.get_span_context())
        return Context(values)

    def is_recording(self) -> bool:
        return not self.ended

    def set_attribute(self, key: str, value: Any) -> None:
        if self.extra is _NOTHING:
            self.extra = {}
        self.extra[key] = value

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        if self.extra is _NOTHING:
            self.extra = {}
        self.extra.update(attributes)

    def set_event(self, event_type: str, fields: dict[str, Any]) -> None:
        """The event this span carries (its flat attributes are built from `fields` off-thread)."""
        self.event_type = event_type
        self.fields = fields

    def set_status(self, status: Status) -> None:
        self.status = status

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        if self.events is _NO_EVENTS:
            self.events = []
        self.events.append((name, dict(attributes or {}), _time_ns()))

    def record_exception(self, exc: BaseException, attributes: dict[str, Any] | None = None) -> None:
        attrs = {"exception.type": safe_text(type(exc).__name__, 200)}
        attrs.update(attributes or {})
        if self.events is _NO_EVENTS:
            self.events = []
        self.events.append(("exception", attrs, _time_ns()))

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.end_ns = _time_ns()
        # The SpanContext made while the span was current is not kept while the span waits in the
        # event queue: one tracked object less per span for the garbage collector to walk there.
        self._ctx = None
        # No snapshot of `fields`: the decorators never change an event's dict once its line or
        # span is handed over (see Runtime.emit), so the event thread can read it as it is.
        self.tracer.ended(self)


class LiteTracer:
    """Starts LiteSpans. Wraps the SDK tracer that `setup()` made (its id generator, sampler,
    resource, scope and the provider's span processors), or `tracing.IdOnlyTracer` under
    OTEL_SDK_DISABLED (ids only: nothing is exported, no ledger). Any thread."""

    def __init__(self, tracer: Any) -> None:
        self.sdk = tracer
        self.processor = getattr(tracer, "span_processor", None)  # the provider's active processor
        self.sampler = getattr(tracer, "sampler", None)
        # A new trace is always sampled under the SDK's default sampler (parent-based, always-on
        # root; wrapped in ExecutionAwareSampler): then the sampler is not asked per decision.
        self._roots_sampled = _always_samples_roots(self.sampler)
        ids = getattr(tracer, "id_generator", None)
        if ids is None or type(ids) is RandomIdGenerator:  # the SDK's own, without its call layers
            self._trace_id: Callable[[], int] = _random_trace_id
            self._span_id: Callable[[], int] = _random_span_id
        else:  # the bot's (X-Ray ids, ...)
            self._trace_id, self._span_id = ids.generate_trace_id, ids.generate_span_id
        self.resource = getattr(tracer, "resource", None)
        self.scope = DORA_SCOPE
        self._ledger_seen: Any = None
        self._ledger: Any = None
        self._file_seen: Any = None
        self._file: Any = None
        self._batch_max = 512
        self._pending: list[bytes] = []  # spans encoded for the spans file (export_later)
        self._after_fork = AfterFork(self._forget_pending)

    def start_span(self, name: str, context: Any = None, event: tuple[str, dict[str, Any]] | None = None) -> LiteSpan:
        """A span that starts now: a child of the span current in `context` (None: the current
        context; an empty Context: a new trace). `event` = (event_type, fields): an execution event
        is journaled here when the ledger records it at start (before the exchange call)."""
        parent = _get_current_span(context).get_span_context()
        if parent.is_valid:
            return self.start_child(name, parent.trace_id, parent.span_id,
                                    bool(parent.trace_flags & TraceFlags.SAMPLED), event)
        return self.start_root(name, event)

    def start_root(self, name: str, event: tuple[str, dict[str, Any]] | None = None) -> LiteSpan:
        """A span that starts a new trace (a decision), whatever span is current."""
        trace_id = self._trace_id()
        return self._begin(LiteSpan(self, name, trace_id, self._span_id(), None,
                                    self._sample(trace_id, name, event)), event)

    def start_child(self, name: str, trace_id: int, parent_id: int, sampled: bool,
                    event: tuple[str, dict[str, Any]] | None = None) -> LiteSpan:
        """`start_span` for a parent the caller already holds as ids (a decision's order spans):
        the same span, without looking the parent up in a Context."""
        return self._begin(LiteSpan(self, name, trace_id, self._span_id(), parent_id, sampled), event)

    def _begin(self, span: LiteSpan, event: tuple[str, dict[str, Any]] | None) -> LiteSpan:
        if event is not None:
            span.event_type, span.fields = event
            if event[0] in _LEDGER_START:
                ledger = self.ledger()
                if ledger is not None:
                    ledger.on_event(event[0], event[1], span.trace_id, span.span_id, span.start_ns)
        return span

    def _sample(self, trace_id: int, name: str, event: Any) -> bool:
        sampler = self.sampler
        if sampler is None or self.processor is None:
            return False
        if self._roots_sampled:
            return True
        try:
            attrs = {"dora.event_type": event[0]} if event is not None else None
            # A dora root has no parent, whatever span the bot's context holds: ask with an empty one
            # (None would make a ParentBased sampler follow the bot's current span).
            return bool(sampler.should_sample(_NO_PARENT, trace_id, name, SpanKind.INTERNAL,
                                              attrs).decision.is_sampled())
        except Exception:
            return True

    def ledger(self) -> Any:
        """The provider's ExecutionLedgerProcessor, if one is attached (looked up again whenever the
        provider's processor list changes)."""
        processor = self.processor
        if processor is None:
            return None
        current = getattr(processor, "_span_processors", None)
        if current is not self._ledger_seen:
            from dora_otel.ledger.processor import ExecutionLedgerProcessor

            self._ledger = next((p for p in current or () if isinstance(p, ExecutionLedgerProcessor)), None)
            self._ledger_seen = current
        return self._ledger

    def ended(self, span: LiteSpan) -> None:
        """A span ended (trading thread): journal its end record, queue it for export."""
        event_type = span.event_type
        if event_type in _LEDGER_END:
            ledger = self.ledger()
            if ledger is not None:
                if event_type == "DECISION_MADE":
                    ledger.on_decision(span.fields, span.trace_id, span.span_id, span.start_ns, span.end_ns)
                elif "dora.status" in span.extra:  # a cancel's outcome
                    ledger.on_event(event_type, _merged(span), span.trace_id, span.span_id, span.end_ns)
        if not span.sampled or self.processor is None:
            return
        pipeline = _logs.ACTIVE_PIPELINE
        if pipeline is not None:
            pipeline.enqueue_span(span)
        else:  # no event thread (not expected while set up): deliver here
            self.export(span)

    def export(self, span: LiteSpan) -> None:
        """Build the span (scrubbed) and hand it to the provider's processors now. Any thread."""
        try:
            processor = self.processor
            if processor is not None:
                processor.on_end(self.readable(span))
        except Exception:
            self._export_failed()

    def export_later(self, span: LiteSpan) -> bool:
        """Event thread: like `export`, except when dora's spans file is the only output that takes
        spans (`_spans_file`): then the span is encoded straight to its OTLP JSON form (no
        `ReadableSpan`, no BatchSpanProcessor queue and thread) and kept until `flush_export`,
        which the writer calls at the end of its batch. True when spans wait for it."""
        try:
            file = self._spans_file()
            if file is None:
                self.export(span)
                return False
            pending = self._pending
            pending.append(self._encoded_bytes(span))  # bytes: no containers for the GC to scan
            if len(pending) >= self._batch_max:
                self.flush_export()
                return False
            return True
        except Exception:
            self._export_failed()
            return False

    def _forget_pending(self) -> None:
        """In a forked child: the spans the parent had encoded but not yet written are the parent's."""
        self._pending = []

    def flush_export(self) -> None:
        """Write the spans `export_later` encoded, one request line per batch. Never raises."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            file = self._spans_file()
            if file is not None:
                file.export_encoded(self.resource.attributes if self.resource is not None else {},
                                    self.scope.name, pending)
        except Exception:
            self._export_failed()

    def _export_failed(self) -> None:
        try:
            _log.error("dora-otel could not export a span", exc_info=True)
        except Exception:
            pass

    def _spans_file(self) -> Any:
        """The `spanfile.SpanFileExporter` when it is the one output of the provider's span
        processors (a BatchSpanProcessor exporting to it through tracing.ScrubbingSpanExporter; the
        ledger's processor reads no spans), else None: OTLP, the bot's provider, or any processor
        added later get `ReadableSpan`s through `on_end`. Looked up again when the list changes."""
        processor = self.processor
        current = getattr(processor, "_span_processors", None)
        if current is not self._file_seen:
            self._file, self._batch_max = _only_spans_file(current or ())
            self._file_seen = current
        return self._file

    def readable(self, span: LiteSpan) -> Any:
        """The span as the SDK's `ReadableSpan`, scrubbed once here with the policy every output
        uses (scrub.scrub_record over its fields, scrub_text over its name, status and events). Its
        scope is `DORA_SCOPE`, which tells `tracing.ScrubbingSpanExporter` it is scrubbed already."""
        name, attributes, status, events = _scrubbed(span)
        flags = _SAMPLED if span.sampled else _UNSAMPLED
        parent = (SpanContext(span.trace_id, span.parent_id, is_remote=False, trace_flags=flags)
                  if span.parent_id is not None else None)
        return ReadableSpan(
            name=name, context=span.get_span_context(), parent=parent, resource=self.resource,
            attributes=attributes, events=[Event(n, a, ts) for n, a, ts in events], kind=SpanKind.INTERNAL,
            status=status or _UNSET, start_time=span.start_ns, end_time=span.end_ns,
            instrumentation_scope=self.scope)

    def _encoded_bytes(self, span: LiteSpan) -> bytes:
        """`orjson.dumps(self._encoded(span))`, the same bytes: a span with nothing to scrub and
        no events (nearly all) is assembled by spanfile.span_bytes, without the span's dict."""
        attributes = _attributes_json(span)
        if attributes is None:
            return orjson.dumps(self._encoded(span))
        status = span.status or _UNSET
        return span_bytes(span.trace_id, span.span_id, span.parent_id, span.name, _INTERNAL, span.start_ns,
                          span.end_ns, attributes, status.status_code, status.description)

    def _encoded(self, span: LiteSpan) -> dict[str, Any]:
        """The span in the spans file's OTLP JSON form, scrubbed: what `readable` followed by
        spanfile.encode_span gives, without building the SDK objects."""
        attributes = _plain_attributes(span)
        status = span.status or _UNSET
        if attributes is None:  # something to scrub, or events: the general way
            name, flat, scrubbed_status, events = _scrubbed(span)
            status = scrubbed_status or _UNSET
            return span_json(span.trace_id, span.span_id, span.parent_id, name, _INTERNAL, span.start_ns,
                             span.end_ns, attribute_list(flat), status.status_code, status.description, events)
        return span_json(span.trace_id, span.span_id, span.parent_id, span.name, _INTERNAL, span.start_ns,
                         span.end_ns, attributes, status.status_code, status.description, ())


def _plain_attributes(span: LiteSpan) -> list[dict[str, Any]] | None:
    """The OTLP attribute list of a span with nothing to scrub, the scrub test riding along
    (`_checked_attribute`, as in logs.JsonFormatter.encode); None when its name, status or a string
    needs scrubbing, a string sits under a sensitive name, or it has events: then `_scrubbed` does
    it the general way."""
    checks = _span_checks(span)
    return None if checks is None else _checked_attributes(span, *checks)


def _attributes_json(span: LiteSpan) -> bytes | None:
    """`orjson.dumps(_plain_attributes(span))`, the same bytes (None likewise).

    The common case is hand-written for speed (event thread, every span): the fields' scrub verdict
    is known already — the event's line tested the same dict (scrub.event_verdict, remembered by
    identity) — so their values are written as they are, each as a cached `{"key":"dora.<name>",
    "value":{"<kind>Value":` prefix and its value's JSON, joined once: no two dicts per attribute."""
    checks = _span_checks(span)
    if checks is None:
        return None
    new, more = checks
    fields, event_type = span.fields, span.event_type
    if (type(event_type) is not str or (more and not fields.keys().isdisjoint(k[5:] for k in more))
            or event_verdict(fields, True) is None):
        attributes = _checked_attributes(span, new, more)
        return None if attributes is None else _dumps(attributes)
    # Every field's part starts with the `}},` that closes the one before (the event type's part, when
    # there is one, comes first without it; else the first field's is cut off below).
    parts = [b"[", _EVENT_TYPE_FIRST, _dumps(event_type)] if event_type else [b"["]
    append = parts.append
    for key, value in fields.items():
        if value is None or key in _SPAN_SKIP:
            continue
        kind = type(value)
        if kind is str:
            append(_STR_PREFIX.get(key) or _attribute_prefix(_STR_PREFIX, b"stringValue", key))
            append(_dumps(value))
        elif kind is int:  # (proto3 JSON writes int64 as a string)
            append(_INT_PREFIX.get(key) or _attribute_prefix(_INT_PREFIX, b"intValue", key))
            append(b'"%d"' % value)
        elif kind is float:
            append(_FLOAT_PREFIX.get(key) or _attribute_prefix(_FLOAT_PREFIX, b"doubleValue", key))
            append(_dumps(value))
        elif kind is bool:
            append(_BOOL_PREFIX.get(key) or _attribute_prefix(_BOOL_PREFIX, b"boolValue", key))
            append(b"true" if value else b"false")
        else:  # a list of rows: JSON text
            append(_STR_PREFIX.get(key) or _attribute_prefix(_STR_PREFIX, b"stringValue", key))
            append(_dumps(flat_value(value)))
    for key, value in more.items():
        append(b"}},")
        append(_dumps({"key": key, "value": value})[:-2])
    if new and not texts_clean(new, max(map(len, new))):
        return None
    if len(parts) == 1:
        return b"[]"
    if not event_type:
        parts[1] = parts[1][3:]
    parts.append(b"}}]")
    return b"".join(parts)  # (one copy of the whole)


_dumps = orjson.dumps
_EVENT_TYPE_FIRST = b'{"key":"dora.event_type","value":{"stringValue":'  # (always the first part: no `}},`)
# `}},{"key":"dora.<name>","value":{"<kind>Value":` by field name, one cache per kind. Bounded.
_STR_PREFIX: dict[str, bytes] = {}
_INT_PREFIX: dict[str, bytes] = {}
_FLOAT_PREFIX: dict[str, bytes] = {}
_BOOL_PREFIX: dict[str, bytes] = {}


def _attribute_prefix(cache: dict[str, bytes], kind: bytes, key: str) -> bytes:
    prefix = b'}},{"key":%b,"value":{"%b":' % (_dumps("dora." + key), kind)
    if len(cache) > 10_000:  # (hostile bots may invent field names without end)
        cache.clear()
    cache[key] = prefix
    return prefix


def _span_checks(span: LiteSpan) -> tuple[list[str], dict[str, Any]] | None:
    """The parts of a span's scrub test outside its fields: its name and status description not
    known clean (returned, for the joined test) and its attributes set by name, checked and in
    OTLP form (`more`); None when it has events or such an attribute needs scrubbing."""
    if span.events:
        return None
    known = known_clean
    new = [] if span.name in known else [span.name]
    status = span.status
    if status is not None and status.description and status.description not in known:
        new.append(status.description)
    more: dict[str, Any] = {}
    for key, value in span.extra.items():  # (set by name: "dora.status"; most spans have none)
        if value is not None and not _checked_attribute(more, key[5:] if key.startswith("dora.") else key, value, new):
            return None
    return new, more


def _checked_attributes(span: LiteSpan, new: list[str], more: dict[str, Any]) -> list[dict[str, Any]] | None:
    """`_plain_attributes` over the fields one by one (`_checked_attribute`), then `more`."""
    event_type = span.event_type
    attributes: dict[str, Any] = {"dora.event_type": attribute_value(event_type)} if event_type else {}
    for key, value in span.fields.items():
        if value is not None and key not in _SPAN_SKIP and not _checked_attribute(attributes, key, value, new):
            return None
    attributes.update(more)  # (set by name: they win, in the field's place)
    if new and not texts_clean(new, max(map(len, new))):
        return None
    return [{"key": k, "value": v} for k, v in attributes.items()]


def _checked_attribute(attributes: dict[str, Any], key: str, value: Any, new: list[str]) -> bool:
    """Add `dora.<key>` to `attributes` for `_plain_attributes`, testing it for scrubbing on the
    way: False when a string sits under a sensitive name (the span is then built the general way);
    strings not known clean are added to `new` for one joined test."""
    kind = type(value)
    if kind is str:
        if key not in _TRUSTED:
            if key not in ordinary_keys and not ordinary_key(key):
                return False
            if value not in known_clean:
                new.append(value)
        attributes["dora." + key] = {"stringValue": value}
    elif kind is int and _I64_MIN <= value < _I64_MAX:
        attributes["dora." + key] = {"intValue": str(value)}  # proto3 JSON writes int64 as a string
    elif kind is float or kind is bool:
        attributes["dora." + key] = attribute_value(value)
    else:  # a container, a big int, another type: scrubbed on its own, then flattened
        attributes["dora." + key] = attribute_value(flat_value(scrub_record({key: value}, _TRUSTED)[key]))
    return True


def _scrubbed(span: LiteSpan) -> tuple[str, dict[str, Any], Status | None, list[tuple[str, dict[str, Any], int]]]:
    """A span's name, flat attributes (`dora.<field>`, lists and dicts as JSON text), status and
    events, scrubbed: scrub_record over its fields, scrub_text over the name and status."""
    raw = {k: v for k, v in span.fields.items() if v is not None and k not in _SPAN_SKIP}
    for key, value in span.extra.items():
        if value is not None:
            raw[key[5:] if key.startswith("dora.") else key] = value
    raw = scrub_record(raw, _TRUSTED)
    attributes: dict[str, Any] = {"dora.event_type": span.event_type} if span.event_type else {}
    for key, value in raw.items():
        attributes["dora." + key] = flat_value(value)
    status = span.status
    if status is not None and status.description and needs_scrub(status.description):
        status = Status(status.status_code, scrub_text(status.description))
    name = span.name if not needs_scrub(span.name) else scrub_text(span.name)
    events = [(n, {k: flat_value(v) for k, v in scrub_record(dict(a), _TRUSTED).items()}, ts)
              for n, a, ts in span.events]
    return name, attributes, status, events


def _only_spans_file(processors: Any) -> tuple[Any, int]:
    """(the SpanFileExporter, its processor's batch size) when that is the only span output."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from dora_otel.ledger.processor import ExecutionLedgerProcessor
    from dora_otel.spanfile import SpanFileExporter
    from dora_otel.tracing import ScrubbingSpanExporter

    found: Any = None
    batch_max = 512
    for processor in processors:
        if isinstance(processor, ExecutionLedgerProcessor):  # takes events, not spans (its on_end is empty)
            continue
        exporter = getattr(processor, "span_exporter", None) if type(processor) is BatchSpanProcessor else None
        if (found is not None or type(exporter) is not ScrubbingSpanExporter
                or type(exporter.inner) is not SpanFileExporter):
            return None, batch_max
        found = exporter.inner
        batch_max = getattr(getattr(processor, "_batch_processor", None), "_max_export_batch_size", batch_max)
    return found, batch_max


def _random_trace_id() -> int:
    return random.getrandbits(128) or 1  # (0 is the invalid id)


def _random_span_id() -> int:
    return random.getrandbits(64) or 1


def _always_samples_roots(sampler: Any) -> bool:
    """True for a sampler that samples every new trace: ALWAYS_ON, or a ParentBased one whose root
    sampler is ALWAYS_ON (the SDK's default), also inside ExecutionAwareSampler."""
    from dora_otel.tracing import ExecutionAwareSampler

    if isinstance(sampler, ExecutionAwareSampler):
        sampler = sampler.delegate
    if isinstance(sampler, ParentBased):
        sampler = getattr(sampler, "_root", None)  # (the SDK keeps the root sampler here; else ask)
    return sampler is ALWAYS_ON


def _merged(span: LiteSpan) -> dict[str, Any]:
    """A cancel's record at its end: the request's fields, the outcome's flat attributes winning."""
    out = dict(span.fields)
    for key, value in span.extra.items():
        if key.startswith("dora.") and value is not None:
            out[key[5:]] = value
    return out


def flat_value(value: Any) -> Any:
    """A value an OTel attribute holds: str/bool/int (64-bit)/float; lists and dicts as JSON text."""
    kind = type(value)
    if kind is str or kind is bool or kind is float:
        return value
    if kind is int:
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, (list, tuple, dict)):
        try:
            return orjson.dumps(value, default=safe_text, option=orjson.OPT_NON_STR_KEYS).decode()
        except Exception:
            return safe_text(value)
    from dora_otel._runtime import attr

    out = attr(value)
    return flat_value(out) if type(out) is not type(value) else safe_text(value)
