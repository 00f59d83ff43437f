"""A real small filesystem for the disk tests: a tmpfs mounted for the length of a `with` block.

Mounting needs root (CI and these machines run as root); where it is not possible the context
yields False and the test decides (skip with a reason, or fall back to a simulated failure).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def mounted_tmpfs(path: Path, options: str) -> Iterator[bool]:
    """Mount a tmpfs with `options` (e.g. ``size=256k`` or ``ro,size=64k``) on `path` (created if
    missing); yield whether it is mounted; unmount (lazily) on exit."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield False
        return
    command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]
    if subprocess.run(command, capture_output=True, check=False).returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
