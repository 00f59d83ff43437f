"""The real demo's output, delivered on both paths, raises exactly the alarms it should.

Runs `dora-otel demo --cycles 40 --seed 3 --fault-rate 0.3` with CONTAINER_MODE=true (JSON lines on
stdout only) and a temporary DORA_DATA_DIR, then delivers every stdout line the two ways production
does — over OTLP (cw_shapes.otlp_event) and through journald (cw_shapes.journald_event) — and checks
that each alarm's metric filters match exactly the ERROR lines, the ORDER_RESULT lines whose status
is not ACCEPTED, and the RISK_HALT lines, on both paths.

A second run exports real OTLP/HTTP to a local sink (otlp_sink.OtlpSink) instead of converting
stdout: the app's own log records, turned into CloudWatch events the way the exporter does, must
raise the same alarms and land in the stream <DORA_INSTANCE_ID>/<bot_run_id>.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cw_alarms
import cw_shapes
import pytest

from dora_otel import identity

OBS = cw_alarms.load()


def _dora_otel() -> str:
    exe = Path(sys.executable).with_name("dora-otel")
    found = str(exe) if exe.exists() else shutil.which("dora-otel")
    if found is None:
        pytest.fail("the dora-otel console script is not installed (pip install -e '.[test]')")
    return found


@pytest.fixture(scope="module")
def demo_lines(tmp_path_factory) -> list[str]:
    data_dir = tmp_path_factory.mktemp("demo-data")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DORA_", "AWS_"))}
    env.update({"CONTAINER_MODE": "true", "DORA_DATA_DIR": str(data_dir)})
    proc = subprocess.run([_dora_otel(), "demo", "--cycles", "40", "--seed", "3", "--fault-rate", "0.3"],
                          capture_output=True, text=True, env=env, cwd=data_dir, timeout=120, check=False)
    assert proc.returncode == 0, f"demo exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, "the demo wrote nothing on stdout"
    return lines


def _expected(line: dict, alarm: str) -> bool:
    kind = line.get("event_type")
    return {"errors": kind == "ERROR",
            "order-failures": kind == "ORDER_RESULT" and line.get("status") != "ACCEPTED",
            "risk-halt": kind == "RISK_HALT"}[alarm]


def _resource(line: dict) -> dict[str, str]:
    return identity.resource_attributes(service_name=line["service"], env=line["env"],
                                        bot_version=line["bot_version"], bot_run_id=line["bot_run_id"],
                                        instance_id="i-0abc12345def67890")


def test_demo_stdout_is_json_lines_only(demo_lines):
    for text in demo_lines:
        assert isinstance(json.loads(text), dict), text


def test_demo_exercises_every_alarm(demo_lines):
    parsed = [json.loads(t) for t in demo_lines]
    for alarm in ("errors", "order-failures", "risk-halt"):
        assert any(_expected(line, alarm) for line in parsed), f"the seeded demo raised no {alarm} event"


@pytest.mark.parametrize("alarm", ["errors", "order-failures", "risk-halt"])
@pytest.mark.parametrize("path", ["otlp", "journald"])
def test_alarm_filters_match_exactly_the_lines_they_should(demo_lines, alarm, path):
    filters = OBS.filters_for(alarm, path)
    assert filters
    wrong = []
    for text in demo_lines:
        line = json.loads(text)
        event = (cw_shapes.otlp_event(line, _resource(line)) if path == "otlp"
                 else cw_shapes.journald_event(text))
        counted = any(f.pattern.matches(event) for f in filters)
        if counted is not _expected(line, alarm):
            wrong.append(f"{'counted' if counted else 'missed'}: {text[:300]}")
    assert not wrong, f"{alarm} on {path}: {len(wrong)} wrong\n" + "\n".join(wrong[:10])


def test_each_alarm_sees_the_same_count_on_both_paths(demo_lines):
    otlp = [cw_shapes.otlp_event(json.loads(t), _resource(json.loads(t))) for t in demo_lines]
    journald = [cw_shapes.journald_event(t) for t in demo_lines]
    both = OBS.counts({"otlp": otlp, "journald": journald})
    only_otlp = OBS.counts({"otlp": otlp})
    only_journald = OBS.counts({"journald": journald})
    for alarm in OBS.alarms.values():
        assert alarm.value(both) == alarm.value(only_otlp) == alarm.value(only_journald) > 0, alarm.key


# --- the same, with the app's real OTLP export instead of a conversion ------------------------------

@pytest.fixture(scope="module")
def real_otlp(tmp_path_factory):
    """Run the demo exporting OTLP/HTTP to a local sink; return (stdout lines, sink)."""
    import otlp_sink

    data_dir = tmp_path_factory.mktemp("demo-otlp")
    with otlp_sink.OtlpSink() as sink:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DORA_", "AWS_"))}
        env.update({"CONTAINER_MODE": "true", "DORA_DATA_DIR": str(data_dir),
                    "DORA_INSTANCE_ID": "i-0abc12345def67890",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
        proc = subprocess.run([_dora_otel(), "demo", "--cycles", "40", "--seed", "3", "--fault-rate", "0.3"],
                              capture_output=True, text=True, env=env, cwd=data_dir, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [t for t in proc.stdout.splitlines() if t.strip()], sink


def test_every_stdout_line_is_also_exported_over_otlp(real_otlp):
    lines, sink = real_otlp
    assert len(sink.cloudwatch_events()) == len(lines)


@pytest.mark.parametrize("alarm", ["errors", "order-failures", "risk-halt"])
def test_alarm_filters_match_the_apps_real_otlp_records(real_otlp, alarm):
    _, sink = real_otlp
    filters = OBS.filters_for(alarm, "otlp")
    events = sink.cloudwatch_events()
    for event in events:
        attrs = json.loads(event).get("attributes", {})
        counted = any(f.pattern.matches(event) for f in filters)
        assert counted is _expected(attrs, alarm), event[:400]
    assert any(_expected(json.loads(e).get("attributes", {}), alarm) for e in events)


def test_the_apps_real_resource_gives_one_stream_per_run(real_otlp):
    import collector_schema as cs
    import cwl_placeholders as ph

    lines, sink = real_otlp
    run_id = json.loads(lines[0])["bot_run_id"]
    stream = cs.load_config(Path(__file__).resolve().parents[2] / "collector" / "config.yaml")[
        "exporters"]["awscloudwatchlogs"]["log_stream_name"]
    streams = {ph.resolve(stream, resource) for resource, _ in sink.records()}
    assert streams == {f"i-0abc12345def67890/{run_id}"}
