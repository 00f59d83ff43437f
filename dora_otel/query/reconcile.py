"""`dora-otel reconcile`: every decision in a time range, expected orders vs what happened.

Owns the reconciliation job (PLAN.md Phase 4): for each decision of the range (ledger
`decisions_between`) it judges every slot (:mod:`~dora_otel.query.verdicts`) and, with an
:class:`~dora_otel.protocols.OrderSource`, compares the ledger's view with the exchange's. It also
tells **telemetry loss** apart from **trading failure**:

* *mismatches* (trading): a slot NOT_SENT, REJECTED or UNKNOWN; with the exchange, an order the
  ledger says is resting that the exchange does not have open, or an open order the ledger says is
  not. These decide the exit code (1).
* *log loss*: gaps in a run's log line `seq` (every line takes the next number of one per-run
  counter, so a gap is a line that never arrived); reported as count and ranges per run.
* *ledger/log loss*: a ledger record whose seq has no log line, or an event logged (ORDER_PLACE,
  ORDER_RESULT, ORDER_CANCEL, FILL, DECISION_MADE) with no ledger record.
* *suppressed* slots (the bot said why it did not send them, ORDER_SUPPRESSED): listed apart with
  their reasons, never mismatches.
* *completeness* (:mod:`~dora_otel.query.completeness`): records of the range that may not have
  reached the store read (unshipped journal records, a sink in an outage, logs not read).

A range with no decisions at all is not "clean": its exit code is 4 (``Exit.NO_DATA``), since a
dead bot and a wrong ``--env`` / ``--data-dir`` look exactly like that.

Evidence younger than ``settle`` is not judged for runs that have not logged SHUTDOWN (lines and
records may still be on their way). Output: one RECONCILIATION_RESULT event per decision with a
mismatch and a summary line, through ``emit`` (the CLI logs them as JSON lines).

Runs on the caller's thread; ledger reads may run on a small thread pool (DynamoDB).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

from dora_otel.protocols import OrderSource
from dora_otel.query import completeness as completeness_mod
from dora_otel.query.explain import log_only_events
from dora_otel.query.output import Exit, scrub_json, scrub_text
from dora_otel.query.sources import EXECUTION_EVENTS, Source, describe_reader, reader_notes
from dora_otel.query.times import iso, iso_ms
from dora_otel.query.verdicts import (
    CANCEL_OK,
    MISMATCH_VERDICTS,
    SlotVerdict,
    Verdict,
    judge_decision,
)

__all__ = ["ExchangeError", "ReconcileError", "ReconcileReport", "reconcile", "seq_gaps"]

Emit = Callable[[int, str, str, dict[str, Any]], None]
LINE_SLACK = timedelta(minutes=1)
_LEDGER_EVENTS = EXECUTION_EVENTS | {"DECISION_MADE"}


class ReconcileError(ValueError):
    """Reconcile cannot run as asked (no ledger to read)."""


class ExchangeError(ReconcileError):
    """The exchange's order source (``--live``) failed."""


@dataclasses.dataclass
class DecisionMismatches:
    decision_id: str
    market: str | None
    decision_ts: str | None
    bot_run_id: str | None
    mismatches: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ReconcileReport:
    since: str
    until: str
    source: str
    decisions: int
    slots: int
    verdict_counts: dict[str, int]
    mismatched: list[DecisionMismatches]
    telemetry_loss: dict[str, dict[str, Any]]
    ledger_loss: dict[str, list[dict[str, Any]]]
    live: dict[str, Any] | None
    logs_available: bool
    notes: list[str]
    suppressed: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    completeness: completeness_mod.Completeness | None = None

    @property
    def clean(self) -> bool:
        """Every expected order of at least one decision accounted for (no decisions: not clean)."""
        return not self.mismatched and self.decisions > 0

    @property
    def exit_code(self) -> int:
        if self.mismatched:
            return int(Exit.MISMATCHES)
        return int(Exit.OK) if self.decisions else int(Exit.NO_DATA)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["clean"] = self.clean
        out["exit_code"] = self.exit_code
        out["complete"] = self.completeness.complete if self.completeness else None
        out["completeness"] = self.completeness.to_dict() if self.completeness else None
        return out


def seq_gaps(seqs: Iterable[int], lo: int | None = None, hi: int | None = None) -> list[list[int]]:
    """Missing numbers between ``lo`` and ``hi`` (default: the smallest and largest seen), as
    inclusive ``[first, last]`` ranges."""
    ordered = sorted(set(seqs))
    if not ordered:
        return []
    lo = ordered[0] if lo is None else lo
    hi = ordered[-1] if hi is None else hi
    gaps: list[list[int]] = []
    previous = lo - 1
    for seq in ordered:
        if seq < lo:
            continue
        if seq > hi:
            break
        if seq > previous + 1:
            gaps.append([previous + 1, seq - 1])
        previous = seq
    if previous < hi:
        gaps.append([previous + 1, hi])
    return gaps


def _expected_open(v: SlotVerdict) -> bool:
    if v.verdict is Verdict.RESTING:
        return True
    if v.verdict is Verdict.PARTIAL:
        return not any(c.get("status") == CANCEL_OK for c in v.cancels) and (v.size is None or v.filled < v.size)
    return False


def _mismatch(v: SlotVerdict, detail: str | None = None) -> dict[str, Any]:
    return {"slot": v.slot, "verdict": v.verdict.value, "expected": v.expected,
            "detail": detail or v.detail(), "client_order_id": v.client_order_id}


def reconcile(source: Source, since: datetime, until: datetime, *, order_source: OrderSource | None = None,
              emit: Emit | None = None, progress: Callable[[int, int], None] | None = None,
              settle: timedelta = timedelta(seconds=30), now: datetime | None = None,
              workers: int | None = None) -> ReconcileReport:
    """Reconcile the decisions with ``since <= decision_ts <= until``. See the module docstring.

    ``emit(level, event_type, message, fields)`` receives the RECONCILIATION_RESULT events and the
    summary; ``progress(done, total)`` is called as decisions are read.
    """
    if source.reader is None:
        raise ReconcileError("reconcile needs a ledger to read: no SQLite ledger in the data directory "
                             "(or pass --ledger dynamodb)")
    if until < since:
        raise ReconcileError(f"--until ({iso(until)}) is before --since ({iso(since)})")
    now = now or datetime.now(timezone.utc)
    reader = source.reader
    decisions = reader.decisions_between(iso(since), iso(until))
    total = len(decisions)
    events: dict[str, list[dict[str, Any]]] = {}
    pool_size = workers or int(getattr(source, "parallel_reads", 1) or 1)
    done = 0

    def read(decision: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        return decision["decision_id"], reader.events_for_decision(decision["decision_id"])

    if pool_size > 1 and total > 1:
        with ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="dora-reconcile") as pool:
            for decision_id, recs in pool.map(read, decisions):
                events[decision_id] = recs
                done += 1
                if progress:
                    progress(done, total)
    else:
        for decision in decisions:
            decision_id, recs = read(decision)
            events[decision_id] = recs
            done += 1
            if progress:
                progress(done, total)

    # the log lines first: events the ledger lost but the logs show still count as evidence
    lines_from, lines_to = since - LINE_SLACK, until + LINE_SLACK
    logs = source.run_lines(lines_from, lines_to)
    lines_of: dict[str, list[dict[str, Any]]] = {}
    for line in logs.lines:
        if line.get("decision_id") in events:
            lines_of.setdefault(line["decision_id"], []).append(line)

    verdicts: dict[str, list[SlotVerdict]] = {}
    counts: dict[str, int] = {}
    for d in decisions:
        recs = events[d["decision_id"]]
        extra = log_only_events(d["decision_id"], recs, lines_of.get(d["decision_id"], [])) if logs.available else []
        slots, _ = judge_decision(d.get("target_orders") or [], recs + extra)
        verdicts[d["decision_id"]] = slots
        for v in slots:
            counts[v.verdict.value] = counts.get(v.verdict.value, 0) + 1

    per_decision: dict[str, dict[Any, dict[str, Any]]] = {}
    suppressed: list[dict[str, Any]] = []
    for d in decisions:
        for v in verdicts[d["decision_id"]]:
            if v.verdict in MISMATCH_VERDICTS:
                per_decision.setdefault(d["decision_id"], {})[v.slot] = _mismatch(v)
            elif v.verdict is Verdict.SUPPRESSED:
                suppressed.append({"decision_id": d["decision_id"], "market": d.get("market"),
                                   "decision_ts": d.get("decision_ts"), "slot": v.slot, "reason": v.reason,
                                   "client_order_id": v.client_order_id})
    live = None
    if order_source is not None:
        try:
            live = _check_live(order_source, decisions, verdicts, per_decision)
        except Exception as exc:
            raise ExchangeError(f"the exchange's order source failed: {type(exc).__name__}: {exc}") from exc

    notes = [] if logs.available else [f"log lines unavailable: {logs.note}; log loss not checked"]
    if logs.available and logs.note:
        notes.append(logs.note)
    notes.extend(reader_notes(reader))  # e.g. the order_id index is missing: fills not joined
    telemetry_loss, settled = _log_gaps(logs.lines, since, until, now, settle) if logs.available else ({}, {})
    ledger_loss = _cross_check(decisions, events, logs.lines, settled, iso_ms(lines_from), iso_ms(lines_to)) \
        if logs.available else {"records_without_log_line": [], "log_events_missing_from_ledger": []}

    mismatched = []
    by_id = {d["decision_id"]: d for d in decisions}
    for decision_id, found in per_decision.items():
        d = by_id[decision_id]
        mismatched.append(DecisionMismatches(decision_id, d.get("market"), d.get("decision_ts"), d.get("bot_run_id"),
                                             [found[k] for k in sorted(found, key=lambda s: (isinstance(s, str), s))]))
    mismatched.sort(key=lambda m: (m.decision_ts or "", m.decision_id))
    report = ReconcileReport(
        since=iso(since), until=iso(until), source=_describe(source), decisions=total,
        slots=sum(counts.values()), verdict_counts=counts, mismatched=mismatched, telemetry_loss=telemetry_loss,
        ledger_loss=ledger_loss, live=live, logs_available=logs.available, notes=notes, suppressed=suppressed,
        completeness=completeness_mod.check(
            store=describe_reader(reader), journal_dir=getattr(source, "journal_dir", None), range_end=iso(until),
            logs_read=logs.available, logs_note=logs.note, lines=logs.lines))
    if total == 0:
        report.notes.append(f"no decisions between {iso(since)} and {iso(until)} in {describe_reader(reader)}: "
                            "a bot that stopped deciding, or the wrong --env / --data-dir / --ledger")
    if emit is not None:
        def scrubbed(level: int, event_type: str, message: str, fields: dict[str, Any]) -> None:
            emit(level, event_type, scrub_text(message), scrub_json(fields))  # the one output path
        _emit(report, scrubbed)
    return report


def _describe(source: Source) -> str:
    describe = getattr(source, "describe", None)
    return describe() if callable(describe) else str(getattr(source, "name", "source"))


def _check_live(order_source: OrderSource, decisions: Sequence[Mapping[str, Any]],
                verdicts: Mapping[str, list[SlotVerdict]],
                per_decision: dict[str, dict[Any, dict[str, Any]]]) -> dict[str, Any]:
    """Compare the ledger's resting orders with the exchange's open orders (both directions)."""
    open_orders = list(order_source.open_orders())
    open_by_coid = {str(o.get("client_order_id")): o for o in open_orders if o.get("client_order_id")}
    ours: set[str] = set()
    count = 0
    for d in decisions:
        decision_id = d["decision_id"]
        for v in verdicts[decision_id]:
            coid = v.client_order_id
            if not coid:
                continue
            ours.add(coid)
            on_book = open_by_coid.get(coid)
            if _expected_open(v) and on_book is None:
                status = order_source.order_status(coid)
                seen = f"it is {status.get('status')}" if status else "it does not know the order"
                per_decision.setdefault(decision_id, {})[v.slot] = _mismatch(
                    v, f"the ledger says {v.verdict.value} but the exchange has no open order: {seen}")
                count += 1
            elif not _expected_open(v) and on_book is not None:
                existing = per_decision.setdefault(decision_id, {}).get(v.slot)
                detail = (f"the exchange has this order open (order {on_book.get('order_id')}) "
                          f"but the ledger says {v.verdict.value}")
                if existing is not None:
                    existing["detail"] = f"{existing['detail']}; {detail}"
                else:
                    per_decision[decision_id][v.slot] = _mismatch(v, detail)
                count += 1
            elif v.verdict is Verdict.UNKNOWN and decision_id in per_decision and v.slot in per_decision[decision_id]:
                status = order_source.order_status(coid)
                per_decision[decision_id][v.slot]["detail"] += (
                    f"; exchange: {status.get('status')}" if status else "; exchange: no such order")
            if not per_decision.get(decision_id):
                per_decision.pop(decision_id, None)
    unattributed = [{k: o.get(k) for k in ("client_order_id", "order_id", "ticker", "side", "status")
                     if o.get(k) is not None}
                    for o in open_orders if str(o.get("client_order_id")) not in ours]
    return {"open_orders": len(open_orders), "mismatches": count, "unattributed_open_orders": unattributed}


def _log_gaps(lines: Sequence[Mapping[str, Any]], since: datetime, until: datetime, now: datetime,
              settle: timedelta) -> tuple[dict[str, dict[str, Any]], dict[str, int | None]]:
    """Per run: the seq gaps among its lines of [since, until]. Also returns, per run, the highest
    seq that may be judged (None: all) — runs still going are judged up to ``now - settle``."""
    lo_ts, hi_ts, fresh = iso_ms(since), iso_ms(until), iso_ms(now - settle)
    runs: dict[str, list[Mapping[str, Any]]] = {}
    for line in lines:
        run = line.get("bot_run_id")
        if run and isinstance(line.get("seq"), int):
            runs.setdefault(str(run), []).append(line)
    out: dict[str, dict[str, Any]] = {}
    settled: dict[str, int | None] = {}
    for run, run_lines in runs.items():
        finished = any(ln.get("event_type") == "SHUTDOWN" for ln in run_lines)
        settled[run] = None if finished else max(
            (int(ln["seq"]) for ln in run_lines if str(ln.get("ts", "")) <= fresh), default=0)
        inside = [int(ln["seq"]) for ln in run_lines if lo_ts <= str(ln.get("ts", ""))[:24] <= hi_ts]
        if not inside:
            continue
        lo, hi = min(inside), max(inside)
        limit = settled[run]
        if limit is not None:
            hi = min(hi, limit)
        gaps = seq_gaps((int(ln["seq"]) for ln in run_lines), lo, hi) if hi >= lo else []
        if gaps:
            out[run] = {"missing": sum(b - a + 1 for a, b in gaps), "ranges": gaps, "first_seq": lo, "last_seq": hi,
                        "lines": len(run_lines)}
    return out, settled


def _cross_check(decisions: Sequence[Mapping[str, Any]], events: Mapping[str, list[dict[str, Any]]],
                 lines: Sequence[Mapping[str, Any]], settled: Mapping[str, int | None],
                 lo_ts: str, hi_ts: str) -> dict[str, list[dict[str, Any]]]:
    """Ledger records with no log line of the same seq, and event lines with no ledger record."""
    line_keys = {(str(ln.get("bot_run_id")), ln.get("seq")) for ln in lines}
    seen_runs = {str(ln.get("bot_run_id")) for ln in lines}
    out: dict[str, list[dict[str, Any]]] = {"records_without_log_line": [], "log_events_missing_from_ledger": []}
    ledger_keys: set[tuple[str, Any]] = set()
    ids = set()

    def judged(run: str, seq: Any) -> bool:
        limit = settled.get(run)
        return limit is None or (isinstance(seq, int) and seq <= limit)

    for d in decisions:
        ids.add(d["decision_id"])
        for r in [d, *events.get(d["decision_id"], [])]:
            run, seq = str(r.get("bot_run_id")), r.get("seq")
            ledger_keys.add((run, seq))
            ts = str(r.get("event_ts") or r.get("decision_ts") or "")[:23]
            if run not in seen_runs or not (lo_ts[:23] <= ts <= hi_ts[:23]) or not judged(run, seq):
                continue
            if (run, seq) not in line_keys:
                out["records_without_log_line"].append({
                    "bot_run_id": run, "seq": seq, "decision_id": d["decision_id"],
                    "event_type": r.get("event_type") or "DECISION_MADE", "event_ts": r.get("event_ts")})
    for ln in lines:
        if ln.get("event_type") in _LEDGER_EVENTS and ln.get("decision_id") in ids:
            run, seq = str(ln.get("bot_run_id")), ln.get("seq")
            if (run, seq) not in ledger_keys and judged(run, seq):
                out["log_events_missing_from_ledger"].append({
                    "bot_run_id": run, "seq": seq, "decision_id": ln.get("decision_id"),
                    "event_type": ln.get("event_type"), "ts": ln.get("ts")})
    return out


def _emit(report: ReconcileReport, emit: Emit) -> None:
    for m in report.mismatched:
        kinds = ", ".join(f"slot {x['slot']} {x['verdict']}" for x in m.mismatches)
        emit(logging.WARNING, "RECONCILIATION_RESULT", f"decision {m.decision_id} on {m.market}: {kinds}", {
            "decision_id": m.decision_id, "market": m.market, "decision_ts": m.decision_ts,
            "mismatch_count": len(m.mismatches),
            "mismatches": [{k: x[k] for k in ("slot", "verdict", "expected", "detail")} for x in m.mismatches],
        })
    lost = sum(info["missing"] for info in report.telemetry_loss.values())
    ledger = report.ledger_loss
    fields = {
        "reconcile_since": report.since, "reconcile_until": report.until, "decisions": report.decisions,
        "slots": report.slots, "verdict_counts": report.verdict_counts, "clean": report.clean,
        "mismatched_decisions": len(report.mismatched),
        "mismatched_slots": sum(len(m.mismatches) for m in report.mismatched),
        "log_lines_missing": lost,
        "log_gaps": {run: info["ranges"][:50] for run, info in report.telemetry_loss.items()},
        "ledger_records_without_log_line": len(ledger["records_without_log_line"]),
        "log_events_missing_from_ledger": len(ledger["log_events_missing_from_ledger"]),
        "logs_checked": report.logs_available,
        "suppressed_slots": len(report.suppressed),
        "complete": report.completeness.complete if report.completeness else None,
        "exit_code": report.exit_code,
    }
    if report.live is not None:
        fields["exchange_mismatches"] = report.live["mismatches"]
        fields["exchange_unattributed_open_orders"] = len(report.live["unattributed_open_orders"])
    text = (f"reconcile {report.since}..{report.until}: {report.decisions} decisions, "
            f"{len(report.mismatched)} with mismatches; telemetry: {lost} log lines lost, "
            f"{len(ledger['records_without_log_line'])} ledger records without log line, "
            f"{len(ledger['log_events_missing_from_ledger'])} logged events missing from the ledger")
    if report.decisions == 0:
        text = f"reconcile {report.since}..{report.until}: no decisions in this range"
    troubled = report.mismatched or lost or any(ledger.values()) or not report.decisions
    level = logging.WARNING if troubled else logging.INFO
    emit(level, "LOG", text, fields)
