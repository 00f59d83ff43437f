"""The local spans file: OTLP JSON (one ExportTraceServiceRequest object per line, per batch),
written when no OTLP endpoint is set — the embedded default that `dora-otel explain` reads.

Why not opentelemetry-exporter-otlp-json-file: it measured 53 µs per span here to encode, and that
runs on a background thread that holds the GIL, so it taxed the trading loop by ~4x the cost of the
cycle's own log lines. This encoder builds the same OTLP JSON shape with orjson in a few µs.

The file rotates (`spans.jsonl` -> `spans.jsonl.1` … `.N`, size and count from
DORA_SPANS_MAX_BYTES / DORA_SPANS_BACKUPS), so the spans directory stays within
(backups + 1) x max_bytes plus one batch; `read_spans` reads the rotated files too, oldest first.
Spans arrive here already scrubbed: through the SDK (tracing.ScrubbingSpanExporter wraps this
exporter), or dora's own, encoded on the event thread (`export_encoded`, see spans.py).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from dora_otel._mypyc import mypyc_attr
from dora_otel._rotating import RotatingAppender, rotated_paths

_log = logging.getLogger("dora_otel.spanfile")
_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}


def attribute_value(value: Any) -> dict[str, Any]:
    """One attribute value in OTLP JSON form ({"stringValue": ...}, {"intValue": "..."}, ...)."""
    kind = type(value)
    if kind is str:
        return {"stringValue": value}
    if kind is bool:
        return {"boolValue": value}
    if kind is int:
        return {"intValue": str(value)}  # proto3 JSON writes int64 as a string
    if kind is float:
        return {"doubleValue": value if math.isfinite(value) else str(value)}
    if isinstance(value, (tuple, list)):
        return {"arrayValue": {"values": [attribute_value(v) for v in value]}}
    return {"stringValue": str(value)}


def attribute_list(attrs: Any) -> list[dict[str, Any]]:
    """Attributes in OTLP JSON form: [{"key": ..., "value": {"stringValue": ...}}, ...]."""
    return [{"key": k, "value": attribute_value(v)} for k, v in attrs.items()] if attrs else []


def encode_span(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.context
    status = span.status
    return span_json(ctx.trace_id, ctx.span_id, span.parent.span_id if span.parent is not None else None,
                     span.name, span.kind.value + 1,  # SDK SpanKind.INTERNAL is 0; OTLP's SPAN_KIND_INTERNAL is 1
                     span.start_time, span.end_time, attribute_list(span.attributes), status.status_code,
                     status.description, [(e.name, e.attributes, e.timestamp) for e in span.events])


def span_json(trace_id: int, span_id: int, parent_id: int | None, name: str, kind: int, start_ns: Any,
              end_ns: Any, attributes: list[dict[str, Any]], status_code: StatusCode, description: str | None,
              events: Sequence[tuple[str, Any, int]]) -> dict[str, Any]:
    """One span in OTLP JSON form, from its parts (`encode_span` for an SDK span; spans.LiteTracer
    encodes dora's own spans with it on the event thread). `attributes`: from `attribute_list`."""
    out: dict[str, Any] = {
        "traceId": format(trace_id, "032x"),
        "spanId": format(span_id, "016x"),
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(end_ns),
        "attributes": attributes,
    }
    if parent_id is not None:
        out["parentSpanId"] = format(parent_id, "016x")
    if status_code is not StatusCode.UNSET:
        out["status"] = {"code": _STATUS[status_code], **({"message": description} if description else {})}
    if events:
        out["events"] = [{"timeUnixNano": str(ts), "name": n, "attributes": attribute_list(a)} for n, a, ts in events]
    return out


_dumps = orjson.dumps
_UNSET = StatusCode.UNSET


def span_bytes(trace_id: int, span_id: int, parent_id: int | None, name: str, kind: int, start_ns: int,
               end_ns: int, attributes: bytes, status_code: StatusCode, description: str | None) -> bytes:
    """`orjson.dumps(span_json(...))` for a span without events, the same bytes, assembled by hand
    (the event thread encodes every dora span bound for the file: this saves the dict and the
    id formatting calls). `attributes`: the attribute list as JSON (`orjson.dumps(attribute_list)`)."""
    parent = b',"parentSpanId":"%016x"' % parent_id if parent_id is not None else b""
    status = b""
    if status_code is not _UNSET:
        status = b',"status":%b' % _dumps({"code": _STATUS[status_code],
                                           **({"message": description} if description else {})})
    return (b'{"traceId":"%032x","spanId":"%016x","name":%b,"kind":%d,"startTimeUnixNano":"%d",'  # (one copy)
            b'"endTimeUnixNano":"%d","attributes":%b%b%b}' % (trace_id, span_id, _dumps(name), kind, start_ns,
                                                               end_ns, attributes, parent, status))


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """One ExportTraceServiceRequest for spans sharing one resource and scope (ours always do)."""
    first = spans[0]
    scope = first.instrumentation_scope
    return request_line(first.resource.attributes, scope.name if scope else "dora_otel",
                        [orjson.dumps(encode_span(s)) for s in spans])


def request_line(resource_attributes: Any, scope_name: str, spans: list[bytes]) -> bytes:
    """One ExportTraceServiceRequest line for spans already encoded (orjson bytes of `span_json`):
    the same bytes as encoding the whole request at once (compact JSON), spliced."""
    request = {"resourceSpans": [{
        "resource": {"attributes": attribute_list(resource_attributes)},
        "scopeSpans": [{"scope": {"name": scope_name}, "spans": []}],
    }]}
    empty = orjson.dumps(request)  # ... "spans":[]}]}]}
    return empty[:-len(_CLOSE)] + b",".join(spans) + _CLOSE + b"\n"


_CLOSE = b"]}]}]}"


DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_BACKUPS = 3


@mypyc_attr(native_class=False)  # (a Python base class: see dora_otel._mypyc)
class SpanFileExporter(SpanExporter):
    """Appends one OTLP JSON line per batch to `path`, rotating at `max_bytes` and keeping `backups`
    old files. Runs on the BatchSpanProcessor's worker thread; a write failure is counted
    (`spans_dropped`), logged once per failure episode (and once when writing works again) and
    reported as FAILURE, never raised."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._file = RotatingAppender(path, max_bytes, backups)
        self._file.write(b"")  # open now: an unusable directory shows at setup, not at the first export
        self._closed = False
        self._lock = threading.Lock()
        self.spans_dropped = 0
        self._failing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        return self._write(functools.partial(encode_request, spans), len(spans))

    def export_encoded(self, resource_attributes: Any, scope_name: str, spans: list[bytes]) -> bool:
        """Write spans already in OTLP JSON form (`span_json` as bytes: dora's own, encoded and scrubbed on the
        event thread) as one request line, counting and reporting a failure like `export`. Any
        thread; never raises. True when written."""
        if not spans:
            return True
        result = self._write(functools.partial(request_line, resource_attributes, scope_name, spans), len(spans))
        return result is SpanExportResult.SUCCESS

    # (functools.partial, not a lambda, for `encode`: mypyc cannot compile a closure in a method of a
    # class that is not native, which this one is not — see dora_otel._mypyc)
    def _write(self, encode: Callable[[], bytes], count: int) -> SpanExportResult:
        try:
            line = encode()
            with self._lock:
                if self._closed:
                    return SpanExportResult.FAILURE
                self._file.write(line)
        except Exception as exc:  # noqa: BLE001 - a span export never raises
            self.spans_dropped += count
            if not self._failing:
                self._failing = True
                _log.error("could not write %d spans to %s (%s: %s); spans are dropped until it works again",
                           count, self._path, type(exc).__name__, exc,
                           extra={"_dora": {"event_type": "ERROR", "target": "spans_file"}})
            return SpanExportResult.FAILURE
        if self._failing:
            self._failing = False
            _log.info("writing spans to %s again; %d spans dropped so far", self._path, self.spans_dropped,
                      extra={"_dora": {"target": "spans_file", "spans_dropped": self.spans_dropped}})
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def read_spans(path: Path) -> list[dict[str, Any]]:
    """Every span in a spans file and its rotated files (`path.N` … `path.1`, then `path`: oldest
    first) as a flat dict: traceId, spanId, parentSpanId, name, times, `attributes` as a plain
    {key: value} dict, status, events. A torn or unreadable line is skipped."""
    out: list[dict[str, Any]] = []
    for file in rotated_paths(path):
        try:
            fh = file.open("rb")
        except OSError:  # rotated away between listing and opening
            continue
        with fh:
            for raw in fh:
                try:
                    request = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                for rs in request.get("resourceSpans", []):
                    for ss in rs.get("scopeSpans", []):
                        for span in ss.get("spans", []):
                            span = dict(span)
                            span["attributes"] = {a["key"]: _plain(a["value"]) for a in span.get("attributes", [])}
                            out.append(span)
    return out


def _plain(value: dict[str, Any]) -> Any:
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_plain(v) for v in value["arrayValue"].get("values", [])]
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    return None
