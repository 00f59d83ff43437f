"""The Sink + LedgerReader contract, run on every backend: memory, SQLite, DynamoDB Local, dynalite."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from dora_otel.protocols import BatchTooLargeError, InvalidRecordError, LedgerReader, OrderReader, Sink
from dora_otel.sinks import make_sink
from dora_otel.sinks.tables import create_tables, table_names

Factory = Callable[..., dict[str, Any]]


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("dynamodb_local", marks=pytest.mark.dynamodb),
        pytest.param("dynalite", marks=pytest.mark.dynamodb),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """A fresh, empty ledger store of each kind."""
    if request.param in ("memory", "sqlite"):
        sink = make_sink(request.param, env="test", data_dir=tmp_path)
        yield sink
        sink.close()
        return
    server = request.getfixturevalue(f"{request.param}_server")
    client = server.client(read_timeout_s=10.0)
    env = f"c{uuid.uuid4().hex[:10]}"
    names = create_tables(env, client=client, ttl_days=None)
    sink = make_sink("dynamodb", env=env, data_dir=tmp_path, client=client)

    # The ledger never Scans: make any Scan through this client fail loudly.
    def refuse_scan(**kwargs: Any) -> None:
        raise AssertionError("the ledger must Query, never Scan")

    client.meta.events.register("before-call.dynamodb.Scan", refuse_scan)
    yield sink
    sink.close()
    for name in names:
        client.delete_table(TableName=name)
    client.close()


def without_sk(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "sk"} for r in records]


def test_every_backend_is_a_sink_and_a_reader(store: Any) -> None:
    assert isinstance(store, Sink)
    assert isinstance(store, LedgerReader)
    assert store.max_batch == 25


def test_replayed_records_overwrite_and_are_counted_once_by_event_id(
    store: Any, ledger_execution_record: Factory, ledger_decision_record: Factory
) -> None:
    records = [ledger_execution_record(seq=i, status="PENDING") for i in range(10)]
    decision = ledger_decision_record(decision_id="d" * 32, spread=0.01)
    assert store.write_batch([*records, decision]).written == 11
    replay = [dict(r, status="ACCEPTED") for r in records] + [dict(decision, spread=0.03)]
    result = store.write_batch(replay)
    assert result.written == 11 and not result.failed and not result.unprocessed

    events = store.events_for_run(records[0]["bot_run_id"])
    assert sorted(e["event_id"] for e in events) == sorted(r["event_id"] for r in records)
    assert {e["status"] for e in events} == {"ACCEPTED"}
    assert store.decision("d" * 32)["spread"] == 0.03


def test_a_key_given_twice_in_one_batch_is_stored_once_with_the_last_value(
    store: Any, ledger_execution_record: Factory
) -> None:
    first = ledger_execution_record(seq=7, status="PENDING")
    result = store.write_batch([first, dict(first, status="FILLED")])
    assert result.written == 2 and not result.failed
    (stored,) = store.events_for_run(first["bot_run_id"])
    assert stored["status"] == "FILLED"


def test_events_for_decision_returns_only_that_decisions_events_in_time_order(
    store: Any, ledger_execution_record: Factory
) -> None:
    mine, other = "a" * 32, "b" * 32
    stamps = ["2026-11-24T04:47:03.000000Z", "2026-11-24T04:47:01.000000Z", "2026-11-24T04:47:02.000000Z"]
    records = [
        ledger_execution_record(seq=100 + i, decision_id=mine, event_ts=ts) for i, ts in enumerate(stamps)
    ]
    # same event_ts: seq breaks the tie
    records.append(ledger_execution_record(seq=99, decision_id=mine, event_ts=stamps[1]))
    records.append(ledger_execution_record(seq=200, decision_id=other, event_ts=stamps[0]))
    store.write_batch(records)

    events = store.events_for_decision(mine)
    assert [(e["event_ts"], e["seq"]) for e in events] == [
        (stamps[1], 99),
        (stamps[1], 101),
        (stamps[2], 102),
        (stamps[0], 100),
    ]
    assert all(e["decision_id"] == mine for e in events)
    assert store.events_for_decision("f" * 32) == []


def test_records_come_back_as_written_plus_their_sort_key(
    store: Any, ledger_execution_record: Factory
) -> None:
    record = ledger_execution_record(seq=5, decision_id="c" * 32)
    store.write_batch([record])
    (stored,) = store.events_for_decision("c" * 32)
    assert stored["sk"] == f"{'c' * 32}#{record['event_ts']}#{5:012d}"
    assert without_sk([stored]) == [record]


def test_decisions_for_market_uses_the_market_and_an_inclusive_time_range(
    store: Any, ledger_decision_record: Factory
) -> None:
    ts = [f"2026-11-24T10:00:0{i}.000000Z" for i in range(5)]
    decisions = [ledger_decision_record(market="MKT-A", decision_ts=t) for t in ts]
    decisions.append(ledger_decision_record(market="MKT-B", decision_ts=ts[2]))
    store.write_batch(decisions)

    found = store.decisions_for_market("MKT-A", ts[1], ts[3])
    assert [d["decision_ts"] for d in found] == ts[1:4]
    assert all(d["market"] == "MKT-A" for d in found)
    as_datetimes = store.decisions_for_market(
        "MKT-A",
        datetime(2026, 11, 24, 10, 0, 1, tzinfo=timezone.utc),
        datetime(2026, 11, 24, 10, 0, 3, tzinfo=timezone.utc),
    )
    assert as_datetimes == found
    assert store.decisions_for_market("MKT-C", ts[0], ts[4]) == []


def test_decisions_between_spans_markets_and_days_with_queries(
    store: Any, ledger_decision_record: Factory
) -> None:
    stamps = [
        ("M1", "2026-11-22T23:59:59.999999Z"),
        ("M1", "2026-11-23T08:00:00.000000Z"),
        ("M2", "2026-11-24T09:00:00.000000Z"),
        ("M3", "2026-11-25T00:00:00.000001Z"),
        ("M2", "2026-11-25T12:00:00.000000Z"),
    ]
    store.write_batch([ledger_decision_record(market=m, decision_ts=t) for m, t in stamps])
    before = store.query_count

    found = store.decisions_between("2026-11-23T00:00:00.000000Z", "2026-11-25T06:00:00.000000Z")
    assert [(d["market"], d["decision_ts"]) for d in found] == stamps[1:4]
    if store.__class__.__name__ in ("DynamoDBSink", "MemorySink"):
        assert store.query_count - before == 3  # one Query per UTC day, no Scan


def test_records_for_orders_finds_every_record_of_those_orders_whatever_its_decision(
    store: Any, ledger_execution_record: Factory
) -> None:
    """The read-time join's query (gsi_order): records by order_id across decisions and runs, also
    those stored as unmatched; records without an order_id are not in the index."""
    implements = isinstance(store, OrderReader)
    assert implements
    store.write_batch([
        ledger_execution_record(event_type="ORDER_PLACE", seq=1, decision_id="d1", client_order_id="c1",
                                event_ts="2026-11-24T05:00:00.000000Z"),
        ledger_execution_record(event_type="ORDER_RESULT", seq=2, decision_id="d1", order_id="o-1",
                                event_ts="2026-11-24T05:00:00.100000Z"),
        ledger_execution_record(event_type="ORDER_RESULT", seq=3, decision_id="d1", order_id="o-2",
                                event_ts="2026-11-24T05:00:00.200000Z"),
        ledger_execution_record(event_type="FILL", seq=1, bot_run_id="run-b", decision_id="unmatched:unknown",
                                order_id="o-1", event_ts="2026-11-24T06:00:00.000000Z"),
        ledger_execution_record(event_type="FILL", seq=2, bot_run_id="run-b", decision_id="unmatched:M",
                                order_id="o-3", event_ts="2026-11-24T06:00:01.000000Z"),
    ])
    before = store.query_count
    found = store.records_for_orders(["o-1", "o-2", "never"])
    assert [(r["decision_id"], r["event_type"], r["order_id"]) for r in found] == [
        ("d1", "ORDER_RESULT", "o-1"), ("d1", "ORDER_RESULT", "o-2"), ("unmatched:unknown", "FILL", "o-1")]
    if store.__class__.__name__ in ("DynamoDBSink", "MemorySink"):
        assert store.query_count - before == 3  # one Query of gsi_order per order id, no Scan
    assert store.records_for_orders([]) == []


def test_events_for_run_filters_by_time_and_orders_by_time(
    store: Any, ledger_execution_record: Factory
) -> None:
    run = "20261124-000000-zz99"
    records = [
        ledger_execution_record(
            bot_run_id=run, seq=i, decision_id=f"{i % 3:032d}", event_ts=f"2026-11-24T00:00:0{9 - i}.000000Z"
        )
        for i in range(8)
    ]
    records.append(ledger_execution_record(bot_run_id="other-run", seq=50))
    store.write_batch(records)

    everything = store.events_for_run(run)
    assert [e["seq"] for e in everything] == list(range(7, -1, -1))
    window = store.events_for_run(run, "2026-11-24T00:00:03.000000Z", "2026-11-24T00:00:05.000000Z")
    assert [e["event_ts"][17:19] for e in window] == ["03", "04", "05"]


def test_numbers_round_trip_as_int_and_float(
    store: Any, ledger_execution_record: Factory, ledger_decision_record: Factory
) -> None:
    values = {
        "price": 0.1,
        "latency_ms": 1234.5678,
        "pnl_delta": -0.000123,
        "tiny": 1e-7,
        "big": 12345678901234567,
        "size": 3,
        "negative": -42,
        "flag": True,
    }
    record = ledger_execution_record(seq=11, decision_id="e" * 32, **values)
    decision = ledger_decision_record(decision_id="e" * 32)
    store.write_batch([record, decision])

    (stored,) = store.events_for_decision("e" * 32)
    for name, value in values.items():
        assert stored[name] == value, name
        assert type(stored[name]) is type(value), name
    back = store.decision("e" * 32)
    assert back["target_orders"] == decision["target_orders"]
    assert isinstance(back["target_orders"][0]["price"], float)
    assert isinstance(back["target_orders"][0]["size"], int)


def test_decimals_are_stored_as_numbers_and_read_back_as_int_or_float(
    store: Any, ledger_execution_record: Factory
) -> None:
    record = ledger_execution_record(seq=13, decision_id="8" * 32, price=Decimal("0.55"), size=Decimal("10"))
    assert store.write_batch([record]).written == 1
    (stored,) = store.events_for_decision("8" * 32)
    assert stored["price"] == 0.55 and type(stored["price"]) is float
    assert stored["size"] == 10 and type(stored["size"]) is int


def test_none_fields_are_not_stored(store: Any, ledger_execution_record: Factory) -> None:
    record = ledger_execution_record(seq=12, decision_id="9" * 32, order_id=None)
    store.write_batch([record])
    (stored,) = store.events_for_decision("9" * 32)
    assert "order_id" not in stored


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_rejected_per_record_naming_the_field(
    store: Any, ledger_execution_record: Factory, bad: float
) -> None:
    good = ledger_execution_record(seq=20, decision_id="1" * 32)
    broken = ledger_execution_record(seq=21, decision_id="1" * 32, price=bad)
    result = store.write_batch([good, broken])

    assert result.written == 1
    (error,) = result.failed
    assert isinstance(error, InvalidRecordError)
    assert error.field == "price" and error.record is broken
    assert "'price'" in str(error) and "NaN and infinity" in str(error)
    assert [e["seq"] for e in store.events_for_decision("1" * 32)] == [20]


def test_a_nested_nan_names_its_path(store: Any, ledger_decision_record: Factory) -> None:
    decision = ledger_decision_record()
    decision["target_orders"][1]["price"] = math.nan
    (error,) = store.write_batch([decision]).failed
    assert error.field == "target_orders[1].price"


def test_an_item_over_400_kb_is_rejected_naming_its_size_and_largest_field(
    store: Any, ledger_execution_record: Factory
) -> None:
    huge = ledger_execution_record(seq=30, decision_id="2" * 32, error_msg="x" * (400 * 1024))
    fine = ledger_execution_record(seq=31, decision_id="2" * 32, error_msg="x" * (300 * 1024))
    result = store.write_batch([huge, fine])

    assert result.written == 1
    (error,) = result.failed
    assert error.field == "error_msg"
    assert "400 KB" in str(error) and "409,600-byte" in str(error)
    assert [e["seq"] for e in store.events_for_decision("2" * 32)] == [31]


def test_a_batch_over_25_records_is_refused_naming_the_count(
    store: Any, ledger_execution_record: Factory
) -> None:
    with pytest.raises(BatchTooLargeError, match=r"got 26 records; at most 25"):
        store.write_batch([ledger_execution_record(seq=40 + i) for i in range(26)])
    assert store.events_for_run("20261124-044700-ab12") == []


def test_records_missing_key_fields_or_kind_fail_per_record(
    store: Any, ledger_execution_record: Factory
) -> None:
    no_kind = ledger_execution_record(seq=60)
    del no_kind["kind"]
    bad_seq = ledger_execution_record(seq=61)
    bad_seq["seq"] = "61"
    empty_decision = ledger_execution_record(seq=62, decision_id="")
    result = store.write_batch([no_kind, bad_seq, empty_decision, ledger_execution_record(seq=63)])
    assert result.written == 1
    assert [e.field for e in result.failed] == ["kind", "seq", "decision_id"]


def test_a_missing_decision_is_none(store: Any) -> None:
    assert store.decision("0" * 32) is None


@pytest.mark.parametrize("kind", ["memory", "sqlite", "dynamodb"])
def test_a_batch_limit_over_25_is_refused_when_configured(kind: str, tmp_path: Any) -> None:
    from dora_otel.sinks.dynamodb import DynamoDBSink
    from dora_otel.sinks.memory import MemorySink
    from dora_otel.sinks.sqlite import SQLiteSink

    make = {
        "memory": lambda: MemorySink(max_batch=30),
        "sqlite": lambda: SQLiteSink(tmp_path / "x.sqlite3", max_batch=30),
        "dynamodb": lambda: DynamoDBSink("test", max_batch=30),
    }[kind]
    with pytest.raises(ValueError, match=r"max_batch \(30\) must be an int between 1 and 25"):
        make()


def test_make_sink_names_an_unknown_kind(tmp_path: Any) -> None:
    with pytest.raises(
        ValueError, match=r"ledger sink kind \('s3'\) must be one of sqlite, dynamodb, memory"
    ):
        make_sink("s3", env="test", data_dir=tmp_path)


def test_table_names_follow_the_env() -> None:
    assert table_names("prod") == ("dora_execution_log_prod", "dora_decision_log_prod")
    with pytest.raises(ValueError, match=r"env \('a b'\)"):
        table_names("a b")
