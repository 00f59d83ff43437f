"""The in-process watchdog: a decision whose placed orders get no terminal ORDER_RESULT in time is
reported once, while it happens — not only when someone runs `dora-otel explain` later.

An order is *pending* from its first ORDER_PLACE until a terminal result: ACCEPTED, REJECTED or
ERROR. UNKNOWN is not terminal (a timeout: the order may be live); a fill for the slot resolves it.
A slot still pending ``seconds`` after its first place is *overdue*; the decision is then reported
once, as an ERROR line::

    runtime.emit(ERROR, "ERROR", msg, {"error_type": "OrderResultOverdue", "error_msg": ...,
                                       "decision_id": ..., "slots": [...], "market": ...})

Threads: the hooks (`decision_made`, `order_started`, `order_result`, `fill`) run on the bot's
threads, called by the decorators and `record_fill`. Each is O(1) under one lock and never raises.
The check runs on a daemon thread about once a second (more often for short timeouts); it walks
only the overdue head of the pending table (pending orders are kept in start order). Memory is
bounded: at most ``max_pending`` pending slots (the oldest are forgotten first, and counted) and
``max_reported`` remembered reports.

`dora_otel.telemetry.setup()` starts one when `watchdog_seconds > 0` (`DORA_WATCHDOG_SECONDS`,
default 10) and `Telemetry.shutdown()` stops it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["TERMINAL_STATUSES", "Watchdog"]

TERMINAL_STATUSES = frozenset({"ACCEPTED", "REJECTED", "DUPLICATE", "ERROR"})  # DUPLICATE: the order exists
_internal = logging.getLogger("dora_otel.internal")


class _Pending:
    __slots__ = ("client_order_id", "decision_id", "market", "slot", "started")

    def __init__(self, decision_id: str, slot: Any, client_order_id: Any, market: Any, started: float) -> None:
        self.decision_id = decision_id
        self.slot = slot
        self.client_order_id = client_order_id
        self.market = market
        self.started = started


class Watchdog:
    """Reports decisions whose orders have no terminal result within ``seconds``.

    Args:
        runtime: the `Runtime` whose ``emit`` writes the report line.
        seconds: how long a placed order may wait for a terminal ORDER_RESULT.
        interval: how often the check runs (default: about once a second, or ``seconds / 5`` for
            short timeouts, at least 20 ms).
        clock: monotonic seconds (tests inject one).
    """

    def __init__(self, runtime: Any, seconds: float, *, interval: float | None = None,
                 max_pending: int = 100_000, max_reported: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if seconds <= 0:
            raise ValueError(f"watchdog seconds ({seconds}) must be > 0")
        self.runtime = runtime
        self.seconds = float(seconds)
        self.interval = interval if interval is not None else min(1.0, max(0.02, self.seconds / 5))
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: collections.OrderedDict[tuple[str, Any], _Pending] = collections.OrderedDict()
        self._reported: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._max_pending = max_pending
        self._max_reported = max_reported
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reports = 0
        self.forgotten = 0

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the checking thread (a daemon). Idempotent."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="dora-otel-watchdog", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the checking thread and wait for it (up to ``timeout``). Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    # -------------------------------------------------------------- hooks (bot threads; O(1); never raise)
    def decision_made(self, decision_id: str, market: Any) -> None:
        """A decision was made. Nothing is pending until an order of it is placed."""

    def order_started(self, decision_id: str, slot: Any, client_order_id: Any, market: Any) -> None:
        """An ORDER_PLACE: the slot is pending from its first attempt (a retry keeps the start)."""
        try:
            key = (decision_id, slot)
            with self._lock:
                if key in self._pending:
                    return
                self._pending[key] = _Pending(decision_id, slot, client_order_id, market, self._clock())
                if len(self._pending) > self._max_pending:
                    self._pending.popitem(last=False)
                    self.forgotten += 1
        except Exception:
            pass

    def order_result(self, decision_id: str, slot: Any, status: Any, client_order_id: Any) -> None:
        """An ORDER_RESULT: a terminal status (ACCEPTED, REJECTED, DUPLICATE, ERROR) settles the slot."""
        try:
            if str(status) in TERMINAL_STATUSES:
                with self._lock:
                    self._pending.pop((decision_id, slot), None)
        except Exception:
            pass

    def fill(self, decision_id: str, slot: Any) -> None:
        """A FILL joined to the slot: the order was live, whatever its result said."""
        try:
            with self._lock:
                self._pending.pop((decision_id, slot), None)
        except Exception:
            pass

    # -------------------------------------------------------------- checking (watchdog thread)
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def check(self) -> int:
        """Report every decision with an overdue slot (once per decision). Returns the reports made."""
        now = self._clock()
        overdue: dict[str, list[_Pending]] = {}
        with self._lock:
            while self._pending:
                key, entry = next(iter(self._pending.items()))
                if now - entry.started < self.seconds:
                    break  # start order: everything after this one is younger
                del self._pending[key]
                if entry.decision_id in self._reported:
                    continue
                overdue.setdefault(entry.decision_id, []).append(entry)
            for decision_id in overdue:
                # once per decision: its slots that become overdue later are not reported again
                self._reported[decision_id] = None
                while len(self._reported) > self._max_reported:
                    self._reported.popitem(last=False)
        for decision_id, entries in overdue.items():
            self._report(decision_id, entries, now)
        return len(overdue)

    def _report(self, decision_id: str, entries: list[_Pending], now: float) -> None:
        slots = [e.slot for e in entries]
        market = next((e.market for e in entries if e.market is not None), None)
        waited = max(now - e.started for e in entries)
        msg = (f"no terminal ORDER_RESULT for slot(s) {slots} of decision {decision_id} on {market} "
               f"after {waited:.1f} s (limit {self.seconds:g} s): the place call hangs or its result was lost")
        fields = {
            "error_type": "OrderResultOverdue", "error_msg": msg, "decision_id": decision_id, "slots": slots,
            "market": market, "client_order_ids": [e.client_order_id for e in entries],
            "waited_s": round(waited, 3), "watchdog_seconds": self.seconds,
        }
        try:
            self.runtime.emit(logging.ERROR, "ERROR", msg, fields)
            self.reports += 1
        except Exception:
            try:
                _internal.error("dora-otel watchdog could not report decision %s", decision_id, exc_info=True)
            except Exception:
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:
                try:
                    _internal.error("dora-otel watchdog check failed", exc_info=True)
                except Exception:
                    pass
