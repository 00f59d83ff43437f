"""The DynamoDB server itself is SIGKILLed mid-run and restarted: the ledger keeps appending (never
blocking), logs the outage once, and ships every record appended meanwhile exactly once."""

from __future__ import annotations

import logging
import os
import signal
import uuid
from typing import Any

import pytest
import servers
from botocore.exceptions import BotoCoreError, ClientError

from dora_otel.ledger import Ledger
from dora_otel.sinks.dynamodb import DynamoDBSink
from dora_otel.sinks.tables import create_tables


def _event_ids(client: Any, table: str) -> list[str]:
    ids, kwargs = [], {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        ids += [item["event_id"]["S"] for item in page.get("Items", [])]
        if "LastEvaluatedKey" not in page:
            return ids
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@pytest.mark.slow
@pytest.mark.dynamodb
def test_server_sigkilled_and_restarted_receives_every_record_appended_meanwhile(
    tmp_path: Any, caplog: pytest.LogCaptureFixture, ledger_execution_record: Any
) -> None:
    server = servers.dynamodb_local().start()  # its own process: this test kills it
    env = f"x{uuid.uuid4().hex[:8]}"
    client = server.client(read_timeout_s=2.0, connect_timeout_s=1.0)
    create_tables(env, client=client, ttl_days=None)
    ledger = Ledger(DynamoDBSink(env, client=client), tmp_path / "journal", retry_base_s=0.05, retry_max_s=0.5)
    run = f"20261124-000000-{uuid.uuid4().hex[:4]}"
    try:
        with caplog.at_level(logging.INFO, logger="dora_otel.ledger"):
            ledger.start()
            for seq in range(20):
                ledger.append(ledger_execution_record(bot_run_id=run, seq=seq, event_type="ORDER_PLACE"))
            assert ledger.flush(30)

            os.kill(server.pid, signal.SIGKILL)  # the in-memory server and its tables are gone
            server.process.wait(timeout=10)
            during = []
            for seq in range(20, 120):
                record = ledger_execution_record(bot_run_id=run, seq=seq, event_type="ORDER_RESULT")
                ledger.append(record)  # never blocks, never raises, with no server at all
                during.append(record["event_id"])
            assert not ledger.flush(1.0)  # nothing can ship now

            server.start()  # same port; a fresh, empty server
            create_tables(env, client=client, ttl_days=None)
            assert ledger.flush(60), ledger.stats()

        ids = _event_ids(client, f"dora_execution_log_{env}")
        assert len(ids) == len(set(ids))  # exactly once
        assert set(during) <= set(ids)  # every record appended while the server was dead
        failing = [r for r in caplog.records if r.levelno == logging.ERROR and "is failing" in r.getMessage()]
        recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
        assert len(failing) == 1 and len(recovered) == 1
        assert failing[0].__dict__.get("target") == "execution_log"
    finally:
        ledger.shutdown(5)
        client.close()
        server.stop()


@pytest.mark.dynamodb
def test_tables_command_creates_idempotently_and_describes(dynamodb_local_server: Any, tmp_path: Any) -> None:
    import json
    import subprocess
    import sys

    server = dynamodb_local_server
    env = dict(os.environ, AWS_ENDPOINT_URL_DYNAMODB=server.endpoint, AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", DORA_ENV="demo")
    env.pop("AWS_PROFILE", None)
    command = [sys.executable, "-m", "dora_otel.cli", "tables"]
    client = server.client()
    try:
        for _ in range(2):  # the second create finds them and succeeds
            made = subprocess.run([*command, "create", "--env", "demo"], capture_output=True, text=True,
                                  env=env, timeout=120, cwd=tmp_path)
            assert made.returncode == 0, made.stderr
            assert "dora_execution_log_demo" in made.stderr and "dora_decision_log_demo" in made.stderr
        shown = subprocess.run([*command, "describe", "--env", "demo"], capture_output=True, text=True,
                               env=env, timeout=60, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        described = json.loads(shown.stdout)["tables"]  # one JSON document
        by_name = {d["name"]: d for d in described}
        assert by_name["dora_execution_log_demo"]["status"] == "ACTIVE"
        assert {g["name"] for g in by_name["dora_execution_log_demo"]["gsis"]} == {"gsi1", "gsi_order"}
        assert {g["name"] for g in by_name["dora_decision_log_demo"]["gsis"]} == {"market_ts", "day_ts"}
    finally:
        for name in ("dora_execution_log_demo", "dora_decision_log_demo"):
            try:
                client.delete_table(TableName=name)
            except (BotoCoreError, ClientError):  # never created, or the server is gone: nothing to drop
                pass
        client.close()


def test_tables_command_without_a_server_fails_with_one_clear_line(tmp_path: Any) -> None:
    import subprocess
    import sys

    env = dict(os.environ, AWS_ENDPOINT_URL_DYNAMODB=f"http://127.0.0.1:{servers.free_port()}", AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="AKIAEXAMPLEKEYID0001", AWS_SECRET_ACCESS_KEY="s3cr3t-Access-Key-Value-0001")
    proc = subprocess.run([sys.executable, "-m", "dora_otel.cli", "tables", "describe", "--env", "demo"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 5  # backend unreachable (dora_otel.query.output.Exit)
    assert proc.stderr.startswith("dora-otel tables describe: ") and "Traceback" not in proc.stderr
    assert "AKIAEXAMPLEKEYID0001" not in proc.stderr and "s3cr3t-Access" not in proc.stderr  # no credentials echoed
