"""The local spans file is bounded: it rotates at DORA_SPANS_MAX_BYTES, keeps DORA_SPANS_BACKUPS old
files, and its readers (explain's local source) read the rotated files too."""

from __future__ import annotations

import io
import logging

import dora_otel
from dora_otel._rotating import RotatingAppender
from dora_otel.config import Config
from dora_otel.spanfile import read_spans

MAX_BYTES, BACKUPS = 32 * 1024, 2


def _run_decisions(count: int) -> None:
    class Strategy:
        @dora_otel.decision_cycle(market="market")
        def quote(self, market):
            return [{"side": "yes", "price": 0.4, "size": 1}]

    @dora_otel.order_place
    def place(market, side, price, size, client_order_id=None):
        return {"order": {"order_id": f"o-{client_order_id}", "status": "resting"}}

    strategy = Strategy()
    for i in range(count):
        strategy.quote(f"KX{i % 7}")
        place(f"KX{i % 7}", "yes", 0.4, 1)


def test_a_long_run_keeps_the_spans_directory_within_its_bound(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "16")  # one batch is one line: keep lines small
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    monkeypatch.setenv("DORA_SPANS_MAX_BYTES", str(MAX_BYTES))
    monkeypatch.setenv("DORA_SPANS_BACKUPS", str(BACKUPS))
    telemetry = dora_otel.setup(data_dir=tmp_path, container_mode=True, ledger="off", stream=io.StringIO(),
                                install_signal_handlers=False, watchdog_seconds=0)
    try:
        _run_decisions(600)  # ~1,800 spans, several times the bound
        assert telemetry.flush(10)
    finally:
        telemetry.shutdown()
    spans_dir = tmp_path / "spans"
    files = sorted(p.name for p in spans_dir.iterdir())
    assert files == ["spans.jsonl", "spans.jsonl.1", "spans.jsonl.2"], files
    longest = max(len(line) for p in spans_dir.iterdir() for line in p.read_bytes().splitlines())
    total = sum(p.stat().st_size for p in spans_dir.iterdir())
    assert total <= (BACKUPS + 1) * MAX_BYTES + longest, (total, longest)
    # The reader reads every retained file, oldest first; the run wrote more than it kept.
    spans = read_spans(spans_dir / "spans.jsonl")
    assert len(spans) == sum(p.read_bytes().count(b'"spanId"') for p in spans_dir.iterdir())
    assert 0 < len({s["traceId"] for s in spans}) < 600  # the oldest decisions were rotated away
    starts = [int(s["startTimeUnixNano"]) for s in spans]
    assert starts[0] <= starts[len(starts) // 2] <= starts[-1]  # oldest file first


def test_read_spans_finds_a_decision_that_only_lives_in_a_rotated_file(tmp_path):
    telemetry = dora_otel.setup(data_dir=tmp_path, container_mode=True, ledger="off", stream=io.StringIO(),
                                install_signal_handlers=False, watchdog_seconds=0)
    try:
        _run_decisions(1)
        assert telemetry.flush(10)
        first = {s["traceId"] for s in read_spans(tmp_path / "spans" / "spans.jsonl")}
        appender = RotatingAppender(tmp_path / "spans" / "spans.jsonl", MAX_BYTES, 3)
        appender.rotate()  # what the exporter does when the file is full
        appender.close()
        _run_decisions(1)
        assert telemetry.flush(10)
    finally:
        telemetry.shutdown()
    assert (tmp_path / "spans" / "spans.jsonl.1").exists()
    spans = read_spans(tmp_path / "spans" / "spans.jsonl")
    assert first and first <= {s["traceId"] for s in spans} and len({s["traceId"] for s in spans}) == 2


def test_spans_file_bounds_come_from_the_environment_and_arguments(monkeypatch, caplog):
    monkeypatch.setenv("DORA_SPANS_MAX_BYTES", "1048576")
    monkeypatch.setenv("DORA_SPANS_BACKUPS", "7")
    config = Config.resolve({})
    assert (config.spans_max_bytes, config.spans_backups) == (1048576, 7)
    assert Config.resolve({"spans_backups": 0}).spans_backups == 0
    monkeypatch.setenv("DORA_SPANS_MAX_BYTES", "12")  # too small: warned, default kept
    with caplog.at_level(logging.WARNING):
        assert Config.resolve({}).spans_max_bytes == Config.spans_max_bytes
    assert "DORA_SPANS_MAX_BYTES" in caplog.text
