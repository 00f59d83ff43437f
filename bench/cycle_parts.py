"""What each part of one instrumented decision cycle costs the trading thread, in µs, measured
paired: per round, N cycles as they are and N with the part knocked out (bench/_knockouts.py),
in alternating order, in one process; the median difference over the rounds is the part's price.

Parts overlap (a knocked-out line also spares the garbage collector), so the prices do not add
up to the cycle. Prices inside the cycle are higher than the same code timed alone in a loop:
the cycle runs many different functions once each, so each pays for a cold cache. Use it to see
where a cycle's time goes and whether a change made a part cheaper.

    python bench/cycle_parts.py [--rounds 15] [--cycles 300] [--ledger off|sqlite] [PART ...]

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main() -> int:
    from _knockouts import knockouts

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cycles", type=int, default=300, help="cycles per round and side")
    parser.add_argument("--ledger", default="off", choices=("off", "sqlite", "memory"))
    parser.add_argument("parts", nargs="*", help="parts to price (default: all)")
    args = parser.parse_args()

    from _cycle import MARKET, instrumented_cycle, scratch_dir

    import dora_otel
    from dora_otel import decorators

    if not decorators.__file__.endswith(".py"):  # (a compiled build: its classes cannot be patched)
        parser.error(f"the hot path is compiled ({decorators.__file__}): knock-outs need the pure-Python modules "
                     "(pip install -e .)")
    devnull = open(os.devnull, "w")  # noqa: SIM115  open for the whole run
    telemetry = dora_otel.setup(container_mode=True, stream=devnull, data_dir=scratch_dir(), ledger=args.ledger,
                                install_signal_handlers=False, watchdog_seconds=0)
    cycle = instrumented_cycle()
    parts = knockouts()
    unknown = [p for p in args.parts if p not in parts]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; known: {', '.join(parts)}")
    for i in range(500):  # warm up
        cycle(MARKET, i)
    telemetry.flush(60)
    loop = 0
    for name in args.parts or list(parts):
        off, on = parts[name]
        saved, whole = [], []
        for r in range(args.rounds):
            took = {}
            for knocked_out in ((False, True) if r % 2 else (True, False)):
                if knocked_out:
                    off()
                started = time.thread_time()
                for _ in range(args.cycles):
                    cycle(MARKET, loop)
                    loop += 1
                took[knocked_out] = (time.thread_time() - started) / args.cycles * 1e6
                if knocked_out:
                    on()
                telemetry.flush(60)
            saved.append(took[False] - took[True])
            whole.append(took[False])
        price, cycle_us = statistics.median(saved), statistics.median(whole)
        share = 100 * price / cycle_us
        print(f"{name:16s} {price:6.1f} us of {cycle_us:5.1f} us per cycle ({share:3.0f}%)", flush=True)
    telemetry.shutdown(reason="bench")
    return 0


if __name__ == "__main__":
    sys.exit(main())
