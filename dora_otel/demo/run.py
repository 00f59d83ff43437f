"""Runs the demo bot end to end: setup(), the trading loop, shutdown(), and a short human summary
on stderr (stdout carries only the JSON log lines)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import dora_otel
from dora_otel.demo.bot import DemoBot
from dora_otel.demo.exchange import PaperExchange

MARKETS = ("KXBTCD-26NOV24-T97000", "KXINXU-26NOV24-B5900", "KXHIGHNY-26NOV24-B45", "KXFEDDECISION-26DEC-H0",
           "KXETHD-26NOV24-T3500", "KXNBAGAME-26NOV24-LALBOS")


def market_names(count: int) -> list[str]:
    if count <= len(MARKETS):
        return list(MARKETS[:count])
    return list(MARKETS) + [f"KXDEMO-{i:03d}" for i in range(count - len(MARKETS))]


def run_demo(*, cycles: int, markets: int, seed: int, fault_rate: float, ledger: str | None,
             data_dir: str | None, truth: str | None, err: TextIO = sys.stderr, **setup_args: Any) -> int:
    started = time.monotonic()
    telemetry = dora_otel.setup(ledger=ledger, data_dir=data_dir, **setup_args)
    names = market_names(markets)
    exchange = PaperExchange(names, seed=seed, fault_rate=fault_rate)
    bot = DemoBot(exchange, names, shock_at=max(2, int(cycles * 0.9)) if cycles >= 5 else None)
    try:
        summary = bot.run(cycles)
    finally:
        if truth:
            Path(truth).write_text(json.dumps(exchange.truth(), indent=1, sort_keys=True), encoding="utf-8")
        flushed = telemetry.shutdown(reason="demo finished", graceful=True)
        stats = telemetry.stats()
    elapsed = time.monotonic() - started
    _print_summary(err, telemetry, summary, stats, flushed, cycles, names, elapsed)
    return 0


def _command_name() -> str:
    """`dora-otel` when that is what the shell finds, else the path that ran us (e.g. .venv/bin/dora-otel)."""
    script = Path(sys.argv[0])
    found = shutil.which("dora-otel")
    if script.name != "dora-otel" or (found and Path(found).resolve() == script.resolve()):
        return "dora-otel"
    try:
        return str(script.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _print_summary(err: TextIO, telemetry: Any, summary: Any, stats: dict[str, Any], flushed: bool,
                   cycles: int, names: list[str], elapsed: float) -> None:
    config = telemetry.config
    data = config.data_dir
    orders = " · ".join(f"{k} {v}" for k, v in sorted(summary.orders.items())) or "none"
    lines = [
        f"dora-otel demo: {cycles} cycles × {len(names)} markets in {elapsed:.1f} s "
        f"(run {telemetry.bot_run_id}, env {telemetry.env}, version {telemetry.bot_version})",
        f"  decisions   {summary.decisions}",
        f"  orders      {orders}",
        f"  cancels     {summary.cancels}",
        f"  fills       {summary.fills}",
        f"  risk halt   {'at loop ' + str(summary.halted_at_loop) if summary.halted_at_loop else 'no'}",
    ]
    if stats and config.ledger != "off":
        note = "" if flushed else " (flush incomplete: the rest is replayed on the next start)"
        if stats.get("outage"):
            note = (" — the sink is failing: see the ERROR line with target execution_log on stdout; "
                    "records stay in the journal and are replayed on the next start")
        lines.append(f"  ledger      {config.ledger}: {stats.get('shipped', 0)} records shipped, "
                     f"{stats.get('rejected', 0)} rejected{note}")
    lines.append("files")
    if not config.container_mode:
        lines.append(f"  logs        {data / 'logs' / 'dora-bot.jsonl'}")
    if config.otlp_endpoint:
        lines.append(f"  traces      sent to {config.otlp_endpoint} (Jaeger: http://localhost:16686)")
    else:
        lines.append(f"  spans       {data / 'spans' / 'spans.jsonl'}")
    if config.ledger == "sqlite":
        lines.append(f"  ledger      {data / 'ledger' / 'ledger.sqlite3'}")
    command = _command_name()
    lines += [
        "look at a decision",
        f"  {command} explain --market {names[0]} --at '1 minute ago' --data-dir {data}",
        f"  {command} reconcile --since '10 minutes ago' --data-dir {data}",
    ]
    err.write("\n".join(lines) + "\n")
    err.flush()
