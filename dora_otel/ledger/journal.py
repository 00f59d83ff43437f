"""The ledger's durable journal: append-only NDJSON segment files in ``<data_dir>/ledger/journal/``.

Owns the bytes on disk between ``Ledger.append`` and the sink: segment files, their rotation, the
size bound and what happens at it, fsync, reading records back for the shipper (including earlier
runs' segments after a crash), deleting what was shipped, and the dead-letter file.

Layout and lifecycle:

* A segment is ``seg-<unix_ns>-<pid>-<rand>.jsonl``: one JSON record per line, written with one
  ``os.write`` per record on an ``O_APPEND`` descriptor, so a record is in the kernel once ``append``
  returns and survives ``kill -9`` of the process (a machine crash needs fsync: see ``fsync``).
* The process holds an exclusive ``flock`` on each segment it has open. At start-up every segment in
  the directory whose lock is free belongs to a dead process: it is *replayed* (shipped again from
  its first line; writes are idempotent, so what was already shipped is overwritten, never
  duplicated). Segments locked by a live process are left alone.
* The appender rotates to a new segment when the current one reaches ``segment_bytes`` (or after a
  write error, or when the shipper asks because the segment is fully shipped and idle). A segment
  that is rotated away from and fully shipped is deleted.
* A line that does not parse (a torn last line after a crash mid-write, a short write on a full
  disk) is skipped with one warning per segment and counted in ``torn``.
* Records that a sink can never store are appended to ``dead-letter.jsonl`` with the reason.

The bound (``max_bytes``, the sum of the live segments' sizes): past it, records whose
``event_type`` is in ``critical_event_types`` (ORDER_RESULT, FILL, ORDER_CANCEL by default) are still
written and counted in ``over_bound``; all others (decisions, ORDER_PLACE) are dropped, counted in
``dropped``, with one ERROR line when dropping starts and one INFO line when the journal is back
under 90 % of the bound. A critical record is therefore never dropped by the bound; only a full
disk stops it (then ``Ledger`` ships it from memory, see ``Ledger.append``).

Threads: ``append`` runs on the bot's threads (it takes a short lock and makes one ``write``
syscall; it rotates segments with ``open``; with ``fsync="always"`` it also calls ``fdatasync``).
Everything else runs on the shipper thread. Only the shipper thread closes descriptors.
"""

from __future__ import annotations

import bisect
import dataclasses
import fcntl
import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Batch", "FSYNC_POLICIES", "Journal", "Position"]

FSYNC_POLICIES = ("interval", "always", "never")
DEAD_LETTER_NAME = "dead-letter.jsonl"
_SEGMENT_RE = re.compile(r"^seg-(\d{20})-(\d+)-([0-9a-f]+)\.jsonl$")
_READ_CHUNK = 32 * 1024
_MARK_EVERY_S = 1.0  # granularity of oldest_unshipped_age_s

# Outcomes of Journal.append
WRITTEN = 0
OVER_BOUND = 1
DROPPED = 2


@dataclasses.dataclass(eq=False)
class _Segment:
    index: int
    path: Path
    fd: int
    created_wall: float
    end: int = 0  # bytes of whole writes; the shipper never reads past it
    shipped: int = 0  # records before this offset are handled
    sealed: bool = False  # no more appends
    broken: bool = False  # a write failed; rotate away at the next append
    replayed: bool = False  # written by an earlier process
    dirty: bool = False  # written since the last fsync
    torn_warned: bool = False
    # (offset, monotonic time) of the first record appended in each ~second
    marks: list[tuple[int, float]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Position:
    """A point in the journal: segment index and byte offset."""

    index: int
    offset: int


@dataclasses.dataclass
class Batch:
    """Records read for the shipper from one segment, ``[start, stop)`` in bytes."""

    segment: _Segment
    start: int
    stop: int
    records: list[dict[str, Any]]
    replayed: bool


class Journal:
    """Append-only segment files with a size bound. See the module docstring.

    Args:
        directory: the journal directory (created when missing).
        fsync: ``"interval"`` (the shipper thread fsyncs dirty segments every interval: a machine
            crash loses at most that long), ``"always"`` (``fdatasync`` in every append: durable
            against power loss, but ``append`` then waits for the disk), ``"never"`` (the OS
            decides; still survives a process kill).
        max_bytes: the bound on the live segments' total size (see the module docstring).
        segment_bytes: rotate when a segment reaches this size (at most ``max_bytes // 4``).
        critical_event_types: event types written even past the bound.
        logger: where the journal's ERROR/WARNING/INFO lines go.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: str = "interval",
        max_bytes: int = 256 * 1024 * 1024,
        segment_bytes: int = 4 * 1024 * 1024,
        critical_event_types: Iterable[str] = ("ORDER_RESULT", "FILL", "ORDER_CANCEL"),
        logger: logging.Logger | None = None,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync ({fsync!r}) must be one of {', '.join(FSYNC_POLICIES)}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 4096:
            raise ValueError(f"max_journal_bytes ({max_bytes!r}) must be an int >= 4096")
        if isinstance(segment_bytes, bool) or not isinstance(segment_bytes, int) or segment_bytes < 1024:
            raise ValueError(f"segment_bytes ({segment_bytes!r}) must be an int >= 1024")
        self.directory = Path(directory)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(1024, max_bytes // 4))
        self.critical_event_types = frozenset(critical_event_types)
        self.log = logger or logging.getLogger("dora_otel.ledger")

        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._next_index = 0
        self._bytes = 0
        self._rotate_requested = False
        self._dir_dirty = False
        self._at_bound = False
        self._dropped_at_bound = 0
        # counters (appender side under _lock; shipper side only on the shipper thread)
        self.appended = 0
        self.dropped = 0
        self.over_bound = 0
        self.torn = 0
        self.replayed_segments = 0
        self.dead_lettered = 0
        self.init_error: OSError | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._discover()
        except OSError as exc:
            self.init_error = exc

    # --- start-up ----------------------------------------------------------------------------
    def _discover(self) -> None:
        """Take over earlier processes' segments (those whose flock is free) for replay."""
        for path in sorted(self.directory.iterdir()):
            match = _SEGMENT_RE.match(path.name)
            if not match:
                continue
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # shipped and deleted meanwhile by its owner
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # a live process owns it
                continue
            size = os.fstat(fd).st_size
            if size == 0:
                path.unlink(missing_ok=True)
                os.close(fd)
                continue
            created = int(match.group(1)) / 1e9
            segment = _Segment(
                index=self._next_index,
                path=path,
                fd=fd,
                created_wall=created,
                end=size,
                sealed=True,
                replayed=True,
            )
            # The age of its oldest record is at most the segment's age.
            segment.marks.append((0, time.monotonic() - max(0.0, time.time() - created)))
            self._next_index += 1
            self._segments.append(segment)
            self._bytes += size
            self.replayed_segments += 1

    # --- the appender (bot threads) ----------------------------------------------------------
    def append(self, line: bytes, critical: bool) -> int:
        """Write one serialised record (ending in a newline). Returns WRITTEN, OVER_BOUND or DROPPED.

        Thread: any bot thread. Holds the journal lock for one ``write`` syscall (plus an ``open``
        when rotating, and ``fdatasync`` with ``fsync="always"``). Raises ``OSError`` when the record
        could not be written whole; the caller decides what to do with it.
        """
        log_bound = False
        with self._lock:
            if self._bytes + len(line) > self.max_bytes:
                if not self._at_bound:
                    self._at_bound = True
                    self._dropped_at_bound = 0
                    log_bound = True
                if not critical:
                    self.dropped += 1
                    self._dropped_at_bound += 1
                    outcome = DROPPED
                else:
                    self.over_bound += 1
                    outcome = OVER_BOUND
            else:
                outcome = WRITTEN
            if outcome != DROPPED:
                self._write(line)
                self.appended += 1
        if log_bound:
            self.log.error(
                "execution ledger journal reached its bound of %d bytes: dropping decision and "
                "ORDER_PLACE records until it drains; %s are still written (counted over_bound)",
                self.max_bytes,
                ", ".join(sorted(self.critical_event_types)),
                extra={
                    "event_type": "ERROR",
                    "target": "execution_log",
                    "error_type": "JournalFull",
                    "error_msg": f"journal {self.directory} over max_journal_bytes={self.max_bytes}",
                },
            )
        return outcome

    def _write(self, line: bytes) -> None:
        segment = self._active
        if segment is None or segment.broken or self._rotate_requested or segment.end >= self.segment_bytes:
            segment = self._open_segment()
        start = segment.end
        try:
            written = os.write(segment.fd, line)
        except OSError:
            segment.broken = True
            raise
        segment.end += written
        self._bytes += written
        segment.dirty = True
        if written != len(line):
            # A short write (disk full) leaves a torn line; the reader skips it.
            segment.broken = True
            raise OSError(f"short write to {segment.path}: {written} of {len(line)} bytes")
        now = time.monotonic()
        if not segment.marks or now - segment.marks[-1][1] >= _MARK_EVERY_S:
            segment.marks.append((start, now))
        if self.fsync == "always":
            os.fdatasync(segment.fd)
            segment.dirty = False

    def _open_segment(self) -> _Segment:
        if self._active is not None:
            self._active.sealed = True
            self._active = None
        self._rotate_requested = False
        if self.init_error is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.init_error = None
        now = time.time()
        name = f"seg-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(2)}.jsonl"
        path = self.directory / name
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        segment = _Segment(index=self._next_index, path=path, fd=fd, created_wall=now)
        self._next_index += 1
        self._segments.append(segment)
        self._active = segment
        self._dir_dirty = True
        if self.fsync == "always":
            _fsync_dir(self.directory)
            self._dir_dirty = False
        return segment

    # --- positions (any thread) --------------------------------------------------------------
    def position(self) -> Position | None:
        """The end of everything appended so far, or None when the journal holds nothing."""
        with self._lock:
            if not self._segments:
                return None
            last = self._segments[-1]
            return Position(last.index, last.end)

    def reached(self, position: Position | None) -> bool:
        """True when every record before ``position`` has been handled by the shipper."""
        if position is None:
            return True
        with self._lock:
            for segment in self._segments:
                if segment.index < position.index and segment.shipped < segment.end:
                    return False
                if segment.index == position.index and segment.shipped < position.offset:
                    return False
            return True

    def stats(self) -> tuple[int, float]:
        """``(journal_bytes, oldest_unshipped_age_s)``; cheap (a lock and a short loop)."""
        with self._lock:
            for segment in self._segments:
                if segment.shipped < segment.end:
                    marks = segment.marks
                    if not marks:
                        return self._bytes, 0.0
                    # the last mark at or before the shipped offset (marks are in offset order)
                    i = max(0, bisect.bisect_right(marks, (segment.shipped, math.inf)) - 1)
                    return self._bytes, max(0.0, time.monotonic() - marks[i][1])
            return self._bytes, 0.0

    # --- the shipper thread ------------------------------------------------------------------
    def read_batch(self, max_records: int) -> Batch | None:
        """Up to ``max_records`` records from the oldest unshipped part of the journal, or None.

        Thread: the shipper. Reads from the page cache (``pread``); never holds the lock for I/O.
        Unparseable lines are skipped (one warning per segment); a batch may then hold no records.
        """
        with self._lock:
            for segment in self._segments:
                if segment.shipped < segment.end:
                    start, end = segment.shipped, segment.end
                    complete = segment.sealed or segment.broken
                    break
            else:
                return None
        records: list[dict[str, Any]] = []
        offset = start  # file offset of buffer[pos]: everything before it is consumed
        buffer = b""
        pos = 0
        read_to = start  # file offset just after the buffer's last byte
        chunk_size = _READ_CHUNK
        while len(records) < max_records:
            newline = buffer.find(b"\n", pos)
            if newline >= 0:
                record = self._parse(segment, buffer[pos:newline], offset)
                offset += newline + 1 - pos
                pos = newline + 1
                if record is not None:
                    records.append(record)
                continue
            if read_to >= end:
                if pos < len(buffer) and complete:
                    # bytes without a newline at the end of a finished segment: a torn line
                    self._parse(segment, buffer[pos:], offset, torn_tail=True)
                    offset = end
                break
            if pos:
                buffer, pos = buffer[pos:], 0
            elif len(buffer) >= chunk_size:
                chunk_size *= 2  # one line longer than a chunk
            chunk = os.pread(segment.fd, min(chunk_size, end - read_to), read_to)
            if not chunk:  # the file is shorter than written: truncated behind our back
                self._parse(segment, buffer[pos:], offset, torn_tail=True)
                offset = end
                break
            buffer += chunk
            read_to += len(chunk)
        return Batch(segment=segment, start=start, stop=offset, records=records, replayed=segment.replayed)

    def _parse(
        self, segment: _Segment, line: bytes, offset: int, torn_tail: bool = False
    ) -> dict[str, Any] | None:
        if not torn_tail:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                return record
        self.torn += 1
        if not segment.torn_warned:
            segment.torn_warned = True
            self.log.warning(
                "execution ledger journal %s: skipped a %s at byte %d (%d bytes); the record in it "
                "was never completely written",
                segment.path.name,
                "torn last line" if torn_tail else "line that does not parse",
                offset,
                len(line),
                extra={"event_type": "LOG", "target": "execution_log", "journal_segment": segment.path.name},
            )
        return None

    def ack(self, batch: Batch) -> None:
        """Mark ``batch`` handled (shipped or dead-lettered); delete its segment once fully shipped
        and sealed. Thread: the shipper."""
        deleted: _Segment | None = None
        log_recovered = False
        with self._lock:
            segment = batch.segment
            segment.shipped = max(segment.shipped, batch.stop)
            while len(segment.marks) > 1 and segment.marks[1][0] <= segment.shipped:
                del segment.marks[0]
            if segment.sealed and segment.shipped >= segment.end and segment is not self._active:
                self._segments.remove(segment)
                self._bytes -= segment.end
                deleted = segment
            if self._at_bound and self._bytes < self.max_bytes * 0.9:
                self._at_bound = False
                log_recovered = True
                dropped = self._dropped_at_bound
        if deleted is not None:
            self._delete(deleted)
        if log_recovered:
            self.log.info(
                "execution ledger journal back under its bound; %d records were dropped while over it",
                dropped,
                extra={"event_type": "LOG", "target": "execution_log", "dropped": dropped},
            )

    def _delete(self, segment: _Segment) -> None:
        try:
            segment.path.unlink(missing_ok=True)
        except OSError as exc:
            self.log.warning("could not delete shipped journal segment %s: %s", segment.path, exc)
        try:
            os.close(segment.fd)
        except OSError:
            pass

    def maintain(self, idle_rotate_s: float) -> None:
        """Ask for a rotation when the active segment is fully shipped and older than
        ``idle_rotate_s`` (so it can be deleted), and delete fully shipped sealed segments.
        Thread: the shipper."""
        doomed: list[_Segment] = []
        with self._lock:
            active = self._active
            if (
                active is not None
                and active.end > 0
                and active.shipped >= active.end
                and time.time() - active.created_wall >= idle_rotate_s
            ):
                self._rotate_requested = True
            for segment in list(self._segments):
                if segment.sealed and segment.shipped >= segment.end and segment is not self._active:
                    self._segments.remove(segment)
                    self._bytes -= segment.end
                    doomed.append(segment)
        for segment in doomed:
            self._delete(segment)

    def sync(self) -> None:
        """fsync dirty segments (and the directory after a segment was created).
        Thread: the shipper (policy "interval") or shutdown."""
        with self._lock:
            dirty = [s for s in self._segments if s.dirty]
            for segment in dirty:
                segment.dirty = False
            dir_dirty, self._dir_dirty = self._dir_dirty, False
        for segment in dirty:
            try:
                os.fdatasync(segment.fd)
            except OSError as exc:
                self.log.warning("fsync of journal segment %s failed: %s", segment.path, exc)
        if dir_dirty:
            try:
                _fsync_dir(self.directory)
            except OSError as exc:
                self.log.warning("fsync of journal directory %s failed: %s", self.directory, exc)

    def close(self) -> bool:
        """Seal the active segment, delete fully shipped segments, and let go of the rest (close
        them, releasing their locks) so that the next start — in this process or another —
        replays them. Returns True when nothing was left unshipped. Later appends open a new
        segment. Thread: shutdown, after the shipper thread has ended."""
        if self.fsync != "never":
            self.sync()
        with self._lock:
            if self._active is not None:
                self._active.sealed = True
                self._active = None
        self.maintain(idle_rotate_s=float("inf"))
        with self._lock:
            left = [s for s in self._segments if s.shipped < s.end]
            for segment in left:
                self._segments.remove(segment)
                self._bytes -= segment.end
        for segment in left:
            try:
                os.close(segment.fd)
            except OSError:
                pass
        return not left

    def dead_letter(self, record: dict[str, Any], reason: str) -> None:
        """Keep a record no sink can store in ``dead-letter.jsonl``. Thread: the shipper."""
        self.dead_lettered += 1
        line = orjson.dumps(
            {"reason": reason, "record": record}, default=str, option=orjson.OPT_APPEND_NEWLINE
        )
        try:
            fd = os.open(
                self.directory / DEAD_LETTER_NAME,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                0o600,
            )
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            self.log.error(
                "could not write the dead-letter file in %s: %s",
                self.directory,
                exc,
                extra={"event_type": "ERROR", "target": "execution_log", "error_msg": str(exc)},
            )

    # --- fork ----------------------------------------------------------------------------------
    def after_fork_in_child(self) -> None:
        """In a forked child: forget the parent's segments (the parent ships them) and start a
        segment of our own at the next append."""
        self._lock = threading.Lock()
        for segment in self._segments:
            try:
                os.close(segment.fd)  # our copy; the parent's descriptor keeps its lock
            except OSError:
                pass
        self._segments = []
        self._active = None
        self._bytes = 0
        self._at_bound = False


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# lead merges with ledger's version
@dataclasses.dataclass(frozen=True)
class PendingSummary:
    """Records on disk not yet shipped: count, bytes, and the oldest record's event time."""

    records: int
    bytes: int
    oldest_event_ts: str | None


def pending_on_disk(journal_dir: str | os.PathLike[str]) -> PendingSummary:
    """Count the records in the live ``seg-*.jsonl`` segments of ``journal_dir`` (read only; a
    missing directory is an empty journal). Minimal version: every line of a live segment counts."""
    records = size = 0
    oldest: str | None = None
    directory = Path(journal_dir)
    if not directory.is_dir():
        return PendingSummary(0, 0, None)
    for path in directory.glob("seg-*.jsonl"):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        size += len(data)
        for raw in data.splitlines():
            if not raw.strip():
                continue
            records += 1
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            ts = record.get("event_ts") or record.get("decision_ts") if isinstance(record, dict) else None
            if isinstance(ts, str) and (oldest is None or ts < oldest):
                oldest = ts
    return PendingSummary(records, size, oldest)
