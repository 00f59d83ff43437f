"""The app's resource attributes put each bot run in its own stream <instance_id>/<bot_run_id>."""

from __future__ import annotations

from pathlib import Path

import collector_schema as cs
import cwl_placeholders as ph
import pytest

from dora_otel import identity

REPO = Path(__file__).resolve().parents[2]
STREAM = cs.load_config(REPO / "collector" / "config.yaml")["exporters"]["awscloudwatchlogs"]["log_stream_name"]


def test_instance_id_placeholder_reads_service_instance_id():
    attrs = {"service.instance.id": "i-0abc/20261124-044512-x7k2", "host.id": "i-0fff"}
    assert ph.resolve("{InstanceId}", attrs) == "i-0abc/20261124-044512-x7k2"


def test_a_missing_or_empty_attribute_becomes_undefined():
    assert ph.resolve("{InstanceId}", {"host.id": "i-0fff"}) == "undefined"
    assert ph.resolve("{InstanceId}", {"service.instance.id": ""}) == "undefined"
    assert ph.resolve("/x/{ServiceName}/{InstanceId}", {"service.name": "dora-bot"}) == "/x/dora-bot/undefined"


def test_an_attribute_named_like_the_placeholder_wins_over_the_semconv_one():
    attrs = {"InstanceId": "override", "service.instance.id": "i-0abc/run"}
    assert ph.resolve("{InstanceId}", attrs) == "override"


def test_unknown_placeholders_are_rejected_and_left_alone():
    assert ph.invalid_placeholder("{InstanceId}") is None
    assert ph.invalid_placeholder("plain-name") is None
    assert ph.invalid_placeholder("{InstanceId}/{BotRunId}") == "BotRunId"
    assert ph.invalid_placeholder("prefix-{}-suffix") == ""
    assert ph.resolve("{BotRunId}", {"BotRunId": "x"}) == "{BotRunId}"


def test_non_string_attribute_values_are_formatted():
    assert ph.resolve("{TaskId}", {"aws.ecs.task.id": 42}) == "42"
    assert ph.resolve("{TaskId}", {"aws.ecs.task.id": True}) == "true"


def test_the_collector_streams_by_instance_id():
    assert STREAM == "{InstanceId}"


def test_the_real_resource_attributes_give_the_intended_stream():
    attrs = identity.resource_attributes(
        service_name="dora-bot", env="prod", bot_version="3f2c1ab",
        bot_run_id="20261124-044512-x7k2", instance_id="i-0abc")
    stream = ph.resolve(STREAM, attrs)
    assert stream == "i-0abc/20261124-044512-x7k2"
    # CloudWatch stream names may not contain ':' or '*' and are at most 512 characters.
    assert ":" not in stream and "*" not in stream and len(stream) <= 512


@pytest.mark.parametrize("env, instance_file, expected", [
    ({"DORA_INSTANCE_ID": "i-0env"}, "i-0cloudinit\n", "i-0env"),
    ({}, "i-0cloudinit\n", "i-0cloudinit"),
])
def test_the_instance_id_comes_from_env_then_cloud_init(tmp_path, monkeypatch, env, instance_file, expected):
    path = tmp_path / "instance-id"
    path.write_text(instance_file, encoding="utf-8")
    monkeypatch.setattr(identity, "CLOUD_INIT_INSTANCE_ID", path)
    instance_id = identity.resolve_instance_id(env)
    assert instance_id == expected
    attrs = identity.resource_attributes(service_name="dora-bot", env="prod", bot_version="v",
                                         bot_run_id="20261124-044512-x7k2", instance_id=instance_id)
    assert ph.resolve(STREAM, attrs) == f"{expected}/20261124-044512-x7k2"
