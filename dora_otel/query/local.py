"""The embedded backend of the query commands: the SQLite ledger, the JSON log files and the
spans file under a data directory (docs/ARCHITECTURE.md, "Files on disk").

Owns :class:`LogFiles`, which reads the rotating log files (`logs/dora-bot.jsonl`, `.1` … `.5`) by
time region without reading them whole: every line starts with `{"ts":"…"`, and lines are written
in (nearly) time order, so a binary search over the memory-mapped file finds where a region starts.
Only lines that mention a wanted decision_id are parsed as JSON. A torn last line is skipped.

Nothing here writes to the data directory: a missing SQLite file is never created.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from dora_otel.logs import log_file_path
from dora_otel.protocols import LedgerReader
from dora_otel.query.sources import (
    LogLines,
    Region,
    describe_reader,
    merge_regions,
    unique_lines,
    with_order_join,
)
from dora_otel.query.times import iso_ms

__all__ = ["LocalSource", "LogFiles"]

_TS_PREFIX = b'{"ts":"'
_TS_LEN = 23  # 2026-11-24T05:04:26.797
_DID = b'"decision_id":"'
_DECISION_MADE = b'"event_type":"DECISION_MADE"'
_TARGET_LEDGER = b'"target":"execution_log"'
_SHUTDOWN = b'"event_type":"SHUTDOWN"'
_SLACK = timedelta(seconds=2)  # lines of different threads are out of time order by a little


def _key(value: datetime) -> bytes:
    return iso_ms(value)[:_TS_LEN].encode()


class LogFiles:
    """The bot's rotating JSON log files, oldest first. Reads block on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        rotated = sorted(path.parent.glob(path.name + ".*"), key=_rotation_index, reverse=True)
        self.files = [p for p in rotated if _rotation_index(p) > 0] + ([path] if path.exists() else [])

    def exists(self) -> bool:
        return bool(self.files)

    def lines(self, regions: Sequence[Region] | None, wanted: Callable[[bytes], bool]) -> Iterator[dict[str, Any]]:
        """Parsed lines for which ``wanted(raw_line)`` is true, in file order, within ``regions``
        (None: the whole files)."""
        merged = merge_regions(regions) if regions else None
        for path in self.files:
            try:
                with open(path, "rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    if size == 0:
                        continue
                    with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                        if merged is None:
                            yield from _scan(mm, 0, size, None, wanted)
                            continue
                        first, last = _first_ts(mm), _last_ts(mm)
                        for start, end in merged:
                            lo, hi = _key(start - _SLACK), _key(end + _SLACK)
                            if (last is not None and last < lo) or (first is not None and first > hi):
                                continue
                            yield from _scan(mm, _seek(mm, lo), size, hi, wanted)
            except (OSError, ValueError):
                continue  # rotated away while reading, or unreadable: the other files still count

    def find(self, needle: str) -> Iterator[dict[str, Any]]:
        """Every line containing ``needle`` (any time): a memchr-speed search, then parse the hits."""
        token = needle.encode()
        for path in self.files:
            try:
                with open(path, "rb") as fh:
                    if os.fstat(fh.fileno()).st_size == 0:
                        continue
                    with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                        pos = mm.find(token)
                        while pos >= 0:
                            start = mm.rfind(b"\n", 0, pos) + 1
                            end = mm.find(b"\n", pos)
                            end = len(mm) if end < 0 else end
                            line = _parse(mm[start:end])
                            if line is not None:
                                yield line
                            pos = mm.find(token, end)
            except (OSError, ValueError):
                continue


def _rotation_index(path: Path) -> int:
    suffix = path.name.rsplit(".", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _ts_at(mm: mmap.mmap, pos: int) -> bytes | None:
    if mm[pos:pos + 7] == _TS_PREFIX:
        return mm[pos + 7:pos + 7 + _TS_LEN]
    return None


def _first_ts(mm: mmap.mmap) -> bytes | None:
    return _ts_at(mm, 0)


def _last_ts(mm: mmap.mmap) -> bytes | None:
    end = len(mm)
    while end > 0:
        start = mm.rfind(b"\n", 0, end - 1) + 1
        ts = _ts_at(mm, start)
        if ts is not None:
            return ts
        end = start - 1 if start > 0 else 0
        if start == 0:
            break
    return None


def _seek(mm: mmap.mmap, key: bytes) -> int:
    """The start of a line at or before the first line whose ts >= key."""
    lo, hi = 0, len(mm)
    while hi - lo > 8192:
        mid = (lo + hi) // 2
        nl = mm.find(b"\n", mid, hi)
        if nl < 0:
            hi = mid
            continue
        start = nl + 1
        ts = _ts_at(mm, start)
        if ts is None or ts < key:
            lo = start
        else:
            hi = mid
    return mm.rfind(b"\n", 0, lo) + 1 if lo > 0 else 0


def _scan(mm: mmap.mmap, pos: int, size: int, stop: bytes | None,
          wanted: Callable[[bytes], bool]) -> Iterator[dict[str, Any]]:
    find = mm.find
    while pos < size:
        end = find(b"\n", pos)
        if end < 0:
            end = size
        if stop is not None:
            ts = mm[pos + 7:pos + 7 + _TS_LEN] if mm[pos:pos + 7] == _TS_PREFIX else None
            if ts is not None and ts > stop:
                return
        raw = mm[pos:end]
        if raw and wanted(raw):
            line = _parse(raw)
            if line is not None:
                yield line
        pos = end + 1


def decision_id_of(raw: bytes) -> bytes | None:
    """The decision_id in a raw line, without parsing the JSON."""
    at = raw.find(_DID)
    if at < 0:
        return None
    start = at + len(_DID)
    end = raw.find(b'"', start)
    return raw[start:end] if end > 0 else None


class LocalSource:
    """SQLite ledger (or an injected reader) + log files + spans file of one data directory.

    Args:
        data_dir: the bot's data directory (`DORA_DATA_DIR`).
        env: the environment (names the CloudWatch group in printed queries).
        reader: a LedgerReader to use instead of `<data_dir>/ledger/ledger.sqlite3` (tests, memory).
        use_logs: False to ignore the log files (``--logs none``).
    """

    name = "sqlite"

    def __init__(self, data_dir: str | os.PathLike[str], *, env: str = "demo", reader: LedgerReader | None = None,
                 use_logs: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.env = env
        self._own_reader = reader is None
        if reader is None:
            from dora_otel.sinks.sqlite import SQLiteSink, sqlite_path

            path = sqlite_path(self.data_dir)
            reader = SQLiteSink(path) if path.exists() else None
            self.ledger_path: Path | None = path
        else:
            self.name = type(reader).__name__
            self.ledger_path = None
        # fills/cancels a later run recorded by order_id alone join their decision at read time
        self.reader = with_order_join(reader)
        self.logs = LogFiles(log_file_path(self.data_dir)) if use_logs else None
        self.spans_path = self.data_dir / "spans" / "spans.jsonl"
        # the bot's ledger journal: records not yet shipped to the store read here (see query.completeness)
        self.journal_dir: Path | None = self.data_dir / "ledger" / "journal"

    def describe(self) -> str:
        logs = log_file_path(self.data_dir) if self.logs is not None else "not read"
        return f"ledger {describe_reader(self.reader)}; logs {logs}"

    def _no_logs(self) -> LogLines | None:
        if self.logs is None:
            return LogLines([], available=False, note="log lines not read (--logs none)")
        if not self.logs.exists():
            return LogLines([], available=False,
                            note=f"no log file at {self.logs.path} (CONTAINER_MODE writes stdout only)")
        return None

    def decision_lines(self, decision_ids: set[str], regions: Sequence[Region], market: str | None) -> LogLines:
        missing = self._no_logs()
        if missing is not None:
            return missing
        ids = {d.encode() for d in decision_ids}
        market_token = orjson.dumps({"market": market})[1:-1] if market else None

        def wanted(raw: bytes) -> bool:
            did = decision_id_of(raw)
            if did is not None and did in ids:
                return True
            if market_token is None or market_token not in raw:
                return False
            # context: the market's lines without a decision, and its other decisions' DECISION_MADE
            # lines (they tell which decision a context line follows)
            return did is None or _DECISION_MADE in raw

        assert self.logs is not None
        return LogLines(unique_lines(self.logs.lines(regions, wanted)))

    def run_lines(self, start: datetime, end: datetime) -> LogLines:
        missing = self._no_logs()
        if missing is not None:
            return missing
        assert self.logs is not None
        return LogLines(unique_lines(self.logs.lines([(start, end)], lambda raw: True)))

    def health_lines(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The ledger shipper's outage / recovery lines and SHUTDOWN lines between ``start`` and
        ``end`` (for query.completeness: is the ledger known to be behind?). Empty without logs."""
        if self._no_logs() is not None:
            return []
        assert self.logs is not None
        return list(self.logs.lines([(start, end)], lambda raw: _TARGET_LEDGER in raw or _SHUTDOWN in raw))

    def find_decision_lines(self, decision_id: str) -> LogLines:
        missing = self._no_logs()
        if missing is not None:
            return missing
        token = decision_id.encode()
        assert self.logs is not None
        return LogLines(unique_lines(line for line in self.logs.find(decision_id)
                               if str(line.get("decision_id", "")).encode() == token))

    def spans_for(self, decision_id: str) -> list[dict[str, Any]]:
        """The decision's spans from the local spans file (read whole: used only as a fallback)."""
        from dora_otel.spanfile import read_spans

        return [s for s in read_spans(self.spans_path) if s.get("traceId") == decision_id]

    def close(self) -> None:
        if self._own_reader and self.reader is not None:
            close = getattr(self.reader, "close", None)
            if close is not None:
                close()
