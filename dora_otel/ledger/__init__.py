"""The durable execution ledger: span → record mapping, journal, shipper and the :class:`Ledger`
facade. This module is the package's face; the pieces live in named modules:

* :mod:`~dora_otel.ledger.ledger`: :class:`Ledger` (the hot-path ``append``, counters, lifecycle);
* :mod:`~dora_otel.ledger.journal`: the segment files on disk, their progress files, the size bound,
  and :func:`pending_on_disk`;
* :mod:`~dora_otel.ledger.shipper`: the background thread that moves records into a sink;
* :mod:`~dora_otel.ledger.records` / :mod:`~dora_otel.ledger.processor`: spans → records.
"""

from __future__ import annotations

from dora_otel.ledger.journal import PendingSummary, pending_on_disk
from dora_otel.ledger.ledger import DEFAULT_CRITICAL_EVENT_TYPES, STATS_KEYS, Ledger

__all__ = ["DEFAULT_CRITICAL_EVENT_TYPES", "STATS_KEYS", "Ledger", "PendingSummary", "pending_on_disk"]
