"""Run the CLI on a real pseudo-terminal (what an operator's shell gives it)."""

from __future__ import annotations

import os
import pty
import select
import sys
import time


def run_on_tty(*args: str, env: dict[str, str], timeout: float = 60.0) -> tuple[int, str]:
    """Run `python -m dora_otel.cli ARGS` with stdin/stdout/stderr on one pty; return (exit code, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        try:
            os.execvpe(sys.executable, [sys.executable, "-m", "dora_otel.cli", *args], env)
        finally:
            os._exit(127)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
