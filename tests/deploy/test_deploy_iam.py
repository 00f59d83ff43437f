"""IAM documents are least privilege, resource-scoped, and identical to the CloudFormation policies."""

from __future__ import annotations

import json
from pathlib import Path

import cfn_template
import iam_check
import pytest

REPO = Path(__file__).resolve().parents[2]
IAM_DIR = REPO / "deploy" / "iam"
DOCS = sorted(IAM_DIR.glob("*.json"))
# deploy/iam/*.json use these placeholders; the CloudFormation template uses !Sub variables.
PLACEHOLDERS = {"REGION": "${AWS::Region}", "ACCOUNT_ID": "${AWS::AccountId}", "ENV": "${Env}"}
# Which ManagedPolicy resource in deploy/cloudformation/iam.yaml mirrors which document.
CFN_POLICY = {
    "collector-policy.json": "CollectorPolicy",
    "cloudwatch-agent-policy.json": "CloudWatchAgentPolicy",
    "bot-writer-policy.json": "BotWriterPolicy",
    "reconciler-reader-policy.json": "ReconcilerReaderPolicy",
}


def _load(name: str) -> dict:
    return json.loads((IAM_DIR / name).read_text(encoding="utf-8"))


def test_every_role_has_a_policy_document():
    assert {p.name for p in DOCS} == set(CFN_POLICY)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_policy_document_is_least_privilege(path):
    assert iam_check.problems(json.loads(path.read_text(encoding="utf-8"))) == []


def test_collector_may_write_only_the_app_log_group_and_xray():
    doc = _load("collector-policy.json")
    assert iam_check.actions(doc) == {
        "logs:PutLogEvents", "logs:CreateLogStream", "logs:DescribeLogStreams",
        "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"}
    logs = next(s for s in doc["Statement"] if s["Action"][0].startswith("logs:"))
    assert all(":log-group:/dora-bot/ENV/app" in r for r in logs["Resource"])
    # Not CreateLogGroup / PutRetentionPolicy: the group and its retention come from CloudFormation.
    assert "logs:CreateLogGroup" not in iam_check.actions(doc)


def test_cloudwatch_agent_may_write_only_the_journal_log_group():
    doc = _load("cloudwatch-agent-policy.json")
    assert iam_check.actions(doc) == {"logs:PutLogEvents", "logs:CreateLogStream", "logs:DescribeLogStreams"}
    assert all(":log-group:/dora-bot/ENV/journal" in r for s in doc["Statement"] for r in s["Resource"])


def test_bot_writer_may_only_append_to_the_two_tables():
    doc = _load("bot-writer-policy.json")
    assert iam_check.actions(doc) == {"dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:DescribeTable"}
    (st,) = doc["Statement"]
    assert sorted(st["Resource"]) == [
        "arn:aws:dynamodb:REGION:ACCOUNT_ID:table/dora_decision_log_ENV",
        "arn:aws:dynamodb:REGION:ACCOUNT_ID:table/dora_execution_log_ENV"]


def test_reconciler_may_read_tables_and_indexes_and_query_the_app_group():
    doc = _load("reconciler-reader-policy.json")
    assert iam_check.actions(doc) == {
        "dynamodb:Query", "dynamodb:GetItem", "dynamodb:DescribeTable",
        "logs:StartQuery", "logs:GetQueryResults", "logs:StopQuery"}
    resources = {r for s in doc["Statement"] for r in iam_check._as_list(s["Resource"])}
    for table in ("dora_execution_log_ENV", "dora_decision_log_ENV"):
        assert f"arn:aws:dynamodb:REGION:ACCOUNT_ID:table/{table}" in resources
        assert f"arn:aws:dynamodb:REGION:ACCOUNT_ID:table/{table}/index/*" in resources
    assert not any("PutItem" in a or "Write" in a or "Delete" in a or "Update" in a for a in iam_check.actions(doc))


@pytest.mark.parametrize("name", sorted(CFN_POLICY))
def test_cloudformation_policy_matches_the_json_document(name):
    template = cfn_template.load(REPO / "deploy" / "cloudformation" / "iam.yaml")
    cfn_doc = template["Resources"][CFN_POLICY[name]]["Properties"]["PolicyDocument"]

    def normalise(value):
        if isinstance(value, list):
            return [normalise(v) for v in value]
        if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
            return value["Fn::Sub"]
        if isinstance(value, dict):
            return {k: normalise(v) for k, v in value.items()}
        return value

    text = json.dumps(_load(name))
    for token, variable in PLACEHOLDERS.items():
        text = text.replace(token, variable)
    assert normalise(cfn_doc) == json.loads(text)


def test_cloudformation_inline_policies_are_least_privilege_too():
    template = cfn_template.load(REPO / "deploy" / "cloudformation" / "iam.yaml")
    for _, props in cfn_template.resources(template, "AWS::IAM::Policy"):
        assert iam_check.problems(props["PolicyDocument"]) == []


# --- the checker must reject what is not least privilege -------------------------------------------

@pytest.mark.parametrize("statement, expected", [
    ({"Effect": "Allow", "Action": "*", "Resource": "*"}, "wildcard action '*'"),
    ({"Effect": "Allow", "Action": ["logs:*"], "Resource": ["arn:aws:logs:r:a:log-group:/x:*"]},
     "wildcard action 'logs:*'"),
    ({"Effect": "Allow", "Action": ["dynamodb:Get*"], "Resource": ["arn:aws:dynamodb:r:a:table/t"]},
     "wildcard action 'dynamodb:Get*'"),
    ({"Effect": "Allow", "Action": ["dynamodb:PutItem"], "Resource": "*"}, 'Resource "*" for dynamodb:PutItem'),
    ({"Effect": "Allow", "NotAction": ["iam:*"], "Resource": "*"}, "NotAction grants everything"),
    ({"Effect": "Deny", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::b/*"]}, "Effect must be Allow"),
])
def test_checker_rejects_a_broad_statement(statement, expected):
    found = iam_check.problems({"Version": "2012-10-17", "Statement": [statement]})
    assert any(expected in p for p in found), found


def test_checker_rejects_an_old_policy_version():
    doc = {"Version": "2008-10-17",
           "Statement": [{"Effect": "Allow", "Action": "xray:PutTraceSegments", "Resource": "*"}]}
    assert iam_check.problems(doc) == ["Version: must be 2012-10-17, got '2008-10-17'"]
