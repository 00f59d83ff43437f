"""Shared fixtures.

Ledger storage (owned by the ledger/sinks tests; the lead adds other fixtures below):

* ``dynamodb_local_server`` / ``dynalite_server``: one server process each per test session, started
  on first use and stopped at the end. A server that cannot start FAILS the tests that need it
  (``npm ci`` missing, no Java): CI must never pass by skipping them.
* ``dynamodb_server``: parametrised over both servers, so an integration test runs on each.
* ``dynamodb_env``: fresh ledger tables (unique env) on the parametrised server.
* ``ledger_execution_record`` / ``ledger_decision_record``: record factories following
  docs/ARCHITECTURE.md.

Tests that use a server fixture are marked ``dynamodb`` automatically (``-m "not dynamodb"`` runs
the rest).
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

import dora_otel

# Nothing a test starts (boto3 in this process or in a `dora-otel` subprocess, which inherits the
# environment) may ask the EC2 metadata address for credentials or a region: only 127.0.0.1.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers  # tests/servers.py, importable through the sys.path line above
from servers import DynamoEnv

_LEDGER_SERVER_FIXTURES = ("dynamodb_local_server", "dynalite_server", "dynamodb_server", "dynamodb_env")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a local DynamoDB server with ``dynamodb``."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in _LEDGER_SERVER_FIXTURES):
            item.add_marker(pytest.mark.dynamodb)


def _start_server(factory: Callable[[], servers.DynamoServer]) -> Iterator[servers.DynamoServer]:
    try:
        server = factory().start()
    except servers.ServerError as exc:
        pytest.fail(f"local DynamoDB server unavailable: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dynamodb_local_server() -> Iterator[servers.DynamoServer]:
    """DynamoDB Local (in memory), for the whole session."""
    yield from _start_server(servers.dynamodb_local)


@pytest.fixture(scope="session")
def dynalite_server() -> Iterator[servers.DynamoServer]:
    """dynalite (in memory), for the whole session."""
    yield from _start_server(servers.dynalite)


@pytest.fixture(params=["dynamodb_local", "dynalite"])
def dynamodb_server(request: pytest.FixtureRequest) -> Iterator[servers.DynamoServer]:
    """Each local DynamoDB server in turn; a test that pauses it gets it resumed afterwards."""
    server: servers.DynamoServer = request.getfixturevalue(f"{request.param}_server")
    yield server
    if server.paused:
        server.resume()


@pytest.fixture
def dynamodb_env(dynamodb_server: servers.DynamoServer) -> Iterator[DynamoEnv]:
    """Fresh ledger tables (a unique env) on each server; deleted afterwards."""
    from dora_otel.sinks.tables import create_tables

    client = dynamodb_server.client(read_timeout_s=10.0)
    env = f"t{uuid.uuid4().hex[:10]}"
    names = create_tables(env, client=client, ttl_days=None)
    try:
        yield DynamoEnv(dynamodb_server, env, client)
    finally:
        if dynamodb_server.paused:
            dynamodb_server.resume()
        for name in names:
            try:
                client.delete_table(TableName=name)
            except (BotoCoreError, ClientError):  # never created, or the server is gone: nothing to drop
                pass
        client.close()


_counter = iter(range(10**9))


@pytest.fixture
def ledger_execution_record() -> Callable[..., dict[str, Any]]:
    """Factory: an execution record (kind=execution) with ARCHITECTURE.md's fields; override any."""

    def make(**fields: Any) -> dict[str, Any]:
        seq = fields.pop("seq", next(_counter))
        run = fields.pop("bot_run_id", "20261124-044700-ab12")
        record = {
            "kind": "execution",
            "bot_run_id": run,
            "decision_id": "0" * 31 + "1",
            "event_ts": f"2026-11-24T04:47:{seq % 60:02d}.{seq % 1000000:06d}Z",
            "seq": seq,
            "event_id": f"{run}:{seq}",
            "event_type": "ORDER_RESULT",
            "env": "test",
            "bot_version": "abc123",
            "market": "KXBTC-26NOV24-B97000",
            "client_order_id": f"coid-{seq}",
            "side": "yes",
            "price": 0.55,
            "size": 10,
            "status": "ACCEPTED",
            "latency_ms": 12.5,
            "expires_at": 1_900_000_000,
        }
        record.update(fields)
        return record

    return make


@pytest.fixture
def ledger_decision_record() -> Callable[..., dict[str, Any]]:
    """Factory: a decision record (kind=decision) with ARCHITECTURE.md's fields; override any."""

    def make(**fields: Any) -> dict[str, Any]:
        seq = fields.pop("seq", next(_counter))
        run = fields.pop("bot_run_id", "20261124-044700-ab12")
        decision_ts = fields.pop("decision_ts", f"2026-11-24T04:47:{seq % 60:02d}.000000Z")
        record = {
            "kind": "decision",
            "decision_id": fields.pop("decision_id", uuid.uuid4().hex),
            "bot_run_id": run,
            "execution_log_partition": run,
            "market": "KXBTC-26NOV24-B97000",
            "decision_ts": decision_ts,
            "decision_day": decision_ts[:10],
            "event_ts": decision_ts,
            "seq": seq,
            "event_id": f"{run}:{seq}",
            "loop": seq,
            "target_count": 2,
            "spread": 0.02,
            "target_orders": [
                {"slot": 0, "side": "yes", "price": 0.54, "size": 10, "client_order_id": "c0"},
                {"slot": 1, "side": "no", "price": 0.44, "size": 10, "client_order_id": "c1"},
            ],
            "expected_orders_hash": "h" * 16,
            "env": "test",
            "bot_version": "abc123",
            "expires_at": 1_900_000_000,
            "trace_id": "0" * 32,
        }
        record.update(fields)
        return record

    return make


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Every test leaves the root logger and dora_otel's globals as it found them."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    current = dora_otel.current()
    if current is not None:
        current.shutdown(reason="test teardown")
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
