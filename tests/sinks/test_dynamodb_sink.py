"""DynamoDB specifics: tables, error classification, UnprocessedItems, lazy client, no boto3 on import.

Each test runs on DynamoDB Local and on dynalite (the ``dynamodb_env`` fixture).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from servers import FaultInjector

from dora_otel.protocols import InvalidRecordError, PermanentSinkError, RetryableSinkError
from dora_otel.sinks.dynamodb import DynamoDBSink
from dora_otel.sinks.tables import create_tables, describe_tables, table_names

Factory = Callable[..., dict[str, Any]]


def test_importing_dora_otel_and_making_sinks_does_not_import_boto3() -> None:
    code = (
        "import sys, dora_otel, dora_otel.ledger, dora_otel.sinks, dora_otel.sinks.dynamodb, "
        "dora_otel.sinks.tables, dora_otel.protocols\n"
        "from dora_otel.sinks import make_sink\n"
        "make_sink('dynamodb', env='x', data_dir='.'); make_sink('sqlite', env='x', data_dir='.')\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_create_tables_is_idempotent_and_describe_shows_keys_and_indexes(dynamodb_env: Any) -> None:
    env, client = dynamodb_env.env, dynamodb_env.client
    assert create_tables(env, client=client, ttl_days=None) == list(table_names(env))

    described = {t["name"]: t for t in describe_tables(env, client=client)}
    execution = described[f"dora_execution_log_{env}"]
    assert execution["status"] == "ACTIVE"
    assert execution["keys"] == {"partition": "bot_run_id", "sort": "sk"}
    assert sorted(execution["gsis"], key=lambda g: g["name"]) == [
        {"name": "gsi1", "partition": "decision_id", "sort": "event_ts", "status": "ACTIVE"},
        {"name": "gsi_order", "partition": "order_id", "sort": "event_ts", "status": "ACTIVE"},
    ]
    assert execution["missing_gsis"] == []
    decision = described[f"dora_decision_log_{env}"]
    assert decision["keys"] == {"partition": "decision_id", "sort": None}
    assert sorted((g["name"], g["partition"], g["sort"]) for g in decision["gsis"]) == [
        ("day_ts", "decision_day", "decision_ts"),
        ("market_ts", "market", "decision_ts"),
    ]


def test_describe_reports_missing_tables(dynamodb_server: Any) -> None:
    client = dynamodb_server.client()
    try:
        described = describe_tables("nosuchenv", client=client)
        assert [t["status"] for t in described] == ["MISSING", "MISSING"]
        assert described[0]["missing_gsis"] == ["gsi1", "gsi_order"]
    finally:
        client.close()


def test_create_tables_enables_ttl_on_expires_at(dynamodb_env: Any, caplog: pytest.LogCaptureFixture) -> None:
    if dynamodb_env.is_dynalite:
        pytest.skip("dynalite lacks UpdateTimeToLive")
    create_tables(dynamodb_env.env, client=dynamodb_env.client, ttl_days=30)
    for table in describe_tables(dynamodb_env.env, client=dynamodb_env.client):
        assert table["ttl"] == {"status": "ENABLED", "attribute": "expires_at"}


def test_create_tables_skips_what_the_server_lacks_with_a_warning(
    dynamodb_env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="dora_otel.ledger"):
        create_tables(dynamodb_env.env, client=dynamodb_env.client, ttl_days=30)
    lacking = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if dynamodb_env.is_dynalite:
        assert any("TTL not enabled" in m for m in lacking)
    else:  # DynamoDB Local has TTL but no TagResource
        assert any("dora:ttl_days not set" in m for m in lacking)


def test_ttl_days_must_be_positive(dynamodb_env: Any) -> None:
    with pytest.raises(ValueError, match=r"ttl_days \(0\)"):
        create_tables(dynamodb_env.env, client=dynamodb_env.client, ttl_days=0)


@pytest.mark.parametrize(
    ("fault", "error", "text"),
    [
        ("throttle", RetryableSinkError, "ProvisionedThroughputExceededException (HTTP 400)"),
        ("500", RetryableSinkError, "InternalServerError (HTTP 500)"),
        ("timeout", RetryableSinkError, "ReadTimeoutError"),
    ],
)
def test_transient_failures_raise_retryable_errors_from_the_botocore_error(
    dynamodb_env: Any, ledger_execution_record: Factory, fault: str, error: type, text: str
) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    sink = DynamoDBSink(dynamodb_env.env, client=dynamodb_env.client)
    FaultInjector(dynamodb_env.client).add(fault)
    with pytest.raises(error, match=re.escape(text)) as raised:
        sink.write_batch([ledger_execution_record()])
    assert isinstance(raised.value.__cause__, (ClientError, BotoCoreError))
    assert sink.write_batch([ledger_execution_record()]).written == 1  # next call goes through


def test_a_missing_table_is_a_permanent_error(dynamodb_server: Any, ledger_execution_record: Factory) -> None:
    client = dynamodb_server.client()
    try:
        sink = DynamoDBSink("nosuchenv", client=client)
        with pytest.raises(PermanentSinkError, match="ResourceNotFoundException"):
            sink.write_batch([ledger_execution_record()])
        with pytest.raises(PermanentSinkError, match="ResourceNotFoundException"):
            sink.decision("0" * 32)
    finally:
        client.close()


def test_unprocessed_items_come_back_as_the_records_to_retry(
    dynamodb_env: Any, dynamodb_server: Any, ledger_execution_record: Factory
) -> None:
    writer = dynamodb_server.client()
    try:
        FaultInjector(dynamodb_env.client, writer=writer).add("unprocessed")
        sink = DynamoDBSink(dynamodb_env.env, client=dynamodb_env.client)
        records = [ledger_execution_record(decision_id="u" * 32, seq=i) for i in range(10)]
        result = sink.write_batch(records)
        assert result.written == 5
        assert [r["seq"] for r in result.unprocessed] == [5, 6, 7, 8, 9]
        assert all(a is b for a, b in zip(result.unprocessed, records[5:], strict=True))
        assert sink.write_batch(result.unprocessed).written == 5
        assert sorted(e["seq"] for e in sink.events_for_decision("u" * 32)) == list(range(10))
    finally:
        writer.close()


def test_a_batch_the_service_rejects_is_retried_record_by_record_to_find_the_culprit(
    dynamodb_env: Any, ledger_execution_record: Factory
) -> None:
    injector = FaultInjector(dynamodb_env.client)
    injector.poison = "POISON"
    sink = DynamoDBSink(dynamodb_env.env, client=dynamodb_env.client)
    records = [ledger_execution_record(decision_id="p" * 32, seq=i) for i in range(3)]
    records[1]["error_msg"] = "POISON"
    result = sink.write_batch(records)
    assert result.written == 2
    (error,) = result.failed
    assert isinstance(error, InvalidRecordError) and error.record is records[1]
    assert "ValidationException" in str(error) and "poisoned item" in str(error)
    assert [e["seq"] for e in sink.events_for_decision("p" * 32)] == [0, 2]
    assert injector.calls == 4  # the batch, then one call per record


def test_numbers_dynamodb_cannot_hold_fail_per_record(
    dynamodb_env: Any, ledger_execution_record: Factory
) -> None:
    sink = DynamoDBSink(dynamodb_env.env, client=dynamodb_env.client)
    result = sink.write_batch(
        [
            ledger_execution_record(seq=1, pnl_delta=1e-200),
            ledger_execution_record(seq=2, size=10**40),
            ledger_execution_record(seq=3, pnl_delta=1e125),
        ]
    )
    assert result.written == 1
    assert [e.field for e in result.failed] == ["pnl_delta", "size"]
    assert "38 significant digits" in str(result.failed[1])


def test_reads_are_queries_and_counted(dynamodb_env: Any, ledger_decision_record: Factory) -> None:
    sink = DynamoDBSink(dynamodb_env.env, client=dynamodb_env.client)
    calls: list[str] = []
    dynamodb_env.client.meta.events.register(
        "before-call.dynamodb", lambda model, **_: calls.append(model.name)
    )
    sink.write_batch([ledger_decision_record(decision_ts="2026-01-01T00:00:00.000000Z")])
    sink.decisions_between("2025-12-30T00:00:00Z", "2026-01-02T00:00:00Z")
    sink.decisions_for_market("KXBTC-26NOV24-B97000", "2026-01-01", "2026-01-02")
    sink.events_for_run("r")
    sink.events_for_decision("d")
    sink.decision("d")
    assert [c for c in calls if c != "BatchWriteItem"] == ["Query"] * 8
    assert sink.query_count == 8


def test_a_query_result_over_one_page_is_read_to_the_end(
    dynamodb_env: Any, ledger_execution_record: Factory
) -> None:
    sink = DynamoDBSink(dynamodb_env.env, client=dynamodb_env.client)
    big = "y" * 40_000  # 30 x 40 KB > the 1 MB page of a Query
    for start in (0, 25):
        sink.write_batch(
            [
                ledger_execution_record(decision_id="q" * 32, seq=i, error_msg=big)
                for i in range(start, min(start + 25, 30))
            ]
        )
    before = sink.query_count
    events = sink.events_for_decision("q" * 32)
    assert [e["seq"] for e in events] == list(range(30))
    assert sink.query_count - before >= 2


def test_the_client_is_made_lazily_from_boto3_standard_settings(
    dynamodb_env: Any, ledger_execution_record: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_env.server.endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    sink = DynamoDBSink(dynamodb_env.env)
    assert sink._client is None
    assert sink.write_batch([ledger_execution_record(decision_id="l" * 32)]).written == 1
    assert sink.client.meta.endpoint_url == dynamodb_env.server.endpoint
    assert sink.client.meta.config.retries["total_max_attempts"] == 1
    assert len(sink.events_for_decision("l" * 32)) == 1
    sink.close()
    sink.close()
