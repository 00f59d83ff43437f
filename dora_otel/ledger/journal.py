"""The ledger's durable journal: append-only NDJSON segment files in ``<data_dir>/ledger/journal/``.

Owns the bytes on disk between ``Ledger.append`` and the sink: segment files, their rotation, the
size bound and what happens at it, fsync, reading records back for the shipper (including earlier
runs' segments after a crash), deleting what was shipped, and the dead-letter file.

Layout and lifecycle:

* A segment is ``seg-<unix_ns>-<pid>-<rand>.jsonl``: one JSON record per line — a compact line
  (the trading thread's, expanded into its record when read: ``parse_line``, ``records.expand``) or
  a full record (the full path's, and every earlier version's) —, written with one
  ``os.write`` per record on an ``O_APPEND`` descriptor, so a record is in the kernel once ``append``
  returns and survives ``kill -9`` of the process (a machine crash needs fsync: see ``fsync``).
* The process holds an exclusive ``flock`` on each segment it has open. At start-up every segment in
  the directory whose lock is free belongs to a dead process: it is *replayed* from where shipping
  stopped (see progress files below; writes are idempotent, so the at most one batch shipped but not
  yet recorded as shipped is overwritten, never duplicated). Segments locked by a live process are
  left alone.
* Progress files: next to a segment, ``<segment>.shipped`` holds the byte offset up to which the
  segment's records are shipped (20 ASCII digits and a newline, rewritten in place with one
  ``pwrite`` after every acknowledged batch, by the process holding the segment's lock). A replay
  starts at that offset, so a bot restarting every few seconds (a crash loop) still drains its
  backlog instead of re-shipping the same first records each run. It is not fsynced: after a
  machine crash an older offset only means re-shipping (idempotent). A progress file that does not
  parse, or whose offset is not just after a newline, counts as offset 0; one whose segment is gone
  is deleted at start-up.
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
import errno
import fcntl
import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from dora_otel.ledger.records import expand

__all__ = [
    "FSYNC_POLICIES",
    "Batch",
    "Journal",
    "JournalStats",
    "PendingSummary",
    "Position",
    "parse_line",
    "pending_on_disk",
]

FSYNC_POLICIES = ("interval", "always", "never")
DEAD_LETTER_NAME = "dead-letter.jsonl"
PROGRESS_SUFFIX = ".shipped"
_SEGMENT_RE = re.compile(r"^seg-(\d{20})-(\d+)-([0-9a-f]+)\.jsonl$")
_PROGRESS_WIDTH = 20
_READ_CHUNK = 32 * 1024
_MARK_EVERY_S = 1.0  # granularity of oldest_unshipped_age_s
_C_INT_MAX = 2**31 - 1
#: What `write_fd` takes, as os.write does (spelled out: the compiled build checks argument types).
Bytes = bytes | bytearray | memoryview



def _gil_holding_write() -> Callable[[int, Bytes], int] | None:
    """libc's write(2) called with the GIL held (``ctypes.PyDLL``), or None when it is unavailable.

    Why not ``os.write``: it releases the GIL around the syscall, and on the trading thread that hands
    the GIL to whichever thread waits for it (the log writer, the shipper); the trading thread then
    waits to get it back, up to a switch interval (5 ms), in the middle of an order. Measured in the
    benchmark cycle (5 records): ~15-25 us of the trading thread's CPU per cycle, more than the
    syscalls themselves. Writing one line to a local file is a ~1 us copy into the page cache,
    shorter than a GIL handoff; the ctypes call costs ~0.3 us more than ``os.write``. (A write that
    blocks — a disk throttled by writeback — then stalls the other Python threads too, not only the
    trading thread, which waits for it either way. ``fsync="always"`` still uses ``os.fdatasync``,
    which releases the GIL.) Same contract as ``os.write``: bytes written, OSError on failure, EINTR
    retried.
    """
    try:
        import ctypes

        write = ctypes.PyDLL(None, use_errno=True).write
        # No argtypes, on purpose: ctypes then passes an int as a C int and bytes as a pointer to
        # their buffer without calling a converter object per argument (~0.3 us less per call).
        # A length that does not fit a C int (never a ledger record) goes through os.write.
        write.restype = ctypes.c_ssize_t
        get_errno = ctypes.get_errno
    except Exception:  # noqa: BLE001  no ctypes or no libc symbol: os.write does the same job
        return None

    def write_holding_gil(fd: int, data: Bytes) -> int:
        size = len(data)
        if size > _C_INT_MAX or type(data) is not bytes:
            return os.write(fd, data)
        while True:
            written: int = write(fd, data, size)
            if written >= 0:
                return written
            code = get_errno()
            if code != errno.EINTR:
                raise OSError(code, os.strerror(code))

    return write_holding_gil


#: How the appender writes a line (tests replace it to simulate a failing disk).
write_fd: Callable[[int, Bytes], int] = _gil_holding_write() or os.write

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
    records: int = 0  # whole (newline-terminated) lines in [start of replay, end)
    shipped_records: int = 0  # of those, lines handled by the shipper
    progress_fd: int = -1  # the segment's progress file, opened at the first ack
    # (offset, monotonic time) of the first record appended in each ~second
    marks: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    next_mark: float = -math.inf  # when an append adds the next mark


@dataclasses.dataclass(frozen=True)
class Position:
    """A point in the journal: segment index and byte offset."""

    index: int
    offset: int


@dataclasses.dataclass
class Batch:
    """Records read for the shipper from one segment, ``[start, stop)`` in bytes; ``lines`` is the
    number of newline-terminated lines in that range (records plus unparseable lines)."""

    segment: _Segment
    start: int
    stop: int
    records: list[dict[str, Any]]
    replayed: bool
    lines: int = 0


@dataclasses.dataclass(frozen=True)
class JournalStats:
    """The journal as it is on disk: ``bytes`` of its segment files, ``records`` not yet shipped,
    and the age in seconds of the oldest of those (0 when caught up)."""

    bytes: int
    records: int
    oldest_unshipped_age_s: float


@dataclasses.dataclass(frozen=True)
class PendingSummary:
    """What :func:`pending_on_disk` found: unshipped ``records``, their ``bytes``, and the
    ``event_ts`` of the oldest (None when there are none or it cannot be read)."""

    records: int
    bytes: int
    oldest_event_ts: str | None


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
        open_directory: False: do not touch ``directory`` now (the caller knows it is unusable);
            a later ``append`` still tries to create it.
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
        open_directory: bool = True,
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
        self.progress_errors = 0
        # segments let go of by close(), still on disk for the next start (see stats())
        self._left = JournalStats(0, 0, 0.0)
        self._left_since = 0.0
        self.init_error: OSError | None = None
        if not open_directory:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._discover()
        except OSError as exc:
            self.init_error = exc

    # --- start-up ----------------------------------------------------------------------------
    def _discover(self) -> None:
        """Take over earlier processes' segments (those whose flock is free) for replay, from the
        offset their progress file records; delete progress files whose segment is gone."""
        names = sorted(p.name for p in self.directory.iterdir())
        for name in names:
            segment_name = name[: -len(PROGRESS_SUFFIX)]
            if (
                name.endswith(PROGRESS_SUFFIX)
                and _SEGMENT_RE.match(segment_name)
                and not (self.directory / segment_name).exists()
            ):
                (self.directory / name).unlink(missing_ok=True)  # its segment was deleted
        for name in names:
            match = _SEGMENT_RE.match(name)
            if not match:
                continue
            path = self.directory / name
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
            shipped = min(_read_progress(path), size)
            if 0 < shipped < size and os.pread(fd, 1, shipped - 1) != b"\n":
                shipped = 0  # not at a line boundary: a damaged progress file; replay it all
            if size == 0 or shipped >= size:  # empty, or fully shipped before its owner died
                path.unlink(missing_ok=True)
                _progress_path(path).unlink(missing_ok=True)
                os.close(fd)
                continue
            created = int(match.group(1)) / 1e9
            segment = _Segment(
                index=self._next_index,
                path=path,
                fd=fd,
                created_wall=created,
                end=size,
                shipped=shipped,
                sealed=True,
                replayed=True,
                records=_count_lines(fd, shipped, size),
            )
            # The age of its oldest record is at most the segment's age.
            segment.marks.append((shipped, time.monotonic() - max(0.0, time.time() - created)))
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
            if self._bytes + len(line) <= self.max_bytes:  # (the common case first: one test)
                self._write(line)
                self.appended += 1
                return WRITTEN
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
            written = write_fd(segment.fd, line)
        except OSError:
            segment.broken = True
            raise
        segment.end = start + written
        self._bytes += written
        segment.dirty = True
        if written != len(line):
            # A short write (disk full) leaves a torn line; the reader skips it.
            segment.broken = True
            raise OSError(f"short write to {segment.path}: {written} of {len(line)} bytes")
        segment.records += 1
        now = time.monotonic()
        if now >= segment.next_mark:
            segment.marks.append((start, now))
            segment.next_mark = now + _MARK_EVERY_S
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

    def stats(self) -> JournalStats:
        """The journal as it is on disk (see :class:`JournalStats`), including segments that
        ``close`` let go of for the next start. Cheap (a lock and a short loop); any thread."""
        with self._lock:
            records = self._left.records
            age: float | None = None
            for segment in self._segments:
                if segment.shipped < segment.end:
                    records += max(0, segment.records - segment.shipped_records)
                    if age is None:
                        marks = segment.marks
                        if not marks:
                            age = 0.0
                        else:
                            # the last mark at or before the shipped offset (marks are in offset order)
                            i = max(0, bisect.bisect_right(marks, (segment.shipped, math.inf)) - 1)
                            age = max(0.0, time.monotonic() - marks[i][1])
            if self._left.records:
                age = max(age or 0.0, time.monotonic() - self._left_since)
            return JournalStats(self._bytes + self._left.bytes, records, age or 0.0)

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
        lines = 0
        offset = start  # file offset of buffer[pos]: everything before it is consumed
        buffer = b""
        pos = 0
        read_to = start  # file offset just after the buffer's last byte
        chunk_size = _READ_CHUNK
        while len(records) < max_records and lines < 4 * max_records:
            newline = buffer.find(b"\n", pos)
            if newline >= 0:
                record = self._parse(segment, buffer[pos:newline], offset)
                offset += newline + 1 - pos
                pos = newline + 1
                lines += 1
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
        return Batch(
            segment=segment, start=start, stop=offset, records=records, replayed=segment.replayed, lines=lines
        )

    def _parse(
        self, segment: _Segment, line: bytes, offset: int, torn_tail: bool = False
    ) -> dict[str, Any] | None:
        if not torn_tail:
            record = parse_line(line)
            if record is not None:
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
            if batch.stop > segment.shipped:
                segment.shipped = batch.stop
                segment.shipped_records += batch.lines
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
        else:
            self._write_progress(segment)
        if log_recovered:
            self.log.info(
                "execution ledger journal back under its bound; %d records were dropped while over it",
                dropped,
                extra={"event_type": "LOG", "target": "execution_log", "dropped": dropped},
            )

    def _write_progress(self, segment: _Segment) -> None:
        """Record in the segment's progress file how far it is shipped (one ``pwrite``). A failure
        only means a replay re-ships from an earlier offset: counted, logged once, not raised.
        Thread: the shipper."""
        try:
            if segment.progress_fd < 0:
                segment.progress_fd = os.open(
                    _progress_path(segment.path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
            os.pwrite(segment.progress_fd, b"%0*d\n" % (_PROGRESS_WIDTH, segment.shipped), 0)
        except OSError as exc:
            self.progress_errors += 1
            if self.progress_errors == 1:
                self.log.warning(
                    "could not record shipping progress of journal segment %s (%s); a restart "
                    "re-ships its records from an earlier point (idempotent)",
                    segment.path.name,
                    exc,
                    extra={"event_type": "LOG", "target": "execution_log"},
                )

    def _delete(self, segment: _Segment) -> None:
        try:
            segment.path.unlink(missing_ok=True)
            _progress_path(segment.path).unlink(missing_ok=True)  # after the segment: see _discover
        except OSError as exc:
            self.log.warning("could not delete shipped journal segment %s: %s", segment.path, exc)
        _close_segment(segment)

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
        segment. ``stats()`` keeps counting what was let go of (it is still on disk).
        Thread: shutdown, after the shipper thread has ended."""
        if self.fsync != "never":
            self.sync()
        with self._lock:
            if self._active is not None:
                self._active.sealed = True
                self._active = None
        self.maintain(idle_rotate_s=float("inf"))
        now = time.monotonic()
        with self._lock:
            left = [s for s in self._segments if s.shipped < s.end]
            if left:
                oldest = min((s.marks[0][1] for s in left if s.marks), default=now)
                self._left_since = min(oldest, self._left_since or now)
            self._left = JournalStats(
                self._left.bytes + sum(s.end for s in left),
                self._left.records + sum(max(0, s.records - s.shipped_records) for s in left),
                0.0,
            )
            for segment in left:
                self._segments.remove(segment)
                self._bytes -= segment.end
        for segment in left:
            _close_segment(segment)
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
            _close_segment(segment)  # our copies; the parent's descriptors keep their locks
        self._segments = []
        self._left = JournalStats(0, 0, 0.0)
        self._active = None
        self._bytes = 0
        self._at_bound = False


def parse_line(line: bytes) -> dict[str, Any] | None:
    """The record a journal line holds (a compact line expanded, see ``records.expand``), or None
    when the line is not one (torn, damaged)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    try:
        return expand(record)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _close_segment(segment: _Segment) -> None:
    for fd in (segment.fd, segment.progress_fd):
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
    segment.progress_fd = -1


def _progress_path(segment_path: Path) -> Path:
    return segment_path.with_name(segment_path.name + PROGRESS_SUFFIX)


def _read_progress(segment_path: Path) -> int:
    """The shipped offset recorded for a segment; 0 when there is no readable progress file."""
    try:
        text = _progress_path(segment_path).read_bytes()[: _PROGRESS_WIDTH + 1]
    except OSError:
        return 0
    digits = text.strip()
    return int(digits) if digits.isdigit() else 0


def _count_lines(fd: int, start: int, end: int) -> int:
    count = 0
    offset = start
    while offset < end:
        chunk = os.pread(fd, min(1024 * 1024, end - offset), offset)
        if not chunk:
            break
        count += chunk.count(b"\n")
        offset += len(chunk)
    return count


def pending_on_disk(journal_dir: str | os.PathLike[str]) -> PendingSummary:
    """Records in a journal directory not yet shipped, by any process (live or dead): segment files
    read from their progress file's offset. Read-only, takes no locks, never raises for a missing or
    unreadable directory (it reports what it could read). A live process's progress is at most one
    batch behind what it shipped. Thread: any; reads the files (O(unshipped bytes))."""
    directory = Path(journal_dir)
    records = size_total = 0
    oldest: str | None = None
    try:
        names = sorted(p.name for p in directory.iterdir())
    except OSError:
        return PendingSummary(0, 0, None)
    for name in names:
        if not _SEGMENT_RE.match(name):
            continue
        path = directory / name
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                start = min(_read_progress(path), size)
                if 0 < start < size and os.pread(handle.fileno(), 1, start - 1) != b"\n":
                    start = 0  # a damaged progress file: the next start replays it all
                lines = _count_lines(handle.fileno(), start, size)
                first = _first_event_ts(handle.fileno(), start, size) if lines else None
        except OSError:
            continue
        records += lines
        size_total += size - start
        if first is not None and (oldest is None or first < oldest):
            oldest = first
    return PendingSummary(records, size_total, oldest)


def _first_event_ts(fd: int, start: int, end: int) -> str | None:
    """The ``event_ts`` of the first parseable record in ``[start, end)`` (records are appended in
    time order, so it is the segment's oldest unshipped one)."""
    offset = start
    buffer = b""
    while offset < end:
        chunk = os.pread(fd, min(_READ_CHUNK, end - offset), offset)
        if not chunk:
            return None
        offset += len(chunk)
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            record = parse_line(line)
            if record is not None and isinstance(record.get("event_ts"), str):
                return str(record["event_ts"])
    return None
