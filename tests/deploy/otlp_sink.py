"""A throw-away OTLP/HTTP endpoint on 127.0.0.1 that keeps what the app exports, for tests.

`OtlpSink` accepts `POST /v1/logs` and `/v1/traces` (protobuf, optionally gzip), stores the decoded
ExportLogsServiceRequest messages and answers 200, so a real `dora-otel demo` can run with
OTEL_EXPORTER_OTLP_ENDPOINT pointing here. `cloudwatch_events()` turns the captured log records into
the CloudWatch event JSON the awscloudwatchlogs exporter would write (exporter.go `logToCWLog`,
raw_log false, contrib v0.156.0): body / attributes / resource as their raw values, trace and span
ids as lower-case hex when not all zero, zero values omitted.
"""

from __future__ import annotations

import base64
import gzip
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def any_value_raw(value: AnyValue) -> Any:
    """pcommon.Value.AsRaw(), then encoding/json's view of it (bytes become base64 text)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: any_value_raw(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [any_value_raw(v) for v in value.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, kind)


def _attrs(kvs: Any) -> dict[str, Any] | None:
    return {kv.key: any_value_raw(kv.value) for kv in kvs} or None


def _hex_id(raw: bytes) -> str | None:
    return raw.hex() if raw and any(raw) else None


class OtlpSink:
    def __init__(self) -> None:
        self.requests: list[ExportLogsServiceRequest] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/logs":
                    request = ExportLogsServiceRequest()
                    request.ParseFromString(body)
                    sink.requests.append(request)
                    reply = ExportLogsServiceResponse().SerializeToString()
                else:
                    reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def records(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(resource attributes, cwLogBody dict) for every captured log record."""
        for request in self.requests:
            for rl in request.resource_logs:
                resource = _attrs(rl.resource.attributes) or {}
                for sl in rl.scope_logs:
                    scope = None
                    if sl.scope.name:
                        scope = {k: v for k, v in {"name": sl.scope.name, "version": sl.scope.version,
                                                   "attributes": _attrs(sl.scope.attributes)}.items() if v}
                    for lr in sl.log_records:
                        body = {
                            "body": any_value_raw(lr.body),
                            "severity_number": lr.severity_number,
                            "severity_text": lr.severity_text,
                            "dropped_attributes_count": lr.dropped_attributes_count,
                            "flags": lr.flags,
                            "trace_id": _hex_id(lr.trace_id),
                            "span_id": _hex_id(lr.span_id),
                            "attributes": _attrs(lr.attributes),
                            "scope": scope,
                            "resource": resource or None,
                        }
                        yield resource, {k: v for k, v in body.items() if v not in (None, "", 0)}

    def cloudwatch_events(self) -> list[str]:
        return [json.dumps(body, separators=(",", ":")) for _, body in self.records()]
