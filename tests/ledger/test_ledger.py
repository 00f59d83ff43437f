"""Ledger behaviour without a server: the hot path, the journal, retries, outages, replay, bounds."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from _fakes import FlakySink

from dora_otel.ledger import STATS_KEYS, Ledger
from dora_otel.protocols import PermanentSinkError, RetryableSinkError
from dora_otel.sinks.sqlite import SQLiteSink

Factory = Callable[..., dict[str, Any]]
FAST = {"retry_base_s": 0.01, "retry_max_s": 0.05, "linger_s": 0.0}


@pytest.fixture
def ledger_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="dora_otel.ledger"):
        yield caplog


def ledger_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "dora_otel.ledger" and r.levelno == level]


def segments(journal: Path) -> list[Path]:
    return sorted(journal.glob("seg-*.jsonl"))


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def sink() -> FlakySink:
    return FlakySink()


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return tmp_path / "ledger" / "journal"


def test_appended_records_are_shipped_and_counted(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory
) -> None:
    ledger = Ledger(sink, journal, **FAST)
    ledger.start()
    records = [ledger_execution_record(seq=i) for i in range(100)]
    for record in records:
        ledger.append(record)
    assert ledger.flush(10)
    assert sorted(sink.event_ids()) == sorted(r["event_id"] for r in records)
    stats = ledger.stats()
    assert tuple(stats) == STATS_KEYS
    assert stats["enqueued"] == 100 and stats["shipped"] == 100
    assert stats["oldest_unshipped_age_s"] == 0.0
    assert ledger.shutdown(5)
    assert segments(journal) == []  # shipped segments are deleted
    assert ledger.stats()["journal_bytes"] == 0


@pytest.mark.parametrize(
    ("field", "value"), [("decision_id", None), ("decision_id", ""), ("bot_run_id", None)]
)
def test_a_record_without_its_ids_is_rejected_with_one_error_line_and_not_written(
    sink: FlakySink,
    journal: Path,
    ledger_execution_record: Factory,
    ledger_logs: pytest.LogCaptureFixture,
    field: str,
    value: Any,
) -> None:
    ledger = Ledger(sink, journal, **FAST)
    ledger.start()
    record = ledger_execution_record()
    if value is None:
        del record[field]
    else:
        record[field] = value
    ledger.append(record)
    assert ledger.flush(5)

    (line,) = ledger_lines(ledger_logs, logging.ERROR)
    assert line.event_type == "ERROR" and line.target == "execution_log"
    assert field in line.error_msg
    assert ledger.stats()["rejected"] == 1 and ledger.stats()["enqueued"] == 0
    assert ledger.stats()["journal_bytes"] == 0 and segments(journal) == []
    assert sink.all_records() == []
    ledger.shutdown(1)


def test_append_never_raises_even_when_the_journal_directory_is_unwritable(
    sink: FlakySink, tmp_path: Path, ledger_execution_record: Factory, ledger_logs: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    ledger = Ledger(sink, blocker / "journal", **FAST)  # mkdir fails: a file is in the way
    ledger.start()
    for i in range(20):
        ledger.append(ledger_execution_record(seq=i))
    ledger.append(None)  # type: ignore[arg-type]
    ledger.append({"bot_run_id": "r", "decision_id": "d", "weird": object()})
    assert ledger.flush(5)

    stats = ledger.stats()
    assert stats["unjournaled"] == 21 and stats["errors"] >= 1
    assert len(sink.all_records()) == 20  # shipped from memory; the weird one fails in the sink
    errors = [r for r in ledger_lines(ledger_logs, logging.ERROR) if "cannot be written" in r.getMessage()]
    assert len(errors) == 1 and errors[0].target == "execution_log"
    ledger.shutdown(1)


def test_append_never_raises_when_a_write_fails(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(sink, journal, **FAST)
    ledger.start()

    def broken_write(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dora_otel.ledger.journal.write_fd", broken_write)
    ledger.append(ledger_execution_record(seq=1))
    monkeypatch.undo()
    assert ledger.flush(5)
    assert sink.event_ids() == [ledger_execution_record(seq=1)["event_id"]]
    assert ledger.stats()["unjournaled"] == 1
    ledger.shutdown(1)


def test_values_orjson_refuses_are_kept_as_strings(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory
) -> None:
    ledger = Ledger(sink, journal, **FAST)
    ledger.start()
    ledger.append(ledger_execution_record(seq=3, order_id=2**70))
    assert ledger.flush(5)
    (stored,) = sink.all_records()
    assert stored["order_id"] == str(2**70)
    ledger.shutdown(1)


def test_non_finite_numbers_are_journaled_as_null_with_one_warning(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory, ledger_logs: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(sink, journal, **FAST)
    ledger.start()
    ledger.append(ledger_execution_record(seq=1, price=math.nan))
    ledger.append(ledger_execution_record(seq=2, price=math.inf))
    assert ledger.flush(5)
    assert all("price" not in r for r in sink.all_records()) and len(sink.all_records()) == 2
    warnings_ = [r for r in ledger_lines(ledger_logs, logging.WARNING) if "'price'" in r.getMessage()]
    assert len(warnings_) == 1
    ledger.shutdown(1)


def test_a_torn_last_line_is_skipped_with_one_warning(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory, ledger_logs: pytest.LogCaptureFixture
) -> None:
    journal.mkdir(parents=True)
    good = [ledger_execution_record(seq=i) for i in range(3)]
    body = b"".join(orjson.dumps(r) + b"\n" for r in good)
    torn = orjson.dumps(ledger_execution_record(seq=3))[:40]
    (journal / f"seg-{time.time_ns():020d}-1-abcd.jsonl").write_bytes(body + torn)

    ledger = Ledger(sink, journal, **FAST)
    ledger.start()
    assert ledger.flush(5)
    assert sorted(sink.event_ids()) == sorted(r["event_id"] for r in good)
    stats = ledger.stats()
    assert stats["torn"] == 1 and stats["replayed"] == 3
    (warning,) = [r for r in ledger_lines(ledger_logs, logging.WARNING) if "torn" in r.getMessage()]
    assert warning.target == "execution_log"
    assert ledger.shutdown(2)
    assert segments(journal) == []


def test_a_garbage_line_mid_segment_is_skipped_and_the_rest_shipped(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory
) -> None:
    journal.mkdir(parents=True)
    lines = [orjson.dumps(ledger_execution_record(seq=i)) for i in range(4)]
    lines.insert(2, b'{"kind": "execution", "bot_')
    (journal / f"seg-{time.time_ns():020d}-1-abcd.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    ledger = Ledger(sink, journal, **FAST)
    ledger.start()
    assert ledger.flush(5)
    assert len(sink.all_records()) == 4 and ledger.stats()["torn"] == 1
    ledger.shutdown(1)


def test_unshipped_records_are_replayed_by_the_next_start_exactly_once(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory
) -> None:
    first = Ledger(sink, journal, segment_bytes=4096, **FAST)
    first.start()
    records = [ledger_execution_record(seq=i) for i in range(200)]
    for record in records[:100]:
        first.append(record)
    assert first.flush(5)
    sink.down = True
    for record in records[100:]:
        first.append(record)
    assert not first.shutdown(0.2)  # cannot ship: left in the journal
    assert segments(journal)

    sink.down = False
    second = Ledger(sink, journal, **FAST)
    second.start()
    assert second.flush(10)
    ids = sink.event_ids()
    assert sorted(ids) == sorted(r["event_id"] for r in records) and len(ids) == len(set(ids))
    assert second.stats()["replayed"] >= 100
    assert second.shutdown(5)
    assert segments(journal) == []


def test_a_live_ledgers_segments_are_not_replayed_by_another(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory
) -> None:
    sink.down = True
    live = Ledger(sink, journal, **FAST)
    live.start()
    live.append(ledger_execution_record())
    other = Ledger(FlakySink(), journal, **FAST)
    other.start()
    assert other.flush(2) and other.stats()["replayed"] == 0
    other.shutdown(1)
    sink.down = False
    assert live.flush(5)
    live.shutdown(1)


def test_an_outage_logs_one_error_when_it_starts_and_one_info_when_it_ends(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory, ledger_logs: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(sink, journal, **FAST)
    ledger.start()
    sink.down = True
    for i in range(50):
        ledger.append(ledger_execution_record(seq=i))
    wait_for(lambda: ledger.stats()["outage"] and ledger.stats()["retried"] >= 10)
    assert ledger.stats()["oldest_unshipped_age_s"] > 0
    assert not ledger.flush(0.1)
    sink.down = False
    assert ledger.flush(10)

    errors = ledger_lines(ledger_logs, logging.ERROR)
    assert len(errors) == 1
    assert errors[0].event_type == "ERROR" and errors[0].target == "execution_log"
    assert errors[0].error_type == "RetryableSinkError"
    recovered = [r for r in ledger_lines(ledger_logs, logging.INFO) if "recovered" in r.getMessage()]
    assert len(recovered) == 1 and recovered[0].target == "execution_log"
    stats = ledger.stats()
    assert stats["shipped"] == 50 and not stats["outage"] and stats["oldest_unshipped_age_s"] == 0.0
    ledger.shutdown(1)


def test_throttling_and_unprocessed_items_are_retried_and_counted_without_an_outage(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory, ledger_logs: pytest.LogCaptureFixture
) -> None:
    sink.script = [RetryableSinkError("throttled"), "unprocessed", RetryableSinkError("HTTP 500")]
    ledger = Ledger(sink, journal, **FAST)
    for i in range(20):
        ledger.append(ledger_execution_record(seq=i))
    ledger.start()
    assert ledger.flush(10)
    assert len(sink.all_records()) == 20
    assert ledger.stats()["retried"] == 3
    assert ledger_lines(ledger_logs, logging.ERROR) == []
    ledger.shutdown(1)


def test_a_permanent_batch_error_is_logged_at_once_and_the_records_wait(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory, ledger_logs: pytest.LogCaptureFixture
) -> None:
    sink.script = [PermanentSinkError("DynamoDB ResourceNotFoundException: table missing")]
    ledger = Ledger(sink, journal, **FAST)
    ledger.append(ledger_execution_record(seq=1))
    ledger.start()
    assert ledger.flush(10)
    assert len(sink.all_records()) == 1
    (error,) = ledger_lines(ledger_logs, logging.ERROR)
    assert "table missing" in error.error_msg
    ledger.shutdown(1)


def test_a_record_no_sink_can_store_goes_to_the_dead_letter_file(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory, ledger_logs: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(sink, journal, **FAST)
    ledger.start()
    ledger.append(ledger_execution_record(seq=1, error_msg="x" * 500_000))
    ledger.append(ledger_execution_record(seq=2))
    assert ledger.flush(5)
    assert len(sink.all_records()) == 1 and ledger.stats()["failed"] == 1
    (letter,) = (journal / "dead-letter.jsonl").read_bytes().splitlines()
    assert orjson.loads(letter)["record"]["seq"] == 1
    (error,) = ledger_lines(ledger_logs, logging.ERROR)
    assert error.target == "execution_log" and error.field == "error_msg" and "400 KB" in error.error_msg
    ledger.shutdown(1)


def test_at_the_journal_bound_only_critical_records_are_kept_and_both_are_counted(
    sink: FlakySink,
    journal: Path,
    ledger_execution_record: Factory,
    ledger_decision_record: Factory,
    ledger_logs: pytest.LogCaptureFixture,
) -> None:
    sink.down = True
    ledger = Ledger(sink, journal, max_journal_bytes=8192, **FAST)
    ledger.start()
    kept: list[str] = []
    dropped = 0
    i = 0
    while ledger.stats()["dropped"] < 10:
        i += 1
        kind = ("decision", "ORDER_PLACE", "ORDER_RESULT", "FILL", "ORDER_CANCEL")[i % 5]
        if kind == "decision":
            record = ledger_decision_record(seq=i)
        else:
            record = ledger_execution_record(seq=i, event_type=kind)
        before = ledger.stats()["dropped"]
        ledger.append(record)
        if ledger.stats()["dropped"] == before:
            kept.append(record["event_id"])
        else:
            dropped += 1
            assert kind in ("decision", "ORDER_PLACE")
    stats = ledger.stats()
    assert stats["over_bound"] >= 10  # critical records written past the bound
    assert stats["journal_bytes"] > 8192
    bound_errors = [r for r in ledger_lines(ledger_logs, logging.ERROR) if "bound" in r.getMessage()]
    assert len(bound_errors) == 1 and bound_errors[0].target == "execution_log"

    sink.down = False
    assert ledger.flush(10)
    stored = {r["event_id"] for r in sink.all_records()}
    assert stored == set(kept) and len(stored) + dropped == i
    assert any("back under its bound" in r.getMessage() for r in ledger_lines(ledger_logs, logging.INFO))
    ledger.shutdown(1)


def test_append_does_not_block_while_the_sink_hangs(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory
) -> None:
    ledger = Ledger(sink, journal, **FAST)
    ledger.start()
    sink.hang()
    ledger.append(ledger_execution_record(seq=0))
    wait_for(lambda: sink.calls >= 1)  # the shipper is now stuck inside write_batch
    appender = threading.Thread(
        target=lambda: [ledger.append(ledger_execution_record(seq=i)) for i in range(1, 5001)]
    )
    appender.start()
    appender.join(30)
    completed = not appender.is_alive()
    sink.release()
    assert completed, "append blocked while the sink hung"
    assert ledger.flush(30)
    assert len(sink.all_records()) == 5001
    ledger.shutdown(1)


def test_shutdown_within_its_budget_leaves_the_rest_for_replay_and_is_idempotent(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory
) -> None:
    sink.down = True
    ledger = Ledger(sink, journal, **FAST)
    ledger.start()
    ledger.append(ledger_execution_record())
    started = time.monotonic()
    assert ledger.shutdown(0.3) is False
    assert time.monotonic() - started < 2
    assert ledger.shutdown(0.3) is False
    ledger.append(ledger_execution_record(seq=99))  # still journaled after shutdown
    assert len(segments(journal)) == 2


@pytest.mark.parametrize("fsync", ["always", "never", "interval"])
def test_every_fsync_policy_ships(
    fsync: str, sink: FlakySink, journal: Path, ledger_execution_record: Factory
) -> None:
    ledger = Ledger(sink, journal, fsync=fsync, fsync_interval_s=0.05, **FAST)
    ledger.start()
    for i in range(10):
        ledger.append(ledger_execution_record(seq=i))
    assert ledger.flush(5) and len(sink.all_records()) == 10
    assert ledger.shutdown(1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fsync": "sometimes"}, r"fsync \('sometimes'\) must be one of interval, always, never"),
        ({"max_batch": 30}, r"max_batch \(30\) must be <= 25"),
        ({"max_journal_bytes": 10}, r"max_journal_bytes \(10\)"),
        # (0.0 under the compiled build, which takes the float the signature asks for)
        ({"retry_base_s": 0}, r"retry_base_s \(0(\.0)?\) must be > 0"),
    ],
)
def test_bad_settings_fail_early_naming_the_value(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Ledger(FlakySink(), tmp_path / "j", **kwargs)


def test_segments_rotate_and_shipped_ones_are_deleted(
    sink: FlakySink, journal: Path, ledger_execution_record: Factory
) -> None:
    ledger = Ledger(sink, journal, segment_bytes=2048, **FAST)
    sink.down = True
    ledger.start()
    for i in range(100):
        ledger.append(ledger_execution_record(seq=i))
    assert len(segments(journal)) > 5
    sink.down = False
    assert ledger.flush(10)
    wait_for(lambda: len(segments(journal)) <= 1)
    assert ledger.shutdown(1) and segments(journal) == []


def test_a_forked_child_ships_its_own_records(tmp_path: Path, ledger_execution_record: Factory) -> None:
    sink = SQLiteSink(tmp_path / "ledger.sqlite3")
    ledger = Ledger(sink, tmp_path / "journal", **FAST)
    ledger.start()
    ledger.append(ledger_execution_record(seq=0, decision_id="f" * 32))
    assert ledger.flush(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a threaded process (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: its own shipper thread and segment
        code = 1
        try:
            for i in range(1, 11):
                ledger.append(ledger_execution_record(seq=i, decision_id="f" * 32))
            code = 0 if ledger.flush(10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(e["seq"] for e in sink.events_for_decision("f" * 32)) == list(range(11))
    ledger.append(ledger_execution_record(seq=11, decision_id="f" * 32))
    assert ledger.flush(5)  # the parent's shipper still works
    assert ledger.shutdown(2)


class _StopsAfter(FlakySink):
    """Takes ``batches`` batches, then is down."""

    def __init__(self, batches: int) -> None:
        super().__init__()
        self.left = batches

    def write_batch(self, records: Any) -> Any:
        if self.left <= 0:
            self.down = True
        self.left -= 1
        return super().write_batch(records)


def test_pending_on_disk_counts_what_is_not_shipped_and_replay_resumes_there(
    journal: Path, ledger_execution_record: Factory
) -> None:
    """pending_on_disk() reads each segment from its progress offset (the cli's "answers may be
    incomplete"); the next start replays from there, not from the segment's first line."""
    from dora_otel.ledger import PendingSummary, pending_on_disk

    records = [ledger_execution_record(seq=i) for i in range(60)]
    first = Ledger(_StopsAfter(2), journal, **FAST)  # ships 2 batches of 25, then the sink is down
    for record in records:  # all journaled before the shipper starts: full batches
        first.append(record)
    first.start()
    wait_for(lambda: first.stats()["shipped"] == 50)
    assert first.shutdown(0.2) is False
    pending = pending_on_disk(journal)
    assert pending.records == 10 == first.stats()["journal_records"]
    assert pending.oldest_event_ts == records[50]["event_ts"]
    assert pending.bytes == sum(len(orjson.dumps(r)) + 1 for r in records[50:])
    second_sink = FlakySink()
    second = Ledger(second_sink, journal, **FAST)
    second.start()
    assert second.flush(10) and second.shutdown(5)
    assert sorted(second_sink.event_ids()) == sorted(r["event_id"] for r in records[50:])  # not all 60
    assert pending_on_disk(journal) == PendingSummary(0, 0, None) and os.listdir(journal) == []


def test_a_progress_file_without_its_segment_is_removed_at_start(journal: Path, sink: FlakySink) -> None:
    journal.mkdir(parents=True)
    orphan = journal / "seg-00000000000000000001-1-abcd.jsonl.shipped"
    orphan.write_bytes(b"%020d\n" % 10)
    Ledger(sink, journal, **FAST).shutdown(1)
    assert not orphan.exists()


def test_a_damaged_progress_file_means_replaying_the_whole_segment(
    journal: Path, ledger_execution_record: Factory
) -> None:
    """Progress is an optimisation: garbage or an offset inside a line replays from the start."""
    records = [ledger_execution_record(seq=i) for i in range(10)]
    for garbage in (b"not a number\n", b"%020d\n" % 7):  # 7: inside the first line
        down = FlakySink()
        down.down = True
        first = Ledger(down, journal, **FAST)
        for record in records:
            first.append(record)
        assert first.shutdown(0.1) is False
        (segment,) = segments(journal)
        segment.with_name(segment.name + ".shipped").write_bytes(garbage)
        sink = FlakySink()
        second = Ledger(sink, journal, **FAST)
        second.start()
        assert second.flush(10) and second.shutdown(5)
        assert sorted(sink.event_ids()) == sorted(r["event_id"] for r in records)
        assert second.stats()["torn"] == 0
