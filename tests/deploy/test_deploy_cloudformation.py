"""CloudFormation templates lint clean and declare the groups, tables and alarms the design needs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cfn_template
import pytest

REPO = Path(__file__).resolve().parents[2]
CFN = REPO / "deploy" / "cloudformation"
TEMPLATES = sorted(CFN.glob("*.yaml"))


def _cfn_lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    # The console script installed with the `test` extra, next to this interpreter.
    exe = Path(sys.executable).with_name("cfn-lint")
    cmd = [str(exe)] if exe.exists() else [shutil.which("cfn-lint") or "cfn-lint"]
    return subprocess.run([*cmd, "--format", "parseable", *map(str, paths)],
                          capture_output=True, text=True, timeout=300, check=False)


def test_all_three_templates_exist():
    assert {p.name for p in TEMPLATES} == {"observability.yaml", "ledger-tables.yaml", "iam.yaml"}


def test_cfn_lint_reports_nothing_for_our_templates():
    proc = _cfn_lint(*TEMPLATES)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_cfn_lint_rejects_a_broken_template(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "AWSTemplateFormatVersion: '2010-09-09'\n"
        "Resources:\n"
        "  Group:\n"
        "    Type: AWS::Logs::LogGroup\n"
        "    Properties:\n"
        "      LogGroupName: /dora-bot/prod/app\n"
        "      RetentionInDays: 15\n"           # not an allowed retention
        "      RetentionDays: 14\n",            # no such property
        encoding="utf-8")
    proc = _cfn_lint(broken)
    assert proc.returncode != 0
    assert "RetentionInDays" in proc.stdout and "RetentionDays" in proc.stdout, proc.stdout


# --- observability.yaml ------------------------------------------------------------------------------

OBS = cfn_template.load(CFN / "observability.yaml")


def test_log_groups_are_per_env_with_14_day_retention():
    groups = {cfn_template.sub_text(p["LogGroupName"]): p
              for _, p in cfn_template.resources(OBS, "AWS::Logs::LogGroup")}
    assert set(groups) == {"/dora-bot/${Env}/app", "/dora-bot/${Env}/journal"}
    assert {p["RetentionInDays"] for p in groups.values()} == {14}


def test_parameters_are_env_and_alarm_email():
    assert set(OBS["Parameters"]) == {"Env", "AlarmEmail"}
    assert OBS["Parameters"]["Env"]["AllowedValues"] == ["demo", "prod"]


def test_alarms_notify_sns_and_risk_halt_goes_to_the_critical_topic():
    alarms = {cfn_template.sub_text(p["AlarmName"]): p
              for _, p in cfn_template.resources(OBS, "AWS::CloudWatch::Alarm")}
    assert set(alarms) == {"dora-bot-errors-${Env}", "dora-bot-order-failures-${Env}", "dora-bot-risk-halt-${Env}"}
    assert alarms["dora-bot-risk-halt-${Env}"]["AlarmActions"] == [{"Ref": "CriticalAlarmTopic"}]
    assert alarms["dora-bot-errors-${Env}"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert alarms["dora-bot-order-failures-${Env}"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    for props in alarms.values():
        periods = {q["MetricStat"]["Period"] for q in props["Metrics"] if "MetricStat" in q}
        assert periods == {300} and props["EvaluationPeriods"] == 1  # "in 5 min"


def test_saved_queries_cover_the_definition_of_done():
    queries = {cfn_template.sub_text(p["Name"]): p["QueryString"]
               for _, p in cfn_template.resources(OBS, "AWS::Logs::QueryDefinition")}
    text = "\n".join(queries.values())
    assert 'attributes.market = "{{market}}"' in text                   # 1 filter by market (+ time range)
    assert 'attributes.event_type = "DECISION_MADE"' in text            # 2 find the decision
    assert '"ORDER_PLACE", "ORDER_RESULT"' in text                       # 3 its orders
    assert 'attributes.decision_id = "{{decision_id}}"' in text         # 4 correlate by decision_id
    # 5 errors with stack
    assert 'attributes.event_type = "ERROR"' in text and "attributes.exception.stacktrace" in text
    for name, props in cfn_template.resources(OBS, "AWS::Logs::QueryDefinition"):
        used = {p["Name"] for p in props.get("Parameters", [])}
        assert used == set(re.findall(r"\{\{(\w+)\}\}", props["QueryString"])), name


# --- ledger-tables.yaml: exactly docs/ARCHITECTURE.md "Tables" -----------------------------------

TABLES = {cfn_template.sub_text(p["TableName"]): p
          for _, p in cfn_template.resources(cfn_template.load(CFN / "ledger-tables.yaml"), "AWS::DynamoDB::Table")}


def _keys(schema):
    return tuple(k["AttributeName"] for k in sorted(schema, key=lambda k: k["KeyType"] != "HASH"))


def test_ledger_tables_have_the_documented_keys_and_indexes():
    assert set(TABLES) == {"dora_execution_log_${Env}", "dora_decision_log_${Env}"}
    exe = TABLES["dora_execution_log_${Env}"]
    assert _keys(exe["KeySchema"]) == ("bot_run_id", "sk")
    assert {g["IndexName"]: _keys(g["KeySchema"]) for g in exe["GlobalSecondaryIndexes"]} == {
        "gsi1": ("decision_id", "event_ts"), "gsi_order": ("order_id", "event_ts")}
    dec = TABLES["dora_decision_log_${Env}"]
    assert _keys(dec["KeySchema"]) == ("decision_id",)
    assert {g["IndexName"]: _keys(g["KeySchema"]) for g in dec["GlobalSecondaryIndexes"]} == {
        "market_ts": ("market", "decision_ts"), "day_ts": ("decision_day", "decision_ts")}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_ledger_table_is_on_demand_recoverable_encrypted_and_expiring(name):
    t = TABLES[name]
    assert t["BillingMode"] == "PAY_PER_REQUEST"
    assert t["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert t["SSESpecification"]["SSEEnabled"] is True
    assert t["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert {g["Projection"]["ProjectionType"] for g in t["GlobalSecondaryIndexes"]} == {"ALL"}
    # Key attributes are strings and every defined attribute is a key somewhere (DynamoDB insists).
    keyed = {k["AttributeName"] for k in t["KeySchema"]} | {
        k["AttributeName"] for g in t["GlobalSecondaryIndexes"] for k in g["KeySchema"]}
    assert {a["AttributeName"]: a["AttributeType"] for a in t["AttributeDefinitions"]} == dict.fromkeys(keyed, "S")


# --- cloudwatch-agent-config.json --------------------------------------------------------------------

# Keys the CloudWatch agent (>= 1.300070.0) reads from a logs.logs_collected.journald.collect_list entry:
# amazon-cloudwatch-agent translator/translate/otel/pipeline/journald/translator.go (units, filters)
# and translator/translate/otel/exporter/journald/translator.go (log_group_name, log_stream_name,
# retention_in_days).
JOURNALD_ENTRY_KEYS = {"log_group_name", "log_stream_name", "units", "filters", "retention_in_days"}


def agent_config_problems(cfg: dict) -> list[str]:
    problems = []
    for key in cfg:
        if key not in {"agent", "logs", "metrics", "traces"}:
            problems.append(f"{key}: unknown top-level section")
    journald = cfg.get("logs", {}).get("logs_collected", {}).get("journald")
    if not isinstance(journald, dict) or set(journald) != {"collect_list"}:
        return [*problems, "logs.logs_collected.journald: must hold exactly collect_list"]
    entries = journald["collect_list"]
    if not isinstance(entries, list) or not entries:
        return [*problems, "logs.logs_collected.journald.collect_list: must be a non-empty list"]
    for i, entry in enumerate(entries):
        for key in entry:
            if key not in JOURNALD_ENTRY_KEYS:
                problems.append(f"logs.logs_collected.journald.collect_list[{i}].{key}: unknown key "
                                f"(accepted: {', '.join(sorted(JOURNALD_ENTRY_KEYS))})")
        for key in ("log_group_name", "units"):
            if key not in entry:
                problems.append(f"logs.logs_collected.journald.collect_list[{i}].{key}: required here")
    return problems


AGENT = json.loads((REPO / "deploy" / "cloudwatch-agent-config.json").read_text(encoding="utf-8"))


def test_cloudwatch_agent_config_collects_the_units_journal_into_the_journal_group():
    assert agent_config_problems(AGENT) == []
    (entry,) = AGENT["logs"]["logs_collected"]["journald"]["collect_list"]
    journal_group = next(p["LogGroupName"] for n, p in cfn_template.resources(OBS, "AWS::Logs::LogGroup")
                         if n == "JournalLogGroup")
    assert entry["log_group_name"] == cfn_template.render(journal_group, {"Env": "prod"})
    assert "dora-bot.service" in entry["units"]
    # No retention_in_days: the retention is CloudFormation's, and the agent may not change it.
    assert "retention_in_days" not in entry


def test_agent_config_checker_rejects_a_misspelled_key():
    broken = json.loads(json.dumps(AGENT))
    entry = broken["logs"]["logs_collected"]["journald"]["collect_list"][0]
    entry["log_group"] = entry.pop("log_group_name")
    problems = agent_config_problems(broken)
    assert "logs.logs_collected.journald.collect_list[0].log_group: unknown key (accepted: filters, " \
           "log_group_name, log_stream_name, retention_in_days, units)" in problems
    assert "logs.logs_collected.journald.collect_list[0].log_group_name: required here" in problems


# --- README-cloudwatch.md documents what the templates create ----------------------------------------

README = (REPO / "deploy" / "README-cloudwatch.md").read_text(encoding="utf-8")


def test_readme_has_a_runbook_for_every_alarm_and_lists_every_saved_query():
    for _, props in cfn_template.resources(OBS, "AWS::CloudWatch::Alarm"):
        base = cfn_template.sub_text(props["AlarmName"]).replace("-${Env}", "")
        assert f"### {base} (" in README, base
    for _, props in cfn_template.resources(OBS, "AWS::Logs::QueryDefinition"):
        title = cfn_template.sub_text(props["Name"]).split("/")[-1]
        assert f"**{title}**" in README, title


def test_readme_states_the_stream_naming_contract_and_the_journald_shape():
    assert 'service.instance.id = "<instance_id>/<bot_run_id>"' in README
    assert "`undefined`" in README
    assert "$.body.MESSAGE" in README
    assert "/opt/aws/aws-otel-collector/etc/config.yaml" in README and "`aoc`" in README


@pytest.mark.parametrize("env", ["demo", "prod"])
def test_ledger_tables_match_the_definitions_dora_otel_creates_itself(env):
    from dora_otel.sinks.tables import TTL_DAYS_TAG, table_definitions

    for want in table_definitions(env):
        (got,) = [t for name, t in TABLES.items()
                  if cfn_template.render({"Fn::Sub": name}, {"Env": env}) == want["TableName"]]
        assert got["KeySchema"] == want["KeySchema"]
        assert sorted(got["AttributeDefinitions"], key=str) == sorted(want["AttributeDefinitions"], key=str)
        assert got["GlobalSecondaryIndexes"] == want["GlobalSecondaryIndexes"]
        assert got["BillingMode"] == want["BillingMode"]
        assert {"Key": TTL_DAYS_TAG, "Value": "90"} in got["Tags"]
