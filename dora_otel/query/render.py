"""Terminal and JSON output of the query commands.

Owns how an explain or reconcile answer looks: aligned columns, times relative to the decision,
verdicts in colour — colour only when the stream is a TTY and NO_COLOR is unset
(https://no-color.org) — and `--json` as one JSON document for scripts. Pure formatting; the only
I/O is writing to the given stream.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from dora_otel.query.explain import DecisionReport, ExplainReport, verdict_counts
from dora_otel.query.times import from_iso

__all__ = ["Style", "render_explain", "render_json", "render_reconcile", "use_color"]

_VERDICT_COLOR = {"FILLED": "32", "RESTING": "36", "PARTIAL": "33", "CANCELLED": "34",
                  "REJECTED": "31", "UNKNOWN": "31;1", "NOT_SENT": "35;1"}
_STACK_LINES_INLINE = 0


def use_color(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except Exception:
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
    stream.write(json.dumps(value, indent=2, default=str, ensure_ascii=False) + "\n")


def _table(rows: Sequence[Sequence[str]], styles: Sequence[Sequence[Any]] | None = None, indent: str = "  ") -> list[str]:
    """Left-aligned columns sized to their content; ``styles[i][j]`` styles a cell after padding
    (so escape codes never break the alignment). The last column is not padded."""
    if not rows:
        return []
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(max(len(r) for r in rows))]
    out = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            text = cell if j == len(row) - 1 else cell.ljust(widths[j])
            style = styles[i][j] if styles and j < len(styles[i]) else None
            cells.append(style(text) if style else text)
        out.append((indent + "  ".join(cells)).rstrip())
    return out


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _offset(ts: str | None, base: str | None) -> str:
    if not ts or not base:
        return ""
    try:
        delta = (from_iso(ts) - from_iso(base)).total_seconds()
    except ValueError:
        return ""
    if abs(delta) < 10:
        return f"{delta * 1000:+.1f}ms"
    if abs(delta) < 600:
        return f"{delta:+.1f}s"
    return f"{delta / 60:+.1f}min"


def _clock(ts: str | None) -> str:
    if not ts or "T" not in ts:
        return ts or ""
    return ts.split("T", 1)[1].rstrip("Z")[:12]


def render_explain(report: ExplainReport, stream: TextIO, *, color: bool = False, stack_lines: int = 12) -> None:
    s = Style(color)
    w = stream.write
    q = report.question
    if "decision_id" in q:
        w(s.bold(f"dora-otel explain {q['decision_id']}") + "\n")
    else:
        window = q.get("window_s", 0)
        w(s.bold(f"dora-otel explain --market {q['market']} --at {q['at']}") + f"  (± {_num(window)} s)\n")
    w(s.dim(f"source: {report.source}") + "\n")
    counts = verdict_counts(report.decisions)
    summary = " · ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    w(f"{len(report.decisions)} decision(s)" + (f" · slots: {summary}" if summary else "") + "\n")
    for note in report.notes:
        w(s.yellow(f"note: {note}") + "\n")
    for decision in report.decisions:
        _render_decision(decision, w, s, stack_lines, full_links=len(report.decisions) == 1)
    if report.unmatched_fills:
        w("\n" + s.bold("fills that match no decision") + s.dim("  (ledger decision_id unmatched:<market>)") + "\n")
        rows = [["time", "side", "size", "price", "order_id", "pnl"]]
        for f in report.unmatched_fills:
            rows.append([str(f.get("event_ts", "")), str(f.get("side", "")), _num(f.get("size")),
                         _num(f.get("price")), str(f.get("order_id", "")), _num(f.get("pnl_delta"))])
        for line in _table(rows, [[s.dim] * 6] + [[None] * 6] * (len(rows) - 1)):
            w(line + "\n")


def _render_decision(d: DecisionReport, w: Any, s: Style, stack_lines: int, full_links: bool) -> None:
    w("\n" + s.bold(f"━━ decision {d.decision_id} ") + s.dim("━" * 20) + "\n")
    head = [["market", str(d.market), "at", str(d.decision_ts), "loop", _num(d.loop)],
            ["run", str(d.bot_run_id), "spread", _num(d.spread), "from", d.records_from]]
    for line in _table(head, [[s.dim, None, s.dim, None, s.dim, None]] * 2):
        w(line + "\n")
    w("\n")
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
        w("  " + s.dim("no target orders") + "\n")
    for line in _table(rows, styles):
        w(line + "\n")
    w("\n  " + s.bold("timeline") + s.dim("  (time, offset from the decision, seq, event)") + "\n")
    rows, styles = [], []
    for e in d.timeline:
        mark = ""
        if e["event_type"] in ("ORDER_PLACE", "ORDER_RESULT", "ORDER_CANCEL", "FILL", "DECISION_MADE"):
            if e["in_ledger"] and not e["in_log"] and d.records_from == "ledger" and not _logs_absent(d):
                mark = "  [no log line]"
            elif e["in_log"] and not e["in_ledger"] and d.records_from == "ledger":
                mark = "  [not in ledger]"
        text = ("~ " if e.get("context") else "") + e["text"] + mark
        if e["fields"].get("stack"):
            text += "  (stack below)"
        rows.append([_clock(e.get("ts")), _offset(e.get("ts"), d.decision_ts), f"#{e['seq']}" if e["seq"] is not None else "",
                     e["event_type"], text])
        bad = e["event_type"] == "ERROR" or e["fields"].get("status") in ("REJECTED", "UNKNOWN", "ERROR", "CANCEL_FAILED")
        style = s.dim if e.get("context") else (s.red if bad else None)
        styles.append([s.dim, s.dim, s.dim, style, style])
    for line in _table(rows, styles, indent="    "):
        w(line + "\n")
    if any(e.get("context") for e in d.timeline):
        w("    " + s.dim("~ a line of this market without a decision_id, logged after this decision") + "\n")
    if d.errors:
        w("\n  " + s.bold("errors") + "\n")
        for err in d.errors:
            w("    " + s.red(f"#{err.get('seq')} {err.get('error_type')}: {err.get('error_msg')}") + "\n")
            stack = str(err.get("stack") or "").rstrip().splitlines()
            if stack:
                shown = stack if len(stack) <= stack_lines else ["…"] + stack[-stack_lines:]
                for line in shown:
                    w("      " + s.dim(line) + "\n")
    if d.unassigned:
        w("\n  " + s.bold("events that match no slot") + "\n")
        for r in d.unassigned:
            w(f"    #{r.get('seq')} {r.get('event_type')} order {r.get('order_id')} {r.get('status') or ''}\n")
    if d.notes:
        w("\n")
        for note in d.notes:
            w("  " + s.yellow(f"note: {note}") + "\n")
    insights = d.insights()
    w("\n")
    w("  " + s.dim("jaeger    ") + d.jaeger_url + "\n")
    w("  " + s.dim("insights  ") + f"{insights['log_group']}  " + " ".join(p.strip() for p in insights["query"].splitlines()) + "\n")
    if full_links and insights.get("aws_cli"):
        w("  " + s.dim("aws cli   ") + insights["aws_cli"] + "\n")


def _logs_absent(d: DecisionReport) -> bool:
    return not any(e["in_log"] for e in d.timeline)


def _ranges_text(ranges: Iterable[Sequence[int]], limit: int = 8) -> str:
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges]
    if len(parts) > limit:
        parts = parts[:limit] + [f"… ({len(parts) - limit} more)"]
    return ", ".join(parts)


def render_reconcile(report: Any, stream: TextIO, *, color: bool = False) -> None:
    """The human summary of a reconcile run (the JSON lines go through logging)."""
    s = Style(color)
    w = stream.write
    w(s.bold(f"dora-otel reconcile {report.since} .. {report.until}") + "\n")
    w(s.dim(f"source: {report.source}") + "\n")
    counts = " · ".join(f"{k} {v}" for k, v in sorted(report.verdict_counts.items())) or "none"
    w(f"  decisions   {report.decisions}   slots {report.slots}   ({counts})\n")
    if report.mismatched:
        w("  " + s.red(f"mismatches  {sum(len(r.mismatches) for r in report.mismatched)} slot(s) in "
                      f"{len(report.mismatched)} decision(s)") + "\n")
        rows = []
        styles = []
        for r in report.mismatched:
            for m in r.mismatches:
                rows.append([r.decision_id, str(r.market), f"slot {m['slot']}", m["verdict"], str(m["detail"])])
                styles.append([None, None, None, s.verdict, None])
        for line in _table(rows, styles, indent="    "):
            w(line + "\n")
    else:
        w("  " + s.green("mismatches  none: every expected order is accounted for") + "\n")
    loss = report.telemetry_loss
    if loss:
        for run, info in sorted(loss.items()):
            w("  " + s.yellow(f"log loss    run {run}: {info['missing']} line(s) missing "
                             f"(seq {_ranges_text(info['ranges'])})") + "\n")
    else:
        w("  log loss    none" + ("" if report.logs_available else " (logs not read)") + "\n")
    ledger = report.ledger_loss
    if ledger["records_without_log_line"] or ledger["log_events_missing_from_ledger"]:
        w("  " + s.yellow(f"ledger/log  {len(ledger['records_without_log_line'])} ledger record(s) without their log line; "
                         f"{len(ledger['log_events_missing_from_ledger'])} logged event(s) missing from the ledger") + "\n")
    if report.live is not None:
        live = report.live
        w(f"  exchange    {live['open_orders']} open order(s) checked; {live['mismatches']} mismatch(es); "
          f"{len(live['unattributed_open_orders'])} open order(s) from no decision in range\n")
    for note in report.notes:
        w("  " + s.yellow(f"note: {note}") + "\n")
    verdict = s.red("MISMATCHES (exit 1)") if report.mismatched else s.green("clean (exit 0)")
    w(f"  result      {verdict}\n")
