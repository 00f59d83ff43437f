"""The verdict for every expected order slot of a decision: what became of each target order.

Pure functions over ledger records (see docs/ARCHITECTURE.md, "Ledger records"); no I/O. Both
`explain` and `reconcile` use them, whatever the backend.

A decision's *slots* are its target orders (slot 0..n-1, each with a deterministic client_order_id);
an order the bot placed that matches no target gets a slot past the targets and is judged too
(``expected`` is then None). A slot's *attempts* are its ORDER_PLACE records (a retried slot reuses
its client_order_id), each paired with the ORDER_RESULT that answered it.

Rules, first match wins (``filled`` = the sum of the slot's FILL sizes; ``size`` = the target's):

====  ==========  ===================================================================================
 0    SUPPRESSED  no ORDER_PLACE (and no result, cancel or fill), and an ORDER_SUPPRESSED record says
                  why the bot deliberately did not send it (risk limit, rate limit, halt); ``reason``
                  is the bot's reason. Not a mismatch: the bot did what it meant to do.
 1    NOT_SENT    no ORDER_PLACE (and no result, cancel or fill) for the slot: the bot decided the
                  order but never sent it (risk block, crash, a bug between decision and placement).
 2    FILLED      ``filled >= size`` (fills are proof the order was live, whatever the results said).
 3    PARTIAL     ``0 < filled < size``, whether or not the rest was cancelled later.
 4    REJECTED    the last *definitive* result (ACCEPTED, DUPLICATE or REJECTED) is REJECTED; ``reason``
                  is the exchange's error message.
 5    CANCELLED   a cancel of the slot's order succeeded and nothing filled.
 6    UNKNOWN     ACCEPTED, then a cancel failed with "not found" and nothing filled: the exchange does
                  not know an order it acknowledged (it dropped it). Noted as such.
 7    RESTING     ACCEPTED, no successful cancel, no fill (a cancel that failed otherwise is noted).
 8    UNKNOWN     only UNKNOWN / ERROR results, or an ORDER_PLACE with no result at all: the order
                  may or may not be live (a later fill for the slot would resolve it, rule 2/3).
====  ==========  ===================================================================================

A result with status DUPLICATE (Kalshi's 409 for a client_order_id it already has: an earlier
attempt landed) means the order exists on the exchange: it counts as ACCEPTED for rules 4-7, never
as REJECTED. ORDER_CANCEL comes as two records: the request (no ``status``) before the call and the
outcome (``status`` CANCELLED / CANCEL_FAILED / CANCEL_UNKNOWN) after it; only outcomes decide a
verdict, and a request with no outcome is noted (the process may have died during the call).

``mismatch`` verdicts (what `reconcile` reports): NOT_SENT, REJECTED, UNKNOWN. SUPPRESSED slots are
counted apart. :data:`SEVERITY` orders verdicts from worst to best (a decision's colour in a report).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "MISMATCH_VERDICTS",
    "SEVERITY",
    "Attempt",
    "SlotVerdict",
    "Verdict",
    "cancel_says_not_found",
    "judge_decision",
    "judge_slot",
    "worst",
]


class Verdict(str, enum.Enum):
    NOT_SENT = "NOT_SENT"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"
    RESTING = "RESTING"
    FILLED = "FILLED"
    PARTIAL = "PARTIAL"
    CANCELLED = "CANCELLED"
    SUPPRESSED = "SUPPRESSED"

    def __str__(self) -> str:
        return self.value


MISMATCH_VERDICTS = frozenset({Verdict.NOT_SENT, Verdict.REJECTED, Verdict.UNKNOWN})
# worst first: a decision is as bad as its worst slot
SEVERITY = (Verdict.UNKNOWN, Verdict.REJECTED, Verdict.NOT_SENT, Verdict.SUPPRESSED, Verdict.PARTIAL,
            Verdict.RESTING, Verdict.CANCELLED, Verdict.FILLED)
DUPLICATE = "DUPLICATE"  # Kalshi 409, duplicate client_order_id: an earlier attempt exists
DEFINITIVE = ("ACCEPTED", DUPLICATE, "REJECTED")
CANCEL_OK = "CANCELLED"

# Kalshi answers a cancel of an order it does not have with 404 / "not_found"; other exchanges word it
# differently. Kept here, in one place, with the other exchange-specific reading of cancel errors.
_NOT_FOUND = re.compile(r"not[\s_-]?found|\b404\b|does not exist|no such order|unknown order", re.IGNORECASE)


def worst(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The worst of ``verdicts`` by :data:`SEVERITY` (None for none)."""
    return min(verdicts, key=SEVERITY.index, default=None)


def is_cancel_outcome(cancel: Mapping[str, Any]) -> bool:
    """An ORDER_CANCEL record with a ``status`` is the outcome; without one, the request."""
    return bool(cancel.get("status"))


def cancel_says_not_found(cancel: Mapping[str, Any]) -> bool:
    """A failed cancel whose error says the exchange does not know the order."""
    if cancel.get("status") == CANCEL_OK or not is_cancel_outcome(cancel):
        return False
    if cancel.get("http_status") == 404:
        return True
    text = f"{cancel.get('error_type') or ''} {cancel.get('error_msg') or ''} {cancel.get('exchange_status') or ''}"
    return bool(_NOT_FOUND.search(text))


@dataclasses.dataclass
class Attempt:
    """One ORDER_PLACE and the ORDER_RESULT that answered it (either may be missing)."""

    client_order_id: str | None
    place: dict[str, Any] | None = None
    result: dict[str, Any] | None = None

    @property
    def status(self) -> str | None:
        return None if self.result is None else self.result.get("status")

    def to_dict(self) -> dict[str, Any]:
        r, p = self.result or {}, self.place or {}
        out = {
            "client_order_id": self.client_order_id,
            "placed_at": p.get("event_ts"),
            "place_seq": p.get("seq"),
            "status": self.status,
            "result_at": r.get("event_ts"),
            "result_seq": r.get("seq"),
            "latency_ms": r.get("latency_ms"),
            "order_id": r.get("order_id"),
            "exchange_status": r.get("exchange_status"),
            "error_type": r.get("error_type"),
            "error_msg": r.get("error_msg"),
        }
        return {k: v for k, v in out.items() if v is not None}


@dataclasses.dataclass
class SlotVerdict:
    """What became of one expected order (or of an unplanned order, ``expected`` None)."""

    slot: int | str
    verdict: Verdict
    expected: dict[str, Any] | None
    client_order_id: str | None
    order_id: str | None = None
    attempts: list[Attempt] = dataclasses.field(default_factory=list)
    cancels: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    fills: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    filled: float = 0
    size: float | None = None
    reason: str | None = None
    note: str | None = None
    suppressed: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def mismatch(self) -> bool:
        return self.verdict in MISMATCH_VERDICTS

    def detail(self) -> str:
        """One sentence: why this verdict."""
        return self.note or self.reason or self.verdict.value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "slot": self.slot,
            "verdict": self.verdict.value,
            "expected": self.expected,
            "client_order_id": self.client_order_id,
            "order_id": self.order_id,
            "filled": _num(self.filled),
            "size": _num(self.size),
            "reason": self.reason,
            "note": self.note,
            "attempts": [a.to_dict() for a in self.attempts],
            "cancels": [_cancel_view(c) for c in self.cancels],
            "fills": [_fill_view(f) for f in self.fills],
            "suppressed": [{k: r[k] for k in ("event_ts", "seq", "reason") if r.get(k) is not None}
                           for r in self.suppressed],
        }
        return out


def _num(value: float | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


def _cancel_view(c: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("event_ts", "seq", "status", "order_id", "latency_ms", "error_type", "error_msg", "reason",
            "requested_by_decision_id")
    return {k: c[k] for k in keys if c.get(k) is not None}


def _fill_view(f: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("event_ts", "seq", "side", "price", "size", "pnl_delta", "order_id")
    return {k: f[k] for k in keys if f.get(k) is not None}


def _size(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def judge_slot(slot: int | str, expected: Mapping[str, Any] | None, events: Sequence[Mapping[str, Any]]) -> SlotVerdict:
    """The verdict for one slot from its execution records (any order; sorted here by ts, seq).

    ``expected`` is the target order (``side``, ``price``, ``size``, ``client_order_id``), or None for
    an order no target asked for.
    """
    ordered = sorted(events, key=lambda r: (str(r.get("event_ts", "")), int(r.get("seq") or 0)))
    coid = (expected or {}).get("client_order_id")
    attempts: list[Attempt] = []
    cancels: list[dict[str, Any]] = []
    fills: list[dict[str, Any]] = []
    suppressed: list[dict[str, Any]] = []
    for record in ordered:
        kind = record.get("event_type")
        if kind == "ORDER_PLACE":
            attempts.append(Attempt(record.get("client_order_id") or coid, place=dict(record)))
        elif kind == "ORDER_RESULT":
            open_attempt = next((a for a in reversed(attempts) if a.result is None), None)
            if open_attempt is None:  # the ORDER_PLACE record is missing (ledger loss): keep the result
                open_attempt = Attempt(record.get("client_order_id") or coid)
                attempts.append(open_attempt)
            open_attempt.result = dict(record)
        elif kind == "ORDER_CANCEL":
            cancels.append(dict(record))
        elif kind == "FILL":
            fills.append(dict(record))
        elif kind == "ORDER_SUPPRESSED":
            suppressed.append(dict(record))
    coid = coid or next((a.client_order_id for a in attempts if a.client_order_id), None)
    size = _size((expected or {}).get("size"))
    if size is None:
        size = next((_size(a.place.get("size")) for a in attempts if a.place and a.place.get("size") is not None), None)
    filled = sum(_size(f.get("size")) or 0 for f in fills)
    order_id = next((a.result.get("order_id") for a in reversed(attempts)
                     if a.result and a.result.get("order_id")), None)
    order_id = order_id or next((c.get("order_id") for c in cancels if c.get("order_id")), None)
    out = SlotVerdict(slot, Verdict.UNKNOWN, dict(expected) if expected is not None else None, coid, order_id,
                      attempts, cancels, fills, filled, size, suppressed=suppressed)
    cancelled = [c for c in cancels if c.get("status") == CANCEL_OK]
    failed_cancels = [c for c in cancels if is_cancel_outcome(c) and c.get("status") != CANCEL_OK]
    outcomes = {(c.get("bot_run_id"), c.get("order_id")) for c in cancels if is_cancel_outcome(c)}
    unanswered = [c for c in cancels
                  if not is_cancel_outcome(c) and (c.get("bot_run_id"), c.get("order_id")) not in outcomes]

    if not attempts and not cancels and not fills and suppressed:
        out.verdict = Verdict.SUPPRESSED
        out.reason = str(suppressed[-1].get("reason") or "no reason given")
        out.note = f"not sent on purpose: {out.reason}"
        return out
    if not attempts and not cancels and not fills:
        out.verdict = Verdict.NOT_SENT
        out.note = "no ORDER_PLACE for this slot: the order was decided but never sent"
        return out
    if filled > 0 and (size is None or filled >= size):
        out.verdict = Verdict.FILLED
        out.note = f"filled {_num(filled)}" + (f" of {_num(size)}" if size is not None else "")
        return out
    if filled > 0:
        out.verdict = Verdict.PARTIAL
        out.note = f"filled {_num(filled)} of {_num(size)}" + (", rest cancelled" if cancelled else "")
        return out
    definitive = [a for a in attempts if a.status in DEFINITIVE]
    last = definitive[-1] if definitive else None
    if last is not None and last.status == "REJECTED":
        out.verdict = Verdict.REJECTED
        out.reason = str(last.result.get("error_msg") or last.result.get("exchange_status") or "rejected")  # type: ignore[union-attr]
        out.note = f"rejected by the exchange: {out.reason}"
        return out
    if cancelled:
        out.verdict = Verdict.CANCELLED
        out.note = "cancelled, nothing filled"
        return out
    if last is not None:  # ACCEPTED, or DUPLICATE (the order exists from an earlier attempt)
        dup = " (a retry was answered DUPLICATE: an earlier attempt is on the exchange)" \
            if any(a.status == DUPLICATE for a in attempts) else ""
        lost = [c for c in failed_cancels if cancel_says_not_found(c)]
        if lost:
            out.verdict = Verdict.UNKNOWN
            out.note = ("exchange does not know the order: it was accepted, nothing filled, and the cancel "
                        f"failed with {lost[-1].get('error_msg') or 'not found'!r} (dropped by the exchange?)")
            return out
        out.verdict = Verdict.RESTING
        if failed_cancels:
            c = failed_cancels[-1]
            why = c.get("error_msg") or c.get("reason")
            out.note = f"accepted; cancel {str(c.get('status') or 'failed').lower()}: {why}; may still rest"
        elif unanswered:
            out.note = ("accepted; a cancel was requested but no outcome was recorded (the process may have "
                        "stopped during the call): may still rest")
        else:
            out.note = "accepted, no cancel or fill seen: resting on the book"
        out.note += dup
        return out
    statuses = [a.status or "no result" for a in attempts]
    out.verdict = Verdict.UNKNOWN
    if all(a.result is None for a in attempts):
        out.note = f"placed {len(attempts)}x with no ORDER_RESULT at all: the order may be live"
    else:
        why = next((a.result.get("error_msg") for a in reversed(attempts)
                    if a.result and a.result.get("error_msg")), None)
        out.note = (f"no definitive result after {len(attempts)} attempt(s) ({', '.join(statuses)})"
                    + (f": {why}" if why else "") + "; the order may be live")
    return out


def _slot_of(record: Mapping[str, Any], by_coid: Mapping[str, int | str],
             by_order: Mapping[str, int | str]) -> int | str | None:
    slot = record.get("slot")
    if isinstance(slot, bool):
        slot = None
    if isinstance(slot, (int, float)) and float(slot).is_integer():
        return int(slot)
    if isinstance(slot, str) and slot:
        return int(slot) if slot.isdigit() else slot
    coid = record.get("client_order_id")
    if coid and coid in by_coid:
        return by_coid[coid]
    oid = record.get("order_id")
    if oid and oid in by_order:
        return by_order[oid]
    return None


def judge_decision(targets: Iterable[Mapping[str, Any]],
                   events: Sequence[Mapping[str, Any]]) -> tuple[list[SlotVerdict], list[dict[str, Any]]]:
    """Verdicts for every target slot (and every unplanned slot seen in ``events``).

    Returns ``(verdicts, unassigned)``: the verdicts in slot order, and the execution records that
    belong to no slot (e.g. a cancel of an order the ledger cannot place).
    """
    targets = list(targets)
    expected: dict[int | str, dict[str, Any]] = {}
    for i, t in enumerate(targets):
        slot = t.get("slot", i)
        expected[int(slot) if isinstance(slot, (int, float)) else slot] = dict(t)
    by_coid = {t["client_order_id"]: s for s, t in expected.items() if t.get("client_order_id")}
    by_order: dict[str, int | str] = {}
    for r in events:
        s = _slot_of(r, by_coid, {})
        if s is not None and r.get("order_id"):
            by_order[str(r["order_id"])] = s
        if s is not None and r.get("client_order_id"):
            by_coid.setdefault(r["client_order_id"], s)
    per_slot: dict[int | str, list[Mapping[str, Any]]] = {s: [] for s in expected}
    unassigned: list[dict[str, Any]] = []
    for r in events:
        s = _slot_of(r, by_coid, by_order)
        if s is None:
            unassigned.append(dict(r))
        else:
            per_slot.setdefault(s, []).append(r)
    verdicts = [judge_slot(s, expected.get(s), per_slot[s]) for s in sorted(per_slot, key=_slot_sort)]
    return verdicts, unassigned


def _slot_sort(slot: int | str) -> tuple[int, Any]:
    return (0, slot) if isinstance(slot, int) else (1, str(slot))
