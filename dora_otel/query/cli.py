"""The `dora-otel explain` and `dora-otel reconcile` subcommands (added to the console script by
`dora_otel.cli`, which calls :func:`add_commands`).

Owns the command-line surface: options, choosing the backend (`--ledger sqlite|dynamodb`, default
DORA_LEDGER else sqlite; `--logs` file|cloudwatch|none, default file for SQLite and CloudWatch for
DynamoDB), and the exit codes: 0 success / clean, 1 reconcile found mismatches, 2 usage errors
(bad time, unknown decision id, missing data directory) — raised here as ValueError, which
`dora_otel.cli.main` prints as one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from dora_otel import config as cfg
from dora_otel.protocols import SinkError
from dora_otel.query.times import parse_duration, parse_time

__all__ = ["add_commands", "build_source"]

_EXPLAIN_EPILOG = """examples:
  dora-otel explain --market KXBTCD-26NOV24-T97000 --at '10 minutes ago'
  dora-otel explain --market KXBTCD-26NOV24-T97000 --at 2026-11-24T04:47:54Z --window 30s --json
  dora-otel explain 4bf92f3577b34da6a3ce929d0e0e4736
  DORA_LEDGER=dynamodb AWS_PROFILE=dora-reader dora-otel explain 4bf92f3577b34da6a3ce929d0e0e4736

verdicts per expected order: NOT_SENT, REJECTED, UNKNOWN, RESTING, FILLED, PARTIAL, CANCELLED
(rules: dora_otel/query/verdicts.py)."""

_RECONCILE_EPILOG = """examples:
  dora-otel reconcile --since '15 minutes ago'
  dora-otel reconcile --since 2026-11-24T04:00:00Z --until 2026-11-24T05:00:00Z
  dora-otel reconcile --since '1h ago' --live --order-source my_bot.kalshi:order_source

exit codes: 0 every expected order accounted for, 1 mismatches (NOT_SENT, REJECTED, UNKNOWN, or the
exchange disagrees with the ledger), 2 usage errors. Telemetry loss (log sequence gaps, ledger/log
disagreements) is reported separately and does not change the exit code."""


def add_commands(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where the data is")
    where.add_argument("--data-dir", default=None,
                       help="the bot's data directory (default: DORA_DATA_DIR, else ./dora-otel-data)")
    where.add_argument("--env", default=None, help="environment: names the DynamoDB tables and the CloudWatch "
                                                   "log group (default: DORA_ENV, else demo)")
    where.add_argument("--ledger", choices=("sqlite", "dynamodb"), default=None,
                       help="ledger backend to read (default: DORA_LEDGER, else sqlite)")
    where.add_argument("--logs", choices=("auto", "file", "cloudwatch", "none"), default="auto",
                       help="where log lines come from (auto: the log file for sqlite, CloudWatch Logs "
                            "Insights for dynamodb)")
    where.add_argument("--logs-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="budget of one CloudWatch Logs Insights query (default 30)")
    common.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour in terminal output (auto: when a TTY and NO_COLOR is unset)")

    explain = sub.add_parser(
        "explain", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="what happened with market X at time T, or with one decision",
        description="For each decision (of MARKET within AT ± WINDOW, or the one DECISION_ID): its target "
                    "orders, every attempt and result with latency, cancels, fills, errors with stack, the log "
                    "lines carrying its decision_id, and a verdict per expected order; plus fills that match "
                    "no decision, the Jaeger URL and a ready CloudWatch Logs Insights query.",
        epilog=_EXPLAIN_EPILOG)
    explain.add_argument("decision_id", nargs="?", help="a decision id (32 hex: the decision's trace id)")
    explain.add_argument("--market", help="market ticker")
    explain.add_argument("--at", default=None, help="ISO-8601 time (naive = UTC) or '10 minutes ago', '2h ago', "
                                                   "'now' (default: now)")
    explain.add_argument("--window", default="2m", help="decisions within AT ± WINDOW (default 2m)")
    explain.add_argument("--json", action="store_true", help="one JSON document on stdout, for scripts")
    explain.set_defaults(handler=run_explain)

    reconcile = sub.add_parser(
        "reconcile", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="compare every decision's expected orders with what happened (and with the exchange)",
        description="For every decision between SINCE and UNTIL: targets vs attempts vs results, and with --live "
                    "the exchange's open orders. Logs one RECONCILIATION_RESULT JSON line per decision with a "
                    "mismatch and a summary line on stdout; a human summary on stderr. Reports log sequence "
                    "gaps (telemetry loss) separately from orders that really failed.",
        epilog=_RECONCILE_EPILOG)
    reconcile.add_argument("--since", required=True, help="start of the range (ISO-8601 or '15 minutes ago')")
    reconcile.add_argument("--until", default="now", help="end of the range (default: now)")
    reconcile.add_argument("--live", action="store_true", help="also compare with the exchange's open orders")
    reconcile.add_argument("--order-source", metavar="MODULE:CALLABLE", default=None,
                           help="with --live: a factory returning an OrderSource (dora_otel.protocols)")
    reconcile.add_argument("--settle", default="30s",
                           help="evidence younger than this is not judged for runs still going (default 30s)")
    reconcile.set_defaults(handler=run_reconcile)


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------

def _env(value: str | None) -> str:
    env = value or os.environ.get(cfg.DORA_ENV, "").strip() or "demo"
    from dora_otel.sinks.tables import table_names

    table_names(env)  # raises ValueError naming a bad env
    return env


def _data_dir(value: str | None) -> Path:
    return Path(value or os.environ.get(cfg.DORA_DATA_DIR, "").strip() or "dora-otel-data")


def build_source(args: argparse.Namespace, *, logs_client: Any = None, dynamodb_client: Any = None) -> Any:
    """The Source the options ask for. Raises ValueError for a missing data directory."""
    env = _env(args.env)
    ledger = args.ledger or os.environ.get(cfg.DORA_LEDGER, "").strip().lower() or "sqlite"
    logs = args.logs if args.logs != "auto" else ("cloudwatch" if ledger == "dynamodb" else "file")
    data_dir = _data_dir(args.data_dir)
    if (ledger != "dynamodb" or logs == "file") and not data_dir.is_dir():
        raise ValueError(f"data directory {data_dir} does not exist; pass --data-dir or set DORA_DATA_DIR")
    from dora_otel.query.aws import AwsSource
    from dora_otel.query.local import LocalSource

    if ledger == "dynamodb":
        from dora_otel.sinks.dynamodb import DynamoDBSink

        reader: Any = DynamoDBSink(env, client=dynamodb_client)
        if logs == "cloudwatch":
            source: Any = AwsSource(env, reader=reader, logs_client=logs_client, timeout_s=args.logs_timeout)
        else:
            source = LocalSource(data_dir, env=env, reader=reader, use_logs=logs == "file")
            source.name = "dynamodb"
        source.parallel_reads = 8
        return source
    local = LocalSource(data_dir, env=env, use_logs=logs == "file")
    if logs == "cloudwatch":
        return AwsSource(env, reader=local.reader, logs_client=logs_client, timeout_s=args.logs_timeout)
    return local


def _color(args: argparse.Namespace, stream: TextIO) -> bool:
    from dora_otel.query.render import use_color

    return args.color == "always" or (args.color == "auto" and use_color(stream))


# ---------------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------------

def run_explain(args: argparse.Namespace, *, stdout: TextIO | None = None, logs_client: Any = None,
                dynamodb_client: Any = None) -> int:
    from dora_otel.query.explain import explain_decision, explain_market
    from dora_otel.query.render import render_explain, render_json

    out = stdout or sys.stdout
    if args.decision_id and args.market:
        raise ValueError("give a decision id or --market, not both")
    if not args.decision_id and not args.market:
        raise ValueError("give a decision id, or --market MARKET [--at TIME]")
    window = parse_duration(args.window)
    at = parse_time(args.at or "now")
    source = build_source(args, logs_client=logs_client, dynamodb_client=dynamodb_client)
    try:
        if args.decision_id:
            report = explain_decision(source, args.decision_id, window=window)
        else:
            report = explain_market(source, args.market, at, window)
    except SinkError as exc:
        raise ValueError(f"cannot read the ledger ({source.describe()}): {exc}") from exc
    finally:
        source.close()
    if args.json:
        render_json(report.to_dict(), out)
    else:
        render_explain(report, out, color=_color(args, out))
    return 0


# ---------------------------------------------------------------------------------------------
# reconcile
# ---------------------------------------------------------------------------------------------

def load_order_source(spec: str) -> Any:
    """`module:callable` -> the OrderSource the callable returns (called with no arguments)."""
    from dora_otel.protocols import OrderSource

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--order-source ({spec!r}) must be MODULE:CALLABLE, e.g. my_bot.kalshi:order_source")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--order-source: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"--order-source: {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    try:
        made = target() if callable(target) and not isinstance(target, OrderSource) else target
    except Exception as exc:
        raise ValueError(f"--order-source {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(made, OrderSource):
        raise ValueError(f"--order-source {spec!r} gave a {type(made).__name__}, not an OrderSource "
                         "(open_orders() and order_status(client_order_id))")
    return made


class _Progress:
    """A one-line progress bar on a TTY stream (nothing otherwise)."""

    def __init__(self, stream: TextIO, minimum: int = 20) -> None:
        self.stream = stream
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.minimum = minimum
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < self.minimum:
            return
        width = 30
        filled = int(width * done / total) if total else width
        self.stream.write(f"\r  reading decisions [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _setup_job_logging(env: str) -> Any:
    """The reconciler is its own job: its RECONCILIATION_RESULT lines go out like every other
    dora-otel line (same JSON shape and identity; over OTLP to /dora-bot/{env}/app when a collector
    is configured), without a ledger or watchdog, and without spans (none are made)."""
    import dora_otel
    from dora_otel.config import ENVS, Config

    endpoint = Config.resolve({}).otlp_endpoint
    overrides: dict[str, Any] = dict(container_mode=True, ledger="off", watchdog_seconds=0,
                                     service_name="dora-reconcile", sdk_disabled=not endpoint)
    if env in ENVS:
        overrides["env"] = env
    return dora_otel.setup(**overrides)


def run_reconcile(args: argparse.Namespace, *, order_source: Any = None, logs_client: Any = None,
                  dynamodb_client: Any = None, setup_logging: bool = True) -> int:
    import logging

    from dora_otel.query.reconcile import reconcile
    from dora_otel.query.render import render_reconcile

    since, until = parse_time(args.since), parse_time(args.until)
    settle = parse_duration(args.settle)
    if args.live and order_source is None:
        if not args.order_source:
            raise ValueError("--live needs --order-source MODULE:CALLABLE (a factory returning an OrderSource)")
        order_source = load_order_source(args.order_source)
    elif args.order_source and not args.live:
        raise ValueError("--order-source is only used with --live")
    source = build_source(args, logs_client=logs_client, dynamodb_client=dynamodb_client)
    telemetry = _setup_job_logging(source.env) if setup_logging else None
    log = logging.getLogger("dora_otel.reconcile")

    def emit(level: int, event_type: str, message: str, fields: dict[str, Any]) -> None:
        log.log(level, message, extra={"event_type": event_type, **fields})

    progress = _Progress(sys.stderr)
    try:
        report = reconcile(source, since, until, order_source=order_source if args.live else None, emit=emit,
                           progress=progress, settle=settle, now=datetime.now(timezone.utc))
    except SinkError as exc:
        raise ValueError(f"cannot read the ledger ({source.describe()}): {exc}") from exc
    finally:
        progress.finish()
        source.close()
        if telemetry is not None:
            telemetry.shutdown(reason="reconcile finished")
    render_reconcile(report, sys.stderr, color=_color(args, sys.stderr))
    return report.exit_code
