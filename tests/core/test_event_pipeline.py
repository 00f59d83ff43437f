"""The event-first hot path: dora's spans are real parts of the bot's traces (other OpenTelemetry
instrumentation inside a decorated call lands as a child), span attributes are flat and readable,
and under overload the event queue drops (and counts) lines and spans but never a ledger record."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace

import dora_otel
from dora_otel.sinks.memory import MemorySink

from .conftest import start

TARGETS = [{"side": "yes", "price": 0.45, "size": 10}, {"side": "no", "price": 0.50, "size": 10}]


@dora_otel.decision_cycle
def quote(market: str) -> list[dict[str, Any]]:
    return list(TARGETS)


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = b'{"order": {"order_id": "o-http", "status": "resting"}}'
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def exchange_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/portfolio/orders"
    server.shutdown()
    server.server_close()


def test_an_http_client_span_inside_order_place_is_the_order_spans_child_in_the_exported_trace(cap, exchange_url):
    # The bot's own instrumentation: an SDK span around a real HTTP call (what an HTTP client
    # instrumentation creates), started from the provider the bot would use.
    http_tracer = cap.telemetry.tracer_provider.get_tracer("bot.http")

    @dora_otel.order_place
    def place(market, side, price, size, client_order_id=None):
        with http_tracer.start_as_current_span("POST /portfolio/orders", kind=trace.SpanKind.CLIENT):
            request = urllib.request.Request(exchange_url, data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                return __import__("json").loads(response.read())

    targets = quote("KXBTC")
    place("KXBTC", **targets[0])
    (decision,) = cap.spans("decision")
    (order,) = cap.spans("order.place")
    (http_span,) = cap.spans("POST /portfolio/orders")
    assert http_span.parent is not None and http_span.parent.span_id == order.context.span_id
    assert http_span.context.trace_id == order.context.trace_id == decision.context.trace_id
    assert order.parent.span_id == decision.context.span_id
    (line,) = cap.events("ORDER_RESULT")
    assert line["status"] == "ACCEPTED" and line["decision_id"] == format(decision.context.trace_id, "032x")


def test_inside_decorated_code_the_current_span_carries_the_decisions_and_the_orders_ids(cap):
    seen: dict[str, Any] = {}

    @dora_otel.decision_cycle
    def strategy(market):
        seen["decision"] = trace.get_current_span().get_span_context()
        return list(TARGETS)

    @dora_otel.order_place
    def place(market, side, price, size, client_order_id=None):
        seen["order"] = trace.get_current_span().get_span_context()
        return {"order": {"order_id": "o-1", "status": "resting"}}

    place("KXBTC", **strategy("KXBTC")[0])
    (decided,) = cap.events("DECISION_MADE")
    (order_span,) = cap.spans("order.place")
    (decision_span,) = cap.spans("decision")
    assert format(seen["decision"].trace_id, "032x") == decided["decision_id"]
    assert seen["decision"].span_id == decision_span.context.span_id
    assert seen["order"].trace_id == decision_span.context.trace_id
    assert seen["order"].span_id == order_span.context.span_id
    assert trace.get_current_span().get_span_context().is_valid is False  # nothing leaks out


def test_execution_spans_carry_flat_readable_attributes_and_no_json_record(cap):
    @dora_otel.order_place
    def place(market, side, price, size, client_order_id=None):
        return {"order": {"order_id": "o-77", "status": "resting"}}

    place("KXBTC", **quote("KXBTC")[1])
    (order,) = cap.spans("order.place")
    (result,) = cap.spans("order.result")
    (decision,) = cap.spans("decision")
    for span in cap.spans():
        assert "dora.record" not in span.attributes
    attrs = order.attributes
    assert attrs["dora.event_type"] == "ORDER_PLACE" and attrs["dora.market"] == "KXBTC"
    assert attrs["dora.side"] == "no" and attrs["dora.price"] == 0.5 and attrs["dora.size"] == 10
    assert attrs["dora.slot"] == 1 and len(attrs["dora.client_order_id"]) == 36
    assert attrs["dora.status"] == "ACCEPTED"
    assert result.attributes["dora.order_id"] == "o-77" and result.attributes["dora.status"] == "ACCEPTED"
    assert isinstance(result.attributes["dora.latency_ms"], float)
    assert result.parent.span_id == decision.context.span_id
    assert decision.attributes["dora.target_count"] == 2 and decision.attributes["dora.market"] == "KXBTC"


class _BlockedStream:
    """stdout that blocks the event thread until released (an overloaded consumer)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.release.wait(30)
        self.lines.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_a_flood_beyond_the_queue_bound_drops_and_counts_lines_and_spans_but_loses_no_ledger_record(tmp_path):
    stream, sink = _BlockedStream(), MemorySink()
    cap = start(tmp_path, stream=stream, ledger_sink=sink, ledger="off")
    pipeline = cap.telemetry._pipeline
    try:
        pipeline.max_pending = 40
        cap.telemetry.ledger.flush(5)
        sink_before = len(sink.all_records())

        @dora_otel.order_place
        def place(market, side, price, size, client_order_id=None):
            return {"order": {"order_id": f"o-{client_order_id}", "status": "resting"}}

        cycles = 60
        for _ in range(cycles):  # 6 lines and 5 spans per cycle: far beyond 40 queued items
            for target in quote("KXFLOOD"):
                place("KXFLOOD", **target)
        stats = pipeline.stats()
        assert stats["logs_dropped"] > 0 and stats["spans_dropped"] > 0
        stream.release.set()
        assert cap.telemetry.flush(20)
        written = [line for line in "".join(stream.lines).split("\n") if '"event_type"' in line]
        events = ("DECISION_MADE", "ORDER_PLACE", "ORDER_RESULT")
        emitted = cycles * 5  # 1 DECISION_MADE + 2 x (ORDER_PLACE + ORDER_RESULT)
        ours = [line for line in written if any(f'"event_type":"{e}"' in line for e in events)]
        assert len(ours) + pipeline.stats()["logs_dropped"] >= emitted > len(ours)
        assert len(cap.spans()) + pipeline.stats()["spans_dropped"] == cycles * 5
        cap.telemetry.ledger.flush(10)
        records = sink.all_records()[sink_before:]
        executions = [r for r in records if r.get("kind") == "execution"]
        decisions = [r for r in records if r.get("kind") == "decision"]
        assert len(decisions) == cycles
        assert sorted(r["event_type"] for r in executions) == ["ORDER_PLACE"] * 120 + ["ORDER_RESULT"] * 120
        seqs = [int(line.split('"seq":')[1].split(",")[0]) for line in ours]
        assert seqs == sorted(seqs)  # lines keep their order
    finally:
        stream.release.set()
        cap.telemetry.shutdown(reason="test")


def test_helpers_keep_their_event_with_a_runtime_keyword_and_an_int_beyond_64_bits(cap):
    dora_otel.record_fill("KXP", "yes", 0.5, 1, 0.0, order_id="o-x", runtime="bot-loop", huge=2**80)
    dora_otel.heartbeat(1, 0, runtime="bot-loop", huge=-(2**90))
    dora_otel.risk_halt("limit", -1.0, runtime="bot-loop", huge=2**70)
    (fill,) = cap.events("FILL")
    (beat,) = cap.events("HEARTBEAT")
    (halt,) = cap.events("RISK_HALT")
    assert fill["runtime"] == beat["runtime"] == halt["runtime"] == "bot-loop"
    assert fill["huge"] == str(2**80) and beat["huge"] == str(-(2**90)) and halt["huge"] == str(2**70)
    (span,) = cap.spans("fill")
    assert span.attributes["dora.huge"] == str(2**80) and span.attributes["dora.runtime"] == "bot-loop"
