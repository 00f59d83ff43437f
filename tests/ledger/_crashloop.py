"""A stand-in bot for the crash-loop test: one short-lived run of a bot that restarts every few
seconds, started as a subprocess.

``journal RUN_ID N``: the sink is unavailable; appends N records of run RUN_ID, then kills itself
(SIGKILL) before anything ships. ``drain K``: the sink is SQLite, and the process kills itself when
the sink is called for the (K+1)-th batch (a crash in the middle of replaying the backlog); every
batch the sink receives is appended to ``attempts.jsonl`` first. A drain run that finds nothing left
to ship prints DRAINED and exits normally.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from dora_otel.ledger import Ledger
from dora_otel.protocols import RetryableSinkError, WriteResult
from dora_otel.sinks.memory import MemorySink
from dora_otel.sinks.sqlite import SQLiteSink


class Unavailable(MemorySink):
    def write_batch(self, records: Sequence[Any]) -> WriteResult:
        raise RetryableSinkError("sink unavailable (crash-loop test)")


class CrashingSQLite(SQLiteSink):
    def __init__(self, path: Path, attempts: Path, kill_after: int) -> None:
        super().__init__(path)
        self.attempts = attempts
        self.kill_after = kill_after
        self.batches = 0

    def write_batch(self, records: Sequence[Any]) -> WriteResult:
        if self.batches >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        self.batches += 1
        with open(self.attempts, "ab") as out:
            out.write(b"".join(orjson.dumps(r["event_id"]) + b"\n" for r in records))
        return super().write_batch(records)


def record(run_id: str, seq: int) -> dict[str, Any]:
    return {
        "kind": "execution",
        "bot_run_id": run_id,
        "decision_id": f"{seq // 3:032x}",
        "event_ts": f"2026-12-01T00:00:{seq % 60:02d}.{seq:06d}Z",
        "seq": seq,
        "event_id": f"{run_id}:{seq}",
        "event_type": "ORDER_RESULT",
        "market": "KXBTC-26DEC01-B97000",
        "status": "ACCEPTED",
        "expires_at": 1_900_000_000,
    }


def main() -> None:
    workdir, mode = Path(sys.argv[1]), sys.argv[2]
    journal = workdir / "journal"
    fast: dict[str, Any] = {"retry_base_s": 0.01, "retry_max_s": 0.02, "linger_s": 0.0}
    if mode == "journal":
        run_id, count = sys.argv[3], int(sys.argv[4])
        ledger = Ledger(Unavailable(), journal, **fast)
        ledger.start()
        for seq in range(count):
            ledger.append(record(run_id, seq))
        os.kill(os.getpid(), signal.SIGKILL)
    sink = CrashingSQLite(workdir / "ledger.sqlite3", workdir / "attempts.jsonl", int(sys.argv[3]))
    ledger = Ledger(sink, journal, **fast)
    ledger.start()
    if ledger.flush(60) and ledger.shutdown(10):
        print("DRAINED", flush=True)


if __name__ == "__main__":
    main()
