"""Ledger storage backends and the factory that picks one.

Owns :func:`make_sink`. The backends: :mod:`~dora_otel.sinks.memory` (tests, no storage),
:mod:`~dora_otel.sinks.sqlite` (the embedded default), :mod:`~dora_otel.sinks.dynamodb` (with
:mod:`~dora_otel.sinks.tables` to create and describe its tables). Each backend module is imported
only when chosen, and none imports boto3 at import time.
"""

from __future__ import annotations

import os
from typing import Any

from dora_otel.protocols import Sink

__all__ = ["SINK_KINDS", "make_sink"]

SINK_KINDS = ("sqlite", "dynamodb", "memory")


def make_sink(
    kind: str,
    *,
    env: str,
    data_dir: str | os.PathLike[str],
    client: Any = None,
) -> Sink:
    """Make the ledger sink ``kind`` (``sqlite``, ``dynamodb`` or ``memory``).

    ``sqlite`` stores in ``<data_dir>/ledger/ledger.sqlite3``; ``dynamodb`` writes the
    ``dora_*_log_{env}`` tables with ``client`` or, when it is ``None``, a client made on first use
    from boto3's standard settings; ``memory`` keeps records in the process. Every returned sink is
    also a :class:`~dora_otel.protocols.LedgerReader`.

    Thread: any; does no I/O (connections and clients are made on first use). Raises ValueError
    for an unknown ``kind`` or an ``env`` that cannot name a table.
    """
    if kind == "sqlite":
        from dora_otel.sinks.sqlite import SQLiteSink, sqlite_path

        return SQLiteSink(sqlite_path(data_dir))
    if kind == "dynamodb":
        from dora_otel.sinks.dynamodb import DynamoDBSink

        return DynamoDBSink(env, client=client)
    if kind == "memory":
        from dora_otel.sinks.memory import MemorySink

        return MemorySink()
    raise ValueError(f"ledger sink kind ({kind!r}) must be one of {', '.join(SINK_KINDS)}")
