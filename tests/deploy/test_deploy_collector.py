"""The collector configs use only components and keys shipped in ADOT v0.49.0, wired as we intend."""

from __future__ import annotations

import re
from pathlib import Path

import collector_schema as cs
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "collector").glob("*.yaml"))
RELEASE = "aws-otel-collector v0.49.0 (contrib v0.156.0, core v0.156.0)"


def test_both_collector_configs_exist():
    assert {p.name for p in CONFIGS} >= {"config.yaml", "config-local.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_collector_config_uses_only_shipped_components_and_accepted_keys(path):
    assert cs.check_config(cs.load_config(path)) == []


def test_production_config_listens_on_loopback_only():
    cfg = cs.load_config(REPO / "collector" / "config.yaml")
    found = cs.endpoints(cfg)
    assert found["receivers.otlp.protocols.grpc.endpoint"] == "127.0.0.1:4317"
    assert found["receivers.otlp.protocols.http.endpoint"] == "127.0.0.1:4318"
    assert all(v.startswith("127.0.0.1:") for v in found.values()), found


def test_production_logs_go_to_the_env_app_group_through_a_persistent_queue():
    cfg = cs.load_config(REPO / "collector" / "config.yaml")
    cwl = cfg["exporters"]["awscloudwatchlogs"]
    assert cs.expand_env(cwl["log_group_name"], {"DORA_ENV": "prod"}) == "/dora-bot/prod/app"
    assert cwl["log_stream_name"] == "{InstanceId}"
    assert cwl["raw_log"] is False
    assert cwl["sending_queue"]["enabled"] is True
    assert cwl["sending_queue"]["storage"] == "file_storage"
    # Retries never give up on their own: an outage must not drop queued batches.
    assert cwl["retry_on_failure"]["max_elapsed_time"] in (0, "0", "0s")
    assert cfg["extensions"]["file_storage"]["directory"].startswith("/var/lib/aws-otel-collector/")


def test_production_pipelines_send_logs_to_cloudwatch_and_traces_to_xray():
    pipes = cs.load_config(REPO / "collector" / "config.yaml")["service"]["pipelines"]
    assert pipes["logs"]["exporters"] == ["awscloudwatchlogs"]
    assert pipes["traces"]["exporters"] == ["awsxray"]
    for pipe in pipes.values():
        kinds = [cs.component_type(p) for p in pipe["processors"]]
        assert kinds == ["memory_limiter", "resource_detection", "resource", "batch"]


def test_production_queue_is_synced_to_disk_so_a_reboot_keeps_it():
    storage = cs.load_config(REPO / "collector" / "config.yaml")["extensions"]["file_storage"]
    assert storage["fsync"] is True


def test_production_traces_are_not_queued_and_the_config_says_so():
    # awsxray has no sending_queue in this release: the decision not to queue traces must be written
    # down where an operator looks (the config and the CloudWatch README), not only known.
    text = (REPO / "collector" / "config.yaml").read_text(encoding="utf-8")
    assert "DECISION: traces are NOT queued" in text
    assert "sending_queue" not in cs.load_config(REPO / "collector" / "config.yaml")["exporters"]["awsxray"]
    readme = (REPO / "deploy" / "README-cloudwatch.md").read_text(encoding="utf-8")
    assert "Traces are not queued" in readme and "fsync: true" in readme


def test_production_resource_detection_keeps_the_apps_attributes():
    rd = cs.load_config(REPO / "collector" / "config.yaml")["processors"]["resource_detection"]
    assert rd["detectors"] == ["env", "ec2"]
    assert rd["override"] is False


def test_local_config_forwards_traces_to_jaeger_and_prints_with_debug():
    cfg = cs.load_config(REPO / "collector" / "config-local.yaml")
    assert cfg["exporters"]["otlp_grpc/jaeger"] == {"endpoint": "jaeger:4317", "tls": {"insecure": True}}
    assert "otlp_grpc/jaeger" in cfg["service"]["pipelines"]["traces"]["exporters"]
    assert "debug" in cfg["service"]["pipelines"]["logs"]["exporters"]


# --- the checker itself must reject what the collector would refuse ---------------------------------

GOOD = """
extensions:
  file_storage: {directory: /tmp}
receivers:
  otlp: {protocols: {grpc: {endpoint: 127.0.0.1:4317}}}
processors:
  memory_limiter: {check_interval: 1s, limit_mib: 100}
exporters:
  awscloudwatchlogs:
    log_group_name: /g
    log_stream_name: "{InstanceId}"
    sending_queue: {storage: file_storage}
service:
  extensions: [file_storage]
  pipelines:
    logs: {receivers: [otlp], processors: [memory_limiter], exporters: [awscloudwatchlogs]}
"""


def _problems(text: str) -> list[str]:
    return cs.check_config(yaml.safe_load(text))


def test_checker_accepts_a_minimal_valid_config():
    assert _problems(GOOD) == []


def test_checker_rejects_a_misspelled_nested_key_and_names_it():
    problems = _problems(GOOD.replace("sending_queue: {storage", "sending_queue: {storrage"))
    assert any(p.startswith("exporters.awscloudwatchlogs.sending_queue.storrage: unknown key")
               for p in problems), problems


def test_checker_rejects_a_misspelled_key_deep_in_the_receiver():
    problems = _problems(GOOD.replace("{grpc: {endpoint:", "{grpc: {endpiont:"))
    assert any(p.startswith("receivers.otlp.protocols.grpc.endpiont: unknown key") for p in problems), problems


def test_checker_rejects_an_unknown_component_and_one_missing_from_adot():
    text = GOOD.replace("  memory_limiter: {check_interval: 1s, limit_mib: 100}",
                        "  memory_limiter: {check_interval: 1s, limit_mib: 100}\n  transform: {}\n  frobnicate: {}")
    problems = _problems(text)
    assert f"processors.transform: not shipped in {RELEASE}" in problems
    assert any(p.startswith("processors.frobnicate: unknown processor type") for p in problems), problems


def test_checker_rejects_the_removed_logging_exporter():
    text = GOOD.replace("exporters:\n", "exporters:\n  logging: {}\n").replace(
        "exporters: [awscloudwatchlogs]", "exporters: [awscloudwatchlogs, logging]")
    assert f"exporters.logging: not shipped in {RELEASE}" in _problems(text)


def test_checker_rejects_an_emf_only_key_on_the_cloudwatch_logs_exporter():
    problems = _problems(GOOD.replace("    log_group_name: /g", "    log_group_name: /g\n    emf_only: true"))
    assert any(p.startswith("exporters.awscloudwatchlogs.emf_only: unknown key") for p in problems), problems


def test_checker_rejects_an_unknown_stream_placeholder():
    problems = _problems(GOOD.replace("{InstanceId}", "{InstanceID}/{BotRunId}"))
    assert any("log_stream_name: invalid placeholder {InstanceID}" in p for p in problems), problems


def test_checker_rejects_a_queue_on_a_storage_extension_that_is_not_enabled():
    problems = _problems(GOOD.replace("  extensions: [file_storage]", "  extensions: []"))
    assert any("sending_queue.storage: extension 'file_storage' is not enabled" in p for p in problems), problems


def test_checker_rejects_a_pipeline_naming_an_undefined_component_and_misordered_limiter():
    text = GOOD.replace("processors: [memory_limiter]", "processors: [batch, memory_limiter]")
    problems = _problems(text)
    assert "service.pipelines.logs.processors: 'batch' is not defined under processors" in problems
    assert "service.pipelines.logs.processors: memory_limiter must come first" in problems


def test_checker_rejects_a_malformed_env_reference():
    problems = _problems(GOOD.replace("log_group_name: /g", "log_group_name: /dora-bot/${DORA ENV}/app"))
    assert any("malformed reference" in p for p in problems), problems


@pytest.mark.parametrize("config, kind, alias, current", [
    ("config.yaml", "processors", "resourcedetection", "resource_detection"),
    ("config-local.yaml", "exporters", "otlp", "otlp_grpc"),
])
def test_checker_rejects_our_config_with_a_deprecated_alias_put_back(config, kind, alias, current):
    # Rename every use of the current name in the real config back to the deprecated alias.
    text = (REPO / "collector" / config).read_text(encoding="utf-8")
    assert current in text
    problems = _problems(re.sub(rf"\b{current}\b", alias, text))
    assert any(p.startswith(f"{kind}.{alias}") and f"'{alias}' is a deprecated alias" in p
               and f"use '{current}'" in p for p in problems), problems


def test_checker_rejects_a_deprecated_alias_in_a_minimal_config():
    text = GOOD.replace("  memory_limiter: {check_interval: 1s, limit_mib: 100}",
                        "  memory_limiter: {check_interval: 1s, limit_mib: 100}\n"
                        "  resourcedetection: {detectors: [env]}"
                        ).replace("processors: [memory_limiter]", "processors: [memory_limiter, resourcedetection]")
    assert _problems(text) == [
        f"processors.resourcedetection: 'resourcedetection' is a deprecated alias in {RELEASE}; "
        "use 'resource_detection' (the collector warns at start-up)"]


def test_catalogue_aliases_point_at_shipped_components_and_are_not_shipped_themselves():
    catalogue = cs.load_catalogue()
    for kind, aliases in catalogue["deprecated_aliases"].items():
        for alias, current in aliases.items():
            assert current in catalogue["components"][kind], (kind, current)
            assert alias not in catalogue["components"][kind], (kind, alias)


def test_checker_rejects_a_sending_queue_on_awsxray():
    # The exporter's config struct has no queue: the collector would refuse the key at start-up.
    text = GOOD.replace("exporters:\n", "exporters:\n  awsxray: {sending_queue: {enabled: true}}\n").replace(
        "service:\n", "service:\n").replace(
        "    logs: {receivers", "    traces: {receivers: [otlp], exporters: [awsxray]}\n    logs: {receivers")
    problems = _problems(text)
    assert any(p.startswith("exporters.awsxray.sending_queue: unknown key") for p in problems), problems
