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

Prints the median and quartiles of the per-round ratio. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--cycles", type=int, default=1000, help="cycles per round")
    parser.add_argument("--ledger", default="off", choices=("off", "sqlite", "memory"),
                        help="ledger sink for the instrumented cycle (default off: core telemetry only)")
    parser.add_argument("--file", action="store_true", help="also write the rotating JSON log file (non-container mode)")
    parser.add_argument("--clock", choices=("thread", "wall"), default="thread",
                        help="thread: CPU time of the trading thread only (the hot path; background exporters and "
                             "the ledger shipper excluded); wall: elapsed time of back-to-back cycles, which also "
                             "pays for background threads holding the GIL (default thread)")
    args = parser.parse_args()

    import dora_otel

    devnull = open(os.devnull, "w")
    data_dir = tempfile.mkdtemp(prefix="dora-bench-")
    plain = logging.getLogger("bench.plain")
    plain.propagate = False
    handler = logging.StreamHandler(devnull)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    plain.addHandler(handler)
    plain.setLevel(logging.INFO)

    def baseline_cycle(market: str, i: int) -> None:
        plain.info(f"decision for {market}: 2 target orders, spread 0.05, loop {i}")
        plain.info(f"thinking about {market}")
        plain.info(f"Placing order: {market} yes@0.45 x10")
        plain.info(f"Placed order: {market} yes@0.45 - ID: o-{i}-1 in 0.2 ms")
        plain.info(f"Placing order: {market} no@0.50 x10")
        plain.info(f"Placed order: {market} no@0.50 - ID: o-{i}-2 in 0.2 ms")

    telemetry = dora_otel.setup(container_mode=not args.file, stream=devnull, data_dir=data_dir,
                                ledger=args.ledger, install_signal_handlers=False, watchdog_seconds=0)
    bot_log = logging.getLogger("bench.bot")
    targets = [{"side": "yes", "price": 0.45, "size": 10}, {"side": "no", "price": 0.50, "size": 10}]

    @dora_otel.decision_cycle
    def quote(market: str) -> list:
        bot_log.info("thinking about %s", market)
        return targets

    counter = [0]

    @dora_otel.order_place
    def place(market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> dict:
        counter[0] += 1
        return {"order": {"order_id": f"o-{counter[0]}", "status": "resting"}}

    def instrumented_cycle(market: str, i: int) -> None:
        for t in quote(market):
            place(market, t["side"], t["price"], t["size"])

    clock = time.thread_time if args.clock == "thread" else time.perf_counter

    def timed(fn, n: int) -> float:
        start = clock()
        for i in range(n):
            fn("KXBTC-26NOV", i)
        if args.clock == "wall" and fn is instrumented_cycle:
            telemetry.flush(60)  # wall clock pays for the lines still queued to the writer thread
        elapsed = clock() - start
        if fn is instrumented_cycle:
            telemetry.flush(60)  # thread clock: nothing of this round spills into the next
        return elapsed / n

    timed(baseline_cycle, args.cycles)  # warm up both paths
    timed(instrumented_cycle, args.cycles)
    ratios, base_us, inst_us = [], [], []
    for r in range(args.rounds):
        if r % 2:
            i_t = timed(instrumented_cycle, args.cycles)
            b_t = timed(baseline_cycle, args.cycles)
        else:
            b_t = timed(baseline_cycle, args.cycles)
            i_t = timed(instrumented_cycle, args.cycles)
        ratios.append(i_t / b_t)
        base_us.append(b_t * 1e6)
        inst_us.append(i_t * 1e6)
    telemetry.shutdown(reason="bench")
    q = statistics.quantiles(ratios, n=4)
    mode = f"ledger={args.ledger}, {'stdout+file' if args.file else 'stdout only'}, {args.clock} clock"
    print(f"hot_path ({mode}): instrumented cycle / 6 plain log lines = {statistics.median(ratios):.2f}x "
          f"(quartiles {q[0]:.2f}-{q[2]:.2f}, {args.rounds} paired rounds of {args.cycles} cycles; "
          f"medians {statistics.median(inst_us):.0f} us vs {statistics.median(base_us):.0f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
