"""The Ledger against real DynamoDB servers: kill -9, a stopped server, injected faults.

Everything is checked by event_id in the table: every record arrives, none twice.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from servers import FaultInjector

from dora_otel.ledger import Ledger
from dora_otel.sinks.dynamodb import DynamoDBSink
from dora_otel.sinks.tables import create_tables

Factory = Callable[..., dict[str, Any]]
APPENDER = Path(__file__).with_name("_appender.py")


def stored_event_ids(env: Any) -> list[str]:
    items = env.scan_all(f"dora_execution_log_{env.env}")
    return [i["event_id"]["S"] for i in items]


def ledger_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "dora_otel.ledger" and r.levelno == level]


def read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    """One stdout line of a child, or fail after ``timeout_s`` (the child is killed)."""
    timer = threading.Timer(timeout_s, process.kill)
    timer.start()
    try:
        assert process.stdout is not None
        return process.stdout.readline().strip()
    finally:
        timer.cancel()


@pytest.mark.slow
def test_kill_9_during_a_server_outage_loses_nothing_and_duplicates_nothing(
    dynamodb_local_server: Any, tmp_path: Path
) -> None:
    from servers import DynamoEnv

    server = dynamodb_local_server
    client = server.client(read_timeout_s=10.0)
    env = DynamoEnv(server, f"k{uuid.uuid4().hex[:10]}", client)
    create_tables(env.env, client=client, ttl_days=None)
    journal = tmp_path / "journal"
    count, first = 3000, 1000
    with subprocess.Popen(
        [
            sys.executable,
            str(APPENDER),
            "--endpoint",
            server.endpoint,
            "--env",
            env.env,
            "--journal",
            str(journal),
            "--count",
            str(count),
            "--first",
            str(first),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert read_line(child, 60) == "READY"
            server.pause()  # the child's shipper now hangs on reads and times out
            try:
                assert child.stdin is not None
                child.stdin.write("GO\n")
                child.stdin.flush()
                assert read_line(child, 60) == "DONE"  # appends completed while the server was stopped
                time.sleep(0.5)
                child.send_signal(signal.SIGKILL)
                child.wait(10)
            finally:
                server.resume()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()

    ledger = Ledger(DynamoDBSink(env.env, client=server.client(read_timeout_s=10.0)), journal)
    ledger.start()
    assert ledger.flush(120)
    assert ledger.shutdown(5)
    ids = stored_event_ids(env)
    assert len(ids) == count and len(set(ids)) == count
    assert set(ids) == {f"20261124-000000-k9k9:{i}" for i in range(count)}
    assert ledger.stats()["replayed"] >= count - first
    assert list(journal.glob("seg-*")) == []
    client.close()


@pytest.mark.slow
def test_append_completes_while_the_server_is_stopped_and_the_outage_logs_twice(
    dynamodb_env: Any, tmp_path: Path, ledger_execution_record: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    server = dynamodb_env.server
    client = server.client(connect_timeout_s=0.5, read_timeout_s=0.5)
    ledger = Ledger(
        DynamoDBSink(dynamodb_env.env, client=client),
        tmp_path / "journal",
        retry_base_s=0.05,
        retry_max_s=0.3,
        linger_s=0.0,
    )
    ledger.start()
    run = f"run-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.INFO, logger="dora_otel.ledger"):
        for i in range(100):
            ledger.append(ledger_execution_record(bot_run_id=run, seq=i))
        assert ledger.flush(30)
        server.pause()
        try:
            appender = threading.Thread(
                target=lambda: [
                    ledger.append(ledger_execution_record(bot_run_id=run, seq=i)) for i in range(100, 2100)
                ]
            )
            appender.start()
            appender.join(60)
            assert not appender.is_alive(), "append blocked while the server was stopped"
            deadline = time.monotonic() + 30
            while not ledger.stats()["outage"]:
                assert time.monotonic() < deadline, "no outage detected"
                time.sleep(0.05)
        finally:
            server.resume()
        assert ledger.flush(60)

    ids = stored_event_ids(dynamodb_env)
    assert len(ids) == 2100 and len(set(ids)) == 2100
    errors = ledger_lines(caplog, logging.ERROR)
    assert len(errors) == 1
    assert errors[0].event_type == "ERROR" and errors[0].target == "execution_log"
    assert errors[0].error_type == "RetryableSinkError"
    recovered = [r for r in ledger_lines(caplog, logging.INFO) if "recovered" in r.getMessage()]
    assert len(recovered) == 1
    stats = ledger.stats()
    assert stats["retried"] >= 3 and stats["shipped"] >= 2100 and not stats["outage"]
    assert ledger.shutdown(5)


def test_injected_faults_are_retried_and_counted_and_everything_arrives_once(
    dynamodb_env: Any, tmp_path: Path, ledger_execution_record: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    server = dynamodb_env.server
    client = server.client(read_timeout_s=5.0)
    writer = server.client()
    injector = FaultInjector(client, writer=writer)
    injector.add("throttle", "500", "unprocessed", "timeout", "unprocessed_all")
    ledger = Ledger(
        DynamoDBSink(dynamodb_env.env, client=client),
        tmp_path / "journal",
        retry_base_s=0.01,
        retry_max_s=0.05,
    )
    run = f"run-{uuid.uuid4().hex[:8]}"
    for i in range(60):
        ledger.append(ledger_execution_record(bot_run_id=run, seq=i))
    with caplog.at_level(logging.INFO, logger="dora_otel.ledger"):
        ledger.start()
        assert ledger.flush(30)
    assert injector.injected == 5
    ids = stored_event_ids(dynamodb_env)
    assert len(ids) == 60 and len(set(ids)) == 60
    assert ledger.stats()["retried"] == 5
    assert ledger_lines(caplog, logging.ERROR) == []  # transient faults are not an outage
    assert ledger.shutdown(5)
    writer.close()
