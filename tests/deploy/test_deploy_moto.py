"""The CloudFormation templates deployed for real, to moto's server on 127.0.0.1, not only linted.

Every template moto supports reaches CREATE_COMPLETE with every resource created (moto_stack.deploy
fails on a resource moto silently skips, except the three types checked offline). The ledger tables
CloudFormation creates have the key schema, indexes, billing and TTL tag that `dora-otel tables
create` gives them on DynamoDB Local; a demo ships its ledger into them and `dora-otel explain`
answers from them. Broken templates fail the same check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import moto_stack as ms
import pytest

REPO = Path(__file__).resolve().parents[2]
CFN = REPO / "deploy" / "cloudformation"
PARAMETERS = {
    "ledger-tables.yaml": {"Env": "demo"},
    "iam.yaml": {"Env": "demo"},
    # An address, so the conditional e-mail subscriptions are declared (moto skips them: KNOWN_SKIPPED).
    "observability.yaml": {"Env": "demo", "AlarmEmail": "oncall@example.invalid"},
}
MARKETS = ("KXBTCD-26NOV24-T97000", "KXINXU-26NOV24-B5900", "KXHIGHNY-26NOV24-B45")


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    """A region and no EC2 metadata lookups for every boto3 client of this module."""
    saved = {k: os.environ.get(k) for k in ("AWS_EC2_METADATA_DISABLED", "AWS_REGION", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_EC2_METADATA_DISABLED="true", AWS_REGION=ms.REGION, AWS_DEFAULT_REGION=ms.REGION)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def moto(aws_env) -> Iterator[ms.MotoServer]:
    server = ms.MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stacks(moto) -> dict[str, dict[str, str]]:
    """Every template deployed once (Env=demo): template name -> logical id -> physical id."""
    return {path.name: ms.deploy(moto, f"dora-demo-{path.stem}", path.read_text(encoding="utf-8"),
                                 PARAMETERS[path.name]) for path in sorted(CFN.glob("*.yaml"))}


def test_every_template_is_deployed(stacks):
    assert set(stacks) == {p.name for p in CFN.glob("*.yaml")} == set(PARAMETERS)


@pytest.mark.parametrize("template", sorted(PARAMETERS))
def test_template_reaches_create_complete_with_every_resource_moto_implements(stacks, template):
    declared = ms.declared_resources((CFN / template).read_text(encoding="utf-8"))
    created = stacks[template]
    assert set(created) == {lid for lid, rtype in declared.items() if rtype not in ms.KNOWN_SKIPPED}
    if template != "observability.yaml":
        assert set(created) == set(declared)  # nothing skipped at all


def test_observability_stack_creates_the_log_groups_with_their_retention(stacks, moto):
    groups = {g["logGroupName"]: g.get("retentionInDays")
              for g in moto.client("logs").describe_log_groups(logGroupNamePrefix="/dora-bot/demo/")["logGroups"]}
    assert groups == {"/dora-bot/demo/app": 14, "/dora-bot/demo/journal": 14}


def test_iam_stack_creates_the_three_roles(stacks, moto):
    roles = {r["RoleName"] for r in moto.client("iam").list_roles()["Roles"]}
    assert {stacks["iam.yaml"][k] for k in ("InstanceRole", "BotWriterRole", "ReconcilerRole")} <= roles


# --- the CloudFormation tables are the tables dora-otel creates itself --------------------------------

def _shape(client: Any, name: str) -> dict[str, Any]:
    table = client.describe_table(TableName=name)["Table"]
    ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    return {
        "KeySchema": table["KeySchema"],
        "AttributeDefinitions": sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
        "GlobalSecondaryIndexes": sorted(({k: g[k] for k in ("IndexName", "KeySchema", "Projection")}
                                          for g in table.get("GlobalSecondaryIndexes", [])),
                                         key=lambda g: g["IndexName"]),
        "BillingMode": table.get("BillingModeSummary", {}).get("BillingMode"),
        "TTL": (ttl.get("AttributeName"), ttl.get("TimeToLiveStatus")),
    }


def test_cloudformation_tables_match_dora_otel_tables_create_on_dynamodb_local(stacks, moto, dynamodb_local_server):
    from dora_otel.sinks.tables import create_tables, table_names

    local = dynamodb_local_server.client(read_timeout_s=10.0)
    env = f"t{uuid.uuid4().hex[:10]}"
    names = create_tables(env, client=local, ttl_days=90)
    try:
        on_moto = moto.client("dynamodb")
        for mine, theirs in zip(names, table_names("demo"), strict=True):
            want, got = _shape(local, mine), _shape(on_moto, theirs)
            # moto's CloudFormation ignores TimeToLiveSpecification (moto 5.2.5, dynamodb/models/table.py
            # create_from_cloudformation_json): compare TTL with what the template declares instead.
            assert got.pop("TTL") == (None, "DISABLED"), "moto now applies TTL from CloudFormation: compare it directly"
            spec = next(r["Properties"]["TimeToLiveSpecification"] for r in _template_tables().values()
                        if r["Properties"]["TableName"] == {"Fn::Sub": theirs.replace("_demo", "_${Env}")})
            assert want.pop("TTL") == (spec["AttributeName"], "ENABLED" if spec["Enabled"] else "DISABLED")
            assert got == want, theirs
            if theirs.startswith("dora_execution_log_"):  # the sparse order_id index of the read-time join
                assert {g["IndexName"] for g in got["GlobalSecondaryIndexes"]} == {"gsi1", "gsi_order"}
            # DynamoDB Local keeps no tags; the CloudFormation table carries the same retention tag
            # `tables create` sets where tags exist (dora:ttl_days = 90).
            arn = on_moto.describe_table(TableName=theirs)["Table"]["TableArn"]
            tags = {t["Key"]: t["Value"] for t in on_moto.list_tags_of_resource(ResourceArn=arn)["Tags"]}
            assert tags["dora:ttl_days"] == "90"
    finally:
        for name in names:
            local.delete_table(TableName=name)
        local.close()


def _template_tables() -> dict[str, Any]:
    import cfn_template

    template = cfn_template.load(CFN / "ledger-tables.yaml")
    return {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::DynamoDB::Table"}


# --- the ledger ships into them and explain answers from them --------------------------------------

def _cli_env(moto: ms.MotoServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DORA_", "OTEL_", "AWS_")) and k != "CONTAINER_MODE"}
    env.update(AWS_ENDPOINT_URL_DYNAMODB=moto.endpoint, AWS_REGION=ms.REGION, AWS_EC2_METADATA_DISABLED="true",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", DORA_ENV="demo")
    return env


@pytest.mark.slow
def test_the_ledger_ships_into_the_cloudformation_tables_and_explain_answers_from_them(stacks, moto, tmp_path):
    from query._helpers import expected_verdict, held_back, read_truth  # the truth -> verdict (tests/query)

    env = _cli_env(moto)
    data, truth_path = tmp_path / "data", tmp_path / "truth.json"
    demo = subprocess.run([sys.executable, "-m", "dora_otel.cli", "demo", "--cycles", "20", "--seed", "11",
                           "--fault-rate", "0.2", "--ledger", "dynamodb", "--data-dir", str(data),
                           "--truth", str(truth_path)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120, check=False)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "dynamodb:" in demo.stderr and ", 0 rejected" in demo.stderr, demo.stderr[-2000:]
    ddb = moto.client("dynamodb")
    assert ddb.scan(TableName="dora_execution_log_demo", Select="COUNT")["Count"] > 0
    assert ddb.scan(TableName="dora_decision_log_demo", Select="COUNT")["Count"] > 0

    truth, suppressed = read_truth(truth_path)
    verdicts = 0
    for market in MARKETS:
        proc = subprocess.run([sys.executable, "-m", "dora_otel.cli", "explain", "--market", market, "--at", "now",
                               "--window", "1h", "--json", "--ledger", "dynamodb", "--logs", "file",
                               "--data-dir", str(data)], capture_output=True, text=True, env=env, timeout=120,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout)
        assert report["source"].startswith("ledger DynamoDB dora_decision_log_demo + dora_execution_log_demo")
        assert report["decisions"]
        for decision in report["decisions"]:
            assert decision["records_from"] == "ledger"
            for v in decision["verdicts"]:
                why = held_back(suppressed, market, decision["loop"], v["expected"])
                assert v["verdict"] == expected_verdict(truth.get(v["client_order_id"]), why), v
                verdicts += 1
    assert verdicts > 20


# --- broken templates fail the check --------------------------------------------------------------

BROKEN_TABLE = """AWSTemplateFormatVersion: "2010-09-09"
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: broken_ledger
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: decision_id, AttributeType: S}]
      KeySchema: [{AttributeName: bot_run_id, KeyType: HASH}]
"""


def test_a_template_moto_cannot_create_fails_the_check(moto):
    # The key attribute is not defined: DynamoDB (and moto) cannot create the table.
    with pytest.raises(ms.DeployError, match="broken-table"):
        ms.deploy(moto, "broken-table", BROKEN_TABLE)


def test_a_resource_moto_silently_skips_fails_the_check_unless_it_is_checked_elsewhere(moto):
    # observability.yaml reaches CREATE_COMPLETE on moto without its filters, alarms and queries: a
    # deployment check that believed the status alone would pass. Without the allowance it fails.
    body = (CFN / "observability.yaml").read_text(encoding="utf-8")
    with pytest.raises(ms.DeployError, match=r"CREATE_COMPLETE but moto did not create .*AWS::Logs::MetricFilter"):
        ms.deploy(moto, "dora-skips", body, {"Env": "prod", "AlarmEmail": "oncall@example.invalid"},
                  known_skipped=frozenset())
