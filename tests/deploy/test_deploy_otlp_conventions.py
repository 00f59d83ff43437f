"""The app's OTLP log records follow the OpenTelemetry conventions, checked on a real receiver.

The demo exports OTLP/HTTP to otlp_sink.OtlpSink (a server on 127.0.0.1) while its JSON lines go to
stdout; each OTLP record is paired with its stdout line by `seq`. A record carries the trace context
once (its own trace_id / span_id, which the CloudWatch exporter writes at the top level), not again as
attributes, and an exception as `exception.type` / `exception.message` / `exception.stacktrace`
(scrubbed); the JSON lines keep `trace_id`, `span_id`, `error_type`, `error_msg` and `stack`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import otlp_sink
import pytest

REPO = Path(__file__).resolve().parents[2]


def _env(data_dir: Path, sink: otlp_sink.OtlpSink) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DORA_", "AWS_"))}
    env.update({"CONTAINER_MODE": "true", "DORA_DATA_DIR": str(data_dir), "DORA_INSTANCE_ID": "i-0abc12345def67890",
                "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    return env


@pytest.fixture(scope="module")
def paired(tmp_path_factory) -> list[tuple[dict, dict]]:
    """(stdout line, exported cwLogBody) for every line of a seeded demo with faults."""
    data_dir = tmp_path_factory.mktemp("demo-conventions")
    exe = Path(sys.executable).with_name("dora-otel")
    with otlp_sink.OtlpSink() as sink:
        proc = subprocess.run([str(exe), "demo", "--cycles", "40", "--seed", "3", "--fault-rate", "0.3"],
                              capture_output=True, text=True, env=_env(data_dir, sink), cwd=data_dir,
                              timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = {json.loads(t)["seq"]: json.loads(t) for t in proc.stdout.splitlines() if t.strip()}
    records = {body["attributes"]["seq"]: body for _, body in sink.records()}
    assert set(records) == set(lines)
    resources = {body["attributes"]["seq"]: resource for resource, body in sink.records()}
    return [(lines[seq], dict(records[seq], _resource=resources[seq])) for seq in sorted(lines)]


def test_trace_context_is_carried_once_by_the_record_not_again_as_attributes(paired):
    traced = [(line, rec) for line, rec in paired if line.get("trace_id")]
    assert len(traced) > 100
    for line, rec in traced:
        assert (rec["trace_id"], rec["span_id"]) == (line["trace_id"], line["span_id"]), line
        assert "trace_id" not in rec["attributes"] and "span_id" not in rec["attributes"], rec["attributes"]
    # The JSON lines keep both ids, and the decision id stays an attribute (it names the decision).
    assert all(rec["attributes"]["decision_id"] == line["decision_id"] for line, rec in traced if "decision_id" in line)


def test_exceptions_use_the_semantic_convention_names_on_otlp_and_the_plan_names_in_lines(paired):
    failed = [(line, rec) for line, rec in paired if "error_type" in line]
    assert any(line["event_type"] == "ERROR" for line, _ in failed)
    assert any(line.get("status") in ("REJECTED", "UNKNOWN") for line, _ in failed)
    for line, rec in failed:
        attrs = rec["attributes"]
        assert attrs["exception.type"] == line["error_type"]
        assert attrs.get("exception.message") == line.get("error_msg")
        assert attrs.get("exception.stacktrace") == line.get("stack")
        assert not {"error_type", "error_msg", "stack"} & set(attrs), attrs


def test_an_exception_message_and_stack_are_scrubbed_on_otlp(tmp_path):
    script = textwrap.dedent("""
        import logging, dora_otel
        t = dora_otel.setup()
        try:
            raise RuntimeError("login failed: api_key=AKIAABCDEFGH12345678 authorization: Bearer abcdefgh12345678")
        except RuntimeError:
            logging.getLogger("dora_bot").exception("exchange login failed")
        assert t.shutdown() is True
    """)
    with otlp_sink.OtlpSink() as sink:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=_env(tmp_path, sink), cwd=tmp_path, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = [body for _, body in sink.records() if body.get("body") == "exchange login failed"]
    attrs = rec["attributes"]
    assert attrs["exception.type"] == "RuntimeError"
    exported = json.dumps(rec)
    assert "AKIAABCDEFGH12345678" not in exported and "abcdefgh12345678" not in exported
    assert "[REDACTED]" in attrs["exception.message"] and "[REDACTED]" in attrs["exception.stacktrace"]


@pytest.mark.parametrize("fields, expected", [
    ({"trace_id": "a" * 32, "span_id": "b" * 16, "seq": 1}, {"seq": 1}),
    # An id that is not a valid trace context is kept rather than lost.
    ({"trace_id": "not-hex", "span_id": "b" * 16}, {"trace_id": "not-hex", "span_id": "b" * 16}),
    ({"trace_id": "0" * 32, "span_id": "b" * 16}, {"trace_id": "0" * 32, "span_id": "b" * 16}),
    ({"error_type": "KeyError", "seq": 2}, {"exception.type": "KeyError", "seq": 2}),
])
def test_otlp_attribute_mapping(fields, expected):
    from dora_otel.logs import otlp_attributes

    assert otlp_attributes(fields) == expected


def test_explains_cloudwatch_backend_reads_real_records_back_into_the_lines_names(paired):
    from dora_otel.query.aws import line_from_event

    failed = [(line, rec) for line, rec in paired if "error_type" in line]
    assert failed
    for line, rec in failed:
        back = line_from_event(json.dumps(rec), "2026-12-01 00:00:45.123", "i-0abc12345def67890/run")
        assert {k: back.get(k) for k in ("error_type", "error_msg", "stack", "trace_id", "span_id")} == {
            k: line.get(k) for k in ("error_type", "error_msg", "stack", "trace_id", "span_id")}
        assert not any(k.startswith("exception.") for k in back)


def test_the_deploy_tests_model_of_an_otlp_event_is_what_the_app_really_exports(paired):
    # cw_shapes builds CloudWatch events from JSON lines for the alarm tests; it must agree with the
    # app's real OTLP records (through otlp_sink's exporter conversion), or those tests test a fiction.
    import cw_shapes

    wrong = []
    for line, rec in paired:
        real = {k: v for k, v in rec.items() if k != "_resource"}
        model = cw_shapes.otlp_record(line, rec["_resource"])
        if line["event_type"] in ("STARTUP", "SHUTDOWN"):  # their own env / bot_version fields (see cw_shapes)
            real["attributes"] = {k: v for k, v in real["attributes"].items() if k not in ("env", "bot_version")}
        if model != real:
            wrong.append((line["seq"], line["event_type"], model, real))
    assert not wrong, wrong[:2]
