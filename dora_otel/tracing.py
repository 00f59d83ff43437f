"""Tracing: the SDK TracerProvider, the sampler that keeps execution spans, and span export.

With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans leave through the OTLP exporter (grpc or
http/protobuf per `OTEL_EXPORTER_OTLP_PROTOCOL`) to the collector. Without it they go to
`<data_dir>/spans/spans.jsonl` as OTLP JSON (one export request per line, see spanfile.py),
the embedded default.
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
SPANS_MAX_BYTES = 32 * 1024 * 1024  # DORA_SPANS_MAX_BYTES (same as spanfile.DEFAULT_MAX_BYTES)
SPANS_BACKUPS = 3  # DORA_SPANS_BACKUPS: the spans directory holds at most (3 + 1) x 32 MiB


class ExecutionAwareSampler(Sampler):
    """Defers to the configured sampler, but never drops an execution span.

    A span carrying `dora.event_type` that the delegate would drop is kept as RECORD_ONLY —
    recorded but not sampled (exporters skip it). dora's own spans ask it once per trace
    (spans.LiteTracer); the ledger takes execution events directly, whatever it answers.
    """

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

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


def build_provider(*, resource_attributes: dict[str, str], endpoint: str | None, protocol: str,
                   data_dir: Path, export_timeout_s: float = 10.0, batch_options: dict[str, Any] | None = None,
                   span_limits: Any = None, exporter: Any = None, spans_max_bytes: int = SPANS_MAX_BYTES,
                   spans_backups: int = SPANS_BACKUPS) -> TracerProvider:
    """A TracerProvider with our sampler and the right exporter (or `exporter` when given), scrubbed.
    Does not install it globally. `batch_options` / `span_limits`: explicit BatchSpanProcessor
    arguments and SpanLimits (setup() passes validated values, so bad OTEL_BSP_* / limit variables
    cannot raise). The spans file rotates at `spans_max_bytes`, keeping `spans_backups` old files."""
    provider = TracerProvider(resource=Resource.create(resource_attributes), span_limits=span_limits)
    provider.sampler = ExecutionAwareSampler(provider.sampler)  # tracers read it when created
    if exporter is None:
        exporter = _exporter(endpoint, protocol, data_dir, export_timeout_s, spans_max_bytes, spans_backups)
    provider.add_span_processor(BatchSpanProcessor(ScrubbingSpanExporter(exporter),
                                                   export_timeout_millis=export_timeout_s * 1000,
                                                   **(batch_options or {})))
    return provider


def _exporter(endpoint: str | None, protocol: str, data_dir: Path, timeout_s: float,
              spans_max_bytes: int = SPANS_MAX_BYTES, spans_backups: int = SPANS_BACKUPS) -> Any:
    if endpoint:
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            return HttpExporter(endpoint=_http_url(endpoint, "v1/traces"), timeout=timeout_s)
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=endpoint, insecure=_insecure(endpoint), timeout=timeout_s)
    from dora_otel.spanfile import SpanFileExporter

    return SpanFileExporter(spans_file_path(data_dir), max_bytes=spans_max_bytes, backups=spans_backups)


def build_log_provider(*, resource_attributes: dict[str, str], endpoint: str, protocol: str,
                       export_timeout_s: float = 10.0, batch_options: dict[str, Any] | None = None,
                       log_limits: Any = None) -> Any:
    """An OTel LoggerProvider exporting over OTLP (the logs API is still underscore-private)."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import (
            OTLPLogExporter as HttpLogExporter,
        )

        exporter: Any = HttpLogExporter(endpoint=_http_url(endpoint, "v1/logs"), timeout=export_timeout_s)
    else:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
            OTLPLogExporter as GrpcLogExporter,
        )

        exporter = GrpcLogExporter(endpoint=endpoint, insecure=_insecure(endpoint), timeout=export_timeout_s)
    provider = LoggerProvider(resource=Resource.create(resource_attributes), log_record_limits=log_limits)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, export_timeout_millis=export_timeout_s * 1000,
                                                              **(batch_options or {})))
    return provider


def _http_url(endpoint: str, path: str) -> str:
    # OTEL_EXPORTER_OTLP_ENDPOINT is a base URL; the per-signal path is appended (OTel spec).
    return endpoint.rstrip("/") + "/" + path


def _insecure(endpoint: str) -> bool:
    return not endpoint.startswith("https://")
