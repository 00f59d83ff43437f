"""A restart on a NEW HOST (an empty data directory, no order index file) that shares the ledger's
DynamoDB tables: fills and a cancel recorded by order_id alone are stored unmatched, and explain /
reconcile join them to the decision that placed the orders at read time, through the sparse GSI
``gsi_order`` (Query only). The same read-time join on SQLite (a fill recorded unmatched because the
order index was lost), and a table made before ``gsi_order``: described as missing it, explain falls
back to the unmatched view and says so, and ``tables create`` adds the index.

Each "run" is a fresh setup() in-process (a new runtime, empty in-memory order book), with its own data
directory; explain and reconcile run through the CLI (a separate process), and in-process where API
calls are counted.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import dora_otel
from dora_otel.ledger.orders import index_path
from dora_otel.query.aws import AwsSource
from dora_otel.query.explain import explain_decision
from dora_otel.query.reconcile import reconcile
from dora_otel.sinks.dynamodb import DynamoDBSink
from dora_otel.sinks.tables import create_tables, describe_tables, table_definitions, table_names

MARKET = "KXNEWHOST-1"
# slot 0: cancelled by the second run; slot 1: filled completely; slot 2: filled 3 of 8
TARGETS = [{"side": "yes", "price": 0.40, "size": 10}, {"side": "no", "price": 0.55, "size": 5},
           {"side": "yes", "price": 0.38, "size": 8}]
AFTER_RESTART = {0: "CANCELLED", 1: "FILLED", 2: "PARTIAL"}


class Exchange:
    def __init__(self) -> None:
        self.n = 0

    @dora_otel.order_place
    def place(self, market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> Any:
        self.n += 1
        return {"order": {"order_id": f"{market}-ord-{self.n}", "status": "resting"}}

    @dora_otel.order_cancel
    def cancel(self, order_id: str) -> Any:
        return {"order": {"order_id": order_id, "status": "canceled"}}


@dora_otel.decision_cycle
def decide(market: str) -> list[dict[str, Any]]:
    return [dict(t) for t in TARGETS]


def _run(data_dir: Path, **ledger: Any) -> tuple[Any, io.StringIO]:
    stream = io.StringIO()
    telemetry = dora_otel.setup(stream=stream, container_mode=True, data_dir=data_dir, strict=True,
                                install_signal_handlers=False, watchdog_seconds=0, **ledger)
    return telemetry, stream


def _stop(telemetry: Any, stream: io.StringIO) -> list[dict[str, Any]]:
    telemetry.shutdown(reason="restart")
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def first_run(data_dir: Path, **ledger: Any) -> tuple[str, list[str]]:
    """Decide and place the three orders, then exit (they rest on the exchange)."""
    telemetry, stream = _run(data_dir, **ledger)
    ex = Exchange()
    for t in decide(MARKET):
        ex.place(MARKET, t["side"], t["price"], t["size"])
    lines = _stop(telemetry, stream)
    decision_id = next(line["decision_id"] for line in lines if line["event_type"] == "DECISION_MADE")
    return decision_id, [f"{MARKET}-ord-{i}" for i in (1, 2, 3)]


def second_run(data_dir: Path, order_ids: list[str], **ledger: Any) -> list[dict[str, Any]]:
    """The restarted bot, knowing nothing: fills by order_id alone (as Kalshi sends them) and a cancel."""
    telemetry, stream = _run(data_dir, **ledger)
    assert dora_otel.record_fill(order_id=order_ids[1], price=0.55, size=5, pnl_delta=0.2) is None
    assert dora_otel.record_fill(order_id=order_ids[2], price=0.38, size=3, pnl_delta=0.1) is None
    Exchange().cancel(order_ids[0])
    lines = _stop(telemetry, stream)
    assert not [line for line in lines if line["level"] == "ERROR"], lines
    return lines


def _slots(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    (decision,) = report["decisions"]
    return {v["slot"]: v for v in decision["verdicts"]}


def _assert_joined(report: dict[str, Any], order_ids: list[str]) -> None:
    slots = _slots(report)
    assert {s: v["verdict"] for s, v in slots.items()} == AFTER_RESTART
    assert [(f["order_id"], f["size"]) for f in slots[1]["fills"]] == [(order_ids[1], 5)]
    assert [(f["order_id"], f["size"]) for f in slots[2]["fills"]] == [(order_ids[2], 3)]
    assert [c.get("status") for c in slots[0]["cancels"]] == [None, "CANCELLED"]
    assert slots[0]["order_id"] == order_ids[0]
    # joined fills are no longer listed as fills that match no decision
    assert not [f for f in report["unmatched_fills"] if f.get("order_id") in order_ids]
    (decision,) = report["decisions"]
    assert any("4 fill/cancel record(s) of a later run" in n and "by order_id" in n for n in decision["notes"])
    # the fills get the side the later run did not know, from the placement
    assert [f["side"] for f in slots[1]["fills"] + slots[2]["fills"]] == ["no", "yes"]


def _env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DORA_", "OTEL_", "AWS_")) and k != "CONTAINER_MODE"}
    env.update(AWS_ENDPOINT_URL_DYNAMODB=endpoint, AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="local",
               AWS_SECRET_ACCESS_KEY="local", AWS_EC2_METADATA_DISABLED="true")
    return env


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dora_otel.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def _count_calls(client: Any) -> Counter[str]:
    calls: Counter[str] = Counter()
    client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.update([model.name]))
    return calls


def _range() -> tuple[datetime, datetime]:
    now = datetime.now(timezone.utc)
    return now - timedelta(minutes=10), now + timedelta(minutes=1)


def test_fills_and_a_cancel_recorded_on_a_new_host_join_their_decision_through_the_shared_tables(
        dynamodb_env: Any, tmp_path: Path) -> None:
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    sink = lambda: DynamoDBSink(dynamodb_env.env, client=dynamodb_env.server.client())  # noqa: E731
    decision_id, order_ids = first_run(host_a, ledger_sink=sink())
    second_run(host_b, order_ids, ledger_sink=sink())
    stored = DynamoDBSink(dynamodb_env.env, client=dynamodb_env.client)
    assert {r["event_type"] for r in stored.events_for_decision("unmatched:unknown")} == {"FILL", "ORDER_CANCEL"}

    # the operator's view: the CLI, reading the shared tables only
    env = _env(dynamodb_env.server.endpoint)
    proc = _cli("explain", decision_id, "--ledger", "dynamodb", "--env", dynamodb_env.env, "--logs", "none",
                "--json", "--data-dir", str(host_b), env=env)
    assert proc.returncode == 0, proc.stderr
    _assert_joined(json.loads(proc.stdout), order_ids)
    since, until = _range()
    proc = _cli("reconcile", "--since", since.isoformat(), "--until", until.isoformat(), "--ledger", "dynamodb",
                "--env", dynamodb_env.env, "--logs", "none", "--json", "--settle", "0s", env=env)
    assert proc.returncode == 0, proc.stderr  # nothing failed: no mismatch once the restart's evidence joins
    answer = json.loads(proc.stdout)
    assert answer["decisions"] == 1 and answer["mismatched"] == []
    assert answer["verdict_counts"] == {"CANCELLED": 1, "FILLED": 1, "PARTIAL": 1}

    # in-process, counting the API calls: Query only, one per order the decision's own records leave open
    client = dynamodb_env.server.client()
    calls = _count_calls(client)
    report = explain_decision(AwsSource(dynamodb_env.env, reader=DynamoDBSink(dynamodb_env.env, client=client),
                                        use_logs=False), decision_id).to_dict()
    _assert_joined(report, order_ids)
    assert set(calls) == {"Query"}, calls
    calls.clear()
    rec = reconcile(AwsSource(dynamodb_env.env, reader=DynamoDBSink(dynamodb_env.env, client=client),
                              use_logs=False), *_range(), settle=timedelta(0))
    assert rec.verdict_counts == {"CANCELLED": 1, "FILLED": 1, "PARTIAL": 1} and not rec.mismatched
    assert set(calls) == {"Query"}, calls


def test_without_the_join_the_same_restart_leaves_the_orders_resting(dynamodb_env: Any, tmp_path: Path) -> None:
    """The evidence the join adds is what changes the verdicts: read without it, all three rest."""
    sink = lambda: DynamoDBSink(dynamodb_env.env, client=dynamodb_env.server.client())  # noqa: E731
    decision_id, order_ids = first_run(tmp_path / "a", ledger_sink=sink())
    second_run(tmp_path / "b", order_ids, ledger_sink=sink())
    plain = DynamoDBSink(dynamodb_env.env, client=dynamodb_env.client)
    from dora_otel.query.verdicts import judge_decision

    decision = plain.decision(decision_id)
    assert decision is not None
    verdicts, _ = judge_decision(decision["target_orders"], plain.events_for_decision(decision_id))
    assert [v.verdict.value for v in verdicts] == ["RESTING"] * 3
    joined = {(r["event_type"], r["order_id"]) for r in plain.records_for_orders(order_ids)}
    assert ("FILL", order_ids[1]) in joined and ("ORDER_CANCEL", order_ids[0]) in joined


def test_on_sqlite_a_fill_recorded_unmatched_joins_its_decision_at_read_time(tmp_path: Path) -> None:
    decision_id, order_ids = first_run(tmp_path, ledger="sqlite")
    index_path(tmp_path).unlink()  # the order index is lost (unwritable disk, deleted): fills go unmatched
    second_run(tmp_path, order_ids, ledger="sqlite")

    proc = _cli("explain", decision_id, "--ledger", "sqlite", "--data-dir", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    _assert_joined(report, order_ids)
    (decision,) = report["decisions"]
    # the joined records' log lines are in the run that wrote them: no false "log lines lost"
    assert decision["telemetry"]["log_lines_missing"] == []
    since, until = _range()
    proc = _cli("reconcile", "--since", since.isoformat(), "--until", until.isoformat(), "--data-dir",
                str(tmp_path), "--json", "--settle", "0s")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["verdict_counts"] == {"CANCELLED": 1, "FILLED": 1, "PARTIAL": 1} and answer["mismatched"] == []


def _tables_without_order_index(client: Any, env: str) -> None:
    for definition in table_definitions(env):
        definition["GlobalSecondaryIndexes"] = [g for g in definition["GlobalSecondaryIndexes"]
                                                if g["IndexName"] != "gsi_order"]
        keyed = {k["AttributeName"] for g in definition["GlobalSecondaryIndexes"] for k in g["KeySchema"]}
        keyed |= {k["AttributeName"] for k in definition["KeySchema"]}
        definition["AttributeDefinitions"] = [a for a in definition["AttributeDefinitions"]
                                              if a["AttributeName"] in keyed]
        client.create_table(**definition)
        client.get_waiter("table_exists").wait(TableName=definition["TableName"], WaiterConfig={"Delay": 0.2})


def _drop_tables(client: Any, env: str) -> None:
    for name in table_names(env):
        try:
            client.delete_table(TableName=name)
            client.get_waiter("table_not_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2})
        except client.exceptions.ResourceNotFoundException:
            pass


def test_tables_made_before_the_order_index_are_described_as_missing_it_and_explain_says_so(
        dynamodb_local_server: Any, tmp_path: Path) -> None:
    client = dynamodb_local_server.client(read_timeout_s=10.0)
    env = "prod"  # `dora-otel tables` takes demo or prod only; nothing else uses prod on DynamoDB Local
    _drop_tables(client, env)
    _tables_without_order_index(client, env)
    try:
        execution = table_names(env).execution
        missing = {t["name"]: t["missing_gsis"] for t in describe_tables(env, client=client)}
        assert missing == {execution: ["gsi_order"], table_names(env).decision: []}
        cli_env = _env(dynamodb_local_server.endpoint)
        proc = _cli("tables", "describe", "--env", env, env=cli_env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["missing_indexes"] == {execution: ["gsi_order"]}
        assert f"{execution} lacks index gsi_order" in proc.stderr and "tables create" in proc.stderr

        sink = lambda: DynamoDBSink(env, client=dynamodb_local_server.client())  # noqa: E731
        decision_id, order_ids = first_run(tmp_path / "a", ledger_sink=sink())
        second_run(tmp_path / "b", order_ids, ledger_sink=sink())

        proc = _cli("explain", decision_id, "--ledger", "dynamodb", "--env", env, "--logs", "none", "--json",
                    env=cli_env)
        assert proc.returncode == 0, proc.stderr  # not a failure: the unmatched view, and why
        report = json.loads(proc.stdout)
        assert [v["verdict"] for v in _slots(report).values()] == ["RESTING"] * 3
        (note,) = [n for n in report["notes"] if "gsi_order" in n]
        assert "missing" in note and f"tables create --env {env}" in note

        create_tables(env, client=client, ttl_days=None)  # the upgrade: adds the index, backfilled
        assert {t["name"]: t["missing_gsis"] for t in describe_tables(env, client=client)}[execution] == []
        proc = _cli("explain", decision_id, "--ledger", "dynamodb", "--env", env, "--logs", "none", "--json",
                    env=cli_env)
        assert proc.returncode == 0, proc.stderr
        _assert_joined(json.loads(proc.stdout), order_ids)
    finally:
        _drop_tables(client, env)
        client.close()


@pytest.mark.parametrize("order_id", [12345, ""])
def test_an_order_id_dynamodb_cannot_index_as_text_does_not_lose_the_record(dynamodb_env: Any, order_id: Any,
                                                                           ledger_execution_record: Any) -> None:
    """gsi_order's key is a string: a numeric order_id is stored as its text, an empty one left out,
    so the item is never refused for its index key."""
    sink = DynamoDBSink(dynamodb_env.env, client=dynamodb_env.client)
    record = ledger_execution_record(event_type="FILL", order_id=order_id, decision_id="unmatched:X")
    result = sink.write_batch([record])
    assert result.written == 1 and not result.failed
    (stored,) = sink.events_for_decision("unmatched:X")
    assert stored.get("order_id") == ("12345" if order_id else None)
    assert [r["order_id"] for r in sink.records_for_orders(["12345"])] == (["12345"] if order_id else [])


def test_the_join_asks_the_store_only_about_orders_the_decisions_own_records_leave_open(
        ledger_execution_record: Any) -> None:
    """An order its own fills complete cannot change: reading its decision costs no lookup."""
    from dora_otel.query.sources import OrderJoin
    from dora_otel.sinks.memory import MemorySink

    store = MemorySink()
    rec = ledger_execution_record
    store.write_batch([
        rec(event_type="ORDER_PLACE", seq=1, decision_id="d1", slot=0, client_order_id="c1", size=5),
        rec(event_type="ORDER_RESULT", seq=2, decision_id="d1", slot=0, client_order_id="c1", order_id="o1",
            status="ACCEPTED"),
        rec(event_type="FILL", seq=3, decision_id="d1", slot=0, client_order_id="c1", order_id="o1", size=5),
        rec(event_type="ORDER_PLACE", seq=4, decision_id="d2", slot=0, client_order_id="c2", size=5),
        rec(event_type="ORDER_RESULT", seq=5, decision_id="d2", slot=0, client_order_id="c2", order_id="o2",
            status="ACCEPTED"),
        rec(event_type="FILL", seq=1, bot_run_id="later", decision_id="unmatched:unknown", order_id="o2", size=2,
            client_order_id=None),
    ])
    reader = OrderJoin(store)
    before = store.query_count
    assert [r["event_type"] for r in reader.events_for_decision("d1")] == ["ORDER_PLACE", "ORDER_RESULT", "FILL"]
    assert store.query_count - before == 1  # gsi1 only
    before = store.query_count
    joined = [r for r in reader.events_for_decision("d2") if r.get("joined_by")]
    assert store.query_count - before == 2  # gsi1 + one lookup of o2
    assert [(r["slot"], r["client_order_id"], r["recorded_as"]) for r in joined] == [(0, "c2", "unmatched:unknown")]
    assert reader.events_for_decision("unmatched:unknown") == []  # joined: no longer unmatched
