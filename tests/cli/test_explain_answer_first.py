"""explain leads with the answer: a summary, the decision nearest the asked time in full within the
first screen (40 lines), every decision with a mismatch listed, the rest counted; timelines in the
run's own order with offsets that never go back; answers that say when they may be incomplete."""

from __future__ import annotations

import io
import json
import shutil
from datetime import timedelta
from typing import Any

import orjson

from dora_otel.query.explain import explain_decision, explain_market
from dora_otel.query.local import LocalSource
from dora_otel.query.reconcile import reconcile
from dora_otel.query.render import render_explain, render_reconcile
from dora_otel.query.times import from_iso, parse_time
from tests.query._helpers import MARKETS, dora_cli

SCREEN = 40


def _explain_text(data_dir: Any, market: str, at: str, **kwargs: Any) -> tuple[Any, list[str]]:
    report = explain_market(LocalSource(data_dir), market, from_iso(at), timedelta(minutes=2))
    out = io.StringIO()
    render_explain(report, out, **kwargs)
    return report, out.getvalue().splitlines()


def test_the_summary_and_the_nearest_decision_fit_the_first_screen_and_every_mismatch_is_listed(cli_run):
    reader = LocalSource(cli_run.data_dir).reader
    assert reader is not None
    made = reader.decisions_for_market(MARKETS[0], "2000-01-01T00:00:00.000000Z", "2100-01-01T00:00:00.000000Z")
    # ask about every 5th decision of the market, at its own time: healthy ones and ones that went wrong
    for asked in made[::5]:
        report, text = _explain_text(cli_run.data_dir, MARKETS[0], asked["decision_ts"])
        nearest = report.nearest()
        assert nearest is not None and nearest.decision_id == asked["decision_id"]
        assert text[2].startswith(f"{len(report.decisions)} decision(s)")  # the summary comes first
        start = text.index(next(t for t in text if t.startswith(f"━━ decision {nearest.decision_id}")))
        end = next(i for i, t in enumerate(text) if t.lstrip().startswith("insights") and i > start)
        assert end < SCREEN, "\n".join(text[:end + 1])
        body = "\n".join(text)
        mismatched = [d for d in report.decisions if d.mismatch]
        assert mismatched and all(d.decision_id in body for d in mismatched)
        # a decision with an order the bot held back on purpose (SUPPRESSED) is listed too, not counted healthy
        suppressed = [d for d in report.decisions if d.suppressed]
        assert suppressed and all(d.decision_id in body for d in suppressed)
        flagged = [d for d in report.decisions if (d.mismatch or d.suppressed) and d is not nearest]
        healthy_hidden = len(report.decisions) - 1 - len(flagged)
        assert f"{healthy_hidden} healthy decision(s) not shown: --all" in body


def test_the_cli_default_is_summary_first_and_all_and_limit_show_more(cli_run):
    data = str(cli_run.data_dir)
    reader = LocalSource(cli_run.data_dir).reader
    assert reader is not None
    made = reader.decisions_for_market(MARKETS[1], "2000-01-01T00:00:00.000000Z", "2100-01-01T00:00:00.000000Z")
    at = dict(made[len(made) // 2])
    at["ts"] = at["decision_ts"]
    default = dora_cli("explain", "--market", MARKETS[1], "--at", at["ts"], "--data-dir", data).stdout
    assert default.count("━━ decision ") == 1 and f"━━ decision {at['decision_id']}" in default
    assert "nearest decision to" in default.splitlines()[4] or "nearest decision to" in default.splitlines()[3]
    everything = dora_cli("explain", "--market", MARKETS[1], "--at", at["ts"], "--all", "--data-dir", data).stdout
    window = json.loads(dora_cli("explain", "--market", MARKETS[1], "--at", at["ts"], "--json", "--data-dir",
                                 data).stdout)
    assert everything.count("━━ decision ") == len(window["decisions"]) > 3
    assert window["summary"]["nearest_decision_id"] == at["decision_id"]
    assert set(window["summary"]["mismatched_decisions"]) == {d["decision_id"] for d in window["decisions"]
                                                             if d["mismatch"]}
    three = dora_cli("explain", "--market", MARKETS[1], "--at", at["ts"], "--limit", "3", "--data-dir", data).stdout
    assert three.count("━━ decision ") == 3


def test_without_at_explain_shows_the_latest_decisions(cli_run):
    proc = dora_cli("explain", "--market", MARKETS[2], "--json", "--data-dir", str(cli_run.data_dir))
    assert proc.returncode == 0, proc.stderr
    latest = [ln for ln in cli_run.lines() if ln["event_type"] == "DECISION_MADE" and ln["market"] == MARKETS[2]][-1]
    assert json.loads(proc.stdout)["summary"]["nearest_decision_id"] == latest["decision_id"]


class _Reader:
    """A ledger reader over fixed records (what a restarted bot's ledger holds)."""

    def __init__(self, decision: dict[str, Any], events: list[dict[str, Any]]) -> None:
        self._decision, self._events = decision, events

    def decision(self, decision_id: str) -> dict[str, Any] | None:
        return self._decision if decision_id == self._decision["decision_id"] else None

    def events_for_decision(self, decision_id: str) -> list[dict[str, Any]]:
        return [e for e in self._events if e["decision_id"] == decision_id]

    def decisions_for_market(self, market: str, start: Any, end: Any) -> list[dict[str, Any]]:
        return [self._decision]

    def decisions_between(self, start: Any, end: Any) -> list[dict[str, Any]]:
        return [self._decision]


def test_a_timeline_whose_events_share_a_millisecond_keeps_the_runs_order_and_never_goes_back(tmp_path):
    did = "ab" * 16
    base = {"decision_id": did, "market": "M", "bot_run_id": "r1"}
    decision = dict(base, kind="decision", seq=3, decision_ts="2026-11-24T04:47:54.123400Z",
                    target_orders=[{"slot": 0, "side": "yes", "price": 0.4, "size": 10, "client_order_id": "c0"}])
    slot = dict(base, slot=0, client_order_id="c0", side="yes", price=0.4, size=10)
    events = [
        dict(slot, event_type="ORDER_PLACE", seq=4, event_ts="2026-11-24T04:47:54.123700Z"),
        dict(slot, event_type="ORDER_RESULT", seq=5, event_ts="2026-11-24T04:47:54.123950Z", status="ACCEPTED",
             order_id="o1", latency_ms=0.2),
        # after a restart: a fill for this order from the next run, whose seq restarted (same 4 as the place)
        dict(slot, event_type="FILL", seq=4, bot_run_id="r2", event_ts="2026-11-24T04:48:10.500000Z", order_id="o1"),
    ]
    # log lines carry milliseconds only: every line of the decision reads 54.123, earlier than the records
    lines = [dict(base, ts="2026-11-24T04:47:54.123Z", seq=2, event_type="LOG", message="quoting M"),
             dict(base, ts="2026-11-24T04:47:54.123Z", seq=3, event_type="DECISION_MADE"),
             dict(slot, ts="2026-11-24T04:47:54.123Z", seq=4, event_type="ORDER_PLACE"),
             dict(slot, ts="2026-11-24T04:47:54.123Z", seq=5, event_type="ORDER_RESULT", status="ACCEPTED",
                  order_id="o1"),
             dict(base, ts="2026-11-24T04:47:54.123Z", seq=6, event_type="LOG", message="placed both"),
             dict(slot, ts="2026-11-24T04:48:10.500Z", seq=4, bot_run_id="r2", event_type="FILL", order_id="o1")]
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "dora-bot.jsonl").write_bytes(b"".join(orjson.dumps(ln) + b"\n" for ln in lines))
    report = explain_decision(LocalSource(tmp_path, reader=_Reader(decision, events)), did)
    timeline = report.decisions[0].timeline
    assert [(e["run"], e["seq"], e["event_type"]) for e in timeline] == [
        ("r1", 2, "LOG"), ("r1", 3, "DECISION_MADE"), ("r1", 4, "ORDER_PLACE"), ("r1", 5, "ORDER_RESULT"),
        ("r1", 6, "LOG"), ("r2", 4, "FILL")]
    offsets = [e["offset_ms"] for e in timeline]
    assert offsets == sorted(offsets) and offsets[0] >= 0 and offsets[-1] > 16_000
    out = io.StringIO()
    render_explain(report, out)
    shown = [line.split()[1] for line in out.getvalue().splitlines() if line.startswith("    ") and "#" in line]
    assert all(s.startswith("+") for s in shown) and len(shown) == 6  # no negative offset printed


def test_explain_and_reconcile_say_when_journal_records_may_not_have_reached_the_ledger(cli_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(cli_run.data_dir, data)
    journal = data / "ledger" / "journal"
    journal.mkdir(parents=True, exist_ok=True)
    last = cli_run.lines()[-1]["ts"]
    pending = [{"kind": "execution", "event_type": "FILL", "event_ts": last[:-1] + "000Z", "seq": 10**6}] * 3
    (journal / "seg-00000000000000000001-1-ab.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in pending))
    proc = dora_cli("explain", "--market", MARKETS[0], "--json", "--data-dir", str(data))
    report = json.loads(proc.stdout)
    assert report["complete"] is False and report["completeness"]["pending_records"] == 3
    text = dora_cli("explain", "--market", MARKETS[0], "--data-dir", str(data)).stdout
    assert "incomplete: 3 ledger record(s)" in text and "still in the local journal" in text
    proc = dora_cli("reconcile", "--since", "1h ago", "--json", "--data-dir", str(data))
    assert json.loads(proc.stdout)["complete"] is False
    assert "incomplete  3 ledger record(s)" in dora_cli("reconcile", "--since", "1h ago", "--data-dir",
                                                         str(data)).stderr
    # the untouched run is complete
    assert json.loads(dora_cli("explain", "--market", MARKETS[0], "--json", "--data-dir",
                               str(cli_run.data_dir)).stdout)["complete"] is True


def test_reconcile_without_logs_says_log_loss_was_not_checked(cli_run):
    proc = dora_cli("reconcile", "--since", "1h ago", "--logs", "none", "--data-dir", str(cli_run.data_dir))
    assert "log loss    not checked" in proc.stderr and "log loss    none" not in proc.stderr
    assert "logs not read" in proc.stderr  # the completeness line says why


def test_reconcile_counts_suppressed_slots_apart_from_mismatches():
    did = "cd" * 16
    decision = {"decision_id": did, "market": "M", "bot_run_id": "r1", "seq": 1,
                "decision_ts": "2026-11-24T04:47:54.000000Z",
                "target_orders": [{"slot": 0, "side": "yes", "price": 0.4, "size": 10, "client_order_id": "c0"}]}
    events = [{"decision_id": did, "bot_run_id": "r1", "event_type": "ORDER_SUPPRESSED", "slot": 0, "seq": 2,
               "client_order_id": "c0", "event_ts": "2026-11-24T04:47:54.000100Z", "reason": "risk: max position"}]

    class Source:
        name, env, reader = "test", "demo", _Reader(decision, events)

        def run_lines(self, start: Any, end: Any) -> Any:
            from dora_otel.query.sources import LogLines
            return LogLines([], available=False, note="test")

    report = reconcile(Source(), parse_time("2026-11-24T04:00:00Z"), parse_time("2026-11-24T05:00:00Z"))
    assert report.exit_code == 0 and not report.mismatched
    assert report.suppressed == [{"decision_id": did, "market": "M", "decision_ts": "2026-11-24T04:47:54.000000Z",
                                  "slot": 0, "reason": "risk: max position", "client_order_id": "c0"}]
    out = io.StringIO()
    render_reconcile(report, out)
    assert "suppressed  1 slot(s) not sent on purpose (not mismatches): risk: max position" in out.getvalue()


def test_explain_says_when_the_ledger_sink_was_failing_and_never_recovered(cli_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(cli_run.data_dir, data)
    log = data / "logs" / "dora-bot.jsonl"
    lines = log.read_text().splitlines()
    first = json.loads(lines[0])
    outage = dict(first, level="ERROR", event_type="ERROR", target="execution_log", seq=10**6,
                  message="execution ledger sink SQLiteSink is failing", error_msg="disk I/O error")
    log.write_text("\n".join([lines[0], orjson.dumps(outage).decode(), *lines[1:]]) + "\n")
    report = json.loads(dora_cli("explain", "--market", MARKETS[0], "--json", "--data-dir", str(data)).stdout)
    assert report["complete"] is False
    assert any("the ledger sink was failing" in n and "disk I/O error" in n for n in report["completeness"]["notes"])
