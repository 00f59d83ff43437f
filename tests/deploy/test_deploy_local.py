"""The local Jaeger setup (compose file + collector/config-local.yaml + docs) hangs together.

No Docker engine runs on the build machines, so the compose file is checked statically here.
"""

from __future__ import annotations

from pathlib import Path

import collector_schema as cs
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_PATH = REPO / "deploy" / "local" / "compose.yaml"
COMPOSE = yaml.safe_load(COMPOSE_PATH.read_text(encoding="utf-8"))


def test_compose_runs_jaeger_v2_and_the_adot_collector_at_pinned_versions():
    services = COMPOSE["services"]
    assert services["jaeger"]["image"] == "jaegertracing/jaeger:2.20.0"
    assert services["collector"]["image"] == "public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0"


def test_the_collector_container_uses_config_local_yaml():
    collector = COMPOSE["services"]["collector"]
    (volume,) = [v for v in collector["volumes"] if "config-local.yaml" in v]
    host, container, mode = volume.split(":")
    assert (COMPOSE_PATH.parent / host).resolve() == REPO / "collector" / "config-local.yaml"
    assert mode == "ro"
    assert collector["command"] == [f"--config={container}"]


def test_otlp_ports_reach_the_collector_and_the_ui_reaches_jaeger_on_loopback_only():
    collector_ports = COMPOSE["services"]["collector"]["ports"]
    assert "127.0.0.1:4317:4317" in collector_ports and "127.0.0.1:4318:4318" in collector_ports
    assert COMPOSE["services"]["jaeger"]["ports"] == ["127.0.0.1:16686:16686"]
    for service in COMPOSE["services"].values():
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", []))


def test_the_collector_forwards_to_the_jaeger_service_by_name():
    cfg = cs.load_config(REPO / "collector" / "config-local.yaml")
    host, port = cfg["exporters"]["otlp_grpc/jaeger"]["endpoint"].split(":")
    assert host in COMPOSE["services"] and port in COMPOSE["services"]["jaeger"]["expose"]


def test_jaeger_doc_gives_the_commands_and_is_honest_about_not_running_here():
    doc = (REPO / "docs" / "jaeger.md").read_text(encoding="utf-8")
    assert doc.startswith("## See a decision in Jaeger")
    assert "docker compose -f deploy/local/compose.yaml up -d" in doc
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 dora-otel demo --cycles 20" in doc
    assert "http://localhost:16686/trace/<decision_id>" in doc
    assert "dora-otel explain" in doc
    assert "no Docker engine" in doc
