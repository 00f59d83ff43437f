"""What the `dora-otel` command prints, and how it ends: the one output path and the exit codes.

Owns:

* :class:`Exit`, the one exit-code table every subcommand uses (README "Exit codes", ``--help``);
* :class:`CliError`, an error that ends a command with one line on stderr and its exit code;
* :func:`scrub_text` / :func:`scrub_json`, the single place where everything explain, reconcile and
  report print or emit is scrubbed of credentials before it leaves the process;
* :class:`Printer`, the writer the query commands print through (scrubs every write);
* :func:`closed_pipe`, how a command ends when its reader went away (``dora-otel explain … | head``).

Runs on the caller's thread.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from dora_otel import scrub

__all__ = ["EXIT_TABLE", "CliError", "Exit", "Printer", "closed_pipe", "scrub_json", "scrub_text"]


class Exit(enum.IntEnum):
    """Exit codes of every `dora-otel` subcommand."""

    OK = 0            # done; for reconcile: every expected order accounted for
    MISMATCHES = 1    # reconcile found orders that did not execute as decided
    USAGE = 2         # the command line is wrong (unknown option, bad time, conflicting options)
    NOT_FOUND = 3     # the thing named does not exist: decision id, data directory, DynamoDB table
    NO_DATA = 4       # the range holds no decisions (a dead bot, a wrong market ticker or time)
    UNREACHABLE = 5   # the ledger or log backend could not be read (DynamoDB/CloudWatch down, denied)
    INTERRUPTED = 130  # Ctrl-C
    CLOSED_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE), e.g. `| head -3`


EXIT_TABLE = """exit codes (every subcommand):
  0    ok (reconcile: every expected order accounted for)
  1    mismatches: orders that did not execute as decided (reconcile; explain answers with 0)
  2    usage error: bad option, time or combination
  3    not found: decision id, data directory or DynamoDB table does not exist
  4    no data in range: no decisions between the times asked (a dead bot looks like this)
  5    backend unreachable: the ledger or the logs could not be read
  130  interrupted (Ctrl-C); 141 stdout closed by its reader (e.g. | head)"""


class CliError(Exception):
    """Ends a command: ``message`` goes to stderr as one line, ``code`` is the exit status."""

    def __init__(self, message: str, code: Exit) -> None:
        super().__init__(message)
        self.code = code


def scrub_text(text: str) -> str:
    """Every text the query commands print passes here (credentials masked: dora_otel.scrub)."""
    return scrub.scrub_text(text)


def scrub_json(value: Any) -> Any:
    """``value`` scrubbed for JSON output: every string, and values under sensitive key names."""
    return scrub.scrub_value(value)


class Printer:
    """The one way explain / reconcile / report write to a stream: scrubbed, line by line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lines = 0

    def __call__(self, text: str = "") -> None:
        """Write ``text`` (one or more lines; a newline is added)."""
        clean = scrub_text(text)
        self.lines += clean.count("\n") + 1
        self.stream.write(clean + "\n")

    def raw(self, text: str) -> None:
        """Write ``text`` as is apart from scrubbing (no newline added)."""
        self.stream.write(scrub_text(text))

    def json(self, value: Any) -> None:
        """One JSON document, every string in it scrubbed, written in pieces as it is encoded."""
        encoder = json.JSONEncoder(indent=2, default=str, ensure_ascii=False)
        self.pieces(encoder.iterencode(scrub_json(value)))
        self.stream.write("\n")

    def pieces(self, chunks: Iterable[str], size: int = 16384) -> None:
        """Write text that is already scrubbed (e.g. the report, whose every value passed
        :func:`scrub_text`) in writes of about ``size`` characters: a reader that goes away
        (``| head``) is noticed at the next write, not hidden in one huge write."""
        pending: list[str] = []
        length = 0
        for chunk in chunks:
            pending.append(chunk)
            length += len(chunk)
            if length >= size:
                self.stream.write("".join(pending))
                self.stream.flush()
                pending, length = [], 0
        if pending:
            self.stream.write("".join(pending))


def closed_pipe() -> int:
    """The reader of stdout went away: end quietly with 141 (128 + SIGPIPE, what a shell shows for a
    tool killed by SIGPIPE). Python would otherwise report the failed flush of stdout at exit, so
    stdout is pointed at /dev/null first (the recipe in the Python docs' signal module notes)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return int(Exit.CLOSED_PIPE)
