"""setup()/shutdown(), configuration errors, the event schema, OTLP export over a real socket,
SHUTDOWN on SIGTERM and at exit (subprocesses), and the local spans file."""

from __future__ import annotations

import http.server
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent import futures
from pathlib import Path
from typing import ClassVar

import pytest

import dora_otel
from dora_otel import identity
from dora_otel.spanfile import read_spans
from tests.core.conftest import start
from tests.core.test_decision_tracing import Exchange, Strategy

REPO = Path(__file__).resolve().parents[2]


def test_setup_twice_returns_the_same_handle_and_shutdown_restores_logging(tmp_path):
    root = logging.getLogger()
    mine = logging.StreamHandler(io.StringIO())
    root.addHandler(mine)
    try:
        captured = start(tmp_path)
        assert mine not in root.handlers  # the bot's own formatting is replaced by JSON lines
        assert dora_otel.setup() is captured.telemetry
        assert captured.telemetry.shutdown(reason="done") is True
        assert captured.telemetry.shutdown() is True  # harmless twice
        assert mine in root.handlers and dora_otel.current() is None
        assert captured.lines()[-1]["event_type"] == "SHUTDOWN" and captured.lines()[-1]["reason"] == "done"
    finally:
        root.removeHandler(mine)


def test_bad_argument_fails_early_naming_it():
    with pytest.raises(ValueError, match=r"env \('staging'\) must be one of demo, prod"):
        dora_otel.setup(env="staging")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['colour'\]"):
        dora_otel.setup(colour="red")
    with pytest.raises(ValueError, match=r"ledger_ttl_days \(7\) must be between 30 and 90"):
        dora_otel.setup(ledger_ttl_days=7)


def test_bad_environment_value_is_logged_and_the_default_used(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DORA_ENV", "staging")
    from dora_otel.config import Config

    with caplog.at_level(logging.WARNING, logger="dora_otel.config"):
        config = Config.resolve({})
    assert config.env == "demo"
    assert "ignoring DORA_ENV='staging'" in caplog.text


def test_arguments_win_over_environment(monkeypatch):
    monkeypatch.setenv("DORA_ENV", "prod")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "dora-canary")
    from dora_otel.config import Config

    assert Config.resolve({}).env == "prod"
    assert Config.resolve({"env": "demo"}).env == "demo"
    assert Config.resolve({}).service_name == "dora-canary"


def test_run_identity_formats_and_resource_attributes(tmp_path, monkeypatch):
    monkeypatch.setenv("BOT_VERSION", "v1.2.3")
    assert identity.resolve_bot_version() == "v1.2.3"
    monkeypatch.delenv("BOT_VERSION")
    assert identity.resolve_bot_version(cwd=str(tmp_path)) == "unknown"  # not a git checkout
    assert identity.new_bot_run_id(0).startswith("19700101-000000-")
    monkeypatch.setenv("DORA_INSTANCE_ID", "i-0abc")
    captured = start(tmp_path, bot_version="abc123", env="prod")
    attrs = dict(captured.telemetry.tracer_provider.resource.attributes)
    assert attrs["service.name"] == "dora-bot" and attrs["service.version"] == "abc123"
    assert attrs["deployment.environment.name"] == "prod"
    assert attrs["service.instance.id"] == f"i-0abc/{captured.telemetry.bot_run_id}"
    assert attrs["dora.bot_run_id"] == captured.telemetry.bot_run_id
    captured.telemetry.shutdown()


def test_strict_mode_raises_naming_the_event_and_field(cap):
    with pytest.raises(dora_otel.SchemaError, match="RISK_HALT event is missing key field 'daily_pnl'"):
        dora_otel.risk_halt("limit", None)
    with pytest.raises(dora_otel.SchemaError, match="HEARTBEAT field 'markets_active' must be a number"):
        dora_otel.heartbeat(markets_active="three", open_orders_count=1)


def test_non_strict_mode_logs_one_error_naming_the_field_and_keeps_the_event(tmp_path):
    captured = start(tmp_path, strict=False)
    dora_otel.risk_halt("limit", None)
    errors = captured.events("ERROR")
    assert len(errors) == 1 and "RISK_HALT event is missing key field 'daily_pnl'" in errors[0]["error_msg"]
    assert errors[0]["schema_event_type"] == "RISK_HALT"
    assert captured.events("RISK_HALT")[0]["reason"] == "limit"
    captured.telemetry.shutdown()


def test_non_container_mode_also_writes_the_rotating_file(tmp_path):
    captured = start(tmp_path, container_mode=False)
    logging.getLogger("bot").info("to both")
    captured.telemetry.shutdown()
    file_lines = (tmp_path / "logs" / "dora-bot.jsonl").read_text().splitlines()
    assert file_lines == captured.raw_lines()


def test_container_mode_writes_no_file(tmp_path):
    captured = start(tmp_path, container_mode=True)
    captured.telemetry.shutdown()
    assert not (tmp_path / "logs").exists()


def test_spans_file_holds_otlp_json_with_the_decision_trace(tmp_path):
    captured = start(tmp_path)
    for t in Strategy().quote("KXBTC"):
        Exchange().place_order("KXBTC", t["side"], t["price"], t["size"])
    decision_id = captured.events("DECISION_MADE")[0]["decision_id"]
    captured.telemetry.shutdown()
    raw = (tmp_path / "spans" / "spans.jsonl").read_text().splitlines()
    assert raw and all(json.loads(line)["resourceSpans"] for line in raw)
    spans = read_spans(tmp_path / "spans" / "spans.jsonl")
    assert sorted(s["name"] for s in spans if s["traceId"] == decision_id) == [
        "decision KXBTC", "order.place", "order.place", "order.result", "order.result"]
    assert all(s.get("parentSpanId") for s in spans if s["name"].startswith("order."))


def test_execution_spans_reach_the_ledger_even_when_the_sampler_drops_them(tmp_path, monkeypatch):
    from dora_otel.sinks.memory import MemorySink

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    sink = MemorySink()
    captured = start(tmp_path, ledger_sink=sink)
    for t in Strategy().quote("KXBTC"):
        Exchange().place_order("KXBTC", t["side"], t["price"], t["size"])
    decision_id = captured.events("DECISION_MADE")[0]["decision_id"]
    assert captured.spans() == []  # nothing sampled, nothing exported
    captured.telemetry.shutdown()
    kinds = sorted(r["event_type"] for r in sink.events_for_decision(decision_id))
    assert kinds == ["ORDER_PLACE", "ORDER_PLACE", "ORDER_RESULT", "ORDER_RESULT"]
    assert sink.decision(decision_id)["target_count"] == 2


# ------------------------------------------------------------------ OTLP over a real socket

class _HttpCollector(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _decode(requests):
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans, logs = [], []
    for kind, body in requests:
        if kind == "traces":
            req = ExportTraceServiceRequest.FromString(body)
            spans += [(rs.resource, s) for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        else:
            req = ExportLogsServiceRequest.FromString(body)
            logs += [(rl.resource, r) for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    return spans, logs


def _attrs(kvs):
    out = {}
    for kv in kvs:
        v = kv.value
        out[kv.key] = v.string_value or v.int_value or v.double_value or v.bool_value
    return out


def _run_one_decision_and_check(tmp_path, endpoint, protocol, requests):
    captured = start(tmp_path, otlp_endpoint=endpoint, otlp_protocol=protocol)
    for t in Strategy().quote("KXBTC"):
        Exchange().place_order("KXBTC", t["side"], t["price"], t["size"])
    decision_id = captured.events("DECISION_MADE")[0]["decision_id"]
    assert captured.telemetry.shutdown() is True
    spans, logs = _decode(requests)
    traced = [s for _, s in spans if s.trace_id.hex() == decision_id]
    assert sorted(s.name for s in traced) == ["decision KXBTC", "order.place", "order.place",
                                              "order.result", "order.result"]
    resource = _attrs(spans[0][0].attributes)
    assert resource["dora.bot_run_id"] == captured.telemetry.bot_run_id and resource["service.name"] == "dora-bot"
    by_type = {}
    for _, record in logs:
        attributes = _attrs(record.attributes)
        by_type.setdefault(attributes.get("event_type"), []).append((record, attributes))
    assert {"STARTUP", "DECISION_MADE", "ORDER_PLACE", "ORDER_RESULT", "SHUTDOWN"} <= set(by_type)
    record, attributes = by_type["ORDER_RESULT"][0]
    assert attributes["status"] == "ACCEPTED" and attributes["decision_id"] == decision_id
    assert record.trace_id.hex() == decision_id and record.body.string_value.startswith("order ")
    assert "_dora" not in attributes and "_dora_line" not in attributes


def test_otlp_http_export_reaches_a_receiver_over_a_real_socket(tmp_path):
    _HttpCollector.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HttpCollector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        requests = []

        class View(list):
            def __iter__(self):
                return iter([("traces" if p.endswith("/v1/traces") else "logs", b) for p, b in _HttpCollector.received])

        _run_one_decision_and_check(tmp_path, endpoint, "http/protobuf", View(requests))
        assert {p for p, _ in _HttpCollector.received} == {"/v1/traces", "/v1/logs"}
    finally:
        server.shutdown()
        server.server_close()


def test_otlp_grpc_export_reaches_a_receiver_over_a_real_socket(tmp_path):
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[tuple[str, bytes]] = []

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            received.append(("traces", request.SerializeToString()))
            return trace_service_pb2.ExportTraceServiceResponse()

    class Logs(logs_service_pb2_grpc.LogsServiceServicer):
        def Export(self, request, context):
            received.append(("logs", request.SerializeToString()))
            return logs_service_pb2.ExportLogsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        _run_one_decision_and_check(tmp_path, f"http://127.0.0.1:{port}", "grpc", received)
    finally:
        server.stop(0)


# ------------------------------------------------------------------ process lifecycle

BOT_SCRIPT = textwrap.dedent("""
    import sys, time, logging
    import dora_otel

    telemetry = dora_otel.setup(container_mode=True, data_dir=sys.argv[1], ledger="off")

    class S:
        @dora_otel.decision_cycle
        def quote(self, market):
            return [{"side": "yes", "price": 0.4, "size": 1}]

    S().quote("KXBTC")
    logging.getLogger("bot").info("looping")
    print("READY", file=sys.stderr, flush=True)
    if sys.argv[2] == "sleep":
        time.sleep(60)
""")


def _spawn(tmp_path, mode):
    return subprocess.Popen([sys.executable, "-c", BOT_SCRIPT, str(tmp_path), mode], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_sigterm_logs_shutdown_last_and_flushes_spans(tmp_path):
    proc = _spawn(tmp_path, "sleep")
    assert proc.stderr.readline().strip() == "READY"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["event_type"] == "STARTUP"
    assert lines[-1]["event_type"] == "SHUTDOWN" and lines[-1]["reason"] == "SIGTERM" and lines[-1]["flushed"] is True
    decision_id = next(l for l in lines if l["event_type"] == "DECISION_MADE")["decision_id"]
    assert decision_id in {s["traceId"] for s in read_spans(tmp_path / "spans" / "spans.jsonl")}


def test_normal_interpreter_exit_logs_shutdown_last(tmp_path):
    proc = _spawn(tmp_path, "exit")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    last = json.loads(out.splitlines()[-1])
    assert last["event_type"] == "SHUTDOWN" and last["reason"] == "exit" and last["graceful"] is True


def _python(code: str, tmp_path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO), **env))


def test_importing_dora_otel_does_not_import_boto3(tmp_path):
    proc = _python("""
        import sys, dora_otel
        boto = sorted(m for m in sys.modules if "boto" in m)
        assert "boto3" not in sys.modules and "botocore" not in sys.modules, boto
        print("ok")
    """, tmp_path)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_setup_installs_the_global_provider_so_other_instrumentation_joins_the_trace(tmp_path):
    proc = _python("""
        import sys
        from opentelemetry import trace
        import dora_otel
        t = dora_otel.setup(container_mode=True, data_dir=sys.argv[0] if False else ".", ledger="off")
        assert trace.get_tracer_provider() is t.tracer_provider

        class S:
            @dora_otel.decision_cycle
            def quote(self, market):
                return [{"side": "yes", "price": 0.4, "size": 1}]

        @dora_otel.order_place
        def place(market, side, price, size):
            with trace.get_tracer("http-client").start_as_current_span("HTTP POST /orders") as http:
                pass
            return {"order_id": "x"}

        S().quote("M")
        place("M", "yes", 0.4, 1)
        t.shutdown()
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    spans = read_spans(tmp_path / "spans" / "spans.jsonl")
    place = next(s for s in spans if s["name"] == "order.place")
    http = next(s for s in spans if s["name"] == "HTTP POST /orders")
    assert http["traceId"] == place["traceId"] and http["parentSpanId"] == place["spanId"]


def test_otel_sdk_disabled_keeps_json_lines_with_decision_ids_and_exports_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    captured = start(tmp_path)
    for t in Strategy().quote("KXBTC"):
        Exchange().place_order("KXBTC", t["side"], t["price"], t["size"])
    decision = captured.events("DECISION_MADE")[0]
    assert len(decision["decision_id"]) == 32 and int(decision["decision_id"], 16) != 0
    assert {l["decision_id"] for l in captured.events("ORDER_RESULT")} == {decision["decision_id"]}
    captured.telemetry.shutdown()
    assert captured.spans() == [] and not (tmp_path / "spans").exists()
    assert captured.telemetry.ledger is None


def test_heartbeat_carries_health_counters(tmp_path):
    from dora_otel.sinks.memory import MemorySink

    captured = start(tmp_path, ledger_sink=MemorySink())
    dora_otel.heartbeat(markets_active=1, open_orders_count=0)
    beat = captured.events("HEARTBEAT")[0]
    for key in ("ledger_enqueued", "ledger_shipped", "ledger_retried", "ledger_rejected", "ledger_journal_bytes",
                "ledger_oldest_unshipped_age_s", "logs_dropped"):
        assert key in beat, key
    captured.telemetry.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_keeps_writing_log_lines(tmp_path):
    proc = _python("""
        import io, os, sys, logging
        import dora_otel
        t = dora_otel.setup(container_mode=True, data_dir=".", ledger="off", install_signal_handlers=False)
        pid = os.fork()
        if pid == 0:
            logging.getLogger("child").info("hello from the child")
            dora_otel.current().flush(5)
            os._exit(0)
        os.waitpid(pid, 0)
        t.shutdown()
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert any(line["message"] == "hello from the child" for line in lines)


def test_shutdown_with_an_unreachable_collector_still_ends_and_logs_shutdown(tmp_path):
    from tests.servers import free_port

    proc = _python(f"""
        import dora_otel
        t = dora_otel.setup(container_mode=True, data_dir=".", ledger="off", shutdown_timeout_s=1.0,
                            otlp_endpoint="http://127.0.0.1:{free_port()}", otlp_protocol="http/protobuf")

        class S:
            @dora_otel.decision_cycle
            def quote(self, market):
                return [{{"side": "yes", "price": 0.4, "size": 1}}]

        S().quote("M")
        t.shutdown(reason="deploy")
    """, tmp_path)  # _python's subprocess timeout fails the test if shutdown hangs
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["event_type"] == "SHUTDOWN" and last["reason"] == "deploy"
