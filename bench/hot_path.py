"""Hot-path cost of one fully instrumented decision cycle, as a ratio to plain logging.

One cycle = one @decision_cycle (with one plain log line inside) + two @order_place calls
(ORDER_PLACE + ORDER_RESULT each): 6 JSON lines, 5 spans, trace context on every line.
Baseline = the same cycle logged as 6 plain f-string stdlib lines through a StreamHandler.
Both write to /dev/null. Rounds alternate baseline and instrumented in the same process and the
ratio is taken per round (paired), because these machines drift up to 2x over seconds.

Two clocks, because dora-otel moves work off the trading thread (JSON formatting and log I/O to a
writer thread, span export to the batch processor's thread, ledger shipping to the shipper):
- thread (default): CPU time of the trading thread — the hot-path cost the bot's loop pays;
- wall: elapsed time of back-to-back cycles including draining the log queue — what a saturated
  loop with no idle time pays, since background threads share the GIL.

    python bench/hot_path.py [--rounds 30] [--cycles 1000] [--ledger off|sqlite] [--file] [--clock thread|wall]
                             [--placed N]

`--placed N` first places N orders (N/2 cycles), as a bot that has been trading for a while has,
and prints how long a full garbage collection then takes: what dora-otel remembers of them (the
order book joining results and fills to their decision) must not make later cycles dearer nor
the collector's pauses longer (a full collection stops every Python thread).

Prints the median and quartiles of the per-round ratio. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--cycles", type=int, default=1000, help="cycles per round")
    parser.add_argument("--ledger", default="off", choices=("off", "sqlite", "memory"),
                        help="ledger sink for the instrumented cycle (default off: core telemetry only)")
    parser.add_argument("--file", action="store_true",
                        help="also write the rotating JSON log file (non-container mode)")
    parser.add_argument("--clock", choices=("thread", "wall"), default="thread",
                        help="thread: CPU time of the trading thread only (the hot path; background exporters and "
                             "the ledger shipper excluded); wall: elapsed time of back-to-back cycles, which also "
                             "pays for background threads holding the GIL (default thread)")
    parser.add_argument("--placed", type=int, default=0, metavar="N",
                        help="orders placed before measuring (a bot that has traded a while; default 0)")
    args = parser.parse_args()

    from _cycle import baseline_cycle, instrumented_cycle, scratch_dir, timer

    import dora_otel

    devnull = open(os.devnull, "w")  # noqa: SIM115  open for the whole run, like a bot's stdout
    baseline = baseline_cycle(devnull)
    telemetry = dora_otel.setup(container_mode=not args.file, stream=devnull,
                                data_dir=scratch_dir(), ledger=args.ledger,
                                install_signal_handlers=False, watchdog_seconds=0)
    instrumented = instrumented_cycle()
    timed = timer(telemetry, args.clock, args.cycles)

    for start in range(0, args.placed // 2, 500):  # two orders per cycle
        for i in range(start, min(start + 500, args.placed // 2)):
            instrumented("KXPAST", i)
        telemetry.flush(60)
    if args.placed:
        import gc
        import time

        gc.collect()  # (what the collector still tracks after the orders is what every full collection walks)
        started = time.perf_counter()
        gc.collect()
        pause_ms = (time.perf_counter() - started) * 1000
        print(f"after {args.placed:,} orders: a full garbage collection takes {pause_ms:.1f} ms "
              f"({len(gc.get_objects()):,} objects tracked)")
    timed(baseline, False)  # warm up both paths
    timed(instrumented, True)
    ratios, base_us, inst_us = [], [], []
    for r in range(args.rounds):
        if r % 2:
            i_t = timed(instrumented, True)
            b_t = timed(baseline, False)
        else:
            b_t = timed(baseline, False)
            i_t = timed(instrumented, True)
        ratios.append(i_t / b_t)
        base_us.append(b_t * 1e6)
        inst_us.append(i_t * 1e6)
    telemetry.shutdown(reason="bench")
    q = statistics.quantiles(ratios, n=4)
    mode = f"ledger={args.ledger}, {'stdout+file' if args.file else 'stdout only'}, {args.clock} clock"
    if args.placed:
        mode += f", {args.placed:,} orders placed before"
    print(f"hot_path ({mode}): instrumented cycle / 6 plain log lines = {statistics.median(ratios):.2f}x "
          f"(quartiles {q[0]:.2f}-{q[2]:.2f}, {args.rounds} paired rounds of {args.cycles} cycles; "
          f"medians {statistics.median(inst_us):.0f} us vs {statistics.median(base_us):.0f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
