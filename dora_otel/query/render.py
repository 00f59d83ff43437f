"""Terminal and JSON output of the query commands.

Owns how an explain or reconcile answer looks: aligned columns, times relative to the decision,
verdicts in colour — colour only when the stream is a TTY and NO_COLOR is unset
(https://no-color.org) — and `--json` as one JSON document for scripts. Pure formatting; the only
I/O is writing to the given stream.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from dora_otel.query.explain import DecisionReport, ExplainReport, verdict_counts
from dora_otel.query.output import Printer, scrub_text
from dora_otel.query.times import from_iso

__all__ = ["Style", "render_explain", "render_json", "render_reconcile", "use_color"]

_VERDICT_COLOR = {"FILLED": "32", "RESTING": "36", "PARTIAL": "33", "CANCELLED": "34",
                  "REJECTED": "31", "UNKNOWN": "31;1", "NOT_SENT": "35;1", "SUPPRESSED": "90"}
_STACK_LINES_INLINE = 0


def use_color(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except Exception:  # noqa: BLE001  any stream object may be passed; one that cannot say is no terminal
        return False


class Style:
    """ANSI styling that is a no-op when colour is off."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color and text else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def verdict(self, text: str) -> str:
        return self._wrap(_VERDICT_COLOR.get(text, "0"), text)


def render_json(value: Any, stream: TextIO) -> None:
    """One JSON document, scrubbed (through the one output path)."""
    Printer(stream).json(value)


def _table(rows: Sequence[Sequence[str]], styles: Sequence[Sequence[Any]] | None = None,
           indent: str = "  ") -> list[str]:
    """Left-aligned columns sized to their content; ``styles[i][j]`` styles a cell's text and the
    padding goes outside the escape codes (so a styled cell keeps its colour and its alignment, and
    the style sees the bare text, e.g. a verdict name). The last column is not padded."""
    if not rows:
        return []
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(max(len(r) for r in rows))]
    out = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            pad = "" if j == len(row) - 1 else " " * (widths[j] - len(cell))
            style = styles[i][j] if styles and j < len(styles[i]) else None
            cells.append((style(cell) if style else cell) + pad)
        out.append((indent + "  ".join(cells)).rstrip())
    return out


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _clock(ts: str | None) -> str:
    if not ts or "T" not in ts:
        return ts or ""
    return ts.split("T", 1)[1].rstrip("Z")[:12]


def _fmt_offset(ms: Any) -> str:
    if not isinstance(ms, (int, float)):
        return ""
    if ms < 10_000:
        return f"+{ms:.1f}ms"
    if ms < 600_000:
        return f"+{ms / 1000:.1f}s"
    return f"+{ms / 60_000:.1f}min"


def render_explain(report: ExplainReport, stream: TextIO, *, color: bool = False, stack_lines: int | None = None,
                   limit: int | None = 1, verbose: bool = False) -> None:
    """The answer first: a summary of the window, the decision nearest the asked time in full, each
    decision with a mismatch (or a suppressed order) in one line per slot, and how many healthy
    decisions were left out. ``limit``: how many decisions (nearest first) to show in full; None
    shows every decision in full, oldest first (``--all``)."""
    s = Style(color)
    w = Printer(stream)
    q = report.question
    single = "decision_id" in q
    if single:
        w(s.bold(f"dora-otel explain {q['decision_id']}"))
    else:
        window = q.get("window_s", 0)
        w(s.bold(f"dora-otel explain --market {q['market']} --at {q['at']}") + f"  (± {_num(window)} s)")
    w(s.dim(f"source: {report.source}"))
    if report.completeness is not None and not report.completeness.complete:
        for note in report.completeness.notes():
            w(s.yellow(f"incomplete: {note}"))
    for note in report.notes:
        if report.completeness is None or not note.startswith("log lines unavailable"):
            w(s.yellow(f"note: {note}"))
    decisions = report.decisions
    counts = verdict_counts(decisions)
    summary = " · ".join(s.verdict(k) + f" {v}" for k, v in sorted(counts.items()))
    span = ""
    if len(decisions) > 1:
        span = f" {_clock(decisions[0].decision_ts)} .. {_clock(decisions[-1].decision_ts)}"
    w(f"{len(decisions)} decision(s){span}" + (f" · slots: {summary}" if summary else ""))
    flagged = [d for d in decisions if d.mismatch or d.suppressed]
    mismatched = [d for d in decisions if d.mismatch]
    if not single and decisions:
        if mismatched:
            w(s.red(f"mismatches: {len(mismatched)} decision(s)") + " (listed below)")
        else:
            w(s.green("mismatches: none"))
    shown: list[DecisionReport]
    if single or limit is None:
        shown = list(decisions)
    else:
        nearest = report.nearest()
        rest = sorted(decisions, key=lambda d: _distance(d, q.get("at")))
        shown = ([nearest] if nearest else []) + [d for d in rest if d is not nearest][:max(0, limit - 1)]
        if nearest is not None:
            w(f"nearest decision to {q.get('at')}: {nearest.decision_id} at {_clock(nearest.decision_ts)}")
    # stacks are long: the first screen keeps room for the answer (explain DECISION_ID shows them)
    stack = stack_lines if stack_lines is not None else (12 if single or verbose else 0)
    for decision in shown:
        _render_decision(decision, w, s, stack, full_links=single or verbose, verbose=verbose)
    compact = [d for d in flagged if d not in shown]
    if compact:
        w("")
        w(s.bold(f"━━ {len(compact)} other decision(s) with a mismatch or a suppressed order ") + s.dim("━" * 10))
        rows: list[list[str]] = []
        styles: list[list[Any]] = []
        for d in compact:
            for v in d.verdicts:
                if v.mismatch or v.verdict.value == "SUPPRESSED":
                    rows.append([_clock(d.decision_ts), d.decision_id, f"slot {v.slot}", v.verdict.value,
                                 _short(v.detail(), 90)])
                    styles.append([s.dim, None, s.dim, s.verdict, None])
        for line in _table(rows, styles):
            w(line)
        w(s.dim("  (dora-otel explain DECISION_ID shows one in full)"))
    hidden = len(decisions) - len(shown) - len(compact)
    if hidden > 0:
        w("")
        w(s.dim(f"{hidden} healthy decision(s) not shown: --all shows every decision in full, "
                "--limit N the N nearest, --json everything"))
    if report.unmatched_fills:
        w("")
        w(s.bold("fills that match no decision") + s.dim("  (ledger decision_id unmatched:<market>)"))
        rows = [["time", "side", "size", "price", "order_id", "pnl"]]
        for f in report.unmatched_fills:
            rows.append([str(f.get("event_ts", "")), str(f.get("side", "")), _num(f.get("size")),
                         _num(f.get("price")), str(f.get("order_id", "")), _num(f.get("pnl_delta"))])
        for line in _table(rows, [[s.dim] * 6] + [[None] * 6] * (len(rows) - 1)):
            w(line)


def _distance(d: DecisionReport, at: str | None) -> float:
    if not at or not d.decision_ts:
        return 0.0
    return abs((from_iso(d.decision_ts) - from_iso(at)).total_seconds())


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _render_decision(d: DecisionReport, w: Printer, s: Style, stack_lines: int, full_links: bool,
                     verbose: bool = False) -> None:
    w("")
    w(s.bold(f"━━ decision {d.decision_id} ") + s.dim("━" * 20))
    head = [["market", str(d.market), "at", str(d.decision_ts), "loop", _num(d.loop)],
            ["run", str(d.bot_run_id), "spread", _num(d.spread), "from", d.records_from]]
    for line in _table(head, [[s.dim, None, s.dim, None, s.dim, None]] * 2):
        w(line)
    w("")
    rows = [["slot", "side", "price", "size", "verdict", "filled", "client_order_id", "detail"]]
    styles: list[list[Any]] = [[s.dim] * 8]
    for v in d.verdicts:
        e = v.expected or {}
        side = e.get("side") or next((a.place.get("side") for a in v.attempts if a.place), "")
        price = e.get("price") if e else next((a.place.get("price") for a in v.attempts if a.place), None)
        size = e.get("size") if e else v.size
        slot = str(v.slot) + ("" if v.expected is not None else " (unplanned)")
        rows.append([slot, str(side or ""), _num(price), _num(size), v.verdict.value, _num(v.filled),
                     str(v.client_order_id or ""), v.detail()])
        styles.append([None, None, None, None, s.verdict, None, s.dim, None])
    if len(rows) == 1:
        w("  " + s.dim("no target orders"))
    for line in _table(rows, styles):
        w(line)
    w("")
    w("  " + s.bold("timeline") + s.dim("  (time, offset from the decision, seq, event)"))
    rows, styles = [], []
    for e in d.timeline:
        mark = ""
        if e["event_type"] in ("ORDER_PLACE", "ORDER_RESULT", "ORDER_CANCEL", "FILL", "DECISION_MADE",
                               "ORDER_SUPPRESSED"):
            if e["in_ledger"] and not e["in_log"] and d.records_from == "ledger" and not _logs_absent(d):
                mark = "  [no log line]"
            elif e["in_log"] and not e["in_ledger"] and d.records_from == "ledger":
                mark = "  [not in ledger]"
        text = ("~ " if e.get("context") else "") + e["text"] + mark
        if e["fields"].get("stack"):
            text += "  (stack below)"
        rows.append([_clock(e.get("clock_ts") or e.get("ts")), _fmt_offset(e.get("offset_ms")),
                     f"#{e['seq']}" if e["seq"] is not None else "", e["event_type"], text])
        bad = (e["event_type"] == "ERROR"
               or e["fields"].get("status") in ("REJECTED", "UNKNOWN", "ERROR", "CANCEL_FAILED"))
        style = s.dim if e.get("context") else (s.red if bad else None)
        styles.append([s.dim, s.dim, s.dim, style, style])
    for line in _table(rows, styles, indent="    "):
        w(line)
    if any(e.get("context") for e in d.timeline):
        w("    " + s.dim("~ a line of this market without a decision_id, logged after this decision"))
    if d.errors:
        w("")
        w("  " + s.bold("errors"))
        for err in d.errors:
            w("    " + s.red(f"#{err.get('seq')} {err.get('error_type')}: {err.get('error_msg')}"))
            # scrubbed whole before it is split: a key spread over several lines is masked as one
            stack = scrub_text(str(err.get("stack") or "")).rstrip().splitlines()
            if stack and not stack_lines:
                w("      " + s.dim(f"(stack of {len(stack)} lines: --verbose, or explain {d.decision_id})"))
            elif stack:
                shown = stack if len(stack) <= stack_lines else ["…", *stack[-stack_lines:]]
                for line in shown:
                    w("      " + s.dim(line))
    if d.unassigned:
        w("")
        w("  " + s.bold("events that match no slot"))
        for r in d.unassigned:
            w(f"    #{r.get('seq')} {r.get('event_type')} order {r.get('order_id')} {r.get('status') or ''}")
    if d.notes:
        w("")
        for note in d.notes:
            w("  " + s.yellow(f"note: {note}"))
    insights = d.insights()
    w("")
    w("  " + s.dim("jaeger    ") + d.jaeger_url)
    if verbose:
        w("  " + s.dim("insights  ") + f"{insights['log_group']}  "
          + " ".join(p.strip() for p in insights["query"].splitlines()))
    else:
        w("  " + s.dim("insights  ") + f"{insights['log_group']}  filter attributes.decision_id = \"{d.decision_id}\""
          + s.dim("  (full query: --verbose or --json)"))
    if full_links and insights.get("aws_cli"):
        w("  " + s.dim("aws cli   ") + insights["aws_cli"])


def _logs_absent(d: DecisionReport) -> bool:
    return not any(e["in_log"] for e in d.timeline)


def _ranges_text(ranges: Iterable[Sequence[int]], limit: int = 8) -> str:
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges]
    if len(parts) > limit:
        parts = [*parts[:limit], f"… ({len(parts) - limit} more)"]
    return ", ".join(parts)


def render_reconcile(report: Any, stream: TextIO, *, color: bool = False, limit: int | None = 20) -> None:
    """The human summary of a reconcile run, answer first: the result, the counts, what may be
    missing, then the mismatching slots (``limit`` rows; None: all). The JSON lines go elsewhere."""
    s = Style(color)
    w = Printer(stream)
    w(s.bold(f"dora-otel reconcile {report.since} .. {report.until}"))
    w(s.dim(f"source: {report.source}"))
    slots = sum(len(r.mismatches) for r in report.mismatched)
    if report.decisions == 0:
        result = s.yellow(f"NO DATA (exit {report.exit_code}): no decisions in this range")
    elif report.mismatched:
        result = s.red(f"MISMATCHES (exit {report.exit_code}): {slots} slot(s) in {len(report.mismatched)} decision(s)")
    else:
        result = s.green(f"clean (exit {report.exit_code}): every expected order is accounted for")
    w(f"  result      {result}")
    counts = " · ".join(s.verdict(k) + f" {v}" for k, v in sorted(report.verdict_counts.items())) or "none"
    w(f"  decisions   {report.decisions}   slots {report.slots}   ({counts})")
    if report.suppressed:
        w(f"  suppressed  {len(report.suppressed)} slot(s) not sent on purpose "
          f"(not mismatches): {_short(_reasons(report.suppressed), 80)}")
    completeness = getattr(report, "completeness", None)
    if completeness is not None and not completeness.complete:
        for note in completeness.notes():
            w("  " + s.yellow(f"incomplete  {note}"))
    loss = report.telemetry_loss
    if not report.logs_available:
        w("  " + s.yellow("log loss    not checked: the log lines were not read"))
    elif loss:
        for run, info in sorted(loss.items()):
            w("  " + s.yellow(f"log loss    run {run}: {info['missing']} line(s) missing "
                             f"(seq {_ranges_text(info['ranges'])})"))
    else:
        w("  log loss    none: no gaps in the log lines' seq")
    ledger = report.ledger_loss
    if ledger["records_without_log_line"] or ledger["log_events_missing_from_ledger"]:
        w("  " + s.yellow(f"ledger/log  {len(ledger['records_without_log_line'])} ledger record(s) without their "
                         f"log line; {len(ledger['log_events_missing_from_ledger'])} logged event(s) missing from "
                         "the ledger"))
    if report.live is not None:
        live = report.live
        w(f"  exchange    {live['open_orders']} open order(s) checked; {live['mismatches']} mismatch(es); "
          f"{len(live['unattributed_open_orders'])} open order(s) from no decision in range")
    for note in report.notes:
        if not note.startswith("log lines unavailable"):
            w("  " + s.yellow(f"note: {note}"))
    if report.mismatched:
        w("")
        w(s.bold(f"mismatches ({slots} slot(s) in {len(report.mismatched)} decision(s))"))
        rows, styles = [], []
        for r in report.mismatched:
            for m in r.mismatches:
                rows.append([_clock(r.decision_ts), r.decision_id, str(r.market), f"slot {m['slot']}", m["verdict"],
                             _short(str(m["detail"]), 90)])
                styles.append([s.dim, None, None, s.dim, s.verdict, None])
        shown = rows if limit is None else rows[:limit]
        for line in _table(shown, styles[:len(shown)], indent="  "):
            w(line)
        if len(shown) < len(rows):
            w(s.dim(f"  {len(rows) - len(shown)} more mismatching slot(s) not shown: --all, or --json for everything"))
        w(s.dim("  (dora-otel explain DECISION_ID shows one in full)"))


def _reasons(suppressed: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for item in suppressed:
        reason = str(item.get("reason") or "no reason given")
        counts[reason] = counts.get(reason, 0) + 1
    by_count = sorted(counts.items(), key=lambda kv: -kv[1])
    return "; ".join(f"{reason} ×{n}" if n > 1 else reason for reason, n in by_count)
