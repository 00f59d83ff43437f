"""Tracing: the SDK TracerProvider, the sampler that keeps execution spans, and span export.

With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans leave through the OTLP exporter (grpc or
http/protobuf per `OTEL_EXPORTER_OTLP_PROTOCOL`) to the collector. Without it they go to
`<data_dir>/spans/spans.jsonl` as OTLP JSON (one export request per line, see spanfile.py),
the embedded default.
Both are behind a BatchSpanProcessor: best effort, never blocking the bot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

_log = logging.getLogger("dora_otel.tracing")

EVENT_TYPE_ATTR = "dora.event_type"


class ExecutionAwareSampler(Sampler):
    """Defers to the configured sampler, but never drops an execution span.

    A dropped span reaches no span processor, and the execution ledger is a span processor: so a
    span carrying `dora.event_type` that the delegate would drop is kept as RECORD_ONLY — recorded
    (the ledger sees it) but not sampled (exporters skip it).
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
        return trace_api.NonRecordingSpan(trace_api.SpanContext(trace_id, self._ids.generate_span_id(), is_remote=False))


def build_provider(*, resource_attributes: dict[str, str], endpoint: str | None, protocol: str,
                   data_dir: Path, export_timeout_s: float = 10.0, batch_options: dict[str, Any] | None = None,
                   span_limits: Any = None, exporter: Any = None) -> TracerProvider:
    """A TracerProvider with our sampler and the right exporter (or `exporter` when given). Does not
    install it globally. `batch_options` / `span_limits`: explicit BatchSpanProcessor arguments and
    SpanLimits (setup() passes validated values, so bad OTEL_BSP_* / limit variables cannot raise)."""
    provider = TracerProvider(resource=Resource.create(resource_attributes), span_limits=span_limits)
    provider.sampler = ExecutionAwareSampler(provider.sampler)  # tracers read it when created
    if exporter is None:
        exporter = _exporter(endpoint, protocol, data_dir, export_timeout_s)
    provider.add_span_processor(BatchSpanProcessor(exporter, export_timeout_millis=export_timeout_s * 1000,
                                                   **(batch_options or {})))
    return provider


def _exporter(endpoint: str | None, protocol: str, data_dir: Path, timeout_s: float) -> Any:
    if endpoint:
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            return HttpExporter(endpoint=_http_url(endpoint, "v1/traces"), timeout=timeout_s)
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=endpoint, insecure=_insecure(endpoint), timeout=timeout_s)
    from dora_otel.spanfile import SpanFileExporter

    return SpanFileExporter(spans_file_path(data_dir))


def build_log_provider(*, resource_attributes: dict[str, str], endpoint: str, protocol: str,
                       export_timeout_s: float = 10.0, batch_options: dict[str, Any] | None = None,
                       log_limits: Any = None) -> Any:
    """An OTel LoggerProvider exporting over OTLP (the logs API is still underscore-private)."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter

        exporter: Any = HttpLogExporter(endpoint=_http_url(endpoint, "v1/logs"), timeout=export_timeout_s)
    else:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter

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
