"""ExecutionLedgerProcessor end to end: execution spans become ledger records at the right moment,
with the right fields; records without a decision are rejected; the demo's ledger in DynamoDB
(Local and dynalite) holds every execution event exactly once; a bot killed mid-run while DynamoDB
is stopped loses nothing its journal held."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

import dora_otel
from dora_otel.ledger.journal import parse_line
from dora_otel.sinks.memory import MemorySink

REPO = Path(__file__).resolve().parents[2]
TARGETS = [{"side": "yes", "price": 0.45, "size": 10}, {"side": "no", "price": 0.50, "size": 10}]
EXECUTION_EVENTS = ("ORDER_PLACE", "ORDER_RESULT", "ORDER_CANCEL", "FILL", "ORDER_SUPPRESSED")


class Bot:
    def __init__(self, telemetry: Any = None, sink: MemorySink | None = None) -> None:
        self.telemetry, self.sink = telemetry, sink
        self.seen_inside: list[str] = []

    @dora_otel.decision_cycle(loop="loop")
    def quote(self, market, loop=7):
        return list(TARGETS)

    @dora_otel.order_place
    def place(self, market, side, price, size, client_order_id=None):
        if self.telemetry is not None:  # what the ledger holds while the exchange call is in flight
            self.telemetry.ledger.flush(5)
            self.seen_inside = [r["event_type"] for r in self.sink.all_records() if r.get("kind") == "execution"]
        return {"order": {"order_id": f"o-{(client_order_id or 'none')[:6]}", "status": "resting"}}

    @dora_otel.order_cancel
    def cancel(self, order_id):
        return None


def _setup(tmp_path, strict):
    sink, stream = MemorySink(), io.StringIO()
    telemetry = dora_otel.setup(stream=stream, container_mode=True, data_dir=tmp_path, ledger_sink=sink,
                                strict=strict, install_signal_handlers=False, watchdog_seconds=0)
    return telemetry, sink, stream


@pytest.fixture
def ledgered(tmp_path):
    telemetry, sink, stream = _setup(tmp_path, strict=True)
    yield telemetry, sink, stream
    telemetry.shutdown()


@pytest.fixture
def lenient(tmp_path):
    telemetry, sink, stream = _setup(tmp_path, strict=False)
    yield telemetry, sink, stream
    telemetry.shutdown()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    live = dora_otel.current()
    if live is not None:
        assert live.flush(10)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_order_place_is_on_record_while_the_exchange_call_is_in_flight(ledgered):
    telemetry, sink, _ = ledgered
    bot = Bot(telemetry, sink)
    bot.quote("KXBTC")
    bot.place("KXBTC", "yes", 0.45, 10)
    assert bot.seen_inside == ["ORDER_PLACE"]


def test_records_carry_the_plan_fields_and_share_seq_with_their_log_line(ledgered):
    telemetry, sink, stream = ledgered
    bot = Bot()
    for t in bot.quote("KXBTC"):
        response = bot.place("KXBTC", t["side"], t["price"], t["size"])
    bot.cancel(response["order"]["order_id"])
    dora_otel.record_fill(price=0.5, size=3, pnl_delta=-0.1, order_id=response["order"]["order_id"])
    telemetry.shutdown()
    decision_line = next(l for l in lines(stream) if l["event_type"] == "DECISION_MADE")
    decision_id = decision_line["decision_id"]

    decision = sink.decision(decision_id)
    assert decision["kind"] == "decision" and decision["bot_run_id"] == telemetry.bot_run_id
    assert decision["execution_log_partition"] == telemetry.bot_run_id and decision["market"] == "KXBTC"
    assert decision["loop"] == 7 and decision["target_count"] == 2 and decision["seq"] == decision_line["seq"]
    assert decision["expected_orders_hash"] == decision_line["expected_orders_hash"]
    assert [t["client_order_id"] for t in decision["target_orders"]] == [
        t["client_order_id"] for t in decision_line["targets"]]
    assert decision["decision_day"] == decision["decision_ts"][:10] and decision["decision_ts"].endswith("Z")

    events = sink.events_for_decision(decision_id)
    assert [e["event_type"] for e in events] == [
        "ORDER_PLACE", "ORDER_RESULT", "ORDER_PLACE", "ORDER_RESULT", "ORDER_CANCEL", "ORDER_CANCEL", "FILL"]
    logged = {(l["event_type"], l["seq"]) for l in lines(stream) if l["event_type"] in EXECUTION_EVENTS}
    assert {(e["event_type"], e["seq"]) for e in events} == logged
    for event in events:
        assert event["event_id"] == f"{telemetry.bot_run_id}:{event['seq']}"
        assert event["env"] == "demo" and event["bot_version"] == telemetry.bot_version
        assert event["market"] == "KXBTC" and event["client_order_id"]
        assert event["expires_at"] > time.time() + 29 * 86400
        assert all(value is not None for value in event.values())
        orjson.dumps(event)  # plain JSON types only
    result = events[1]
    assert result["status"] == "ACCEPTED" and result["order_id"].startswith("o-") and result["side"] == "yes"
    assert result["price"] == 0.45 and result["size"] == 10 and isinstance(result["latency_ms"], float)
    request, cancel, fill = events[4], events[5], events[6]
    assert "status" not in request and request["order_id"] == response["order"]["order_id"]  # journaled first
    assert cancel["status"] == "CANCELLED" and cancel["order_id"] == response["order"]["order_id"]
    assert isinstance(cancel["latency_ms"], float) and cancel["seq"] > request["seq"]
    assert fill["pnl_delta"] == -0.1 and fill["size"] == 3 and fill["side"] == "no"


def test_record_without_a_decision_is_rejected_with_an_error_line_and_a_counter(lenient):
    telemetry, sink, stream = lenient
    Bot().place("KXNODECISION", "yes", 0.45, 10)  # no decision for this market: ORDER_PLACE has no decision_id
    telemetry.ledger.flush(5)
    assert [r for r in sink.all_records() if r.get("market") == "KXNODECISION"] == []
    assert telemetry.stats()["rejected"] >= 1
    errors = [l for l in lines(stream) if l["event_type"] == "ERROR" and l.get("target") == "execution_log"]
    assert errors and "decision_id" in errors[0]["error_msg"]


def test_unmatched_fill_is_recorded_under_its_market(ledgered):
    telemetry, sink, _ = ledgered
    dora_otel.record_fill("KXBTC", "yes", 0.4, 2, 0.0, order_id="from-a-previous-run")
    telemetry.ledger.flush(5)
    fills = sink.events_for_decision("unmatched:KXBTC")
    assert len(fills) == 1 and fills[0]["order_id"] == "from-a-previous-run" and fills[0]["matched"] is False


# ------------------------------------------------------------------ against real DynamoDB servers

def _aws_env(server: Any, data_dir: Path) -> dict[str, str]:
    # The same credentials and region as the fixture's client: DynamoDB Local keeps one database
    # per access key and region.
    env = dict(os.environ, AWS_ENDPOINT_URL_DYNAMODB=server.endpoint, AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", DORA_ENV="demo",
               DORA_DATA_DIR=str(data_dir), DORA_LEDGER="dynamodb", CONTAINER_MODE="true")
    env.pop("AWS_PROFILE", None)
    return env


@pytest.fixture
def demo_tables(dynamodb_server):
    from dora_otel.sinks.tables import create_tables

    client = dynamodb_server.client(read_timeout_s=10.0)
    names = create_tables("demo", client=client, ttl_days=None)
    yield dynamodb_server, client
    if dynamodb_server.paused:
        dynamodb_server.resume()
    for name in names:
        client.delete_table(TableName=name)
    client.close()


def _scan(client: Any, table: str) -> list[dict[str, Any]]:
    items, kwargs = [], {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_demo_writes_every_execution_event_exactly_once_to_dynamodb(demo_tables, tmp_path):
    server, client = demo_tables
    proc = subprocess.run([sys.executable, "-m", "dora_otel.cli", "demo", "--cycles", "20", "--fault-rate", "0.2"],
                          capture_output=True, text=True, timeout=180, env=_aws_env(server, tmp_path), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    logged = [json.loads(l) for l in proc.stdout.splitlines()]
    # Every execution event of a decision, and every fill (one that matches no order is kept too,
    # under decision_id "unmatched:<market>").
    expected = {f"{l['bot_run_id']}:{l['seq']}" for l in logged
                if l["event_type"] in EXECUTION_EVENTS and (l.get("decision_id") or l["event_type"] == "FILL")}
    items = _scan(client, "dora_execution_log_demo")
    ids = [item["event_id"]["S"] for item in items]
    assert len(ids) == len(set(ids))  # exactly once
    assert set(ids) == expected
    kinds = {item["event_type"]["S"] for item in items}
    assert {"ORDER_PLACE", "ORDER_RESULT", "ORDER_CANCEL", "FILL"} <= kinds <= set(EXECUTION_EVENTS)

    decision_id = next(l["decision_id"] for l in logged if l["event_type"] == "ORDER_CANCEL")
    page = client.query(TableName="dora_execution_log_demo", IndexName="gsi1",
                        KeyConditionExpression="decision_id = :d", ExpressionAttributeValues={":d": {"S": decision_id}})
    stamps = [item["event_ts"]["S"] for item in page["Items"]]
    assert stamps == sorted(stamps) and len(stamps) >= 4
    in_log = sorted(l["seq"] for l in logged if l.get("decision_id") == decision_id
                     and l["event_type"] in EXECUTION_EVENTS)
    assert sorted(int(item["seq"]["N"]) for item in page["Items"]) == in_log


def _journal_event_ids(journal_dir: Path) -> set[str]:
    ids = set()
    for segment in journal_dir.glob("seg-*.jsonl"):
        for raw in segment.read_bytes().splitlines():
            record = parse_line(raw)  # a compact line expanded; None for a torn last line
            if record is not None and record.get("kind") == "execution":
                ids.add(record["event_id"])
    return ids


@pytest.mark.slow
def test_bot_killed_while_dynamodb_is_stopped_loses_nothing_it_journaled(demo_tables, tmp_path):
    server, client = demo_tables
    env = _aws_env(server, tmp_path)
    server.pause()  # SIGSTOP: requests hang, as in a network partition
    bot = subprocess.Popen([sys.executable, "-m", "dora_otel.cli", "demo", "--cycles", "1000000",
                            "--fault-rate", "0.1"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    logged = []
    while len(logged) < 1500:
        line = bot.stdout.readline()
        assert line, "the demo stopped early"
        logged.append(json.loads(line))
    bot.send_signal(signal.SIGKILL)
    bot.wait(timeout=10)
    bot.stdout.close()
    journaled = _journal_event_ids(tmp_path / "ledger" / "journal")
    logged_ids = {f"{l['bot_run_id']}:{l['seq']}" for l in logged
                  if l["event_type"] in ("ORDER_PLACE", "ORDER_RESULT", "FILL")
                  and (l.get("decision_id") or l["event_type"] == "FILL")}
    assert logged_ids <= journaled  # every logged placement, result and fill was journaled first
    server.resume()
    # The next start of the bot replays what the killed run left in the journal.
    proc = subprocess.run([sys.executable, "-m", "dora_otel.cli", "demo", "--cycles", "1"], capture_output=True,
                          text=True, timeout=180, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 60
    while True:
        ids = [item["event_id"]["S"] for item in _scan(client, "dora_execution_log_demo")]
        killed_run = [i for i in ids if i.startswith(logged[0]["bot_run_id"])]
        if set(killed_run) >= journaled or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(killed_run) == len(set(killed_run))  # exactly once, counted by event_id
    assert set(killed_run) == journaled
