"""How much time dora-otel adds between the strategy deciding and the order call starting — the
latency a trader feels — measured inside the bot's own functions (perf_counter_ns), instrumented vs
plain, paired per round.

Measured span: from the last statement of the strategy method to the first statement of the
exchange call for the first order: the decorators' after-work (DECISION_MADE, decision record) and
before-work (ORDER_PLACE line and span, ledger journal write) on the instrumented side; one plain
log line ("Placing order ...") on the plain side. Within a round the two sides' cycles are
interleaved one by one; the figure is the median over rounds of (instrumented median - plain median).

Cycles are paced (`--pace-ms`) like a bot that waits on the exchange between loops; back-to-back
cycles would instead measure background threads competing for the GIL.

    python bench/decision_to_wire.py [--ledger off|sqlite] [--rounds 20] [--cycles 500] [--pace-ms 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ledger", default="sqlite", choices=("off", "sqlite", "memory"))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--pace-ms", type=float, default=2.0,
                        help="idle time between cycles, as a bot waiting on the exchange has (default 2 ms); "
                             "background threads (log writer, span export, ledger shipper) work in it")
    args = parser.parse_args()

    from _cycle import plain_logger, scratch_dir

    import dora_otel

    devnull = open(os.devnull, "w")  # noqa: SIM115  open for the whole run, like a bot's stdout
    plain = plain_logger(devnull)
    telemetry = dora_otel.setup(container_mode=True, stream=devnull, data_dir=scratch_dir(),
                                ledger=args.ledger, install_signal_handlers=False, watchdog_seconds=0)
    targets = [{"side": "yes", "price": 0.45, "size": 10}]
    marks = [0, 0]
    now = time.perf_counter_ns

    def quote_plain(market: str) -> list:
        marks[0] = now()
        return targets

    def place_plain(market: str, side: str, price: float, size: int) -> dict:
        marks[1] = now()
        return {"order": {"order_id": "o-1", "status": "resting"}}

    def cycle_plain(market: str) -> int:
        for t in quote_plain(market):
            plain.info(f"Placing order: {market} {t['side']}@{t['price']} x{t['size']}")
            place_plain(market, t["side"], t["price"], t["size"])
        return marks[1] - marks[0]

    @dora_otel.decision_cycle
    def quote(market: str) -> list:
        marks[0] = now()
        return targets

    @dora_otel.order_place
    def place(market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> dict:
        marks[1] = now()
        return {"order": {"order_id": "o-1", "status": "resting"}}

    def cycle(market: str) -> int:
        for t in quote(market):
            place(market, t["side"], t["price"], t["size"])
        return marks[1] - marks[0]

    pace = args.pace_ms / 1000.0

    def round_gaps() -> tuple[float, float]:
        """One round: instrumented and plain cycles interleaved one by one (which goes first
        alternates), so both sides see the same moment's noise; the median gap of each, in us."""
        inst, plain_ = [], []
        for i in range(args.cycles):
            first, second = (cycle, cycle_plain) if i % 2 else (cycle_plain, cycle)
            for fn in (first, second):
                (inst if fn is cycle else plain_).append(fn("KXBTC-26NOV"))
                time.sleep(pace)
        return statistics.median(inst) / 1000.0, statistics.median(plain_) / 1000.0

    round_gaps()  # warm-up
    inst_us, plain_us, added = [], [], []
    for _ in range(args.rounds):
        inst_gap, plain_gap = round_gaps()
        inst_us.append(inst_gap)
        plain_us.append(plain_gap)
        added.append(inst_gap - plain_gap)
        telemetry.flush(60)
    telemetry.shutdown(reason="bench")
    med = statistics.median
    q1, _, q3 = statistics.quantiles(added, n=4) if len(added) > 1 else (added[0], 0, added[0])
    print(f"decision_to_wire (ledger={args.ledger}, {args.rounds} paired rounds of {args.cycles} cycles each side, "
          f"interleaved, paced {args.pace_ms:g} ms): strategy return -> order call starts: "
          f"{med(inst_us):.1f} us instrumented vs {med(plain_us):.1f} us with one plain log line; "
          f"dora-otel adds {med(added):.1f} us (quartiles {q1:.1f} to {q3:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
