"""Disk full and unwritable directories: every execution record is shipped, still on disk in the
journal, or counted lost — and the counters (SHUTDOWN, stats()) say which.

The disk-full tests use a real 256 KiB tmpfs (``mount -t tmpfs``, which needs root). Where mount is
not permitted, they fall back to ``RLIMIT_FSIZE`` in the child process (writes past 256 KiB per file
fail with EFBIG, like a full disk for that file) — see ``small_disk``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dora_otel.ledger import Ledger, pending_on_disk
from dora_otel.ledger.journal import PROGRESS_SUFFIX, parse_line
from dora_otel.protocols import RetryableSinkError, WriteResult
from dora_otel.sinks.memory import MemorySink
from tests.mounts import mounted_tmpfs

REPO = Path(__file__).resolve().parents[2]
FAST = {"retry_base_s": 0.01, "retry_max_s": 0.05, "linger_s": 0.0}
RUN = "20261201-000000-dfdf"


def record(seq: int, event_type: str = "FILL") -> dict[str, Any]:
    return {
        "kind": "execution",
        "bot_run_id": RUN,
        "decision_id": f"{seq // 3:032x}",
        "event_ts": f"2026-12-01T00:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq:06d}Z",
        "seq": seq,
        "event_id": f"{RUN}:{seq}",
        "event_type": event_type,
        "market": "KXBTC-26DEC01-B97000",
        "side": "yes",
        "price": 0.55,
        "size": 10,
        "expires_at": 1_900_000_000,
    }


class DownSink(MemorySink):
    """A sink that is down until ``down`` is set False."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def write_batch(self, records: Any) -> WriteResult:
        if self.down:
            raise RetryableSinkError("sink is down (test)")
        return super().write_batch(records)


def pending_event_ids(journal: Path) -> set[str]:
    """event_ids of the records in ``journal`` past each segment's progress offset."""
    ids: set[str] = set()
    for segment in sorted(journal.glob("seg-*.jsonl")):
        progress = segment.with_name(segment.name + PROGRESS_SUFFIX)
        start = int(progress.read_bytes().strip() or 0) if progress.exists() else 0
        for line in segment.read_bytes()[start:].split(b"\n"):
            record = parse_line(line)  # compact lines expanded; None for a torn line
            if record is not None:
                ids.add(record["event_id"])
    return ids


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    """``(directory, preexec_fn)``: a 256 KiB tmpfs, or (no mount permission) a plain directory and
    a preexec_fn limiting the child's file sizes to 256 KiB."""
    mount = tmp_path / "disk"
    with mounted_tmpfs(mount, "size=256k") as mounted:
        if mounted:
            yield mount, None
        else:
            def limit() -> None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

            yield mount, limit


BOT = textwrap.dedent(
    """
    import json, sys
    import dora_otel
    n = int(sys.argv[2])
    t = dora_otel.setup(data_dir=sys.argv[1], container_mode=True, install_signal_handlers=False,
                        watchdog_seconds=0, shutdown_timeout_s=1.0)
    for i in range(n):
        dora_otel.record_fill(market="KXBTC-26DEC01-B97000", side="yes", price=0.55, size=1,
                              pnl_delta=0.0, order_id=f"ord-{i}")
        if i % 250 == 0:
            t.flush(0.3)  # like a bot's idle moments: the shipper catches up until the disk is full
    t.shutdown(reason="done")
    """
)


def test_disk_full_with_the_default_sqlite_ledger_counts_every_lost_record(small_disk: Any) -> None:
    """A bot fills its disk: every FILL is in SQLite, in the journal on disk, or counted in
    ledger_dropped at SHUTDOWN (which was 0 while thousands were lost)."""
    data_dir, preexec = small_disk
    n = 3000
    done = subprocess.run(
        [sys.executable, "-c", BOT, str(data_dir), str(n)],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        cwd=REPO,
        preexec_fn=preexec,
        env={**os.environ, "DORA_WATCHDOG_SECONDS": "0"},
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    shutdown = [line for line in lines if line["event_type"] == "SHUTDOWN"]
    assert shutdown, done.stdout[-2000:] + done.stderr[-2000:]
    fields = shutdown[-1]

    with contextlib.closing(sqlite3.connect(data_dir / "ledger" / "ledger.sqlite3")) as db:
        stored = {row[0] for row in db.execute("SELECT event_id FROM execution_log")}
    journal = data_dir / "ledger" / "journal"
    on_disk = pending_event_ids(journal)
    kept = stored | on_disk
    assert 0 < len(stored) < n, "the disk never filled up (or nothing was shipped): the test proves nothing"
    # Every record is kept somewhere or counted lost: no silent loss.
    assert len(kept) + fields["ledger_dropped"] == n, fields
    assert fields["ledger_dropped"] > 0 and fields["flushed"] is False
    assert fields["ledger_durable"] is False
    # SHUTDOWN describes the journal as it is on disk.
    assert fields["ledger_journal_records"] == pending_on_disk(journal).records
    segments_bytes = sum(p.stat().st_size for p in journal.glob("seg-*.jsonl"))
    assert fields["ledger_journal_bytes"] == segments_bytes
    errors = [line for line in lines if line["level"] == "ERROR" and line.get("target") == "execution_log"]
    assert any("kept in memory only" in line["message"] for line in errors)
    lost = fields["ledger_dropped"]
    assert any("lost" in line["message"] and line.get("dropped") == lost for line in errors)


def test_disk_full_at_the_journal_keeps_records_in_memory_and_counts_those_lost_at_exit(
    tmp_path: Path,
) -> None:
    """The journal's filesystem fills up while the sink is down: the records that fit are on disk,
    the rest wait in memory; at shutdown those are counted in ``dropped`` (ERROR line)."""
    journal = tmp_path / "journal"
    with mounted_tmpfs(journal, "size=64k") as mounted:
        if not mounted:
            pytest.skip("needs mount -t tmpfs (root); the subprocess test above covers the fallback")
        sink = DownSink()
        ledger = Ledger(sink, journal, **FAST)
        ledger.start()
        n = 1000  # ~230 KB of records: more than the 64 KiB disk
        for seq in range(n):
            ledger.append(record(seq))
        stats = ledger.stats()
        assert stats["durable"] is False and stats["memory_records"] > 0
        assert stats["unjournaled"] == stats["memory_records"]
        assert ledger.shutdown(0.2) is False
        stats = ledger.stats()
        on_disk = pending_event_ids(journal)
        assert stats["dropped"] == n - len(on_disk) > 0
        assert stats["journal_records"] == len(on_disk) == pending_on_disk(journal).records
        assert stats["journal_bytes"] == sum(p.stat().st_size for p in journal.glob("seg-*.jsonl")) > 0


def test_shutdown_reports_the_journal_left_on_disk(tmp_path: Path) -> None:
    """SHUTDOWN's journal counters are those of the disk: not 0 bytes with records still there."""
    journal = tmp_path / "journal"
    ledger = Ledger(DownSink(), journal, **FAST)
    ledger.start()
    for seq in range(50):
        ledger.append(record(seq))
    assert ledger.shutdown(0.2) is False
    stats = ledger.stats()
    size = sum(p.stat().st_size for p in journal.glob("seg-*.jsonl"))
    assert stats["journal_bytes"] == size > 0
    assert stats["journal_records"] == 50 == pending_on_disk(journal).records
    assert stats["oldest_unshipped_age_s"] > 0
    assert stats["dropped"] == 0  # on disk, not lost


def test_flushed_is_true_exactly_when_everything_was_shipped(tmp_path: Path) -> None:
    sink = DownSink()
    ledger = Ledger(sink, tmp_path / "a", **FAST)
    ledger.start()
    ledger.append(record(1))
    sink.down = False
    assert ledger.shutdown(5) is True and ledger.stats()["journal_records"] == 0
    ledger = Ledger(DownSink(), tmp_path / "b", **FAST)
    ledger.start()
    ledger.append(record(2))
    assert ledger.shutdown(0.2) is False


def test_unwritable_journal_directory_says_records_are_in_memory_and_counts_them_at_exit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal directory below a regular file: records wait in memory; the outage ERROR says so
    (it claimed they "stay in the journal"), and at exit they are counted lost."""
    (tmp_path / "file").write_text("not a directory")
    journal = tmp_path / "file" / "journal"
    with caplog.at_level("INFO", logger="dora_otel.ledger"):
        ledger = Ledger(DownSink(), journal, **FAST)
        ledger.start()
        for seq in range(20):
            ledger.append(record(seq))
        assert _wait(lambda: ledger.stats()["outage"])
        assert ledger.shutdown(0.2) is False
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    outage = [m for m in errors if "is failing" in m]
    assert outage and "20 in memory only" in outage[0] and "stay in the journal" not in outage[0]
    assert any("kept in memory only" in m for m in errors)
    assert any("20 records held only in memory" in m and "lost" in m for m in errors)
    stats = ledger.stats()
    assert stats["dropped"] == 20 and stats["unjournaled"] == 20 and stats["durable"] is False


def test_read_only_journal_directory_still_ships_through_memory(tmp_path: Path) -> None:
    """A read-only journal (EROFS) with a working sink: records ship from memory, none lost."""
    journal = tmp_path / "journal"
    with mounted_tmpfs(journal, "ro,size=64k") as mounted:
        if not mounted:
            pytest.skip("needs mount -t tmpfs (root)")
        sink = MemorySink()
        ledger = Ledger(sink, journal, **FAST)
        ledger.start()
        for seq in range(30):
            ledger.append(record(seq))
        assert ledger.shutdown(5) is True
    stats = ledger.stats()
    assert stats["shipped"] == 30 and stats["unjournaled"] == 30 and stats["dropped"] == 0
    assert len(sink.all_records()) == 30


def _wait(predicate: Any, timeout_s: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False
