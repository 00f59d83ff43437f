"""Where dora-otel's spans and OTLP log records go: our own TracerProvider or the bot's, and the OTLP
exporters for each signal.

`select_provider()` looks at the global OpenTelemetry TracerProvider before setup() builds anything:

- nothing installed (the API's ProxyTracerProvider), or a provider an earlier setup() in this process
  built: "own" — dora-otel builds its provider and exporter (spans file or OTLP), as it always did;
- an SDK `TracerProvider` the bot (or `opentelemetry-instrument`) installed: "adopt" — dora's spans go
  through THAT provider's processors and exporters; no second provider, no spans file, no second OTLP
  trace exporter. See `Adoption`;
- any other provider (a vendor's, a no-op one): it cannot be adopted; "own", and setup() says so in one
  WARNING line (the global one stays the bot's: the OTel API allows one).

Adoption never changes the bot's provider: dora's tracer is a private copy of the provider's tracer
with three differences (all documented in the README, "Using your own OpenTelemetry set-up"):

- its resource is the bot's resource merged with dora's run identity (`merged_resource`: the bot's
  attributes, service.name included, plus dora's service.instance.id, service.version,
  deployment.environment.name and dora.bot_run_id, which win): the SDK
  Resource is immutable and shared by every tracer of the provider, so only dora's spans carry the
  merged one; the bot's own spans keep the bot's resource untouched;
- its sampler is `ExecutionAwareSampler` around the bot's sampler (execution spans are never dropped:
  the ledger must see them; exporters still skip what the bot's sampler would drop);
- its span processor is `AdoptedSpanProcessor`: the execution ledger first, then the bot's own
  processors, which receive dora's spans scrubbed (their exporters are not ours to wrap).

`otlp_span_exporter` / `otlp_log_provider` build the OTLP exporters for a resolved `OtlpTarget`
(config.Config.otlp_target: the spec's per-signal precedence), endpoint passed exactly as resolved.

Runs on the thread calling setup() (the processor's methods: on the bot's threads, see its docstring).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import weakref
from typing import Any, NamedTuple

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from dora_otel.config import OtlpTarget
from dora_otel.tracing import ExecutionAwareSampler, scrub_span

_log = logging.getLogger("dora_otel")

# Providers dora-otel built in this process: a later setup() finds one of them installed globally
# and must not "adopt" its own (shut-down) provider.
_OURS: weakref.WeakSet[Any] = weakref.WeakSet()
UNKNOWN_SERVICE = "unknown_service"  # the SDK's placeholder service.name (Resource.create without one)


def mark_ours(provider: Any) -> None:
    """Remember that dora-otel built `provider` (setup()'s thread)."""
    try:
        _OURS.add(provider)
    except TypeError:
        pass


class Selection(NamedTuple):
    """What `select_provider` found: `mode` "own" or "adopt"; `provider` the bot's SDK provider when
    adopting; `foreign` the type name of a provider that could not be adopted (else None)."""

    mode: str
    provider: TracerProvider | None = None
    foreign: str | None = None


def select_provider() -> Selection:
    """Inspect the global TracerProvider (setup()'s thread). Never raises."""
    try:
        installed = trace.get_tracer_provider()
    except Exception:
        return Selection("own")
    if isinstance(installed, trace.ProxyTracerProvider) or installed in _OURS:
        return Selection("own")
    if isinstance(installed, TracerProvider):
        return Selection("adopt", installed)
    return Selection("own", foreign=f"{type(installed).__module__}.{type(installed).__qualname__}")


# The run identity: dora's values win, so spans, JSON lines and ledger records name the run alike (and
# `service.instance.id` = "{instance}/{bot_run_id}" keeps one CloudWatch stream per run; the SDK
# fills it with a random UUID when the bot sets none).
RUN_IDENTITY_KEYS = frozenset({"service.instance.id", "service.version", "deployment.environment.name"})


def merged_resource(bot: Resource, identity: dict[str, str]) -> Resource:
    """The bot's resource merged with dora's run identity: every attribute of the bot's resource is
    kept (service.name included, unless it is the SDK's `unknown_service` placeholder), except the
    run-identity keys (`RUN_IDENTITY_KEYS` and `dora.*`), which are dora's."""
    attributes: dict[str, Any] = dict(identity)
    for key, value in bot.attributes.items():
        if key in RUN_IDENTITY_KEYS or key.startswith("dora."):
            continue
        if key == "service.name" and str(value).startswith(UNKNOWN_SERVICE):
            continue
        attributes[key] = value
    return Resource(attributes, bot.schema_url)


class AdoptedSpanProcessor(SpanProcessor):
    """The span processor of dora's tracer on an adopted provider: dora's own processors (the
    execution ledger, added by setup()) see each span first and unchanged, then the bot's provider's
    processors, which get it scrubbed (scrub.py policy) at `on_end`: the bot's exporters are not
    wrapped in our ScrubbingSpanExporter.

    `on_start` / `on_end` run on the thread that starts / ends the span (the bot's thread); they
    never raise into it."""

    def __init__(self, bot_processor: Any) -> None:
        self.bot_processor = bot_processor
        # dora's processors; the name and the tuple-replaced-on-add are the SDK's
        # SynchronousMultiSpanProcessor's, which code looking for the ledger processor reads.
        self._span_processors: tuple[SpanProcessor, ...] = ()

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Add one of dora's processors (the ledger's), called before the bot's."""
        self._span_processors += (processor,)

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        for processor in self._span_processors:
            try:
                processor.on_start(span, parent_context=parent_context)
            except Exception:
                pass
        try:
            self.bot_processor.on_start(span, parent_context=parent_context)
        except Exception:
            pass

    def _on_ending(self, span: Span) -> None:
        try:
            self.bot_processor._on_ending(span)
        except Exception:
            pass

    def on_end(self, span: ReadableSpan) -> None:
        for processor in self._span_processors:
            try:
                processor.on_end(span)
            except Exception:
                pass
        try:
            self.bot_processor.on_end(scrub_span(span))
        except Exception:
            pass

    def shutdown(self) -> None:
        """Shut down dora's processors only; the bot's belong to the bot's provider."""
        for processor in self._span_processors:
            try:
                processor.shutdown()
            except Exception:
                pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        ok = True
        for processor in (*self._span_processors, self.bot_processor):
            try:
                ok = bool(processor.force_flush(timeout_millis)) and ok
            except Exception:
                ok = False
        return ok


class Adoption(NamedTuple):
    """dora's view of an adopted provider: the tracer its spans start on, the Resource they carry,
    and the span processor they reach (add dora's processors to it, not to the provider)."""

    tracer: Any
    resource: Resource
    processor: AdoptedSpanProcessor


def adopt(provider: TracerProvider, identity: dict[str, str], version: str) -> Adoption:
    """dora's tracer on the bot's `provider` (see the module docstring). The tracer is a copy of the
    provider's own tracer for our scope, with `sampler`, `resource` and `span_processor` (public
    attributes of the SDK Tracer) replaced; the copy is not in the provider's tracer cache, so the
    bot's provider and tracers are left exactly as they were."""
    base = provider.get_tracer("dora_otel", version)
    tracer = copy.copy(base)
    resource = merged_resource(provider.resource, identity)
    processor = AdoptedSpanProcessor(base.span_processor)  # type: ignore[attr-defined]
    tracer.sampler = ExecutionAwareSampler(base.sampler)  # type: ignore[attr-defined]
    tracer.resource = resource  # type: ignore[attr-defined]
    tracer.span_processor = processor  # type: ignore[attr-defined]
    return Adoption(tracer, resource, processor)


def otel_log_handlers(handlers: list[logging.Handler]) -> list[logging.Handler]:
    """The OpenTelemetry logging handlers among `handlers` (the SDK's or
    opentelemetry-instrumentation-logging's `LoggingHandler`, or a subclass): the bot's own OTel log
    export, which setup() leaves on the root logger and does not duplicate."""
    return [h for h in handlers
            if any(c.__name__ == "LoggingHandler" and c.__module__.startswith("opentelemetry.")
                   for c in type(h).__mro__)]


class ScrubDoraRecords(logging.Filter):
    """Put on a bot's OpenTelemetry LoggingHandler that setup() leaves in place: dora-otel's own
    records (loggers `dora_otel*`: events, errors, notices) reach that handler only as a copy with
    flat, scrubbed attributes and a scrubbed message (the same view dora's own OTLP log export
    gives), never as they are — the bot's exporter is not ours to wrap, and an event's fields may
    carry text from an exception. A copy that cannot be built is not handed on (fail closed). The
    bot's own records pass untouched.

    Runs on the thread that logged (Python calls handler filters there), like the handler itself."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__("dora-otel-scrub")
        self._handler = handler
        self._passing = threading.local()  # the copy this thread is handing on: let it through

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if not (name == "dora_otel" or name.startswith("dora_otel.")) or record is getattr(
                self._passing, "record", None):
            return True
        try:
            self._passing.record = _scrubbed_copy(record)
            self._handler.handle(self._passing.record)
        except Exception:
            pass
        finally:
            self._passing.record = None
        return False


def _scrubbed_copy(record: logging.LogRecord) -> logging.LogRecord:
    from dora_otel import logs
    from dora_otel.scrub import scrub_record, scrub_text

    flat = {k: _attribute(v) for k, v in logs.event_fields(record).items() if v is not None}
    flat = logs.otlp_attributes(scrub_record(flat))
    copy = logging.makeLogRecord({
        "name": record.name, "levelno": record.levelno, "levelname": record.levelname,
        "msg": scrub_text(record.getMessage()), "args": None, "created": record.created, "msecs": record.msecs,
        "pathname": record.pathname, "lineno": record.lineno, "funcName": record.funcName})
    copy.__dict__.update(flat)
    return copy


def _attribute(value: Any) -> Any:
    if type(value) in (str, int, bool, float):
        return value
    try:
        return json.dumps(value, default=str, separators=(",", ":"))
    except Exception:
        return "[unserialisable]"


def watch_bot_log_handlers(handlers: list[logging.Handler]) -> list[tuple[logging.Handler, logging.Filter]]:
    """Add `ScrubDoraRecords` to each of the bot's OTel log handlers; returns what to remove at
    shutdown (`unwatch`)."""
    added: list[tuple[logging.Handler, logging.Filter]] = []
    for handler in handlers:
        flt = ScrubDoraRecords(handler)
        handler.addFilter(flt)
        added.append((handler, flt))
    return added


def unwatch(added: list[tuple[logging.Handler, logging.Filter]]) -> None:
    for handler, flt in added:
        try:
            handler.removeFilter(flt)
        except Exception:
            pass


def otlp_span_exporter(target: OtlpTarget, timeout_s: float) -> Any:
    """The OTLP span exporter for `target`, its endpoint passed exactly as resolved."""
    if target.protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter(endpoint=target.endpoint, timeout=timeout_s)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )

    return GrpcExporter(endpoint=target.endpoint, insecure=_insecure(target.endpoint), timeout=timeout_s)


def otlp_log_provider(target: OtlpTarget, resource_attributes: dict[str, Any], timeout_s: float,
                      batch_options: dict[str, Any] | None = None, log_limits: Any = None) -> Any:
    """An OTel LoggerProvider exporting to `target` (the logs API is still underscore-private)."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    exporter: Any
    if target.protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import (
            OTLPLogExporter as HttpLogExporter,
        )

        exporter = HttpLogExporter(endpoint=target.endpoint, timeout=timeout_s)
    else:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
            OTLPLogExporter as GrpcLogExporter,
        )

        exporter = GrpcLogExporter(endpoint=target.endpoint, insecure=_insecure(target.endpoint), timeout=timeout_s)
    provider = LoggerProvider(resource=Resource.create(resource_attributes), log_record_limits=log_limits)
    provider.add_log_record_processor(BatchLogRecordProcessor(
        exporter, export_timeout_millis=timeout_s * 1000, **(batch_options or {})))
    return provider


def _insecure(endpoint: str) -> bool:
    return not endpoint.startswith("https://")
