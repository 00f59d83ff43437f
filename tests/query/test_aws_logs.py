"""Log lines through CloudWatch Logs Insights (the `--ledger dynamodb` path): the queries asked, the
OTLP-shaped events read back into flat lines, polling with a time budget, and clear notes when the
lines are not there (yet)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from dora_otel.query.aws import AwsSource, InsightsReader, line_from_event, log_group
from dora_otel.query.explain import explain_decision
from dora_otel.query.local import LocalSource
from dora_otel.query.reconcile import reconcile
from dora_otel.query.sources import LogsUnavailable
from dora_otel.sinks.sqlite import SQLiteSink, sqlite_path

_NOT_ATTRIBUTES = ("ts", "level", "message", "trace_id", "span_id", "service", "env", "bot_version", "bot_run_id")


def otlp_event(line: dict[str, Any]) -> str:
    """One app line as the ADOT awscloudwatchlogs exporter stores it (raw_log: false)."""
    attributes = {k: (v if isinstance(v, (str, int, float, bool)) else json.dumps(v))
                  for k, v in line.items() if k not in _NOT_ATTRIBUTES}
    event = {"body": line["message"], "severity_number": 9, "severity_text": line["level"],
             "trace_id": line.get("trace_id"), "span_id": line.get("span_id"), "attributes": attributes,
             "resource": {"service.name": "dora-bot", "dora.bot_run_id": line["bot_run_id"]}}
    return json.dumps({k: v for k, v in event.items() if v is not None})


class FakeInsights:
    """A `logs` client answering Insights queries from a list of app lines (filters by decision_id /
    market the way the queries explain and reconcile send them)."""

    def __init__(self, lines: list[dict[str, Any]], *, running_polls: int = 1, fail: str | None = None) -> None:
        self.lines = lines
        self.running_polls = running_polls
        self.fail = fail
        self.started: list[dict[str, Any]] = []
        self.polls = 0
        self.stopped: list[str] = []

    def start_query(self, **kwargs: Any) -> dict[str, Any]:
        if self.fail:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": self.fail, "Message": "nope"}}, "StartQuery")
        self.started.append(kwargs)
        return {"queryId": f"q{len(self.started)}"}

    def get_query_results(self, queryId: str) -> dict[str, Any]:
        self.polls += 1
        if self.polls <= self.running_polls:
            return {"status": "Running", "results": []}
        self.polls = 0
        kwargs = self.started[int(queryId[1:]) - 1]
        query = kwargs["queryString"]
        ids = set(re.findall(r"[0-9a-f]{32}", query))
        market = re.search(r'attributes\.market = "([^"]+)"', query)
        lo, hi = kwargs["startTime"], kwargs["endTime"]
        rows = []
        for line in self.lines:
            ts = datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()
            if not lo <= ts <= hi:
                continue
            if ids and line.get("decision_id") not in ids and not (
                    market and line.get("market") == market.group(1)
                    and (not line.get("decision_id") or line["event_type"] == "DECISION_MADE")):
                continue
            rows.append([{"field": "@timestamp", "value": line["ts"].replace("T", " ").rstrip("Z")},
                         {"field": "@logStream", "value": f"i-0abc/{line['bot_run_id']}"},
                         {"field": "@message", "value": otlp_event(line)},
                         {"field": "@ptr", "value": "x"}])
        return {"status": "Complete", "results": rows[: kwargs.get("limit", 10000)]}

    def stop_query(self, queryId: str) -> dict[str, Any]:
        self.stopped.append(queryId)
        return {"success": True}


def test_an_otlp_event_reads_back_as_the_flat_line_the_app_wrote():
    line = {"ts": "2026-11-24T05:04:26.797Z", "level": "INFO", "message": "decision for M: 2 target orders",
            "bot_run_id": "20261124-050426-6d5n", "event_type": "DECISION_MADE", "seq": 3, "decision_id": "a" * 32,
            "market": "M", "targets": [{"slot": 0, "side": "yes"}], "trace_id": "a" * 32, "span_id": "b" * 16}
    back = line_from_event(otlp_event(line), "2026-11-24 05:04:26.797", "i-0abc/20261124-050426-6d5n")
    for key in ("ts", "level", "message", "bot_run_id", "event_type", "seq", "decision_id", "market", "targets",
                "trace_id"):
        assert back[key] == line[key], key


def test_the_run_id_comes_from_the_stream_when_the_event_does_not_carry_it():
    event = json.dumps({"body": "hi", "attributes": {"event_type": "LOG", "seq": "7"}})
    line = line_from_event(event, "2026-11-24 05:04:26.797", "i-0abc/20261124-050426-6d5n")
    assert line["bot_run_id"] == "20261124-050426-6d5n" and line["seq"] == 7
    assert line["ts"] == "2026-11-24T05:04:26.797Z"


def test_start_query_gets_the_group_the_epoch_range_and_the_limit():
    client = boto3.session.Session().client("logs", region_name="us-east-1", aws_access_key_id="x",
                                            aws_secret_access_key="x")
    start = datetime(2026, 11, 24, 5, 0, tzinfo=timezone.utc)
    with Stubber(client) as stub:  # validates parameter names and types against botocore's model
        stub.add_response("start_query", {"queryId": "q1"},
                          {"logGroupName": "/dora-bot/prod/app", "startTime": int(start.timestamp()),
                           "endTime": int(start.timestamp()) + 61, "queryString": ANY, "limit": 10000})
        stub.add_response("get_query_results", {"status": "Running", "results": []}, {"queryId": "q1"})
        stub.add_response("get_query_results", {"status": "Complete", "results": [[
            {"field": "@timestamp", "value": "2026-11-24 05:00:01.000"},
            {"field": "@message", "value": json.dumps({"body": "x", "attributes": {"seq": 1, "event_type": "LOG"}})}]]},
            {"queryId": "q1"})
        reader = InsightsReader(log_group("prod"), client, poll_s=0, sleep=lambda s: None)
        lines = reader.lines('attributes.decision_id = "x"', start, start + timedelta(seconds=60))
    assert [line["seq"] for line in lines] == [1]


def test_a_query_that_outlives_its_budget_is_stopped_and_reported():
    fake = FakeInsights([], running_polls=10**9)
    ticks = iter(range(10**6))
    reader = InsightsReader("/dora-bot/demo/app", fake, timeout_s=3, poll_s=1, sleep=lambda s: None,
                            clock=lambda: float(next(ticks)))
    with pytest.raises(LogsUnavailable, match="did not complete within 3 s"):
        reader.run("fields @message", datetime.now(timezone.utc), datetime.now(timezone.utc))
    assert fake.stopped == ["q1"]


def test_a_range_hitting_the_row_limit_is_split(monkeypatch):
    import dora_otel.query.aws as aws

    monkeypatch.setattr(aws, "MAX_ROWS", 5)
    start = datetime(2026, 11, 24, 5, 0, tzinfo=timezone.utc)
    lines = [{"ts": (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z"), "level": "INFO", "message": "m",
              "bot_run_id": "r", "event_type": "LOG", "seq": i + 1} for i in range(20)]
    fake = FakeInsights(lines, running_polls=0)
    got = InsightsReader("/g", fake, poll_s=0).lines(None, start, start + timedelta(seconds=19))
    assert sorted(line["seq"] for line in got) == list(range(1, 21)) and len(fake.started) > 3


@pytest.fixture(scope="module")
def decision_with_errors(faulty_run):
    lines = faulty_run.lines()
    cancel_error = next(line for line in lines if line["event_type"] == "ERROR" and line.get("decision_id"))
    return cancel_error["decision_id"], lines


def test_explain_reads_log_lines_from_cloudwatch_like_from_the_file(faulty_run, decision_with_errors):
    decision_id, lines = decision_with_errors
    reader = SQLiteSink(sqlite_path(faulty_run.data_dir))
    fake = FakeInsights(lines)
    aws = explain_decision(AwsSource("demo", reader=reader, logs_client=fake, poll_s=0), decision_id)
    local = explain_decision(LocalSource(faulty_run.data_dir), decision_id)
    assert aws.logs_available and fake.started[0]["logGroupName"] == "/dora-bot/demo/app"
    assert 'attributes.decision_id = "' + decision_id + '"' in fake.started[0]["queryString"]
    a, b = aws.decisions[0], local.decisions[0]
    assert [v.to_dict() for v in a.verdicts] == [v.to_dict() for v in b.verdicts]
    def strip(d: Any) -> list[tuple[Any, ...]]:
        return [(e["seq"], e["event_type"], e["in_ledger"], e["in_log"], e["context"], e["text"]) for e in d.timeline]

    assert strip(a) == strip(b)
    assert [e["stack"] for e in a.errors] == [e["stack"] for e in b.errors] and a.errors


def test_no_lines_yet_for_a_fresh_decision_says_cloudwatch_lags(faulty_run, decision_with_errors):
    decision_id, _ = decision_with_errors
    reader = SQLiteSink(sqlite_path(faulty_run.data_dir))
    report = explain_decision(AwsSource("demo", reader=reader, logs_client=FakeInsights([]), poll_s=0), decision_id)
    assert any("try again shortly" in note for note in report.notes)
    assert report.decisions[0].verdicts  # the ledger still answers


def test_a_missing_log_group_or_no_permission_is_a_note_not_a_crash(faulty_run, decision_with_errors):
    decision_id, _ = decision_with_errors
    reader = SQLiteSink(sqlite_path(faulty_run.data_dir))
    for code, text in (("ResourceNotFoundException", "does not exist"), ("AccessDeniedException", "not allowed")):
        source = AwsSource("demo", reader=reader, logs_client=FakeInsights([], fail=code))
        report = explain_decision(source, decision_id)
        assert not report.logs_available and any(text in note for note in report.notes)
        assert report.decisions[0].verdicts


def test_reconcile_reads_the_runs_lines_from_cloudwatch(faulty_run):
    lines = faulty_run.lines()
    lost = {lines[100]["seq"], lines[101]["seq"]}
    kept = [line for line in lines if line["seq"] not in lost]
    reader = SQLiteSink(sqlite_path(faulty_run.data_dir))
    now = datetime.now(timezone.utc)
    report = reconcile(AwsSource("demo", reader=reader, logs_client=FakeInsights(kept, running_polls=0)),
                       now - timedelta(hours=1), now)
    (info,) = report.telemetry_loss.values()
    assert info["missing"] == 2 and info["ranges"] == [[min(lost), max(lost)]]
    local = reconcile(LocalSource(faulty_run.data_dir), now - timedelta(hours=1), now)
    assert [m.to_dict() for m in report.mismatched] == [m.to_dict() for m in local.mismatched]
