"""Whether an explain or reconcile answer may be incomplete, and why (issue 9, item 7).

Owns the three reasons the store a query reads may not hold every record of the asked range:

* **unshipped journal records**: the bot's local data directory still has journal records the
  shipper has not delivered to the sink (``dora_otel.ledger.journal.pending_on_disk``); a range that
  ends after the oldest of them may be missing some;
* **a sink known to be behind**: the log lines read show the ledger shipper in an outage (its ERROR
  line with ``target`` execution_log and no recovery line after it) or a run that shut down with
  ``flushed`` false;
* **logs not read**: no log lines (``--logs none``, no log file, CloudWatch unavailable), so log loss
  and records only the logs have cannot be checked.

Pure apart from reading the journal directory; runs on the caller's thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["Completeness", "check"]


@dataclasses.dataclass
class Completeness:
    """What may be missing from an answer. ``complete`` is True only when nothing is known to be."""

    store: str
    journal_dir: str | None = None
    pending_records: int = 0
    pending_bytes: int = 0
    oldest_pending_ts: str | None = None
    pending_in_range: bool = False
    sink_behind: list[str] = dataclasses.field(default_factory=list)
    logs_read: bool = True
    logs_note: str | None = None

    @property
    def complete(self) -> bool:
        return not self.pending_in_range and not self.sink_behind and self.logs_read

    def notes(self) -> list[str]:
        """One sentence per reason, for text output."""
        out = []
        if self.pending_in_range:
            out.append(f"{self.pending_records} ledger record(s) ({self.pending_bytes} bytes, oldest "
                       f"{self.oldest_pending_ts or 'unknown'}) are still in the local journal {self.journal_dir} "
                       f"and may not have reached {self.store} yet: the answer may be incomplete")
        out.extend(self.sink_behind)
        if not self.logs_read:
            why = (self.logs_note or "no log lines").removeprefix("log lines not read").strip(" ()") or "no log lines"
            out.append(f"logs not read ({why}): log loss was not checked and records only the logs have are "
                       "not counted")
        return out

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["complete"] = self.complete
        out["notes"] = self.notes()
        return out


def check(*, store: str, journal_dir: Path | None, range_end: str | None, logs_read: bool,
          logs_note: str | None = None, lines: Iterable[Mapping[str, Any]] = ()) -> Completeness:
    """Completeness of an answer read from ``store`` for a range ending at ``range_end`` (ISO)."""
    out = Completeness(store=store, logs_read=logs_read, logs_note=logs_note if not logs_read else None)
    if journal_dir is not None and journal_dir.is_dir():
        from dora_otel.ledger.journal import pending_on_disk

        pending = pending_on_disk(journal_dir)
        out.journal_dir = str(journal_dir)
        out.pending_records, out.pending_bytes = pending.records, pending.bytes
        out.oldest_pending_ts = pending.oldest_event_ts
        out.pending_in_range = pending.records > 0 and (
            range_end is None or pending.oldest_event_ts is None or pending.oldest_event_ts[:26] <= range_end[:26])
    out.sink_behind = _sink_behind(lines)
    return out


def _sink_behind(lines: Iterable[Mapping[str, Any]]) -> list[str]:
    outage: dict[Any, Mapping[str, Any]] = {}
    unflushed: dict[Any, Mapping[str, Any]] = {}
    for line in lines:
        run = line.get("bot_run_id")
        if line.get("target") == "execution_log":
            if line.get("event_type") == "ERROR":
                outage[run] = line
            else:
                outage.pop(run, None)  # the recovery line
        elif line.get("event_type") == "SHUTDOWN" and line.get("flushed") is False:
            unflushed[run] = line
    notes = [f"run {run}: the ledger sink was failing at {line.get('ts')} ({line.get('error_msg') or 'outage'}) "
             "and no recovery was logged: records after that may not be in the ledger" for run, line in outage.items()]
    notes += [f"run {run} shut down at {line.get('ts')} without flushing everything: its last records may "
              "only be in its journal" for run, line in unflushed.items() if run not in outage]
    return notes
