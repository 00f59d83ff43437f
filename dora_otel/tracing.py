"""Tracing: the SDK TracerProvider, the sampler that keeps execution spans, and span export.

setup() picks the exporter (telemetry._build_provider): OTLP to the collector when traces have an
OTLP target (config.otlp_target, otel_setup.otlp_span_exporter), else `<data_dir>/spans/spans.jsonl`
as OTLP JSON (one export request per line, see spanfile.py), the embedded default.
Both are behind a BatchSpanProcessor: best effort, never blocking the bot; and both are wrapped
in `ScrubbingSpanExporter`, so every span is scrubbed (scrub.py) off the trading thread: dora's own
spans (spans.py) when the event thread builds them, any other span on the export thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, Status

from dora_otel.scrub import MASK, is_sensitive_key, needs_scrub, scrub_text, scrub_value

_log = logging.getLogger("dora_otel.tracing")

EVENT_TYPE_ATTR = "dora.event_type"


class ExecutionAwareSampler(Sampler):
    """Defers to the configured sampler, but never drops an execution span.

    A span carrying `dora.event_type` that the delegate would drop is kept as RECORD_ONLY —
    recorded but not sampled (exporters skip it). dora's own spans ask it once per trace
    (spans.LiteTracer); the ledger takes execution events directly, whatever it answers.
    """

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    @property
    def delegate(self) -> Sampler:
        """The configured sampler this one defers to."""
        return self._delegate

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Sequence[Any] | None = None,
                      trace_state: Any = None) -> SamplingResult:
        result = self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is Decision.DROP and attributes and EVENT_TYPE_ATTR in attributes:
            return SamplingResult(Decision.RECORD_ONLY, attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"ExecutionAwareSampler{{{self._delegate.get_description()}}}"


class ScrubbingSpanExporter(SpanExporter):
    """Wraps an exporter: each span is rebuilt with its name, attributes, events, links' attributes
    and status description scrubbed, then handed on (dora's own spans, scope `spans.DORA_SCOPE`,
    were scrubbed with the same policy when the event thread built them).
    Runs on the BatchSpanProcessor's worker thread; a span that cannot be rebuilt is replaced by
    one whose attributes say so, never exported as it was."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from dora_otel.spans import DORA_SCOPE  # dora's own spans were scrubbed when built

        return self.inner.export([span if span.instrumentation_scope is DORA_SCOPE else scrub_span(span)
                                  for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


def scrub_span(span: ReadableSpan) -> ReadableSpan:
    """`span` itself when none of its texts can hold a credential (the common case: one joined
    check), else a copy with every text the scrubbing policy covers scrubbed. Never raises."""
    try:
        if _is_clean(span):
            return span
        status = span.status
        if status.description:
            status = Status(status.status_code, scrub_text(status.description))
        return ReadableSpan(
            name=scrub_text(span.name), context=span.context, parent=span.parent, resource=span.resource,
            attributes=_scrub_attributes(span.attributes), kind=span.kind, status=status,
            events=[Event(scrub_text(e.name), _scrub_attributes(e.attributes), e.timestamp) for e in span.events],
            links=[Link(link.context, _scrub_attributes(link.attributes)) for link in span.links],
            start_time=span.start_time, end_time=span.end_time, instrumentation_scope=span.instrumentation_scope)
    except Exception:  # noqa: BLE001 - export the ids, never the unscrubbed texts
        return ReadableSpan(name="[unscrubbable span]", context=span.context, parent=span.parent,
                            resource=span.resource, attributes={"dora.scrub_error": True},
                            start_time=span.start_time, end_time=span.end_time,
                            instrumentation_scope=span.instrumentation_scope)


def _is_clean(span: ReadableSpan) -> bool:
    texts = [span.name, span.status.description or ""]
    if not _collect_texts(span.attributes, texts):
        return False
    for event in span.events:
        texts.append(event.name)
        if not _collect_texts(event.attributes, texts):
            return False
    for link in span.links:
        if not _collect_texts(link.attributes, texts):
            return False
    return not needs_scrub("\x00".join(texts))


def _collect_texts(attributes: Any, texts: list[str]) -> bool:
    """Add the keys and string values of `attributes` to `texts`; False at a sensitive key."""
    if not attributes:
        return True
    for key, value in attributes.items():
        if is_sensitive_key(key):
            return False
        texts.append(key)
        if type(value) is str:
            texts.append(value)
        elif isinstance(value, (tuple, list)):
            texts.extend(v for v in value if type(v) is str)
    return True


def _scrub_attributes(attributes: Any) -> dict[str, Any]:
    if not attributes:
        return {}
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if is_sensitive_key(key) and type(value) not in (bool, int, float):
            out[key] = MASK
        elif key == "dora.record" and type(value) is str:
            out[key] = _scrub_json(value)
        elif type(value) is str:
            out[key] = scrub_text(value)
        elif isinstance(value, (tuple, list)):
            out[key] = tuple(scrub_text(v) if type(v) is str else v for v in value)
        else:
            out[key] = value
    return out


def _scrub_json(text: str) -> str:
    """A JSON object attribute, scrubbed field by field (by key name too), re-encoded."""
    import orjson

    scrubbed = scrub_text(text)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return scrubbed
    if scrubbed == text and not _has_sensitive_key(value):
        return text
    return orjson.dumps(scrub_value(value)).decode()


def _has_sensitive_key(value: Any, depth: int = 0) -> bool:
    if depth > 8:
        return True
    if isinstance(value, dict):
        return any(is_sensitive_key(k) or _has_sensitive_key(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_sensitive_key(v, depth + 1) for v in value)
    return False


def spans_file_path(data_dir: Path) -> Path:
    return data_dir / "spans" / "spans.jsonl"


class IdOnlyTracer:
    """The tracer under OTEL_SDK_DISABLED: nothing is recorded or exported (the SDK would hand out
    no-op spans with all-zero ids), but decisions still need real ids, so each span gets random
    W3C ids and children inherit their parent's trace id."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        self._ids = RandomIdGenerator()

    def start_span(self, name: str, context: Any = None, *args: Any, **kwargs: Any) -> Any:
        from opentelemetry import trace as trace_api

        parent = trace_api.get_current_span(context).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else self._ids.generate_trace_id()
        span_id = self._ids.generate_span_id()
        return trace_api.NonRecordingSpan(trace_api.SpanContext(trace_id, span_id, is_remote=False))


def build_provider(*, resource_attributes: dict[str, str], exporter: Any, export_timeout_s: float = 10.0,
                   batch_options: dict[str, Any] | None = None, span_limits: Any = None) -> TracerProvider:
    """A TracerProvider with our sampler and `exporter` (wrapped so what it exports is scrubbed) behind
    a BatchSpanProcessor. Does not install it globally. `batch_options` / `span_limits`: explicit
    BatchSpanProcessor arguments and SpanLimits (setup() passes validated values, so bad OTEL_BSP_* /
    limit variables cannot raise). setup() chooses the exporter: OTLP (otel_setup.otlp_span_exporter),
    the rotating spans file (spanfile.SpanFileExporter) or none."""
    provider = TracerProvider(resource=Resource.create(resource_attributes), span_limits=span_limits)
    provider.sampler = ExecutionAwareSampler(provider.sampler)  # tracers read it when created
    provider.add_span_processor(BatchSpanProcessor(ScrubbingSpanExporter(exporter),
                                                   export_timeout_millis=export_timeout_s * 1000,
                                                   **(batch_options or {})))
    return provider
