"""Crash loops drain: a bot that restarts every few seconds, each run killed before it can ship
the whole backlog, still ships everything — 0 lost, 0 duplicated — because replay resumes each
journal segment where the previous run stopped (per-segment progress files, see journal.py)."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from dora_otel.ledger import pending_on_disk

HERE = Path(__file__).resolve().parent
RUNS = 30
PER_RUN = 60  # records journaled by each short-lived run: one segment each
KILL_AFTER = 2  # batches (of 25) a drain run ships before it is killed: less than one segment
MAX_BATCH = 25


def _run(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HERE / "_crashloop.py"), str(workdir), *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        cwd=HERE,
    )


@pytest.mark.slow
def test_a_backlog_from_30_short_lived_runs_drains_through_a_crash_loop(tmp_path: Path) -> None:
    expected: set[str] = set()
    for run in range(RUNS):
        run_id = f"20261201-0000{run:02d}-crsh"
        done = _run(tmp_path, "journal", run_id, str(PER_RUN))
        assert done.returncode == -9, done.stderr  # killed before anything shipped
        expected.update(f"{run_id}:{seq}" for seq in range(PER_RUN))
    journal = tmp_path / "journal"
    assert pending_on_disk(journal).records == RUNS * PER_RUN

    drain_runs = 0
    while True:
        drain_runs += 1
        done = _run(tmp_path, "drain", str(KILL_AFTER))
        if "DRAINED" in done.stdout:
            break
        assert done.returncode == -9, done.stderr
        # each run that dies still moves the backlog forward
        assert drain_runs <= len(expected) // (MAX_BATCH * KILL_AFTER) + RUNS, "the backlog is not draining"

    with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite3")) as db:
        stored = [row[0] for row in db.execute("SELECT event_id FROM execution_log")]
    assert set(stored) == expected and len(stored) == len(expected)  # 0 lost, 0 duplicated
    attempts = Counter(orjson.loads(line) for line in (tmp_path / "attempts.jsonl").read_bytes().splitlines())
    reshipped = sum(count - 1 for count in attempts.values())
    # At most the batch in flight when a run died is shipped again (idempotently) by the next run
    # (before progress files, every run re-shipped the first segment's start and never got further).
    assert reshipped <= drain_runs * MAX_BATCH
    assert pending_on_disk(journal).records == 0 and not list(journal.glob("seg-*"))
