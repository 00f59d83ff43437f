"""The second bot (tests/bots/async_bot.py) against its own HTTP exchange (exchange_server.py), with a
restart in the middle: `dora-otel explain` must give, for every slot, the verdict the exchange's own
ground truth implies, and `dora-otel reconcile` must flag exactly the decisions whose orders did not
execute as decided. Everything runs through the public API and the CLI.

Expected verdict from the exchange's truth for the order a slot sent (verdict rules in
dora_otel/query/verdicts.py): rejected -> REJECTED; filled the whole count -> FILLED; part of it ->
PARTIAL; dropped by the exchange (a cancel then answered 404) -> UNKNOWN; cancelled with nothing
filled -> CANCELLED; still resting -> RESTING. A slot the risk check kept back -> SUPPRESSED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import exchange_server

HERE = Path(__file__).resolve().parent
MARKETS = ("KXBOT-A", "KXBOT-B", "KXBOT-C")
INSIDE = "KXBOT-B"  # this market's orders are placed inside the decision body
MAX_SIZE = 20
MISMATCH = {"NOT_SENT", "REJECTED", "UNKNOWN"}


def _bot(base: str, data_dir: Path, loops: str, *extra: str) -> None:
    env = dict(os.environ, DORA_ENV="bots", OTEL_SDK_DISABLED="false", DORA_STRICT="true")
    env.pop("DORA_LEDGER", None)
    cmd = [sys.executable, str(HERE / "async_bot.py"), "--base", base, "--data-dir", str(data_dir),
           "--loops", loops, "--markets", ",".join(MARKETS), "--inside", INSIDE, *extra]
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("dora-otel")
    return subprocess.run([str(cli), *args], check=False, capture_output=True, text=True, timeout=120)


class Result:
    def __init__(self, exchange: exchange_server.Exchange, data_dir: Path) -> None:
        self.exchange = exchange
        self.data_dir = data_dir
        self.slots: list[dict[str, Any]] = []  # every explain slot, with its decision
        for market in MARKETS:
            out = _cli("explain", "--market", market, "--at", "now", "--window", "30m", "--json",
                       "--data-dir", str(data_dir), "--color", "never")
            assert out.returncode == 0, out.stderr[-2000:]
            report = json.loads(out.stdout)
            for decision in report["decisions"]:
                for v in decision["verdicts"]:
                    self.slots.append(dict(v, decision_id=decision["decision_id"], market=market,
                                           bot_run_id=decision["bot_run_id"]))
        rec = _cli("reconcile", "--since", "30 minutes ago", "--data-dir", str(data_dir), "--settle", "0s",
                   "--color", "never")
        assert rec.returncode in (0, 1), rec.stderr[-2000:]
        self.flagged = {line["decision_id"] for line in _json_lines(rec.stdout)
                        if line.get("event_type") == "RECONCILIATION_RESULT"}

    def orders_of(self, slot: dict[str, Any]) -> list[exchange_server.Order]:
        coids = {a.get("client_order_id") for a in slot.get("attempts") or []}
        return [self.exchange.orders[c] for c in coids if c in self.exchange.orders]

    def order_of(self, slot: dict[str, Any]) -> exchange_server.Order | None:
        found = self.orders_of(slot)
        return found[0] if len(found) == 1 else None

    def expected(self, slot: dict[str, Any]) -> str:
        if len(self.orders_of(slot)) > 1:
            return f"one slot per order (this slot holds {len(self.orders_of(slot))} orders)"
        order = self.order_of(slot)
        if order is None:
            expected = slot.get("expected") or {}
            return "SUPPRESSED" if (expected.get("size") or 0) > MAX_SIZE else "NOT_SENT"
        if order.status == "rejected":
            return "REJECTED"
        if order.filled >= order.count:
            return "FILLED"
        if order.filled > 0:
            return "PARTIAL"
        return {"dropped": "UNKNOWN", "canceled": "CANCELLED", "resting": "RESTING"}[order.status]

    def duplicate(self, slot: dict[str, Any]) -> bool:
        order = self.order_of(slot)
        return order is not None and 409 in order.answers


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Result:
    data_dir = tmp_path_factory.mktemp("second-bot")
    exchange = exchange_server.Exchange(seed=11)
    server, base = exchange_server.serve(exchange)
    try:
        _bot(base, data_dir, "0:5")
        exchange.set_phase(2)  # fills held back for the first run's orders reach the restarted bot
        _bot(base, data_dir, "5:10", "--cancel-leftovers")
        assert exchange.pending_fills() == 0, "the exchange still holds fills the bot never fetched"
        return Result(exchange, data_dir)
    finally:
        server.shutdown()
        server.server_close()


def test_the_run_covers_every_fault_and_the_restart(result: Result) -> None:
    """The scenario is what it claims: each seeded fault happened, fills of the first run's orders
    were delivered only to the second run, and both runs wrote decisions."""
    orders = list(result.exchange.orders.values())
    faults = {o.fault for o in orders}
    assert faults >= set(exchange_server.FAULTS), faults
    assert any(409 in o.answers for o in orders)
    assert len({s["bot_run_id"] for s in result.slots}) == 2
    sent = [o for o in orders if o.order_id]
    assert sent and all(o.reported == o.filled for o in sent)
    # every order of the markets placed after the strategy returned is in exactly one slot
    outside = [o for o in orders if o.ticker != INSIDE]
    in_slots = [o.client_order_id for s in result.slots if s["market"] != INSIDE for o in result.orders_of(s)]
    assert sorted(in_slots) == sorted(o.client_order_id for o in outside)


def test_fills_of_the_first_runs_orders_join_their_decisions_after_the_restart(result: Result) -> None:
    runs = sorted({s["bot_run_id"] for s in result.slots})
    first_run = min(runs)  # run ids start with their start time
    first = [s for s in result.slots if s["bot_run_id"] == first_run]
    shown = {(s["decision_id"], f["seq"], f.get("order_id")) for s in first for f in s["fills"]}
    sqlite = __import__("dora_otel.sinks.sqlite", fromlist=["SQLiteSink"])
    sink = sqlite.SQLiteSink(sqlite.sqlite_path(result.data_dir))
    try:
        fills_by_run = {r: [e for e in sink.events_for_run(r) if e["event_type"] == "FILL"] for r in runs}
    finally:
        sink.close()
    second_run_fills = fills_by_run[max(runs)]
    joined_late = [f for f in second_run_fills if any(f["decision_id"] == s["decision_id"] for s in first)]
    assert joined_late, "no fill recorded by the second run joined a decision of the first"
    assert not [f for fs in fills_by_run.values() for f in fs if f["decision_id"].startswith("unmatched:")]
    # explain shows each of them on its first-run slot
    assert all((f["decision_id"], f["seq"], f["order_id"]) in shown for f in joined_late)


def test_verdicts_equal_the_exchange_truth_where_main_already_handles_the_case(result: Result) -> None:
    """Every slot except those needing the decor/cli branches: 409 duplicates, orders placed inside a
    decision, suppressed orders."""
    checked = [s for s in result.slots if s["market"] != INSIDE and not result.duplicate(s)
               and result.expected(s) != "SUPPRESSED"]
    assert len(checked) >= 15
    wrong = [(s["decision_id"][:8], s["slot"], s["verdict"], result.expected(s)) for s in checked
             if s["verdict"] != result.expected(s)]
    assert not wrong, wrong


def test_every_slot_verdict_equals_the_exchange_truth(result: Result) -> None:
    wrong = [(s["market"], s["decision_id"][:8], s["slot"], s["verdict"], result.expected(s))
             for s in result.slots if s["verdict"] != result.expected(s)]
    assert not wrong, f"{len(wrong)} of {len(result.slots)} slots wrong: {wrong}"
    in_slots = [o.client_order_id for s in result.slots for o in result.orders_of(s)]
    assert sorted(in_slots) == sorted(result.exchange.orders)
    assert any(result.duplicate(s) for s in result.slots)
    assert any(result.expected(s) == "SUPPRESSED" for s in result.slots)


def test_reconcile_flags_exactly_the_decisions_not_executed_as_decided(result: Result) -> None:
    should = {s["decision_id"] for s in result.slots if result.expected(s) in MISMATCH}
    assert should
    assert result.flagged == should
