"""The `dora-otel` command: demo, explain, reconcile, report, tables.

Every subcommand ends with a code from one table (``dora_otel.query.output.Exit``, printed by
``--help`` and in the README): 0 ok, 1 mismatches, 2 usage error, 3 not found, 4 no data in range,
5 backend unreachable, 130 interrupted, 141 stdout closed by its reader (``| head``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dora_otel._version import __version__
from dora_otel.query.output import EXIT_TABLE, CliError, Exit, closed_pipe


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dora-otel",
        description="Observability for the Dora market-making bot: answer 'the decision log says trade X, "
                    "but the bot didn't execute — what happened?'",
        epilog="Configuration comes from the environment (DORA_ENV, DORA_LEDGER, DORA_DATA_DIR, "
               "OTEL_EXPORTER_OTLP_ENDPOINT, AWS_REGION, ...); see README.md.\n\n" + EXIT_TABLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run a simulated market-making bot on a paper exchange with seeded faults",
                          description="Run the demo bot: JSON log lines on stdout, a summary on stderr.")
    demo.add_argument("--cycles", type=_positive_int, default=200, help="trading loops to run (default 200)")
    demo.add_argument("--markets", type=_positive_int, default=3, help="markets to quote (default 3)")
    demo.add_argument("--seed", type=int, default=7, help="random seed: same seed, same run (default 7)")
    demo.add_argument("--fault-rate", type=_rate, default=0.1,
                      help="share of orders hit by a fault: reject, timeout (live or lost), silent drop (default 0.1)")
    demo.add_argument("--ledger", choices=("sqlite", "dynamodb", "memory", "off"), default=None,
                      help="execution ledger sink (default: DORA_LEDGER, else sqlite)")
    demo.add_argument("--data-dir", default=None, help="where logs, spans and the local ledger go "
                                                        "(default: DORA_DATA_DIR, else ./dora-otel-data)")
    demo.add_argument("--truth", metavar="PATH", default=None,
                      help="write what really happened to PATH (JSON): the paper exchange's own record of "
                           "every order ('orders') and the bot's record of the orders it held back ('suppressed')")

    _add_query_commands(sub)
    _add_tables_command(sub)
    return parser


def _add_query_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    try:
        from dora_otel.query import cli as query_cli
    except ImportError:
        return
    query_cli.add_commands(sub)


def _add_tables_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tables = sub.add_parser("tables", help="create or describe the DynamoDB ledger tables",
                            formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_TABLE,
                            description="Create (idempotent; waits until ACTIVE; enables TTL) or describe "
                                        "dora_execution_log_{env} and dora_decision_log_{env}. Uses boto3's "
                                        "standard settings: AWS_REGION, AWS_ENDPOINT_URL_DYNAMODB, profiles.")
    tables.add_argument("action", choices=("create", "describe"))
    tables.add_argument("--env", default=None, help="demo or prod (default: DORA_ENV, else demo)")
    tables.add_argument("--ttl-days", type=int, default=None, help="TTL on expires_at, 30-90 (default 30)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else int(Exit.USAGE)
    except BrokenPipeError:  # `dora-otel --help | head`
        return closed_pipe()
    if args.command is None:
        parser.print_help(sys.stderr)
        return int(Exit.USAGE)
    try:
        code = _run(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return closed_pipe()
    except CliError as exc:
        _say(f"dora-otel {args.command}: {exc}")
        return int(exc.code)
    except ValueError as exc:  # bad input or configuration: say what and exit 2, no traceback
        _say(f"dora-otel {args.command}: {exc}")
        return int(Exit.USAGE)
    except KeyboardInterrupt:
        return int(Exit.INTERRUPTED)


def _say(text: str) -> None:
    from dora_otel.query.output import scrub_text

    try:
        print(scrub_text(text), file=sys.stderr)
    except (BrokenPipeError, OSError):
        pass


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from dora_otel.demo.run import run_demo

        return run_demo(cycles=args.cycles, markets=args.markets, seed=args.seed, fault_rate=args.fault_rate,
                        ledger=args.ledger, data_dir=args.data_dir, truth=args.truth)
    if args.command == "tables":
        return _tables(args)
    return int(args.handler(args))


def _tables(args: argparse.Namespace) -> int:
    """`tables create` / `tables describe`: describe prints ONE JSON document and exits 3 when a table
    is missing; an unreachable DynamoDB exits 5."""
    import json

    from dora_otel.config import Config
    from dora_otel.sinks import tables

    config = Config.resolve({"env": args.env, "ledger_ttl_days": args.ttl_days})
    try:
        if args.action == "create":
            names = tables.create_tables(config.env, ttl_days=config.ledger_ttl_days)
            print(f"tables ready: {', '.join(names)}", file=sys.stderr)
            return int(Exit.OK)
        infos = tables.describe_tables(config.env)
    except Exception as exc:  # noqa: BLE001 - boto3/botocore errors of any kind: one line, named
        _say(f"dora-otel tables {args.action}: {type(exc).__name__}: {exc}")
        return int(_boto_exit(exc))
    missing = [info["name"] for info in infos if info.get("status") == "MISSING"]
    # indexes of an existing table made by an older dora-otel (gsi_order): it works, with less
    missing_indexes = {info["name"]: info["missing_gsis"] for info in infos
                       if info.get("status") != "MISSING" and info.get("missing_gsis")}
    print(json.dumps({"env": config.env, "tables": infos, "missing": missing, "missing_indexes": missing_indexes},
                     default=str, indent=2))
    for name, indexes in missing_indexes.items():
        print(f"dora-otel tables describe: {name} lacks index {', '.join(indexes)} (explain and reconcile then "
              "cannot join fills and cancels recorded by order_id alone after a restart on another host); "
              f"`dora-otel tables create --env {config.env}` adds it, or update the CloudFormation stack",
              file=sys.stderr)
    if missing:
        print(f"dora-otel tables describe: missing {', '.join(missing)}; create them with "
              f"`dora-otel tables create --env {config.env}` (exit {int(Exit.NOT_FOUND)})", file=sys.stderr)
        return int(Exit.NOT_FOUND)
    return int(Exit.OK)


def _boto_exit(exc: Exception) -> Exit:
    """Credentials/endpoint/network problems are 'unreachable'; anything else AWS said is too, except
    a bad request we made (usage)."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""
    if code in ("ValidationException",):
        return Exit.USAGE
    return Exit.UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
