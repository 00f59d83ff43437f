"""The same questions on DynamoDB (DynamoDB Local, and dynalite for the API-call test) give the same
verdicts as on SQLite, and the DynamoDB reader only ever Queries (never Scans)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any, Iterator

import pytest

from dora_otel.query.explain import explain_decision, explain_market
from dora_otel.query.local import LocalSource
from dora_otel.query.reconcile import reconcile
from dora_otel.query.times import parse_time
from dora_otel.sinks.dynamodb import DynamoDBSink
from dora_otel.sinks.sqlite import SQLiteSink, sqlite_path
from dora_otel.sinks.tables import create_tables, table_names

from ._helpers import FAULTY, MARKETS, clean_env, dora_cli, expected_verdict, run_demo

# The demo writes to the tables of DORA_ENV, which dora_otel.config accepts only as demo or prod:
# so this test makes the `demo` tables on its own DynamoDB Local server and removes them afterwards.
DEMO_ENV = "demo"


@pytest.fixture
def demo_tables(dynamodb_local_server) -> Iterator[Any]:
    client = dynamodb_local_server.client(read_timeout_s=10.0)
    for name in table_names(DEMO_ENV):
        try:
            client.delete_table(TableName=name)
            client.get_waiter("table_not_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2})
        except client.exceptions.ResourceNotFoundException:
            pass
    create_tables(DEMO_ENV, client=client, ttl_days=None)
    try:
        yield dynamodb_local_server
    finally:
        for name in table_names(DEMO_ENV):
            try:
                client.delete_table(TableName=name)
            except Exception:
                pass
        client.close()


def _verdicts_by_loop(reports: dict[str, dict[str, Any]]) -> dict[tuple[str, int, Any], str]:
    return {(d["market"], d["loop"], v["slot"]): v["verdict"]
            for report in reports.values() for d in report["decisions"] for v in d["verdicts"]}


def _explain_all(data_dir: Any, *extra: str, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    out = {}
    for market in MARKETS:
        proc = dora_cli("explain", "--market", market, "--at", "now", "--window", "1h", "--json",
                        "--data-dir", str(data_dir), *extra, env=env)
        assert proc.returncode == 0, proc.stderr
        out[market] = json.loads(proc.stdout)
    return out


def test_a_demo_run_on_dynamodb_local_explains_like_the_same_run_on_sqlite(demo_tables, faulty_run, tmp_path):
    aws = dict(AWS_ENDPOINT_URL_DYNAMODB=demo_tables.endpoint, AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", DORA_ENV=DEMO_ENV)
    dynamo_run = run_demo(tmp_path / "ddb", *FAULTY, "--ledger", "dynamodb", env=clean_env(**aws))
    assert "dynamodb:" in dynamo_run.stderr and ", 0 rejected" in dynamo_run.stderr

    on_dynamo = _explain_all(dynamo_run.data_dir, "--ledger", "dynamodb", "--logs", "file", env=clean_env(**aws))
    on_sqlite = _explain_all(faulty_run.data_dir)
    # same seed, same exchange behaviour: the same verdict for every (market, loop, slot)
    assert _verdicts_by_loop(on_dynamo) == _verdicts_by_loop(on_sqlite)
    for report in on_dynamo.values():
        assert report["source"].startswith("ledger DynamoDB dora_decision_log_demo + dora_execution_log_demo")
        for decision in report["decisions"]:
            assert decision["records_from"] == "ledger"
            for v in decision["verdicts"]:
                why = dynamo_run.held_back(decision["market"], decision["loop"], v["expected"])
                assert v["verdict"] == expected_verdict(dynamo_run.truth.get(v["client_order_id"]), why)
                if why is not None:
                    assert v["reason"] == why
    kinds = Counter(v for v in _verdicts_by_loop(on_dynamo).values())
    # no NOT_SENT: the demo says why for every order it does not send (SUPPRESSED, the bot's own record)
    assert set(kinds) == {"SUPPRESSED", "REJECTED", "UNKNOWN", "RESTING", "FILLED", "PARTIAL", "CANCELLED"}
    assert kinds["SUPPRESSED"] == len(dynamo_run.suppressed)


def _copy_ledger(faulty_run: Any, sink: DynamoDBSink) -> SQLiteSink:
    sqlite = SQLiteSink(sqlite_path(faulty_run.data_dir))
    day = faulty_run.lines()[0]["ts"][:10]
    decisions = sqlite.decisions_between(f"{day}T00:00:00.000000Z", f"{day}T23:59:59.999999Z")
    records = [dict(r, kind="decision") for r in decisions]
    for run in {d["bot_run_id"] for d in decisions}:
        records += [dict(r, kind="execution") for r in sqlite.events_for_run(run)]
    for i in range(0, len(records), 25):
        result = sink.write_batch(records[i:i + 25])
        assert not result.failed and not result.unprocessed
    return sqlite


def test_explain_and_reconcile_on_dynamodb_only_query_and_agree_with_sqlite(dynamodb_env, faulty_run):
    calls: Counter[str] = Counter()
    client = dynamodb_env.server.client(read_timeout_s=10.0)
    sqlite = _copy_ledger(faulty_run, DynamoDBSink(dynamodb_env.env, client=client))
    client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.update([model.name]))

    dynamo = LocalSource(faulty_run.data_dir, env=dynamodb_env.env, reader=DynamoDBSink(dynamodb_env.env, client=client))
    local = LocalSource(faulty_run.data_dir, reader=sqlite)
    now, window = parse_time("now"), timedelta(hours=1)
    for market in MARKETS:
        a, b = explain_market(dynamo, market, now, window), explain_market(local, market, now, window)
        assert [[v.to_dict() for v in d.verdicts] for d in a.decisions] == [[v.to_dict() for v in d.verdicts] for d in b.decisions]
        assert a.unmatched_fills == b.unmatched_fills
    some = a.decisions[5].decision_id
    on_dynamo, on_sqlite = (explain_decision(s, some).to_dict()["decisions"][0] for s in (dynamo, local))
    assert on_dynamo.pop("cloudwatch")["log_group"] == f"/dora-bot/{dynamodb_env.env}/app"
    on_sqlite.pop("cloudwatch")
    assert on_dynamo == on_sqlite  # the whole story, timeline included
    ra, rb = reconcile(dynamo, now - window, now), reconcile(local, now - window, now)
    assert ra.verdict_counts == rb.verdict_counts and [m.to_dict() for m in ra.mismatched] == [m.to_dict() for m in rb.mismatched]

    assert calls and set(calls) <= {"Query", "GetItem"}, calls
    client.close()
