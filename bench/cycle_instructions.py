"""CPU instructions the trading thread executes per hot-path cycle: a deterministic companion to
hot_path.py for comparing two versions of the code on a noisy machine (timings there drift 2-3x
between runs; instruction counts repeat to ~0.3%).

The cycle is bench/_cycle.py's (a decision, two orders, 6 lines, 5 spans). The event thread is
paused while the cycles run (it would otherwise add its own instructions), so the count is the
trading thread's work plus the garbage collector's (with `--ledger`, also the shipper thread's:
it is not paused). Instructions are not time: dora's Python code
runs fewer instructions per µs than the plain-logging baseline's C-heavy path, so this ranks
changes to the same code, it does not replace the paired time ratios.

Needs valgrind (Debian: `apt-get install valgrind`); runs the cycle under callgrind twice (0 and N
cycles) and prints the difference per cycle:

    python bench/cycle_instructions.py [--cycles 200] [--ledger off|sqlite] [--baseline] [--event-thread]
    PYTHONPATH=/path/to/other/checkout python bench/cycle_instructions.py   # the other version

`--event-thread` counts the other side instead: the event thread's work per cycle (formatting the
cycle's 6 JSON lines, scrubbing them, encoding its 5 spans for the spans file). Both runs play N
cycles with the event thread paused; one then drains the queue once, on the main thread (the
writer's own `_drain`, so the same code runs), and the difference is divided by N. The wall-clock
ratio of hot_path.py pays for this work too, because the event thread shares the GIL.

Knock-outs (what a part costs): `DORA_BENCH_KNOCKOUT=<name>` replaces one part with a no-op in the
measured process; see KNOCKOUTS below (bench/_knockouts.py). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

# The parts a knock-out can remove (bench/_knockouts.py, shared with cycle_parts.py).
KNOCKOUTS = ("emit", "put_line", "span_end", "attach", "order_book", "decide", "client_order_id", "orders_hash",
             "spread", "read_response", "bot_line", "bot_line_queue", "gc")


def _run_cycles(cycles: int, ledger: str, baseline: bool, data_dir: str, drain: bool = False) -> None:
    """The measured process: set up, warm up, pause the event thread, run `cycles` cycles, drain
    the queue once on this thread when `drain`, exit."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _cycle import MARKET, baseline_cycle, instrumented_cycle

    import dora_otel
    from dora_otel import logs

    devnull = open(os.devnull, "w")  # noqa: SIM115  open for the whole run
    telemetry = dora_otel.setup(container_mode=True, stream=devnull, data_dir=data_dir,
                                ledger=ledger, install_signal_handlers=False, watchdog_seconds=0)
    cycle = baseline_cycle(devnull) if baseline else instrumented_cycle()
    for i in range(200):
        cycle(MARKET, i)
    telemetry.flush(60)
    pipeline = logs.ACTIVE_PIPELINE
    if pipeline is not None:  # the writer wakes only when kicked from here on
        pipeline._writer._interval_s = 1e9
        pipeline._writer.kick()
        time.sleep(0.05)
    knockout = os.environ.get("DORA_BENCH_KNOCKOUT")
    if knockout:
        from _knockouts import knockouts

        knockouts()[knockout][0]()  # (switched off for good: this process only counts)
    for i in range(cycles):
        cycle(MARKET, i)
    if drain and pipeline is not None:
        pipeline._writer._drain()  # (the paused writer thread stays asleep: the kick is never set)
    os._exit(0)  # no shutdown work in the count


def _instructions(cycles: int, args: argparse.Namespace, drain: bool = False) -> int:
    with tempfile.TemporaryDirectory(prefix="dora-callgrind-") as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", sys.executable,
               os.path.abspath(__file__), "--child", str(cycles), "--ledger", args.ledger, "--data-dir", f"{tmp}/data"]
        if args.baseline:
            cmd.append("--baseline")
        if drain:
            cmd.append("--drain")
        env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts every run: repeatable counts
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        found = re.search(r"refs:\s*([\d,]+)", done.stderr)
        if found is None:
            raise SystemExit(f"valgrind gave no instruction count:\n{done.stderr[-2000:]}")
        return int(found.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--ledger", default="off", choices=("off", "sqlite", "memory"))
    parser.add_argument("--baseline", action="store_true", help="count the 6 plain log lines instead")
    parser.add_argument("--event-thread", action="store_true",
                        help="count the event thread's work per cycle (lines and spans encoded) instead")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--drain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _run_cycles(args.child, args.ledger, args.baseline, args.data_dir or tempfile.mkdtemp(prefix="dora-bench-"),
                    args.drain)
        return 0
    if shutil.which("valgrind") is None:
        print("cycle_instructions: valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    if os.environ.get("DORA_BENCH_KNOCKOUT", "") not in ("", *KNOCKOUTS):
        print(f"cycle_instructions: unknown DORA_BENCH_KNOCKOUT; known: {', '.join(KNOCKOUTS)}", file=sys.stderr)
        return 2
    if args.event_thread:
        per_cycle = (_instructions(args.cycles, args, drain=True) - _instructions(args.cycles, args)) / args.cycles
        knockout = os.environ.get("DORA_BENCH_KNOCKOUT")
        print(f"cycle_instructions (event thread, ledger={args.ledger}{', without ' + knockout if knockout else ''}): "
              f"{per_cycle:,.0f} instructions per cycle ({args.cycles} cycles drained at once)")
        return 0
    per_cycle = (_instructions(args.cycles, args) - _instructions(0, args)) / args.cycles
    what = "6 plain log lines" if args.baseline else f"instrumented cycle, ledger={args.ledger}"
    knockout = os.environ.get("DORA_BENCH_KNOCKOUT")
    print(f"cycle_instructions ({what}{', without ' + knockout if knockout else ''}): "
          f"{per_cycle:,.0f} instructions per cycle ({args.cycles} cycles, event thread paused)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
