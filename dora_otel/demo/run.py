"""Runs the demo bot end to end: setup(), the trading loop, shutdown(), and a short human summary
on stderr (stdout carries only the JSON log lines)."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from datetime import datetime, timedelta, timezone
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
    began_at = datetime.now(timezone.utc)
    telemetry = dora_otel.setup(ledger=ledger, data_dir=data_dir, **setup_args)
    names = market_names(markets)
    exchange = PaperExchange(names, seed=seed, fault_rate=fault_rate)
    bot = DemoBot(exchange, names, shock_at=max(2, int(cycles * 0.9)) if cycles >= 5 else None)
    try:
        summary = bot.run(cycles)
    finally:
        if truth:
            # what really happened, with no help from telemetry: the paper exchange's record of every
            # order it was sent, and the bot's own record of the orders it held back on purpose
            record = {"orders": exchange.truth(), "suppressed": bot.summary.suppressed}
            Path(truth).write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
        flushed = telemetry.shutdown(reason="demo finished", graceful=True)
        stats = telemetry.stats()
    elapsed = time.monotonic() - started
    _print_summary(err, telemetry, summary, stats, flushed, cycles, names, elapsed,
                   (began_at, datetime.now(timezone.utc)))
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


def _stamp(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def query_hints(command: str, config: Any, market: str, began: datetime, ended: datetime) -> list[str]:
    """The commands to look at this run, with absolute times (they still work an hour later) and the
    flags that point at the ledger this run wrote to."""
    start = began - timedelta(seconds=1)
    end = ended + timedelta(seconds=1)
    middle = began + (ended - began) / 2
    where = ["--data-dir", str(config.data_dir)]
    if config.env != "demo":
        where += ["--env", config.env]
    if config.ledger == "dynamodb":
        where += ["--ledger", "dynamodb", "--logs", "file"]  # the demo's lines are in the local log file
    elif config.ledger == "sqlite":
        where += ["--ledger", "sqlite"]
    flags = " ".join(shlex.quote(w) for w in where)
    lines = [f"  {command} explain --market {market} --at {_stamp(middle)} --window 1m {flags}"]
    if config.ledger in ("sqlite", "dynamodb"):
        lines += [f"  {command} reconcile --since {_stamp(start)} --until {_stamp(end)} {flags}",
                  f"  {command} report --since {_stamp(start)} --until {_stamp(end)} --out dora-otel-report.html {flags}"]
    else:
        lines.append(f"  (reconcile and report read a ledger; this run used --ledger {config.ledger})")
    return lines


def _print_summary(err: TextIO, telemetry: Any, summary: Any, stats: dict[str, Any], flushed: bool,
                   cycles: int, names: list[str], elapsed: float,
                   span: tuple[datetime, datetime] | None = None) -> None:
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
    began, ended = span or (datetime.now(timezone.utc) - timedelta(seconds=elapsed), datetime.now(timezone.utc))
    lines.append(f"look at this run ({_stamp(began)} .. {_stamp(ended)})")
    lines += query_hints(command, config, names[0], began, ended)
    err.write("\n".join(lines) + "\n")
    err.flush()
