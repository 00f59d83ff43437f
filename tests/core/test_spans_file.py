"""The local spans file is bounded: it rotates at DORA_SPANS_MAX_BYTES, keeps DORA_SPANS_BACKUPS old
files, and its readers (explain's local source) read the rotated files too."""

from __future__ import annotations

import io
import logging

from hypothesis import strategies as st

import dora_otel
from dora_otel._rotating import RotatingAppender
from dora_otel.config import Config
from dora_otel.spanfile import read_spans

MAX_BYTES, BACKUPS = 32 * 1024, 2
KEY_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"


def _start(tmp_path) -> dora_otel.Telemetry:
    """Telemetry writing its spans to the file under tmp_path (no ledger, lines to memory)."""
    return dora_otel.setup(data_dir=tmp_path, container_mode=True, ledger="off", stream=io.StringIO(),
                           install_signal_handlers=False, watchdog_seconds=0)


def _run_decisions(count: int) -> None:
    class Strategy:
        @dora_otel.decision_cycle(market="market")
        def quote(self, market):
            return [{"side": "yes", "price": 0.4, "size": 1}]

    @dora_otel.order_place
    def place(market, side, price, size, client_order_id=None):
        return {"order": {"order_id": f"o-{client_order_id}", "status": "resting"}}

    strategy = Strategy()
    for i in range(count):
        strategy.quote(f"KX{i % 7}")
        place(f"KX{i % 7}", "yes", 0.4, 1)


def test_a_long_run_keeps_the_spans_directory_within_its_bound(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "16")  # one batch is one line: keep lines small
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    monkeypatch.setenv("DORA_SPANS_MAX_BYTES", str(MAX_BYTES))
    monkeypatch.setenv("DORA_SPANS_BACKUPS", str(BACKUPS))
    telemetry = _start(tmp_path)
    try:
        _run_decisions(600)  # ~1,800 spans, several times the bound
        assert telemetry.flush(10)
    finally:
        telemetry.shutdown()
    spans_dir = tmp_path / "spans"
    files = sorted(p.name for p in spans_dir.iterdir())
    assert files == ["spans.jsonl", "spans.jsonl.1", "spans.jsonl.2"], files
    longest = max(len(line) for p in spans_dir.iterdir() for line in p.read_bytes().splitlines())
    total = sum(p.stat().st_size for p in spans_dir.iterdir())
    assert total <= (BACKUPS + 1) * MAX_BYTES + longest, (total, longest)
    # The reader reads every retained file, oldest first; the run wrote more than it kept.
    spans = read_spans(spans_dir / "spans.jsonl")
    assert len(spans) == sum(p.read_bytes().count(b'"spanId"') for p in spans_dir.iterdir())
    assert 0 < len({s["traceId"] for s in spans}) < 600  # the oldest decisions were rotated away
    starts = [int(s["startTimeUnixNano"]) for s in spans]
    assert starts[0] <= starts[len(starts) // 2] <= starts[-1]  # oldest file first


def test_read_spans_finds_a_decision_that_only_lives_in_a_rotated_file(tmp_path):
    telemetry = _start(tmp_path)
    try:
        _run_decisions(1)
        assert telemetry.flush(10)
        first = {s["traceId"] for s in read_spans(tmp_path / "spans" / "spans.jsonl")}
        appender = RotatingAppender(tmp_path / "spans" / "spans.jsonl", MAX_BYTES, 3)
        appender.rotate()  # what the exporter does when the file is full
        appender.close()
        _run_decisions(1)
        assert telemetry.flush(10)
    finally:
        telemetry.shutdown()
    assert (tmp_path / "spans" / "spans.jsonl.1").exists()
    spans = read_spans(tmp_path / "spans" / "spans.jsonl")
    assert first and first <= {s["traceId"] for s in spans} and len({s["traceId"] for s in spans}) == 2


def test_spans_file_bounds_come_from_the_environment_and_arguments(monkeypatch, caplog):
    monkeypatch.setenv("DORA_SPANS_MAX_BYTES", "1048576")
    monkeypatch.setenv("DORA_SPANS_BACKUPS", "7")
    config = Config.resolve({})
    assert (config.spans_max_bytes, config.spans_backups) == (1048576, 7)
    assert Config.resolve({"spans_backups": 0}).spans_backups == 0
    monkeypatch.setenv("DORA_SPANS_MAX_BYTES", "12")  # too small: warned, default kept
    with caplog.at_level(logging.WARNING):
        assert Config.resolve({}).spans_max_bytes == Config.spans_max_bytes
    assert "DORA_SPANS_MAX_BYTES" in caplog.text


def _lite_spans(tracer):
    """dora spans covering what the spans file encodes: plain, nested, status, events, scrubbing."""
    from decimal import Decimal

    from opentelemetry.trace import Status, StatusCode

    secret = f"-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----"
    root = tracer.start_span("decision", event=("DECISION_MADE", {
        "seq": 1, "market": "KX", "decision_id": "ab" * 16, "loop": 3, "target_count": 1, "spread": 0.05,
        "targets": [{"slot": 0, "side": "yes", "price": 0.45, "size": 10, "api_key": "sk-live-1234567"}],
        "expected_orders_hash": "cd" * 16}))
    from opentelemetry import trace as trace_api

    ctx = trace_api.set_span_in_context(root.api_span)
    spans = [root]
    plain = tracer.start_span("order.place", context=ctx, event=("ORDER_PLACE", {
        "seq": 2, "market": "KX", "decision_id": "ab" * 16, "side": "yes", "price": 0.45, "size": 10,
        "client_order_id": "c-1", "slot": 0, "note": None}))
    plain.set_attribute("dora.status", "ACCEPTED")
    spans.append(plain)
    odd = tracer.start_span("order.result", context=ctx, event=("ORDER_RESULT", {
        "seq": 3, "market": "KX", "status": "REJECTED", "error_msg": f"bad key {secret}", "big": 2**70,
        "nan": float("nan"), "flag": True, "amount": Decimal("1.5"), "token": "t0ps3cret-value",
        "token_count": 3, "stack": "not exported"}))
    odd.set_status(Status(StatusCode.ERROR, "rejected: Authorization: Bearer abcdefghijklmnop"))
    spans.append(odd)
    with_events = tracer.start_span("order.cancel", context=ctx, event=("ORDER_CANCEL", {"seq": 4, "market": "KX"}))
    with_events.add_event("retry", {"attempt": 2, "password": "hunter22"})
    with_events.record_exception(ValueError("boom"))
    spans.append(with_events)
    named = tracer.start_span("fetch secret=abcdef123456", context=ctx)
    named.set_status(Status(StatusCode.OK))
    spans.append(named)
    for span in reversed(spans):
        span.ended, span.end_ns = True, span.start_ns + 1000  # ended, without queueing them
        span.fields = dict(span.fields)
    return spans


def test_spans_written_straight_to_the_file_are_those_the_sdk_path_writes(tmp_path):
    """dora's spans bound only for the spans file are encoded on the event thread without the SDK
    objects: the OTLP JSON must be what ReadableSpan + the exporter's encoder give, scrubbing
    included (a credential in a field, a nested key, the status, an event, the name)."""
    import orjson

    from dora_otel import _runtime
    from dora_otel.spanfile import encode_request, encode_span

    telemetry = _start(tmp_path)
    try:
        tracer = _runtime.ACTIVE.tracer
        assert tracer._spans_file() is telemetry._span_exporter  # the spans file is the only output
        spans = _lite_spans(tracer)
        direct = [tracer._encoded(span) for span in spans]
        via_sdk = [encode_span(tracer.readable(span)) for span in spans]
        assert direct == via_sdk
        text = orjson.dumps(direct).decode()
        for leaked in ("hunter22", "sk-live-1234567", "t0ps3cret-value", KEY_BODY,
                       "abcdefghijklmnop", "abcdef123456"):
            assert leaked not in text
        # The whole request line too: the same resource and scope as the exporter's own.
        from dora_otel.spanfile import request_line

        line = request_line(tracer.resource.attributes, tracer.scope.name, [orjson.dumps(s) for s in direct])
        assert line == encode_request([tracer.readable(span) for span in spans])
    finally:
        telemetry.shutdown()


def test_the_event_thread_writes_dora_spans_to_the_file_and_flush_waits_for_them(tmp_path):
    telemetry = _start(tmp_path)
    try:
        _run_decisions(5)
        assert telemetry.flush(10)
        spans = read_spans(tmp_path / "spans" / "spans.jsonl")
        names = sorted(s["name"].split(" ")[0] for s in spans)
        assert names == sorted(["decision"] * 5 + ["order.place"] * 5 + ["order.result"] * 5)
        result = next(s for s in spans if s["name"] == "order.result")
        assert result["attributes"]["dora.event_type"] == "ORDER_RESULT"
        assert result["attributes"]["dora.status"] == "ACCEPTED"
        assert "parentSpanId" in result
    finally:
        telemetry.shutdown()


def test_a_second_span_processor_gets_dora_spans_through_the_sdk(tmp_path):
    """With any other processor on the provider (here an in-memory exporter), dora's spans are built
    as ReadableSpans and handed to every processor: the file and the other one see the same spans."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    telemetry = _start(tmp_path)
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        _run_decisions(3)
        assert telemetry.flush(10)
        in_file = read_spans(tmp_path / "spans" / "spans.jsonl")
        in_memory = exporter.get_finished_spans()
        assert len(in_file) == len(in_memory) == 9
        assert {s["spanId"] for s in in_file} == {format(s.context.span_id, "016x") for s in in_memory}
    finally:
        telemetry.shutdown()


def test_the_spans_file_bytes_are_the_sdk_paths_for_any_fields(tmp_path):
    """The event thread's span bytes (`_encoded_bytes`: the shared scrub verdict, spanfile.span_bytes)
    are the bytes of the SDK path (ReadableSpan, scrubbed, encoded by the exporter's encoder) for
    any event fields — lists of rows, credentials, sensitive names, odd values — with or without a
    status, a parent, an attribute set by name, and whether or not the event's line tested the
    same dict first."""
    import orjson
    from hypothesis import HealthCheck, given, settings
    from opentelemetry.trace import Status, StatusCode

    from dora_otel import _runtime, logs, scrub
    from dora_otel.spanfile import encode_span
    from tests.core.test_log_lines import _EVENT_FIELDS, _SCRUB_TEXTS

    telemetry = _start(tmp_path)
    formatter = logs.JsonFormatter({"service": "svc", "env": "dev", "bot_version": "1", "bot_run_id": "r"})
    scrub.register_secrets(["registered-secret-value!"])
    try:
        tracer = _runtime.ACTIVE.tracer

        @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(fields=_EVENT_FIELDS, status=st.sampled_from([None, "ok", "error"]), described=_SCRUB_TEXTS,
               extra=st.sampled_from([None, "ACCEPTED", "api_key=sk-live-123456"]), child=st.booleans(),
               line_first=st.booleans())
        def check(fields, status, described, extra, child, line_first):
            span = (tracer.start_child("order.place", 7, 9, True, ("ORDER_PLACE", fields)) if child
                    else tracer.start_root("decision KX", ("DECISION_MADE", fields)))
            if status == "ok":
                span.set_status(Status(StatusCode.OK))
            elif status == "error":
                span.set_status(Status(StatusCode.ERROR, described))
            if extra is not None:
                span.set_attribute("dora.status", extra)
            span.ended, span.end_ns = True, span.start_ns + 1000
            if line_first and not logs._PROTECTED.intersection(fields):
                formatter.encode(1.0, "INFO", "m", "dora_otel", fields, None, True)
            assert tracer._encoded_bytes(span) == orjson.dumps(encode_span(tracer.readable(span)))

        check()
    finally:
        scrub.clear_secrets()
        telemetry.shutdown()
