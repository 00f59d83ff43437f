"""Throughput ceiling: decisions per second one thread can instrument back to back (the hot-path
cycle of bench/_cycle.py: a decision, two orders, 6 lines, 5 spans), wall clock including draining
the event queue, so background work that shares the GIL is paid for. Runs against whichever
dora_otel is importable, so the same script measures another checkout:

    python bench/throughput.py [--seconds 3] [--repeats 5] [--ledger off|sqlite]
    PYTHONPATH=/path/to/other/checkout python bench/throughput.py

Prints the median and quartiles of the repeats. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ledger", default="off", choices=("off", "sqlite", "memory"))
    args = parser.parse_args()

    from _cycle import MARKET, instrumented_cycle, scratch_dir

    import dora_otel

    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    telemetry = dora_otel.setup(container_mode=True, stream=devnull, data_dir=scratch_dir(),
                                ledger=args.ledger, install_signal_handlers=False, watchdog_seconds=0)
    cycle = instrumented_cycle()
    for i in range(200):
        cycle(MARKET, i)
    telemetry.flush(60)
    rates = []
    for _ in range(args.repeats):
        start, n = time.perf_counter(), 0
        deadline = start + args.seconds
        while time.perf_counter() < deadline:
            for i in range(100):
                cycle(MARKET, n + i)
            n += 100
        telemetry.flush(60)
        rates.append(n / (time.perf_counter() - start))
    telemetry.shutdown(reason="bench")
    q = statistics.quantiles(rates, n=4) if len(rates) > 1 else [rates[0]] * 3
    print(f"throughput (ledger={args.ledger}, {dora_otel.__file__.rsplit('/', 2)[0]}): "
          f"{statistics.median(rates):.0f} decisions/s (quartiles {q[0]:.0f}-{q[2]:.0f}, "
          f"{args.repeats} x {args.seconds:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
