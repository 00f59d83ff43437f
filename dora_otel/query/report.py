"""`dora-otel report`: one self-contained HTML file that shows a time range at a glance.

Owns the reading of a range for the picture (every decision of the range, or of the asked
markets, judged slot by slot like explain and reconcile) and the HTML: a strip per market with one
mark per decision, coloured by its worst verdict, on a real time axis; under it, per decision, a
small timeline (decision → place → result → cancel / fill, with latencies, on a log time scale)
and the verdict of each slot, with reasons and errors on hover (SVG ``<title>``) and in an
expandable table (``<details>``). Clicking a mark opens its decision.

The file needs nothing from the network: inline CSS, inline SVG, a few lines of inline JS (no
CDN, no fonts, no images). Every text in it is HTML-escaped, and the whole file passes the one
scrubbing path (:mod:`dora_otel.query.output`) before it is written.

Runs on the caller's thread; blocks on the ledger reads (a small thread pool for DynamoDB).
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

from dora_otel.query import completeness as completeness_mod
from dora_otel.query.output import scrub_text
from dora_otel.query.sources import Source, describe_reader
from dora_otel.query.times import from_iso, iso
from dora_otel.query.verdicts import (
    SEVERITY,
    SlotVerdict,
    Verdict,
    judge_decision,
    worst,
)

__all__ = ["VERDICT_COLORS", "Report", "ReportDecision", "build_report", "render_html"]

# one colour per verdict (the terminal's palette, as hex); NONE: a decision without target orders
VERDICT_COLORS = {
    "UNKNOWN": "#9b1c1c", "REJECTED": "#e0413a", "NOT_SENT": "#b23ab0", "SUPPRESSED": "#8c8c8c",
    "PARTIAL": "#d69e12", "RESTING": "#1b98b5", "CANCELLED": "#4569d4", "FILLED": "#2f9e4a", "NONE": "#c8c8c8",
}
_STATUS_COLORS = {"ACCEPTED": "#2f9e4a", "DUPLICATE": "#1b98b5", "REJECTED": "#e0413a", "UNKNOWN": "#9b1c1c",
                  "ERROR": "#9b1c1c", "CANCELLED": "#4569d4", "CANCEL_FAILED": "#e0413a", "CANCEL_UNKNOWN": "#9b1c1c"}


@dataclasses.dataclass
class ReportDecision:
    decision_id: str
    market: str
    decision_ts: str
    verdicts: list[SlotVerdict]

    @property
    def worst(self) -> str:
        found = worst(v.verdict for v in self.verdicts)
        return found.value if found else "NONE"


@dataclasses.dataclass
class Report:
    since: str
    until: str
    source: str
    markets: dict[str, list[ReportDecision]]
    completeness: completeness_mod.Completeness | None

    @property
    def decisions(self) -> int:
        return sum(len(d) for d in self.markets.values())


def build_report(source: Source, since: datetime, until: datetime, markets: Sequence[str] = (),
                 *, workers: int | None = None) -> Report:
    """Read and judge every decision of the range (of ``markets`` when given)."""
    reader = source.reader
    if reader is None:
        raise LookupError("report needs a ledger to read: no SQLite ledger in the data directory "
                          "(or pass --ledger dynamodb)")
    if markets:
        decisions = [d for m in markets for d in reader.decisions_for_market(m, iso(since), iso(until))]
    else:
        decisions = reader.decisions_between(iso(since), iso(until))

    def read(d: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[dict[str, Any]]]:
        return d, reader.events_for_decision(d["decision_id"])

    pool = workers or int(getattr(source, "parallel_reads", 1) or 1)
    if pool > 1 and len(decisions) > 1:
        with ThreadPoolExecutor(max_workers=pool, thread_name_prefix="dora-report") as executor:
            read_all = list(executor.map(read, decisions))
    else:
        read_all = [read(d) for d in decisions]
    by_market: dict[str, list[ReportDecision]] = {m: [] for m in markets}
    for d, events in read_all:
        verdicts, _ = judge_decision(d.get("target_orders") or [], events)
        market = str(d.get("market"))
        by_market.setdefault(market, []).append(
            ReportDecision(d["decision_id"], market, str(d.get("decision_ts")), verdicts))
    for items in by_market.values():
        items.sort(key=lambda r: (r.decision_ts, r.decision_id))
    check = completeness_mod.check(store=describe_reader(reader), journal_dir=getattr(source, "journal_dir", None),
                                   range_end=iso(until), logs_read=True)
    return Report(iso(since), iso(until), describe_reader(reader), dict(sorted(by_market.items())), check)


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

_STRIP_W, _STRIP_H, _PAD_L, _PAD_R = 1000, 46, 8, 8
_TL_W, _TL_LABEL, _LANE_H = 640, 190, 18
_TICKS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900,
            1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _e(value: Any) -> str:
    """Every text that goes into the page: scrubbed (the one output path), then HTML-escaped."""
    return html.escape(scrub_text(str(value)), quote=True)


def _clock(ts: str | None, *, micro: bool = False) -> str:
    if not ts or "T" not in ts:
        return str(ts or "")
    text = ts.split("T", 1)[1].rstrip("Z")
    return text[:15] if micro else text[:12]


def _tick_step(span_s: float) -> float:
    return next((t for t in _TICKS_S if span_s / t <= 10), _TICKS_S[-1])


def _axis(start: datetime, end: datetime) -> tuple[Callable[[datetime], float], list[tuple[float, str]]]:
    span = max((end - start).total_seconds(), 1e-3)
    width = _STRIP_W - _PAD_L - _PAD_R

    def x(at: datetime) -> float:
        return _PAD_L + width * min(max((at - start).total_seconds() / span, 0.0), 1.0)

    step = _tick_step(span)
    first = math.ceil(start.timestamp() / step) * step
    ticks = []
    t = first
    while t <= end.timestamp() + 1e-9:
        at = datetime.fromtimestamp(t, tz=timezone.utc)
        if step < 1:
            label = at.strftime("%H:%M:%S") + f".{at.microsecond // 1000:03d}"
        else:
            label = at.strftime("%H:%M:%S" if step < 86400 else "%m-%d %H:%M")
        ticks.append((x(at), label))
        t = first + step * len(ticks)
    return x, ticks


def _slot_title(v: SlotVerdict) -> str:
    e = v.expected or {}
    what = f"{e.get('side', '?')} {e.get('size', v.size)} @ {e.get('price', '?')}" if e else "unplanned order"
    return f"slot {v.slot} {what}: {v.verdict.value} — {v.detail()}"


def _decision_title(d: ReportDecision) -> str:
    lines = [f"{d.market} {d.decision_ts}", f"decision {d.decision_id}: worst {d.worst}"]
    lines += [_slot_title(v) for v in d.verdicts]
    return "\n".join(lines)


def _strip(market: str, decisions: list[ReportDecision], x: Callable[[datetime], float],
           ticks: list[tuple[float, str]]) -> str:
    parts = [(f'<svg class="strip" viewBox="0 0 {_STRIP_W} {_STRIP_H}" width="{_STRIP_W}" height="{_STRIP_H}" '
              f'role="img" aria-label="decisions of {_e(market)}">'),
             f'<line class="axis" x1="{_PAD_L}" y1="30" x2="{_STRIP_W - _PAD_R}" y2="30"/>']
    for tx, label in ticks:
        parts.append(f'<line class="tick" x1="{tx:.1f}" y1="30" x2="{tx:.1f}" y2="34"/>'
                     f'<text class="ticklabel" x="{tx:.1f}" y="44">{_e(label)}</text>')
    # healthy first, the worst last: a failure is never hidden under a healthy mark
    ranked = sorted(decisions, key=lambda d: -(SEVERITY.index(Verdict(d.worst)) if d.worst != "NONE" else 99))
    for d in ranked:
        cx = x(from_iso(d.decision_ts))
        bad = d.worst in ("UNKNOWN", "REJECTED", "NOT_SENT")
        height, top = (24, 3) if bad else (16, 7)
        parts.append(f'<a href="#d-{_e(d.decision_id)}">'
                     f'<rect class="mark v-{_e(d.worst)}" data-verdict="{_e(d.worst)}" '
                     f'data-decision="{_e(d.decision_id)}" x="{cx - 1.5:.1f}" y="{top}" width="3" height="{height}">'
                     f'<title>{_e(_decision_title(d))}</title></rect></a>')
    parts.append("</svg>")
    return "".join(parts)


def _events(v: SlotVerdict) -> list[tuple[str, str, str, str]]:
    """(event_ts, kind, colour, text) for the slot's timeline lane."""
    out = []
    for a in v.attempts:
        if a.place:
            out.append((str(a.place.get("event_ts")), "place", "#555",
                        (f"ORDER_PLACE {a.place.get('side')} {a.place.get('size')} @ {a.place.get('price')} "
                         f"client_order_id {a.client_order_id}")))
        if a.result:
            r = a.result
            timed = isinstance(r.get("latency_ms"), (int, float))
            latency = f"{float(r['latency_ms']):.1f} ms" if timed else "latency ?"
            why = f" — {r.get('error_type') or ''} {r.get('error_msg') or ''}".rstrip() if r.get("error_msg") else ""
            out.append((str(r.get("event_ts")), "result", _STATUS_COLORS.get(str(r.get("status")), "#555"),
                        f"ORDER_RESULT {r.get('status')} after {latency}{why}"))
    for c in v.cancels:
        status = c.get("status") or "requested"
        latency = f" after {float(c['latency_ms']):.1f} ms" if isinstance(c.get("latency_ms"), (int, float)) else ""
        why = f" — {c.get('error_msg') or c.get('reason')}" if (c.get("error_msg") or c.get("reason")) else ""
        out.append((str(c.get("event_ts")), "cancel", _STATUS_COLORS.get(str(status), "#888"),
                    f"ORDER_CANCEL {status}{latency}{why}"))
    for f in v.fills:
        out.append((str(f.get("event_ts")), "fill", VERDICT_COLORS["FILLED"],
                    f"FILL {f.get('size')} @ {f.get('price')}"))
    for s in v.suppressed:
        out.append((str(s.get("event_ts")), "suppressed", VERDICT_COLORS["SUPPRESSED"],
                    f"ORDER_SUPPRESSED — {s.get('reason')}"))
    return [e for e in out if e[0] and e[0] != "None"]


def _shape(kind: str, x: float, y: float, color: str, title: str) -> str:
    t = f"<title>{_e(title)}</title>"
    if kind == "place":
        return (f'<circle class="ev ev-place" cx="{x:.1f}" cy="{y}" r="4" fill="#fff" stroke="{color}" '
                f'stroke-width="1.5">{t}</circle>')
    if kind == "result":
        return f'<circle class="ev ev-result" cx="{x:.1f}" cy="{y}" r="4.5" fill="{color}">{t}</circle>'
    if kind == "cancel":
        return f'<rect class="ev ev-cancel" x="{x - 4:.1f}" y="{y - 4}" width="8" height="8" fill="{color}">{t}</rect>'
    if kind == "fill":
        return (f'<path class="ev ev-fill" d="M{x:.1f},{y - 5} L{x + 5:.1f},{y + 4} L{x - 5:.1f},{y + 4} Z" '
                f'fill="{color}">{t}</path>')
    return (f'<path class="ev ev-suppressed" d="M{x - 4:.1f},{y - 4} L{x + 4:.1f},{y + 4} M{x + 4:.1f},{y - 4} '
            f'L{x - 4:.1f},{y + 4}" stroke="{color}" stroke-width="2">{t}</path>')


def _timeline(d: ReportDecision) -> str:
    """One lane per slot; x = time since the decision on a log scale (milliseconds to minutes)."""
    origin = from_iso(d.decision_ts)
    lanes = [(v, _events(v)) for v in d.verdicts]
    offsets = [max(0.0, (from_iso(ts) - origin).total_seconds() * 1000) for _, evs in lanes for ts, *_ in evs]
    top = max(offsets, default=1.0)
    scale = math.log10(1 + max(top, 1.0))
    plot_w = _TL_W - _TL_LABEL - 20

    def x(ms: float) -> float:
        return _TL_LABEL + plot_w * math.log10(1 + max(ms, 0.0)) / scale

    height = 24 + _LANE_H * max(1, len(lanes))
    parts = [f'<svg class="timeline" viewBox="0 0 {_TL_W} {height}" width="{_TL_W}" height="{height}">',
             (f'<path class="decision-mark" d="M{_TL_LABEL},4 l5,6 l-5,6 l-5,-6 Z"><title>'
              f'{_e("decision at " + d.decision_ts)}</title></path>')]
    for grid in (1, 10, 100, 1000, 10000, 60000, 600000):
        if grid <= top * 0.8:  # leaves room for the closing label
            tx = x(grid)
            label = f"{grid} ms" if grid < 1000 else f"{grid // 1000} s"
            parts.append(f'<line class="grid" x1="{tx:.1f}" y1="16" x2="{tx:.1f}" y2="{height - 10}"/>'
                         f'<text class="ticklabel" x="{tx:.1f}" y="{height - 1}">{label}</text>')
    if top > 1.0:  # the latest event's offset closes the axis
        label = f"{top:.0f} ms" if top < 1000 else f"{top / 1000:.1f} s"
        parts.append(f'<text class="ticklabel" x="{x(top):.1f}" y="{height - 1}">{label}</text>')
    for i, (v, evs) in enumerate(lanes):
        y = 24 + i * _LANE_H
        parts.append(f'<text class="lane v-{_e(v.verdict.value)}" x="4" y="{y + 4}">slot {_e(v.slot)} '
                     f'{_e(v.verdict.value)}<title>{_e(_slot_title(v))}</title></text>')
        points = sorted(((max(0.0, (from_iso(ts) - origin).total_seconds() * 1000), kind, color, text)
                         for ts, kind, color, text in evs), key=lambda p: p[0])
        if points:
            parts.append(f'<line class="lane-line" x1="{x(points[0][0]):.1f}" y1="{y}" '
                         f'x2="{x(points[-1][0]):.1f}" y2="{y}"/>')
        for at_ms, kind, color, text in points:
            parts.append(_shape(kind, x(at_ms), y, color, f"+{at_ms:.1f} ms  {text}"))
        answered = [a for a in v.attempts if a.result]
        for a in answered[-1:]:  # the last place -> result latency, written above its result
            r = a.result or {}
            if isinstance(r.get("latency_ms"), (int, float)) and r.get("event_ts"):
                answered_ms = max(0.0, (from_iso(str(r["event_ts"])) - origin).total_seconds() * 1000)
                parts.append(f'<text class="latency" x="{x(answered_ms) + 6:.1f}" y="{y - 4}">'
                             f'{float(r["latency_ms"]):.1f} ms</text>')
    parts.append("</svg>")
    return "".join(parts)


def _details(d: ReportDecision) -> str:
    rows = []
    for v in d.verdicts:
        e = v.expected or {}
        errors = [str(a.result.get("error_msg")) for a in v.attempts if a.result and a.result.get("error_msg")]
        errors += [str(c.get("error_msg")) for c in v.cancels if c.get("error_msg")]
        latencies = [f"{float(a.result['latency_ms']):.1f}" for a in v.attempts
                     if a.result and isinstance(a.result.get("latency_ms"), (int, float))]
        rows.append(
            f'<tr><td>{_e(v.slot)}</td><td>{_e(e.get("side", ""))}</td><td>{_e(e.get("price", ""))}</td>'
            f'<td>{_e(e.get("size", v.size if v.size is not None else ""))}</td>'
            f'<td><span class="badge v-{_e(v.verdict.value)}" data-verdict="{_e(v.verdict.value)}">'
            f'{_e(v.verdict.value)}'
            f'</span></td><td>{_e(", ".join(latencies))}</td><td>{_e(v.detail())}</td>'
            f'<td class="err">{_e("; ".join(errors))}</td></tr>')
    flagged = d.worst in ("UNKNOWN", "REJECTED", "NOT_SENT")
    return (f'<details class="decision" id="d-{_e(d.decision_id)}" data-verdict="{_e(d.worst)}"'
            f'{" open" if flagged else ""}>'
            f'<summary><span class="badge v-{_e(d.worst)}">{_e(d.worst)}</span> '
            f'<code>{_e(_clock(d.decision_ts, micro=True))}'
            f'</code> {_e(d.market)} <code class="id">{_e(d.decision_id)}</code></summary>'
            f'{_timeline(d)}<table><thead><tr><th>slot</th><th>side</th><th>price</th><th>size</th><th>verdict</th>'
            f'<th>latency ms</th><th>why</th><th>errors</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<p class="hint">dora-otel explain {_e(d.decision_id)}</p></details>')


_CSS = """
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px 24px;color:#1d1d1f;background:#fff}
h1{font-size:18px;margin:0 0 4px} h2{font-size:14px;margin:18px 0 4px} .meta{color:#666;margin:0 0 8px}
.warn{background:#fff6d6;border:1px solid #e6c34a;padding:6px 10px;margin:6px 0;border-radius:4px}
.legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;
vertical-align:middle;border-radius:2px}
svg text{font:10px system-ui,sans-serif;fill:#555} .ticklabel{text-anchor:middle}
.axis,.tick,.grid{stroke:#bbb} .grid{stroke-dasharray:2 3} .lane-line{stroke:#ccc;stroke-width:1.5}
.decision-mark{fill:#1d1d1f} svg text.latency{font-size:9px;fill:#777}
.mark{cursor:pointer} .mark:hover{stroke:#000;stroke-width:1}
.counts{margin:2px 0 0;color:#444} .markets{margin-bottom:12px}
details.decision{border:1px solid #e3e3e3;border-radius:4px;margin:4px 0;padding:2px 8px}
details.decision summary{cursor:pointer} details.decision[open]{background:#fafafa}
table{border-collapse:collapse;margin:4px 0 6px} td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #eee;
vertical-align:top} th{color:#666;font-weight:500} td.err{color:#b00}
.badge{display:inline-block;color:#fff;border-radius:3px;padding:0 5px;font-size:11px;font-weight:600}
code.id{color:#888} .hint{color:#888;margin:0 0 4px;font-family:monospace}
"""

_JS = """
document.addEventListener('click', function (ev) {
  var a = ev.target.closest('a[href^="#d-"]');
  if (!a) return;
  var d = document.getElementById(a.getAttribute('href').slice(1));
  if (d) { d.open = true; }
});
window.addEventListener('load', function () {
  // the colour each mark really renders with, for checks in a headless browser
  document.querySelectorAll('.mark').forEach(function (m) {
    m.setAttribute('data-rendered-fill', getComputedStyle(m).fill);
  });
  document.body.setAttribute('data-ready', String(document.querySelectorAll('.mark').length));
});
"""


def _verdict_css() -> str:
    rules = []
    for verdict, color in VERDICT_COLORS.items():
        rules.append(f".mark.v-{verdict}{{fill:{color}}} .badge.v-{verdict}{{background:{color}}} "
                     f"text.lane.v-{verdict}{{fill:{color};font-weight:600}} "
                     f".legend i.v-{verdict}{{background:{color}}}")
    return "\n".join(rules)


def render_html(report: Report, *, generated_at: datetime | None = None) -> str:
    """The report as one HTML document (every text in it scrubbed and escaped by ``_e``)."""
    generated = iso(generated_at or datetime.now(timezone.utc))
    start, end = from_iso(report.since), from_iso(report.until)
    all_decisions = [d for items in report.markets.values() for d in items]
    if all_decisions:  # the axis spans the decisions (with a margin), within the asked range
        first = from_iso(min(d.decision_ts for d in all_decisions))
        last = from_iso(max(d.decision_ts for d in all_decisions))
        margin = max((last - first) * 0.03, timedelta(milliseconds=50))
        start, end = max(start, first - margin), min(end, last + margin)
    x, ticks = _axis(start, end)
    counts: dict[str, int] = {}
    for d in all_decisions:
        for v in d.verdicts:
            counts[v.verdict.value] = counts.get(v.verdict.value, 0) + 1
    mismatched = sum(1 for d in all_decisions if any(v.mismatch for v in d.verdicts))
    warnings = report.completeness.notes() if report.completeness and not report.completeness.complete else []
    if not all_decisions:
        warnings.append("no decisions in this range: a bot that stopped deciding, or the wrong data directory / env")
    legend = "".join(f'<span><i class="v-{v}"></i>{v}</span>' for v in VERDICT_COLORS if v != "NONE")
    body = [f"<h1>dora-otel report: {len(report.markets)} market(s), {len(all_decisions)} decision(s)</h1>",
            (f'<p class="meta">{_e(report.since)} .. {_e(report.until)} · source {_e(report.source)} · '
             f"generated {_e(generated)}</p>"),
            f'<p class="counts">{mismatched} decision(s) with a mismatch · slots: '
            + _e(" · ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none") + "</p>",
            f'<p class="legend">{legend}</p>']
    body += [f'<div class="warn">{_e(w)}</div>' for w in warnings]
    body.append('<div class="markets">')
    for market, items in report.markets.items():
        bad = sum(1 for d in items if any(v.mismatch for v in d.verdicts))
        body.append(f'<section class="market" data-market="{_e(market)}"><h2>{_e(market)} '
                    f'<small class="meta">{len(items)} decision(s), {bad} with a mismatch</small></h2>'
                    f"{_strip(market, items, x, ticks)}</section>")
    body.append("</div><h2>decisions</h2>")
    for items in report.markets.values():
        body += [_details(d) for d in items]
    document = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
                "script-src 'unsafe-inline'\">"
                f"<title>dora-otel report {_e(report.since)} .. {_e(report.until)}</title>"
                f"<style>{_CSS}{_verdict_css()}</style></head><body>{''.join(body)}<script>{_JS}</script></body></html>\n")
    return document
