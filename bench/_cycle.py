"""The decision cycle the hot-path benchmarks measure, and its plain-logging baseline (shared by
hot_path.py and ledger_cycle.py so both measure exactly the same thing).

One cycle = one @decision_cycle (with one plain bot log line inside) + two @order_place calls
(ORDER_PLACE + ORDER_RESULT each): 6 JSON lines and 5 spans. The baseline logs the same cycle as
6 plain f-string stdlib lines through a StreamHandler. Both write to /dev/null.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any, TextIO

Cycle = Callable[[str, int], None]
MARKET = "KXBTC-26NOV"


def plain_logger(stream: TextIO) -> logging.Logger:
    """The bot's logging today: a StreamHandler with a classic text format, nothing else."""
    plain = logging.getLogger("bench.plain")
    plain.propagate = False
    if not plain.handlers:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        plain.addHandler(handler)
    plain.setLevel(logging.INFO)
    return plain


def baseline_cycle(stream: TextIO) -> Cycle:
    plain = plain_logger(stream)

    def cycle(market: str, i: int) -> None:
        plain.info(f"decision for {market}: 2 target orders, spread 0.05, loop {i}")
        plain.info(f"thinking about {market}")
        plain.info(f"Placing order: {market} yes@0.45 x10")
        plain.info(f"Placed order: {market} yes@0.45 - ID: o-{i}-1 in 0.2 ms")
        plain.info(f"Placing order: {market} no@0.50 x10")
        plain.info(f"Placed order: {market} no@0.50 - ID: o-{i}-2 in 0.2 ms")

    return cycle


def instrumented_cycle() -> Cycle:
    """The same cycle through dora_otel's public API (call after dora_otel.setup())."""
    import dora_otel

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

    def cycle(market: str, i: int) -> None:
        for t in quote(market):
            place(market, t["side"], t["price"], t["size"])

    return cycle


def timer(telemetry: Any, clock_name: str, cycles: int) -> Callable[[Cycle, bool], float]:
    """`timed(cycle, instrumented)` -> seconds per cycle.

    thread clock: the trading thread's CPU time; the log queue is drained after the clock stops,
    so nothing of one round spills into the next. wall clock: elapsed time including draining the
    log queue, i.e. what a loop with no idle time pays for the background threads.
    """
    clock = time.thread_time if clock_name == "thread" else time.perf_counter

    def timed(cycle: Cycle, instrumented: bool) -> float:
        start = clock()
        for i in range(cycles):
            cycle(MARKET, i)
        if instrumented and clock_name == "wall":
            telemetry.flush(60)
        elapsed = clock() - start
        if instrumented:
            telemetry.flush(60)
        return elapsed / cycles

    return timed


def scratch_dir(prefix: str = "dora-bench-") -> str:
    """A data directory for one benchmark run, removed when the process exits."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return path
