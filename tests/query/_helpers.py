"""Helpers for the query tests: demo runs as users run them (a subprocess with --truth), the CLI
in a subprocess, and the truth (the paper exchange's record of every order, the bot's record of the
orders it held back) mapped to verdicts."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

MARKETS = ("KXBTCD-26NOV24-T97000", "KXINXU-26NOV24-B5900", "KXHIGHNY-26NOV24-B45")
# Seed 11 with 20% faults over 40 cycles shows every verdict kind a demo can produce, both kinds of
# UNKNOWN (timeouts, and an order the exchange dropped) and fills that match no decision.
FAULTY = ("--cycles", "40", "--markets", "3", "--seed", "11", "--fault-rate", "0.2")


@dataclasses.dataclass
class DemoRun:
    data_dir: Path
    truth: dict[str, dict[str, Any]]  # the paper exchange's record, by client_order_id
    stdout: str
    stderr: str
    suppressed: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # the bot's held-back orders

    def held_back(self, market: str, loop: int | None, expected: dict[str, Any] | None) -> str | None:
        """The bot's own reason for not sending this target (None if it did not hold it back)."""
        return held_back(self.suppressed, market, loop, expected)

    def expected_verdict(self, market: str, loop: int | None, slot: dict[str, Any]) -> str:
        """What the truth implies for one slot of `explain --json` (a verdict dict)."""
        return expected_verdict(self.truth.get(slot["client_order_id"]),
                                self.held_back(market, loop, slot.get("expected")))

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "dora-bot.jsonl"

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DORA_", "OTEL_", "AWS_")) and k != "CONTAINER_MODE"}
    env.update(extra)
    return env


def run_demo(where: Path, *args: str, env: dict[str, str] | None = None) -> DemoRun:
    where.mkdir(parents=True, exist_ok=True)
    data, truth = where / "data", where / "truth.json"
    proc = subprocess.run([sys.executable, "-m", "dora_otel.cli", "demo", *args, "--data-dir", str(data),
                           "--truth", str(truth)], capture_output=True, text=True, timeout=120,
                          env=env or clean_env(), cwd=where)
    assert proc.returncode == 0, proc.stderr
    orders, suppressed = read_truth(truth)
    return DemoRun(data, orders, proc.stdout, proc.stderr, suppressed)


def read_truth(path: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """`demo --truth PATH`: (the exchange's record by client_order_id, the bot's held-back orders)."""
    record = json.loads(path.read_text())
    return record["orders"], record["suppressed"]


def held_back(suppressed: list[dict[str, Any]], market: str, loop: int | None,
              expected: dict[str, Any] | None) -> str | None:
    """The reason the bot recorded for holding back the target ``expected`` of its decision for
    (``market``, ``loop``), else None."""
    if not expected:
        return None
    key = (market, loop, expected.get("side"), expected.get("price"), expected.get("size"))
    return next((s["reason"] for s in suppressed
                 if (s["market"], s["loop"], s["side"], s["price"], s["size"]) == key), None)


def dora_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dora_otel.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env or clean_env(), cwd=cwd)


def expected_verdict(truth: dict[str, Any] | None, held_back_for: str | None = None) -> str:
    """The verdict the paper exchange's own record (``truth``) and the bot's own record of the orders
    it held back (``held_back_for``: its reason for this target, see :func:`held_back`) imply for
    one expected order.

    Mapping (truth outcome -> verdict):
    * no record, and the bot says it held the order back                 -> SUPPRESSED
    * no record: the exchange never saw the client_order_id              -> NOT_SENT
    * the last definitive answer to the bot (ok | rejected) was a reject -> REJECTED
    * the bot never got a definitive answer (only timeouts), whatever
      became of the order (never_received, or live with fills the bot
      could not join to it: they show as fills that match no decision)  -> UNKNOWN
    * filled >= count                                                    -> FILLED
    * 0 < filled < count (resting or canceled)                           -> PARTIAL
    * canceled, nothing filled                                           -> CANCELLED
    * dropped silently and the bot tried to cancel it ("not found")      -> UNKNOWN
    * dropped silently, no cancel tried (telemetry cannot know)          -> RESTING
    * resting, nothing filled                                            -> RESTING
    """
    if truth is None:
        return "SUPPRESSED" if held_back_for else "NOT_SENT"
    definitive = [a for a in truth.get("answers", []) if a in ("ok", "rejected")]
    if definitive and definitive[-1] == "rejected":
        return "REJECTED"
    if not definitive:
        return "UNKNOWN"
    filled, count = truth.get("filled", 0), truth.get("count")
    if count and filled >= count:
        return "FILLED"
    if filled > 0:
        return "PARTIAL"
    outcome = truth["outcome"]
    if outcome == "canceled":
        return "CANCELLED"
    if outcome == "dropped":
        return "UNKNOWN" if truth.get("cancel_requested") else "RESTING"
    if outcome == "resting":
        return "RESTING"
    raise AssertionError(f"unexpected truth {truth}")


