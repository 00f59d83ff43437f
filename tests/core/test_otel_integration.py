"""dora-otel inside a bot's own OpenTelemetry set-up, and the OTLP per-signal variables.

Adoption depends on the process-global TracerProvider (settable once per process), so those tests run
the bot in a subprocess; each prints what it saw as one JSON object on its last stdout line. The
per-signal routing tests export over real sockets to receivers on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest

import dora_otel
from dora_otel.spanfile import read_spans
from tests.core.conftest import start
from tests.core.test_decision_tracing import Exchange, Strategy

REPO = Path(__file__).resolve().parents[2]

# A bot that sets up OpenTelemetry itself (as `opentelemetry-instrument` would) before dora_otel.setup().
BOT_WITH_OTEL = textwrap.dedent("""
    import io, json, logging, sys
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    data_dir, sampler, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    bot_spans = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "mm-bot", "team": "quant"}),
                              sampler=ALWAYS_OFF if sampler == "off" else ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(bot_spans))
    trace.set_tracer_provider(provider)
    bot_logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(bot_logs))
    otel_handler = LoggingHandler(logger_provider=logger_provider)
    logging.getLogger().addHandler(otel_handler)

    import dora_otel
    from dora_otel.sinks.memory import MemorySink
    from tests.core.test_decision_tracing import Exchange, Strategy

    stream = io.StringIO()
    sink = MemorySink()
    t = dora_otel.setup(container_mode=False, data_dir=data_dir, ledger_sink=sink, stream=stream,
                        install_signal_handlers=False, watchdog_seconds=0, **extra)
    root_otel_handlers = sum(1 for h in logging.getLogger().handlers if h is otel_handler)
    for target in Strategy().quote("KXBTC"):
        Exchange().place_order("KXBTC", target["side"], target["price"], target["size"])
    logging.getLogger("bot").info("bot line after setup")

    class Leaky:  # the exchange's error text carries the API key
        @dora_otel.order_place
        def place_order(self, market, side, price, size, client_order_id=None):
            import os
            err = RuntimeError("denied for key " + os.environ["KALSHI_API_KEY"])
            err.status_code = 400
            raise err

    try:
        Leaky().place_order("KXBTC", "yes", 0.4, 1)
    except RuntimeError:
        pass
    with trace.get_tracer("bot").start_as_current_span("bot.work"):
        pass
    global_is_bots = trace.get_tracer_provider() is provider
    t.shutdown(reason="done")
    with trace.get_tracer("bot").start_as_current_span("bot.after_shutdown"):
        pass  # the bot's provider still works: dora-otel flushed it, never shut it down
    lines = [json.loads(l) for l in stream.getvalue().splitlines() if l]
    decision_id = [l for l in lines if l["event_type"] == "DECISION_MADE"][0]["decision_id"]
    print(json.dumps({
        "decision_id": decision_id,
        "bot_run_id": t.bot_run_id,
        "global_is_bots": global_is_bots,
        "owns_provider": t.owns_provider,
        "provider_is_bots": t.tracer_provider is provider,
        "logger_provider": t.logger_provider is not None,
        "root_otel_handlers": root_otel_handlers,
        "handler_still_there": otel_handler in logging.getLogger().handlers,
        "spans": [{"name": s.name, "trace_id": format(s.context.trace_id, "032x"),
                   "parent": format(s.parent.span_id, "016x") if s.parent else None,
                   "resource": dict(s.resource.attributes),
                   "attributes": {k: v for k, v in (s.attributes or {}).items() if isinstance(v, str)}}
                  for s in bot_spans.get_finished_spans()],
        "bot_log_bodies": [str(r.log_record.body) for r in bot_logs.get_finished_logs()],
        "bot_log_attributes": [{k: str(v) for k, v in (r.log_record.attributes or {}).items()}
                               for r in bot_logs.get_finished_logs()],
        "bot_exports": "".join(s.to_json() for s in bot_spans.get_finished_spans())
                       + json.dumps([[str(r.log_record.body), {k: str(v) for k, v in
                                     (r.log_record.attributes or {}).items()}] for r in bot_logs.get_finished_logs()]),
        "ledger": sorted(r["event_type"] for r in sink.events_for_decision(decision_id)),
        "ledger_decision": sink.decision(decision_id) is not None,
        "lines": [l["event_type"] for l in lines],
        "messages": [l.get("message", "") for l in lines],
    }))
""")


SECRET = "kalshi-secret-7f3a9c2e5b"
# two accepted orders and the rejected one whose error text carries SECRET
LEDGER = ["ORDER_PLACE"] * 3 + ["ORDER_RESULT"] * 3


def _run_bot(tmp_path: Path, sampler: str = "on", setup_args: dict[str, Any] | None = None,
             **env: str) -> dict[str, Any]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.update(PYTHONPATH=str(REPO), DORA_INSTANCE_ID="i-0abc", BOT_VERSION="v9", KALSHI_API_KEY=SECRET, **env)
    proc = subprocess.run([sys.executable, "-c", BOT_WITH_OTEL, str(tmp_path), sampler, json.dumps(setup_args or {})],
                          cwd=REPO,
                          capture_output=True, text=True, timeout=60, env=environ)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_bots_own_sdk_tracer_provider_receives_dora_spans_and_no_second_pipeline_starts(tmp_path):
    seen = _run_bot(tmp_path)
    decision_id = seen["decision_id"]
    traced = [s for s in seen["spans"] if s["trace_id"] == decision_id]
    assert sorted(s["name"] for s in traced) == ["decision KXBTC"] + ["order.place"] * 3 + ["order.result"] * 3
    assert all(s["parent"] for s in traced if s["name"].startswith("order."))
    assert seen["global_is_bots"] and seen["provider_is_bots"] and seen["owns_provider"] is False
    assert not (tmp_path / "spans").exists()  # no spans file: the bot's exporters are the only ones
    assert "bot.after_shutdown" in {s["name"] for s in seen["spans"]}  # shutdown() left the bot's provider up
    # The execution ledger still mirrors execution spans through its processor.
    assert seen["ledger"] == LEDGER
    assert seen["ledger_decision"] is True


def test_dora_spans_carry_the_bots_resource_merged_with_the_run_identity(tmp_path):
    seen = _run_bot(tmp_path)
    decision = next(s for s in seen["spans"] if s["name"] == "decision KXBTC")
    resource = decision["resource"]
    # the bot's attributes win where both set one (service.name); dora's run identity is added
    assert resource["service.name"] == "mm-bot" and resource["team"] == "quant"
    assert resource["dora.bot_run_id"] == seen["bot_run_id"]
    assert resource["service.instance.id"] == f"i-0abc/{seen['bot_run_id']}"
    assert resource["service.version"] == "v9" and resource["deployment.environment.name"] == "demo"
    # the bot's own spans keep the bot's resource, untouched
    bot_span = next(s for s in seen["spans"] if s["name"] == "bot.work")
    assert bot_span["resource"]["service.name"] == "mm-bot" and "dora.bot_run_id" not in bot_span["resource"]


def test_the_bots_sampler_drops_dora_spans_from_its_exporters_but_the_ledger_keeps_execution_records(tmp_path):
    seen = _run_bot(tmp_path, sampler="off")
    assert [s for s in seen["spans"] if s["trace_id"] == seen["decision_id"]] == []
    assert seen["ledger"] == LEDGER


def test_the_bots_otel_log_handler_stays_once_and_no_second_otlp_log_export_starts(tmp_path):
    # Even with an OTLP endpoint in the environment, the bot's own handler is the OTel log export.
    seen = _run_bot(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
                    OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    assert seen["root_otel_handlers"] == 1 and seen["handler_still_there"]
    assert seen["logger_provider"] is False
    assert seen["bot_log_bodies"].count("bot line after setup") == 1
    assert "DECISION_MADE" in seen["lines"]  # dora's JSON lines are written as before
    assert not (tmp_path / "spans").exists()


def test_with_adopt_provider_false_dora_keeps_its_own_pipeline_next_to_the_bots(tmp_path):
    seen = _run_bot(tmp_path, setup_args={"adopt_provider": False})
    assert seen["owns_provider"] is True and seen["global_is_bots"] and not seen["provider_is_bots"]
    assert [s for s in seen["spans"] if s["trace_id"] == seen["decision_id"]] == []
    assert seen["decision_id"] in {s["traceId"] for s in read_spans(tmp_path / "spans" / "spans.jsonl")}
    assert seen["ledger"] == LEDGER


def test_the_bots_otel_exporters_get_dora_spans_and_records_scrubbed_with_flat_attributes(tmp_path):
    seen = _run_bot(tmp_path)
    assert SECRET not in seen["bot_exports"]  # the error text reached both, masked
    assert "denied for key" in seen["bot_exports"]
    results = [a for a in seen["bot_log_attributes"] if a.get("event_type") == "ORDER_RESULT"]
    assert len(results) == 3 and {a["status"] for a in results} == {"ACCEPTED", "REJECTED"}
    assert "_dora" not in seen["bot_log_attributes"][0]


def test_a_provider_that_is_not_the_sdks_is_reported_and_dora_keeps_its_own_pipeline(tmp_path):
    code = textwrap.dedent("""
        import io, json, sys
        from opentelemetry import trace
        class VendorProvider(trace.NoOpTracerProvider):
            pass
        vendor = VendorProvider()
        trace.set_tracer_provider(vendor)
        import dora_otel
        from tests.core.test_decision_tracing import Strategy
        stream = io.StringIO()
        t = dora_otel.setup(container_mode=True, data_dir=sys.argv[1], ledger="off", stream=stream,
                            install_signal_handlers=False, watchdog_seconds=0)
        Strategy().quote("KXBTC")
        t.shutdown()
        lines = [json.loads(l) for l in stream.getvalue().splitlines() if l]
        print(json.dumps({"lines": lines, "global_is_vendor": trace.get_tracer_provider() is vendor,
                          "owns": t.owns_provider}))
    """)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=dict(environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    warnings = [l for l in seen["lines"] if "cannot be adopted" in l.get("message", "")]
    assert len(warnings) == 1 and "VendorProvider" in warnings[0]["message"]
    assert warnings[0]["level"] in ("WARNING", "INFO")
    assert seen["global_is_vendor"] and seen["owns"] is True
    decision_id = next(l for l in seen["lines"] if l["event_type"] == "DECISION_MADE")["decision_id"]
    assert decision_id in {s["traceId"] for s in read_spans(tmp_path / "spans" / "spans.jsonl")}


# ------------------------------------------------------------------ per-signal OTLP variables


class _Receiver:
    """An OTLP/HTTP receiver on 127.0.0.1 recording (path, body) of every POST."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self) -> set[str]:
        return {path for path, _ in self.received}

    def trace_ids(self, path: str) -> set[str]:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        out = set()
        for p, body in self.received:
            if p == path:
                request = ExportTraceServiceRequest.FromString(body)
                out |= {s.trace_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}
        return out

    def log_event_types(self, path: str) -> list[str]:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

        out = []
        for p, body in self.received:
            if p == path:
                request = ExportLogsServiceRequest.FromString(body)
                for rl in request.resource_logs:
                    for sl in rl.scope_logs:
                        for record in sl.log_records:
                            attrs = {kv.key: kv.value.string_value for kv in record.attributes}
                            out.append(attrs.get("event_type", ""))
        return out


@pytest.fixture
def receivers():
    made: list[_Receiver] = []

    def make() -> _Receiver:
        made.append(_Receiver())
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def clean_otel_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _one_decision(tmp_path: Path, **overrides: Any) -> tuple[Any, str]:
    captured = start(tmp_path, container_mode=False, **overrides)
    for target in Strategy().quote("KXBTC"):
        Exchange().place_order("KXBTC", target["side"], target["price"], target["size"])
    decision_id = captured.events("DECISION_MADE")[0]["decision_id"]
    assert captured.telemetry.shutdown() is True
    return captured, decision_id


def test_a_traces_endpoint_alone_sends_traces_over_otlp_and_logs_stay_local(tmp_path, receivers, clean_otel_env):
    traces = receivers()
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces.base + "/custom/traces")  # used as given
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    captured, decision_id = _one_decision(tmp_path)
    assert traces.paths() == {"/custom/traces"}  # no /v1/logs anywhere: logs are not exported
    assert decision_id in traces.trace_ids("/custom/traces")
    assert captured.telemetry.logger_provider is None
    startup = captured.events("STARTUP")[0]  # says where each signal went
    assert startup["otlp_traces"] == traces.base + "/custom/traces (http/protobuf)" and startup.get("otlp_logs") is None
    file_lines = [json.loads(line) for line in (tmp_path / "logs" / "dora-bot.jsonl").read_text().splitlines()]
    assert decision_id in {line.get("decision_id") for line in file_lines}
    assert not (tmp_path / "spans" / "spans.jsonl").exists()


def test_a_logs_endpoint_alone_sends_logs_over_otlp_and_spans_stay_in_the_spans_file(tmp_path, receivers,
                                                                                       clean_otel_env):
    logs = receivers()
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", logs.base + "/custom/logs")
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf")
    _, decision_id = _one_decision(tmp_path)
    assert logs.paths() == {"/custom/logs"}  # no traces request
    assert {"STARTUP", "DECISION_MADE", "ORDER_RESULT"} <= set(logs.log_event_types("/custom/logs"))
    assert decision_id in {s["traceId"] for s in read_spans(tmp_path / "spans" / "spans.jsonl")}
    assert decision_id in (tmp_path / "logs" / "dora-bot.jsonl").read_text()


def test_a_per_signal_protocol_and_endpoint_win_over_the_base_ones(tmp_path, receivers, clean_otel_env):
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    grpc_trace_ids: set[str] = set()

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            grpc_trace_ids.update(s.trace_id.hex() for rs in request.resource_spans
                                  for ss in rs.scope_spans for s in ss.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        base = receivers()
        clean_otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base.base)
        clean_otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        clean_otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}")
        clean_otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
        _, decision_id = _one_decision(tmp_path)
    finally:
        server.stop(0)
    assert decision_id in grpc_trace_ids  # traces: the per-signal endpoint, over gRPC
    assert base.paths() == {"/v1/logs"}  # logs: the base endpoint with /v1/logs appended, over HTTP
    assert "DECISION_MADE" in base.log_event_types("/v1/logs")


def test_setup_arguments_win_over_the_per_signal_variables(tmp_path, receivers, clean_otel_env):
    used, ignored = receivers(), receivers()
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ignored.base + "/v1/traces")
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", ignored.base + "/v1/logs")
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")
    # the base argument beats the logs variables; the per-signal argument (used as given) the traces ones
    _, decision_id = _one_decision(tmp_path, otlp_endpoint=used.base, otlp_protocol="http/protobuf",
                                   otlp_traces_endpoint=used.base + "/mine/traces")
    assert ignored.received == []
    assert used.paths() == {"/mine/traces", "/v1/logs"} and decision_id in used.trace_ids("/mine/traces")


def test_bad_per_signal_values_are_one_error_each_naming_the_variable(tmp_path, clean_otel_env):
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "carrier-pigeon")
    clean_otel_env.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "collector:4318")
    captured = start(tmp_path)
    errors = [line for line in captured.events("ERROR") if line.get("error_type") == "ConfigError"]
    captured.telemetry.shutdown()
    assert sorted(e["env_var"] for e in errors) == ["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                                                   "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
    assert any("'carrier-pigeon'" in e["message"] for e in errors)
    assert captured.telemetry.logger_provider is None  # the bad endpoint enabled nothing


def test_spans_the_spans_file_could_not_write_are_counted_in_stats_heartbeat_and_shutdown(tmp_path):
    (tmp_path / "spans").mkdir()
    (tmp_path / "spans" / "spans.jsonl").symlink_to("/dev/full")  # every write fails: ENOSPC
    captured = start(tmp_path, strict=False)
    for target in Strategy().quote("KXBTC"):
        Exchange().place_order("KXBTC", target["side"], target["price"], target["size"])
    captured.flush()
    assert captured.telemetry.stats()["spans_dropped"] >= 5
    dora_otel.heartbeat(markets_active=1, open_orders_count=0)
    heartbeat = captured.events("HEARTBEAT")[0]
    assert heartbeat["spans_dropped"] >= 5 and "ledger_spans_dropped" not in heartbeat
    captured.telemetry.shutdown()
    shutdown = captured.lines()[-1]
    assert shutdown["event_type"] == "SHUTDOWN" and shutdown["spans_dropped"] >= 5
