"""The `dora-otel explain` and `dora-otel reconcile` subcommands (added to the console script by
`dora_otel.cli`, which calls :func:`add_commands`).

Owns the command-line surface: options, choosing the backend (`--ledger sqlite|dynamodb`, default
DORA_LEDGER else sqlite; `--logs` file|cloudwatch|none, default file for SQLite and CloudWatch for
DynamoDB), where each output goes (a terminal gets the human answer; a pipe gets the machine one)
and which exit code each outcome has (the table in :mod:`dora_otel.query.output`): usage errors
are raised as ValueError, the others as CliError; `dora_otel.cli.main` prints either as one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from dora_otel import config as cfg
from dora_otel.protocols import SinkError
from dora_otel.query.output import EXIT_TABLE, CliError, Exit
from dora_otel.query.sources import LogsUnavailable
from dora_otel.query.times import parse_duration, parse_time

__all__ = ["add_commands", "build_source"]

_EXPLAIN_EPILOG = """examples:
  dora-otel explain --market KXBTCD-26NOV24-T97000 --at '10 minutes ago'
  dora-otel explain --market KXBTCD-26NOV24-T97000 --at 2026-11-24T04:47:54Z --window 30s --json
  dora-otel explain 4bf92f3577b34da6a3ce929d0e0e4736
  DORA_LEDGER=dynamodb AWS_PROFILE=dora-reader dora-otel explain 4bf92f3577b34da6a3ce929d0e0e4736

output: a summary of the window, the decision nearest AT in full, every decision with a mismatch
(one line per slot), and how many healthy decisions were left out (--all, --limit N, --json).

verdicts per expected order: NOT_SENT, REJECTED, UNKNOWN, RESTING, FILLED, PARTIAL, CANCELLED,
SUPPRESSED (rules: dora_otel/query/verdicts.py).

""" + EXIT_TABLE

_RECONCILE_EPILOG = """examples:
  dora-otel reconcile --since '15 minutes ago'
  dora-otel reconcile --since 2026-11-24T04:00:00Z --until 2026-11-24T05:00:00Z
  dora-otel reconcile --since '1h ago' --live --order-source my_bot.kalshi:order_source

mismatches are NOT_SENT, REJECTED, UNKNOWN, or the exchange disagreeing with the ledger; suppressed
slots (the bot said why it did not send them) are listed apart. Telemetry loss (log sequence gaps,
ledger/log disagreements) and records that may not have reached the store yet are reported
separately and do not change the exit code.

""" + EXIT_TABLE


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
                                                   "'now' (default: the market's latest decision)")
    explain.add_argument("--window", default="2m", help="decisions within AT ± WINDOW (default 2m)")
    explain.add_argument("--json", action="store_true", help="one JSON document on stdout with everything, for scripts")
    shown = explain.add_mutually_exclusive_group()
    shown.add_argument("--all", action="store_true", help="show every decision of the window in full, oldest first")
    shown.add_argument("--limit", type=_positive_int, default=1, metavar="N",
                       help="show the N decisions nearest AT in full (default 1); mismatches are always listed")
    explain.add_argument("--verbose", "-v", action="store_true",
                         help="full CloudWatch Logs Insights query and aws cli line, longer stacks")
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
    reconcile.add_argument("--json", action="store_true",
                           help="the whole report as one JSON document on stdout (instead of the job lines)")
    listed = reconcile.add_mutually_exclusive_group()
    listed.add_argument("--all", action="store_true", help="list every mismatching slot (default: the first 20)")
    listed.add_argument("--limit", type=_positive_int, default=20, metavar="N",
                        help="list the first N mismatching slots (default 20)")
    reconcile.set_defaults(handler=run_reconcile)
    _add_report_command(sub, common)


_REPORT_EPILOG = """examples:
  dora-otel report --since '30 minutes ago' --out incident.html
  dora-otel report --market KXBTCD-26NOV24-T97000 --since 2026-11-24T04:00:00Z --until 2026-11-24T05:00:00Z

The file is self-contained (inline SVG/CSS/JS, nothing fetched): mail it, attach it to the incident.

""" + EXIT_TABLE


def _add_report_command(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                        common: argparse.ArgumentParser) -> None:
    report = sub.add_parser(
        "report", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write one self-contained HTML picture of a time range (a strip per market, a mark per decision)",
        description="Write an HTML file: for each market a strip with one mark per decision on a real time axis, "
                    "coloured by the decision's worst verdict; per decision a small timeline (decision -> place -> "
                    "result -> cancel/fill, with latencies) and each slot's verdict, reasons and errors.",
        epilog=_REPORT_EPILOG)
    report.add_argument("--market", action="append", default=[], help="a market ticker (repeat for several; "
                                                                        "default: every market)")
    report.add_argument("--since", required=True, help="start of the range (ISO-8601 or '30 minutes ago')")
    report.add_argument("--until", default="now", help="end of the range (default: now)")
    report.add_argument("--out", default="dora-otel-report.html", metavar="FILE",
                        help="where to write the HTML (default ./dora-otel-report.html; '-' for stdout)")
    report.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace, *, dynamodb_client: Any = None) -> int:
    from dora_otel.query.report import build_report, render_html

    since, until = parse_time(args.since), parse_time(args.until)
    if until < since:
        raise ValueError(f"--until ({args.until}) is before --since ({args.since})")
    args.logs = "none"  # the picture comes from the ledger alone
    source = build_source(args, dynamodb_client=dynamodb_client)
    try:
        report = build_report(source, since, until, args.market)
    except SinkError as exc:
        raise _unreachable(source, exc) from exc
    except LookupError as exc:
        raise CliError(str(exc), Exit.NOT_FOUND) from exc
    finally:
        source.close()
    document = render_html(report)
    if args.out == "-":
        from dora_otel.query.output import Printer

        Printer(sys.stdout).pieces(document[i:i + 16384] for i in range(0, len(document), 16384))
    else:
        Path(args.out).write_text(document, encoding="utf-8")
        bad = sum(1 for items in report.markets.values() for d in items if any(v.mismatch for v in d.verdicts))
        print(f"dora-otel report: {report.decisions} decision(s) in {len(report.markets)} market(s), {bad} with a "
              f"mismatch -> {args.out}", file=sys.stderr)
    if not report.decisions:
        print(f"dora-otel report: no decisions between {args.since} and {args.until} (exit {int(Exit.NO_DATA)})",
              file=sys.stderr)
        return int(Exit.NO_DATA)
    return int(Exit.OK)


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


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
        raise CliError(f"data directory {data_dir} does not exist; pass --data-dir or set DORA_DATA_DIR",
                       Exit.NOT_FOUND)
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
        # a bot on this machine may still hold records for DynamoDB in its journal
        source.journal_dir = data_dir / "ledger" / "journal" if data_dir.is_dir() else None
        return source
    local = LocalSource(data_dir, env=env, use_logs=logs == "file")
    if logs == "cloudwatch":
        aws = AwsSource(env, reader=local.reader, logs_client=logs_client, timeout_s=args.logs_timeout)
        aws.journal_dir = local.journal_dir
        return aws
    return local


def _color(args: argparse.Namespace, stream: TextIO) -> bool:
    from dora_otel.query.render import use_color

    return args.color == "always" or (args.color == "auto" and use_color(stream))


# ---------------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------------

def _unreachable(source: Any, exc: Exception) -> CliError:
    return CliError(f"cannot read the ledger ({source.describe()}): {exc}", Exit.UNREACHABLE)


def run_explain(args: argparse.Namespace, *, stdout: TextIO | None = None, logs_client: Any = None,
                dynamodb_client: Any = None) -> int:
    from dora_otel.query.explain import (
        ExplainError,
        NoDecisions,
        explain_decision,
        explain_market,
    )
    from dora_otel.query.render import render_explain, render_json

    out = stdout or sys.stdout
    if args.decision_id and args.market:
        raise ValueError("give a decision id or --market, not both")
    if not args.decision_id and not args.market:
        raise ValueError("give a decision id, or --market MARKET [--at TIME]")
    if args.decision_id and not _DECISION_ID.match(args.decision_id.strip().lower()):
        raise ValueError(f"decision id {args.decision_id!r} is not 32 lower-case hex characters "
                         "(the decision's trace id)")
    window = parse_duration(args.window)
    at = parse_time(args.at) if args.at else None
    source = build_source(args, logs_client=logs_client, dynamodb_client=dynamodb_client)
    try:
        if args.decision_id:
            report = explain_decision(source, args.decision_id, window=window)
        else:
            report = explain_market(source, args.market, at, window)
    except SinkError as exc:
        raise _unreachable(source, exc) from exc
    except ExplainError as exc:
        raise CliError(str(exc), Exit.NOT_FOUND) from exc
    except NoDecisions as exc:
        raise CliError(str(exc), Exit.NO_DATA) from exc
    finally:
        source.close()
    if args.json:
        render_json(report.to_dict(), out)
    else:
        render_explain(report, out, color=_color(args, out), limit=None if args.all else args.limit,
                       verbose=args.verbose)
    if not report.decisions:
        if not args.json:
            print(f"dora-otel explain: no decisions for {args.market} in the window (exit {int(Exit.NO_DATA)})",
                  file=sys.stderr)
        return int(Exit.NO_DATA)
    return int(Exit.OK)


_DECISION_ID = re.compile(r"^[0-9a-f]{32}$")


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
        """Erase the bar: the answer that follows starts on a clean line."""
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def run_reconcile(args: argparse.Namespace, *, order_source: Any = None, logs_client: Any = None,
                  dynamodb_client: Any = None, setup_logging: bool = True, stdout: TextIO | None = None,
                  stderr: TextIO | None = None) -> int:
    """Where the output goes: ``--json``: the report as one document on stdout. A terminal on stdout:
    the human summary there, and the job lines only over OTLP (when a collector is configured). A
    pipe or file on stdout: the job lines there (one JSON object per line), the summary on stderr."""
    from dora_otel.config import Config
    from dora_otel.query.joblog import JobLines
    from dora_otel.query.reconcile import ExchangeError, reconcile
    from dora_otel.query.render import render_json, render_reconcile

    out, err = stdout or sys.stdout, stderr or sys.stderr
    since, until = parse_time(args.since), parse_time(args.until)
    if until < since:
        raise ValueError(f"--until ({args.until}) is before --since ({args.since})")
    settle = parse_duration(args.settle)
    if args.live and order_source is None:
        if not args.order_source:
            raise ValueError("--live needs --order-source MODULE:CALLABLE (a factory returning an OrderSource)")
        order_source = load_order_source(args.order_source)
    elif args.order_source and not args.live:
        raise ValueError("--order-source is only used with --live")
    source = build_source(args, logs_client=logs_client, dynamodb_client=dynamodb_client)
    if source.reader is None:
        source.close()
        raise CliError("reconcile needs a ledger to read: no SQLite ledger in the data directory "
                       "(or pass --ledger dynamodb)", Exit.NOT_FOUND)
    terminal = _is_tty(out)
    human = out if terminal and not args.json else err
    job = None
    if setup_logging:
        config = Config.resolve({})
        lines_stream = None if (terminal or args.json) else out
        job = JobLines(source.env, stream=lines_stream, otlp=config.otlp_target("logs"))
    progress = _Progress(err if not terminal else out)
    try:
        report = reconcile(source, since, until, order_source=order_source if args.live else None,
                           emit=job.emit if job is not None else None, progress=progress, settle=settle,
                           now=datetime.now(timezone.utc))
    except SinkError as exc:
        raise _unreachable(source, exc) from exc
    except LogsUnavailable as exc:
        raise CliError(f"cannot read the log lines: {exc}", Exit.UNREACHABLE) from exc
    except ExchangeError as exc:
        raise CliError(str(exc), Exit.UNREACHABLE) from exc
    finally:
        progress.finish()
        source.close()
        if job is not None:
            job.close()
    if args.json:
        render_json(report.to_dict(), out)
    else:
        render_reconcile(report, human, color=_color(args, human), limit=None if args.all else args.limit)
    return report.exit_code
