"""A scriptable in-memory sink for the Ledger tests that need no server."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from dora_otel.protocols import Record, RetryableSinkError, WriteResult
from dora_otel.sinks.memory import MemorySink


class FlakySink(MemorySink):
    """A MemorySink that can be down, hang, or answer its next calls from a script.

    * ``down = True``: every call raises ``RetryableSinkError`` until set back to False.
    * ``hang()`` / ``release()``: calls block until released (a hung network call).
    * ``script``: the next calls' answers, in order: an exception instance to raise, or
      ``"unprocessed"`` (store the first half, return the rest as unprocessed).
    """

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.script: list[Any] = []
        self.calls = 0
        self._open = threading.Event()
        self._open.set()

    def hang(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def write_batch(self, records: Sequence[Record]) -> WriteResult:
        self.calls += 1
        self._open.wait()
        if self.down:
            raise RetryableSinkError("sink is down (test)")
        if self.script:
            answer = self.script.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            if answer == "unprocessed":
                half = len(records) // 2
                done = super().write_batch(records[:half])
                return WriteResult(written=done.written, unprocessed=list(records[half:]), failed=done.failed)
            raise ValueError(f"unknown script entry {answer!r}")
        return super().write_batch(records)

    def event_ids(self) -> list[str]:
        return [r["event_id"] for r in self.all_records()]
