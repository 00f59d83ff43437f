"""Compact journal lines: the trading thread journals an event straight from its fields and the
journal's reader expands it into the same record the full path builds; anything the scrubbing
policy might mask takes the full (scrubbed) path; journals of earlier versions (full records)
still replay."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from _fakes import FlakySink

from dora_otel import scrub
from dora_otel.ledger import Ledger
from dora_otel.ledger import journal as journal_mod
from dora_otel.ledger.journal import parse_line, pending_on_disk
from dora_otel.ledger.processor import ExecutionLedgerProcessor
from dora_otel.ledger.records import RecordBuilder, expand
from dora_otel.protocols import Record, WriteResult

FAST = {"retry_base_s": 0.01, "retry_max_s": 0.05, "linger_s": 0.0}
TRACE, SPAN, NS = 0x0123456789ABCDEF0123456789ABCDEF, 0x1234567890ABCDEF, 1_767_225_600_123_456_789
SECRET = "Sup3r-s3cret-value-1234"
ORDER = {"seq": 12, "market": "KXBTC-26NOV", "decision_id": "0123456789abcdef0123456789abcdef", "side": "yes",
         "price": 0.45, "size": 10, "client_order_id": "dora-0123456789abcdef", "slot": 0}
RESULT = dict(ORDER, seq=13, status="ACCEPTED", order_id="o-1", latency_ms=0.2, error_type=None, error_msg=None,
              huge=1e300, tiny=1e-300, flags=(1, 2), event_type="ORDER_RESULT", trace_id="x", span_id="y")
DECISION = {"seq": 11, "market": "KXBTC-26NOV", "decision_id": "0123456789abcdef0123456789abcdef", "loop": 5,
            "spread": 0.05, "expected_orders_hash": "ab" * 16, "event_type": "DECISION_MADE",
            "targets": [{"slot": 0, "side": "yes", "price": 0.45, "size": 10, "client_order_id": "c-1"},
                        {"slot": 1, "side": "no", "price": float("nan"), "size": 10, "client_order_id": "c-2"}]}


class RecordingSink(FlakySink):
    """Keeps every record it was given, as given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = []

    def write_batch(self, records: Sequence[Record]) -> WriteResult:
        self.records.extend(dict(r) for r in records)
        return super().write_batch(records)


@pytest.fixture
def builder() -> RecordBuilder:
    return RecordBuilder(bot_run_id="run-1", env="test", bot_version="1.2.3", ttl_days=30)


@pytest.fixture
def secret() -> Iterator[str]:
    scrub.register_secrets([SECRET])
    yield SECRET
    scrub.clear_secrets()


def _expanded(line: bytes | None) -> dict[str, Any]:
    assert line is not None and line.endswith(b"\n") and line.count(b"\n") == 1
    record = parse_line(line[:-1])
    assert record is not None
    return record


@pytest.mark.parametrize("event_type, fields", [("ORDER_PLACE", ORDER), ("ORDER_RESULT", RESULT)])
def test_a_compact_line_expands_to_the_record_the_full_path_builds(builder, event_type, fields):
    line = builder.execution_line(event_type, fields, TRACE, SPAN, NS)
    assert b'"event_ts"' not in line  # compact: times and ids as numbers, expanded by the reader
    full = builder.execution_event(event_type, fields, TRACE, SPAN, NS)
    assert _expanded(line) == full
    assert full["event_id"] == f"run-1:{fields['seq']}" and "error_msg" not in full
    if "huge" in fields:  # numbers no store keeps: their text, as safe_value writes them
        assert (full["huge"], full["tiny"], full["flags"]) == ("1e+300", "1e-300", [1, 2])


def test_a_compact_decision_line_expands_to_the_decision_record(builder):
    line = builder.decision_line(DECISION, TRACE, SPAN, NS - 5000, NS)
    record = _expanded(line)
    assert record == builder.decision_event(DECISION, TRACE, SPAN, NS - 5000, NS)
    assert record["decision_id"] == format(TRACE, "032x") and record["target_count"] == 2
    assert record["target_orders"][1]["price"] is None  # NaN in a target: null, as before


@pytest.mark.parametrize("fields", [
    dict(ORDER, error_msg=f"401: bad key {SECRET}"),  # a registered secret in an exception's text
    dict(ORDER, error_msg="request failed: api_key=abc123def456"),  # a label and its value
    dict(ORDER, market=SECRET),  # a market string equal to a registered secret
    dict(ORDER, session_token="tok"),  # a sensitive field name
    {**DECISION, "targets": [{"side": "yes", "note": f"x {SECRET}"}]},  # nested
])
def test_fields_the_policy_would_mask_take_the_scrubbed_full_path(builder, secret, fields):
    assert not scrub.fields_clean(fields)
    assert builder.execution_line("ORDER_RESULT", fields, TRACE, SPAN, NS) is None
    assert builder.decision_line(fields, TRACE, SPAN, NS, NS) is None


@pytest.mark.parametrize("fields", [
    dict(ORDER, price=float("nan")),  # orjson would write null; the full path keeps "nan"
    dict(ORDER, price=float("-inf"), error_msg=None),  # (also with a null beside it)
    dict(ORDER, size=2**70),  # beyond orjson's ints
    dict(ORDER, stack="Traceback ..."),  # not a record field: not journaled at all
    dict(ORDER, price=object()),  # not plain (a FILL's raw argument)
    dict(ORDER, decision_id=None),  # rejected by the full path, with its ERROR line
])
def test_values_the_fast_path_cannot_write_as_they_are_take_the_full_path(builder, fields):
    assert builder.execution_line("FILL", fields, TRACE, SPAN, NS) is None


def test_fields_clean_does_not_modify_the_fields_and_remembers_clean_strings(secret):
    fields = dict(ORDER, note="fresh text")
    before = orjson.dumps(fields)
    assert scrub.fields_clean(fields) and orjson.dumps(fields) == before
    assert "fresh text" in scrub._seen_clean
    scrub.register_secrets(["fresh text"])  # a new secret forgets what was seen clean
    assert not scrub.fields_clean(fields)


def _ledger(sink: RecordingSink, journal: Path, builder: RecordBuilder) -> tuple[Ledger, ExecutionLedgerProcessor]:
    ledger = Ledger(sink, journal, **FAST)
    return ledger, ExecutionLedgerProcessor(ledger, builder)


def test_a_secret_in_error_msg_never_reaches_the_journal_file(tmp_path, builder, secret):
    sink, journal = RecordingSink(), tmp_path / "journal"
    ledger, processor = _ledger(sink, journal, builder)  # not started: the records stay in the journal
    processor.on_event("ORDER_PLACE", ORDER, TRACE, SPAN, NS)
    processor.on_event("ORDER_RESULT", dict(RESULT, status="REJECTED", error_msg=f"denied for {SECRET}"),
                       TRACE, SPAN + 1, NS + 1)
    raw = b"".join(p.read_bytes() for p in journal.glob("seg-*.jsonl"))
    assert raw.count(b"\n") == 2 and SECRET.encode() not in raw and b"[REDACTED]" in raw
    ledger.start()
    assert ledger.flush(10) and ledger.shutdown(5)
    result = next(r for r in sink.records if r["event_type"] == "ORDER_RESULT")
    assert result["error_msg"] == "denied for [REDACTED]" and processor.errors == 0


def test_a_journal_of_an_earlier_version_and_compact_lines_replay_alike(tmp_path, builder, ledger_execution_record):
    """A bot upgraded after a crash: its journal holds full records (the earlier format) and, after
    the upgrade, compact lines; the next start ships both as records."""
    journal = tmp_path / "journal"
    journal.mkdir()
    old = ledger_execution_record(seq=1)
    compact = builder.execution_line("ORDER_PLACE", ORDER, TRACE, SPAN, NS)
    segment = journal / f"seg-{time.time_ns():020d}-{os.getpid() + 100000}-ab12.jsonl"
    segment.write_bytes(orjson.dumps(old, option=orjson.OPT_APPEND_NEWLINE) + compact)
    pending = pending_on_disk(journal)
    assert pending.records == 2 and pending.oldest_event_ts == old["event_ts"]
    sink = RecordingSink()
    ledger = Ledger(sink, journal, **FAST)
    ledger.start()
    assert ledger.flush(10) and ledger.shutdown(5)
    assert sink.records == [old, builder.execution_event("ORDER_PLACE", ORDER, TRACE, SPAN, NS)]
    assert ledger.stats()["replayed"] == 2 and ledger.stats()["torn"] == 0


def test_a_compact_line_that_does_not_expand_counts_as_unparseable():
    assert parse_line(b'{"_j":1,"k":"x"}') is None and parse_line(b"[1]") is None
    assert expand({"kind": "execution", "x": 1}) == {"kind": "execution", "x": 1}  # full records as they are


def test_the_journal_write_keeps_the_contract_of_os_write(tmp_path):
    """The appender's write(2) holds the GIL (no handoff mid-order) but answers like os.write."""
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        assert journal_mod.write_fd(fd, b'{"a":"\x00"}\n') == 10 and path.read_bytes() == b'{"a":"\x00"}\n'
        assert journal_mod.write_fd(fd, bytearray(b"x\n")) == 2  # not bytes: through os.write
        assert path.read_bytes() == b'{"a":"\x00"}\nx\n'
    finally:
        os.close(fd)
    with pytest.raises(OSError) as failed:
        journal_mod.write_fd(fd, b"x\n")  # closed: EBADF, as os.write raises it
    assert failed.value.errno == errno.EBADF
