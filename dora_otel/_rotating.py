"""A size-bounded append-only file: `path`, rotated to `path.1` … `path.N` (private).

Used by the JSON log file (logs.py) and the spans file (spanfile.py), so both stay within
`(backups + 1) * max_bytes` plus one write. Hand-written rather than logging's RotatingFileHandler
because the callers need what that handler hides: whether a write failed (disk full, EIO) so the
failure can be counted and reported once, and which bytes reached the disk (it buffers through a
text stream, so a failed flush leaves lines half-written or written later, and counters lie).

Called from one thread at a time (the log writer thread; the span exporter's lock).
"""

from __future__ import annotations

import os
from pathlib import Path


class RotatingAppender:
    """Appends bytes to `path` with one `write(2)` per call (O_APPEND), rotating first when the
    write would take the file past `max_bytes` (a file holding nothing yet takes any write whole).

    `write` raises OSError when the disk refuses; a partly written line is remembered (`torn`) and
    the next successful write starts on a fresh line, so readers never see two lines glued.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes ({max_bytes}) must be >= 1")
        if backups < 0:
            raise ValueError(f"backups ({backups}) must be >= 0")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.torn = False
        self._fd = -1
        self._size = 0

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size

    def write(self, data: bytes) -> None:
        if self._fd < 0:
            self._open()
        if self._size > 0 and self._size + len(data) + self.torn > self.max_bytes:
            self.rotate()  # (a fresh file needs no line break for a torn line)
        if self.torn:
            data = b"\n" + data
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError:
                if len(view) < len(data):
                    self.torn = True
                raise
            self._size += written
            view = view[written:]
        self.torn = False

    def rotate(self) -> None:
        """path -> path.1 -> … -> path.N (the oldest is removed); a fresh path is opened."""
        self.close()
        if self.backups == 0:
            _unlink(self.path)
        else:
            _unlink(self.path.with_name(f"{self.path.name}.{self.backups}"))
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
            if self.path.exists():
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.torn = False
        self._open()

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            finally:
                self._fd = -1


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def rotated_paths(path: Path) -> list[Path]:
    """`path` and its rotated files, oldest first (path.N … path.1, path), those that exist."""
    numbered = []
    for candidate in path.parent.glob(path.name + ".*"):
        suffix = candidate.name[len(path.name) + 1:]
        if suffix.isdigit():
            numbered.append((int(suffix), candidate))
    out = [p for _, p in sorted(numbered, reverse=True)]
    if path.exists():
        out.append(path)
    return out
