"""`dora-otel explain`: what happened with market X at time T, or with one decision.

Owns the assembly of a decision's story from its three records: the ledger (decision record with
its target orders, and every ORDER_PLACE / ORDER_RESULT / ORDER_CANCEL / FILL record), the log lines
carrying its decision_id (plain lines, errors with stacks) and, as fallbacks when the ledger does not
have the decision, the log lines' own event fields or the local spans file. Verdicts come from
:mod:`~dora_otel.query.verdicts`; rendering from :mod:`~dora_otel.query.render`.

Log lines and ledger records of one event share the run's `seq`, so the timeline is merged on
(bot_run_id, seq), and a record on one side only is reported (log line lost / not in the ledger).

Runs on the caller's thread; blocks on the source's reads.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from dora_otel.query import completeness as completeness_mod
from dora_otel.query.aws import decision_insights_query, log_group
from dora_otel.query.sources import (
    EXECUTION_EVENTS,
    LogLines,
    Region,
    Source,
    describe_reader,
    reader_notes,
    records_from_lines,
    records_from_spans,
)
from dora_otel.query.times import from_iso, iso
from dora_otel.query.verdicts import SlotVerdict, Verdict, judge_decision, worst

__all__ = ["DecisionReport", "ExplainError", "ExplainReport", "NoDecisions", "explain_decision", "explain_market",
           "jaeger_url"]

JAEGER_URL = "http://localhost:16686/trace/{}"
DEFAULT_WINDOW = timedelta(minutes=2)
# Lines of a decision (strategy lines, order placement, a watchdog report) come within this after it;
# later ones (fills, cancels) are found around their ledger records.
DECISION_SPAN = timedelta(seconds=60)
EVENT_SLACK = timedelta(seconds=5)
_DECISION_ID = re.compile(r"^[0-9a-f]{32}$")
_LINE_EVENTS = EXECUTION_EVENTS | {"DECISION_MADE"}


class ExplainError(ValueError):
    """A question explain cannot answer as asked (unknown decision id, nothing to read)."""


class NoDecisions(LookupError):
    """No decision of the market at all (``--at`` not given and nothing found looking back)."""


def jaeger_url(decision_id: str) -> str:
    return JAEGER_URL.format(decision_id)


@dataclasses.dataclass
class DecisionReport:
    """Everything known about one decision."""

    decision_id: str
    market: str | None
    decision_ts: str | None
    bot_run_id: str | None
    loop: Any
    targets: list[dict[str, Any]]
    spread: Any
    verdicts: list[SlotVerdict]
    timeline: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    unassigned: list[dict[str, Any]]
    notes: list[str]
    telemetry: dict[str, list[dict[str, Any]]]
    records_from: str
    env: str

    @property
    def jaeger_url(self) -> str:
        return jaeger_url(self.decision_id)

    @property
    def worst(self) -> Verdict | None:
        """The worst slot verdict (None: no slots)."""
        return worst(v.verdict for v in self.verdicts)

    @property
    def mismatch(self) -> bool:
        return any(v.mismatch for v in self.verdicts)

    @property
    def suppressed(self) -> bool:
        return any(v.verdict is Verdict.SUPPRESSED for v in self.verdicts)

    def insights(self) -> dict[str, Any]:
        """The ready CloudWatch Logs Insights query for this decision, and its time range."""
        start = from_iso(self.decision_ts) - timedelta(minutes=1) if self.decision_ts else None
        last = max((e["ts"] for e in self.timeline if e.get("ts")), default=self.decision_ts)
        end = from_iso(last) + timedelta(minutes=5) if last else None
        query = decision_insights_query(self.decision_id)
        out: dict[str, Any] = {"log_group": log_group(self.env), "query": query}
        if start is not None and end is not None:
            out["start_time"] = int(start.timestamp())
            out["end_time"] = int(end.timestamp())
            one_line = " ".join(part.strip() for part in query.splitlines())
            out["aws_cli"] = (f"aws logs start-query --log-group-name {log_group(self.env)} "
                              f"--start-time {out['start_time']} --end-time {out['end_time']} "
                              f"--query-string '{one_line}'")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "market": self.market,
            "decision_ts": self.decision_ts,
            "worst_verdict": self.worst.value if self.worst else None,
            "mismatch": self.mismatch,
            "bot_run_id": self.bot_run_id,
            "loop": self.loop,
            "spread": self.spread,
            "targets": self.targets,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "timeline": self.timeline,
            "errors": self.errors,
            "unassigned_events": self.unassigned,
            "telemetry": self.telemetry,
            "notes": self.notes,
            "records_from": self.records_from,
            "jaeger_url": self.jaeger_url,
            "cloudwatch": self.insights(),
        }


@dataclasses.dataclass
class ExplainReport:
    """The answer to one explain question."""

    question: dict[str, Any]
    source: str
    decisions: list[DecisionReport]
    unmatched_fills: list[dict[str, Any]]
    notes: list[str]
    logs_available: bool
    completeness: completeness_mod.Completeness | None = None

    def nearest(self) -> DecisionReport | None:
        """The decision nearest the asked time (``question["at"]``), else the latest."""
        if not self.decisions:
            return None
        at = self.question.get("at")
        if not at:
            return self.decisions[-1]
        target = from_iso(at)

        def distance(d: DecisionReport) -> float:
            return abs((from_iso(d.decision_ts) - target).total_seconds()) if d.decision_ts else float("inf")
        return min(reversed(self.decisions), key=distance)

    def summary(self) -> dict[str, Any]:
        nearest = self.nearest()
        return {
            "decisions": len(self.decisions),
            "verdict_counts": verdict_counts(self.decisions),
            "mismatched_decisions": [d.decision_id for d in self.decisions if d.mismatch],
            "suppressed_decisions": [d.decision_id for d in self.decisions if d.suppressed],
            "nearest_decision_id": nearest.decision_id if nearest else None,
            "first_decision_ts": self.decisions[0].decision_ts if self.decisions else None,
            "last_decision_ts": self.decisions[-1].decision_ts if self.decisions else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "source": self.source,
            "summary": self.summary(),
            "complete": self.completeness.complete if self.completeness else None,
            "completeness": self.completeness.to_dict() if self.completeness else None,
            "logs_available": self.logs_available,
            "notes": self.notes,
            "decisions": [d.to_dict() for d in self.decisions],
            "unmatched_fills": self.unmatched_fills,
        }


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------

def explain_decision(source: Source, decision_id: str, *, window: timedelta = DEFAULT_WINDOW) -> ExplainReport:
    """Explain one decision by id. Raises ExplainError when no record of it exists anywhere."""
    decision_id = decision_id.strip().lower()
    if not _DECISION_ID.match(decision_id):
        raise ExplainError(f"decision id {decision_id!r} is not 32 lower-case hex characters (the decision's trace id)")
    notes: list[str] = []
    record, events, records_from = None, [], "ledger"
    if source.reader is not None:
        record = source.reader.decision(decision_id)
        events = source.reader.events_for_decision(decision_id)
    if record is None and not events:
        found = source.find_decision_lines(decision_id)
        decisions, by_id = records_from_lines(found.lines)
        record, events, records_from = decisions.get(decision_id), by_id.get(decision_id, []), "log"
        if record is None and not events:
            decisions, by_id = records_from_spans(source.spans_for(decision_id))
            record, events, records_from = decisions.get(decision_id), by_id.get(decision_id, []), "spans"
        if record is None and not events:
            where = "the ledger" if source.reader is not None else "the data (no ledger)"
            raise ExplainError(f"decision {decision_id} not found in {where}, the log lines or the spans file "
                               f"({_describe(source)})")
        notes.append(f"decision {decision_id} is not in the ledger; rebuilt from the {records_from}")
    elif record is None:
        notes.append("the decision record is missing from the ledger (only its execution records are there)")
    market = (record or {}).get("market") or next((e.get("market") for e in events if e.get("market")), None)
    at = _decision_time(record, events)
    reports, logs = _build(source, {decision_id: (record, events)}, market, records_from)
    unmatched = _unmatched_fills(source, market, at - window, at + window) if market and at else []
    _hint_unmatched(reports, unmatched)
    return ExplainReport({"decision_id": decision_id}, _describe(source), reports, unmatched,
                         notes + _logs_notes(logs) + reader_notes(source.reader), logs.available,
                         _completeness(source, iso(at + window) if at else None, logs,
                                       (at - window, at + window) if at else None))


def latest_decision_time(source: Source, market: str, now: datetime) -> datetime | None:
    """The time of the market's latest decision up to ``now``, looking back up to 90 days (widening
    steps, so a live bot costs one small read). None when there is none."""
    if source.reader is None:
        return None
    for back in (timedelta(minutes=10), timedelta(hours=6), timedelta(days=7), timedelta(days=90)):
        records = source.reader.decisions_for_market(market, iso(now - back), iso(now))
        times = [str(r["decision_ts"]) for r in records if r.get("decision_ts")]
        if times:
            return from_iso(max(times))
    return None


def explain_market(source: Source, market: str, at: datetime | None, window: timedelta = DEFAULT_WINDOW, *,
                   now: datetime | None = None) -> ExplainReport:
    """Explain every decision of ``market`` with ``at - window <= decision_ts <= at + window``.
    ``at`` None: the market's latest decisions (``at`` = its latest decision; raises NoDecisions
    when it has none in the last 90 days)."""
    if at is None:
        current = now or datetime.now(timezone.utc)
        at = latest_decision_time(source, market, current) if source.reader is not None else current
        if at is None:
            raise NoDecisions(f"no decisions for {market} in the last 90 days ({_describe(source)}); "
                              "check the market ticker, or pass --at")
        latest_note = [f"no --at given: showing the latest decisions (the last at {iso(at)})" if source.reader
                       is not None else "no --at given and no ledger: showing the decisions around now"]
    else:
        latest_note = []
    start, end = at - window, at + window
    notes: list[str] = list(latest_note)
    records_from = "ledger"
    found: dict[str, tuple[dict[str, Any] | None, list[dict[str, Any]]]] = {}
    if source.reader is not None:
        for record in source.reader.decisions_for_market(market, iso(start), iso(end)):
            found[record["decision_id"]] = (record, source.reader.events_for_decision(record["decision_id"]))
    else:
        decisions, by_id = records_from_lines(_decision_lines_of_market(source, market, start, end))
        for decision_id, record in decisions.items():
            if record.get("market") == market and start <= from_iso(record["decision_ts"]) <= end:
                found[decision_id] = (record, by_id.get(decision_id, []))
        records_from = "log"
        notes.append("no ledger to read; decisions rebuilt from the log lines")
    question = {"market": market, "at": iso(at), "window_s": window.total_seconds(), "from": iso(start), "to": iso(end)}
    if not found:
        notes.append(f"no decisions for {market} between {iso(start)} and {iso(end)}; try a wider --window or "
                     "check the market ticker")
        unmatched = _unmatched_fills(source, market, start, end)
        return ExplainReport(question, _describe(source), [], unmatched, notes, True,
                             _completeness(source, iso(end), None, (start, end)))
    reports, logs = _build(source, found, market, records_from)
    unmatched = _unmatched_fills(source, market, start, end)
    _hint_unmatched(reports, unmatched)
    notes += _logs_notes(logs) + reader_notes(source.reader)
    return ExplainReport(question, _describe(source), reports, unmatched, notes, logs.available,
                         _completeness(source, iso(end), logs, (start, end)))


def _completeness(source: Source, range_end: str | None, logs: LogLines | None,
                  span: tuple[datetime, datetime] | None) -> completeness_mod.Completeness:
    journal = getattr(source, "journal_dir", None)
    health = getattr(source, "health_lines", None)
    lines: list[dict[str, Any]] = []
    if callable(health) and span is not None and source.reader is not None:
        # the shipper's outage lines from a while before the range: an outage that began earlier counts
        lines = health(span[0] - timedelta(hours=1), span[1] + DECISION_SPAN)
    return completeness_mod.check(
        store=describe_reader(source.reader) if source.reader is not None else "the log lines",
        journal_dir=journal if source.reader is not None else None, range_end=range_end,
        logs_read=logs.available if logs is not None else not _logs_off(source),
        logs_note=logs.note if logs is not None else "log lines not read (--logs none)",
        lines=lines)


def _logs_off(source: Source) -> bool:
    return getattr(source, "logs", True) is None


# ---------------------------------------------------------------------------------------------
# assembly
# ---------------------------------------------------------------------------------------------

def _describe(source: Source) -> str:
    describe = getattr(source, "describe", None)
    return describe() if callable(describe) else str(getattr(source, "name", "source"))


def _logs_notes(logs: LogLines) -> list[str]:
    if not logs.available:
        return [f"log lines unavailable: {logs.note}; verdicts come from the ledger alone"]
    return [logs.note] if logs.note else []


def _decision_lines_of_market(source: Source, market: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    lines = source.run_lines(start, end + DECISION_SPAN)
    return [ln for ln in lines.lines if ln.get("market") == market or ln.get("decision_id")]


def _decision_time(record: Mapping[str, Any] | None, events: Sequence[Mapping[str, Any]]) -> datetime | None:
    ts = (record or {}).get("decision_ts") or next((e.get("event_ts") for e in events if e.get("event_ts")), None)
    return from_iso(ts) if ts else None


def _regions(found: Mapping[str, tuple[Mapping[str, Any] | None, Sequence[Mapping[str, Any]]]]) -> list[Region]:
    regions: list[Region] = []
    for record, events in found.values():
        at = _decision_time(record, events)
        if at is not None:
            regions.append((at - EVENT_SLACK, at + DECISION_SPAN))
        for event in events:
            if event.get("event_ts"):
                ts = from_iso(event["event_ts"])
                regions.append((ts - EVENT_SLACK, ts + EVENT_SLACK))
    return regions


def _build(source: Source, found: Mapping[str, tuple[dict[str, Any] | None, list[dict[str, Any]]]],
           market: str | None, records_from: str) -> tuple[list[DecisionReport], LogLines]:
    logs = source.decision_lines(set(found), _regions(found), market)
    by_decision: dict[str, list[dict[str, Any]]] = {d: [] for d in found}
    context = _context_lines(logs.lines, found, market)
    for line in logs.lines:
        did = line.get("decision_id")
        if did in by_decision:
            by_decision[did].append(line)
    reports = []
    for decision_id, (record, events) in found.items():
        reports.append(_decision_report(source, decision_id, record, events, by_decision[decision_id],
                                        context.get(decision_id, []), logs.available, records_from))
    reports.sort(key=lambda r: (r.decision_ts or "", r.decision_id))
    return reports, logs


def _context_lines(lines: Sequence[Mapping[str, Any]], found: Mapping[str, Any],
                   market: str | None) -> dict[str, list[dict[str, Any]]]:
    """Lines of the market that carry no decision_id, given to the decision whose DECISION_MADE is
    the latest before them in the same run (e.g. the bot's own 'order rejected' line after the call)."""
    if not market:
        return {}
    per_run: dict[Any, list[tuple[int, str]]] = {}
    for ln in lines:
        if ln.get("event_type") == "DECISION_MADE" and ln.get("market") == market:
            per_run.setdefault(ln.get("bot_run_id"), []).append((int(ln.get("seq") or 0), str(ln.get("decision_id"))))
    for made in per_run.values():
        made.sort()
    out: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if line.get("decision_id") or line.get("market") != market:
            continue
        made = per_run.get(line.get("bot_run_id"), [])
        at = bisect.bisect_left(made, (int(line.get("seq") or 0), "")) - 1
        owner = made[at][1] if at >= 0 else None
        if owner is not None and owner in found:
            out.setdefault(owner, []).append(dict(line))
    return out


def _decision_report(source: Source, decision_id: str, record: dict[str, Any] | None, events: list[dict[str, Any]],
                     lines: list[dict[str, Any]], context: list[dict[str, Any]], logs_available: bool,
                     records_from: str) -> DecisionReport:
    notes: list[str] = []
    if record is None:  # the ledger lost the decision record: its DECISION_MADE line has the targets
        rebuilt, _ = records_from_lines(lines)
        record = rebuilt.get(decision_id)
        if record is not None:
            notes.append("targets taken from the DECISION_MADE log line (no decision record in the ledger)")
    record = record or {}
    targets = list(record.get("target_orders") or [])
    extra = log_only_events(decision_id, events, lines) if records_from == "ledger" and logs_available else []
    if extra:
        notes.append(f"{len(extra)} event(s) known only from the log lines count in the verdicts")
    verdicts, unassigned = judge_decision(targets, events + extra)
    joined = [e for e in events if e.get("joined_by")]  # query.sources.OrderJoin
    if joined:
        runs = sorted({str(e.get("bot_run_id")) for e in joined})
        notes.append(f"{len(joined)} fill/cancel record(s) of a later run ({', '.join(runs)}) that did not know the "
                     "order (stored unmatched) are joined to this decision by order_id")
    run = record.get("bot_run_id") or next((e.get("bot_run_id") for e in events if e.get("bot_run_id")), None)
    telemetry = _cross_check(record, events, lines, logs_available, records_from)
    if telemetry["log_lines_missing"]:
        notes.append(f"{len(telemetry['log_lines_missing'])} ledger record(s) have no log line (log lines lost)")
    if telemetry["ledger_records_missing"]:
        notes.append(f"{len(telemetry['ledger_records_missing'])} event log line(s) are missing from the ledger "
                     "(ledger loss, or not shipped yet)")
    timeline = _timeline(record, events, lines, context)
    errors = [
        {k: e["fields"].get(k) for k in ("seq", "error_type", "error_msg", "stack", "status")
         if e["fields"].get(k) is not None}
        | {"ts": e["ts"], "event_type": e["event_type"]}
        for e in timeline if e["fields"].get("stack") or e["event_type"] == "ERROR"
    ]
    return DecisionReport(
        decision_id=decision_id,
        market=record.get("market") or next((e.get("market") for e in events if e.get("market")), None),
        decision_ts=record.get("decision_ts") or (events[0].get("event_ts") if events else None),
        bot_run_id=run, loop=record.get("loop"), targets=targets, spread=record.get("spread"),
        verdicts=verdicts, timeline=timeline, errors=errors, unassigned=unassigned, notes=notes,
        telemetry=telemetry, records_from=records_from, env=source.env,
    )


def log_only_events(decision_id: str, events: Sequence[Mapping[str, Any]],
                    lines: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Execution events of the decision that its log lines show and the ledger lacks (ledger loss):
    they still count as evidence for the verdicts."""
    have = {(e.get("bot_run_id"), e.get("seq")) for e in events}
    _, by_id = records_from_lines(lines)
    return [r for r in by_id.get(decision_id, []) if (r.get("bot_run_id"), r.get("seq")) not in have]


def _hint_unmatched(reports: Sequence[DecisionReport], unmatched: Sequence[Mapping[str, Any]]) -> None:
    """An UNKNOWN order the bot never got an order id for may be live: point at fills of the same
    side and price that match no decision and came after it."""
    for report in reports:
        for v in report.verdicts:
            if v.verdict is not Verdict.UNKNOWN or v.order_id or not v.attempts or v.expected is None:
                continue
            placed = min((a.place or a.result or {}).get("event_ts", "") for a in v.attempts)
            candidates = [f for f in unmatched if f.get("side") == v.expected.get("side")
                          and f.get("price") == v.expected.get("price") and str(f.get("event_ts", "")) >= placed]
            if candidates:
                v.note = (v.note or "") + (
                    f"; {len(candidates)} fill(s) matching no decision, same side and price, "
                    f"came after it (order {candidates[0].get('order_id')}): probably this order")


def _cross_check(record: Mapping[str, Any], events: Sequence[Mapping[str, Any]], lines: Sequence[Mapping[str, Any]],
                 logs_available: bool, records_from: str) -> dict[str, list[dict[str, Any]]]:
    """Ledger records without their log line, and event lines without their ledger record."""
    out: dict[str, list[dict[str, Any]]] = {"log_lines_missing": [], "ledger_records_missing": []}
    if not logs_available or records_from != "ledger":
        return out
    line_seqs = {ln.get("seq") for ln in lines}
    # a record joined by order_id (query.sources.OrderJoin) has its line in the run that recorded it
    ledger = [r for r in [record, *events] if r.get("seq") is not None and r.get("source") not in ("log", "spans")
              and not r.get("joined_by")]
    ledger_seqs = {r.get("seq") for r in ledger}
    for r in ledger:
        if r.get("seq") not in line_seqs:
            out["log_lines_missing"].append({"seq": r.get("seq"), "event_type": r.get("event_type", "DECISION_MADE"),
                                             "event_ts": r.get("event_ts")})
    for ln in lines:
        if ln.get("event_type") in _LINE_EVENTS and ln.get("seq") not in ledger_seqs:
            out["ledger_records_missing"].append({"seq": ln.get("seq"), "event_type": ln.get("event_type"),
                                                  "ts": ln.get("ts")})
    return out


def _timeline(record: Mapping[str, Any], events: Sequence[Mapping[str, Any]], lines: Sequence[Mapping[str, Any]],
              context: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per event, merged on seq: the ledger record's fields, the log line's message,
    level and stack. Ordered by seq (the run's own order), then time."""
    entries: dict[Any, dict[str, Any]] = {}

    def add(seq: Any, ts: Any, event_type: str, fields: Mapping[str, Any], *, ledger: bool, log: bool,
            is_context: bool = False) -> None:
        run = fields.get("bot_run_id")
        key = (run, seq) if seq is not None else ("noseq", len(entries))
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = {"seq": seq, "run": run, "ts": ts, "event_type": event_type, "in_ledger": False,
                                    "in_log": False, "context": is_context, "fields": {}}
        entry["in_ledger"] |= ledger
        entry["in_log"] |= log
        for k, v in fields.items():
            if v is not None and k not in entry["fields"]:
                entry["fields"][k] = v
        if (ledger and ts) or not entry["ts"]:
            entry["ts"] = ts

    if record:
        add(record.get("seq"), record.get("decision_ts"), "DECISION_MADE", _record_fields(record),
            ledger=True, log=False)
    for e in events:
        add(e.get("seq"), e.get("event_ts"), str(e.get("event_type")), _record_fields(e),
            ledger=e.get("source") not in ("log", "spans"), log=False)
    for ln in lines:
        add(ln.get("seq"), ln.get("ts"), str(ln.get("event_type", "LOG")), _line_fields(ln), ledger=False, log=True)
    for ln in context:
        add(ln.get("seq"), ln.get("ts"), str(ln.get("event_type", "LOG")), _line_fields(ln), ledger=False, log=True,
            is_context=True)
    out = order_timeline(list(entries.values()))
    base = record.get("decision_ts") if record else None
    set_offsets(out, base)
    for entry in out:
        entry["text"] = summarize(entry)
    return out


def order_timeline(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries in the order they happened: by the run's ``seq`` within a run (one counter per run,
    so two events in the same millisecond keep their order), runs by their first event's time, and
    entries without a seq by time. Times compare at the precision each has (ledger records carry
    microseconds, log lines milliseconds)."""
    runs: dict[Any, list[dict[str, Any]]] = {}
    loose: list[dict[str, Any]] = []
    for e in entries:
        (runs.setdefault(e.get("run"), []) if isinstance(e.get("seq"), int) else loose).append(e)
    chunks = []
    for run_entries in runs.values():
        run_entries.sort(key=lambda e: e["seq"])
        chunks.append((min(str(e.get("ts") or "") for e in run_entries), run_entries))
    chunks.sort(key=lambda c: c[0])
    out = [e for _, run_entries in chunks for e in run_entries]
    for e in sorted(loose, key=lambda e: str(e.get("ts") or "")):  # by time among the others
        at = next((i for i, o in enumerate(out) if str(o.get("ts") or "") > str(e.get("ts") or "")), len(out))
        out.insert(at, e)
    return out


def set_offsets(timeline: list[dict[str, Any]], base: str | None) -> None:
    """``offset_ms`` of each entry from ``base`` (the decision's time), never decreasing along the
    timeline: a log line's millisecond time can read earlier than the microsecond time of the
    ledger record it follows, and that rounding must not show as time going backwards."""
    if not base:
        base = next((e.get("ts") for e in timeline if e.get("ts")), None)
    if not base:
        return
    try:
        origin = from_iso(base)
    except ValueError:
        return
    last = 0.0
    for e in timeline:
        try:
            offset = (from_iso(e["ts"]) - origin).total_seconds() * 1000 if e.get("ts") else last
        except ValueError:
            offset = last
        last = max(last, offset)
        e["offset_ms"] = round(last, 3)
        e["clock_ts"] = iso(origin + timedelta(milliseconds=last))  # the time shown: never going back


_RECORD_SKIP = frozenset({"kind", "sk", "env", "bot_version", "expires_at", "event_id", "trace_id", "span_id",
                          "execution_log_partition", "decision_day", "target_orders", "source"})


def _record_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in _RECORD_SKIP}


_LINE_SKIP = frozenset({"service", "env", "bot_version", "trace_id", "span_id", "targets", "ts"})


def _line_fields(line: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k not in _LINE_SKIP}


def _fmt_num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def summarize(entry: Mapping[str, Any]) -> str:
    """One line of text for a timeline entry."""
    f, kind = entry["fields"], entry["event_type"]
    slot = f"slot {f['slot']}  " if f.get("slot") is not None else ""
    order = f"{f.get('side')} {_fmt_num(f.get('size'))} @ {_fmt_num(f.get('price'))}"
    if kind == "DECISION_MADE":
        count = f.get("target_count")
        spread = f" spread {f['spread']}" if f.get("spread") is not None else ""
        loop = f" (loop {f['loop']})" if f.get("loop") is not None else ""
        return f"decision: {count if count is not None else '?'} target orders{spread}{loop}"
    if kind == "ORDER_PLACE":
        return f"{slot}place {order}  client_order_id {f.get('client_order_id')}"
    if kind == "ORDER_RESULT":
        latency = f"  {float(f['latency_ms']):.1f} ms" if isinstance(f.get("latency_ms"), (int, float)) else ""
        status = f.get("status")
        if status == "ACCEPTED":
            return f"{slot}ACCEPTED  order {f.get('order_id')}{latency}"
        return f"{slot}{status}  {f.get('error_type') or ''}: {f.get('error_msg') or ''}{latency}".replace("  : ", "  ")
    if kind == "ORDER_CANCEL":
        status = f.get("status") or "requested"
        reason = f.get("error_msg") or f.get("reason")
        why = f": {reason}" if reason and status != "CANCELLED" else ""
        by = f.get("requested_by_decision_id")
        latency = f"  {float(f['latency_ms']):.1f} ms" if isinstance(f.get("latency_ms"), (int, float)) else ""
        return (f"{slot}cancel order {f.get('order_id')}  {status}{why}{latency}"
                + (f"  (requested by {by[:8]}…)" if by else ""))
    if kind == "ORDER_SUPPRESSED":
        return f"{slot}not sent on purpose: {f.get('reason') or 'no reason given'}"
    if kind == "FILL":
        pnl = f"  pnl {f['pnl_delta']:+}" if isinstance(f.get("pnl_delta"), (int, float)) else ""
        return f"{slot}fill {order}{pnl}"
    if kind == "ERROR":
        return f"{f.get('error_type')}: {f.get('error_msg') or f.get('message')}"
    level = f.get("level")
    return f"{level + ' ' if level and level != 'INFO' else ''}{f.get('message', '')}"


def _unmatched_fills(source: Source, market: str | None, start: datetime, end: datetime) -> list[dict[str, Any]]:
    if not market or source.reader is None:
        return []
    lo, hi = iso(start), iso(end)
    out = []
    for r in source.reader.events_for_decision(f"unmatched:{market}"):
        if r.get("event_type") == "FILL" and lo <= str(r.get("event_ts", "")) <= hi:
            out.append({k: r.get(k) for k in ("event_ts", "seq", "bot_run_id", "market", "side", "price", "size",
                                              "pnl_delta", "order_id", "client_order_id") if r.get(k) is not None})
    return out


def verdict_counts(reports: Iterable[DecisionReport]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for report in reports:
        for v in report.verdicts:
            counts[v.verdict.value] = counts.get(v.verdict.value, 0) + 1
    return counts
