"""Cost of `record_fill` with the order index (dora_otel/ledger/orders.py), as paired ratios to
today's `record_fill` (the in-memory order book only, a fill of an order placed by this run).

Cases, each timed on the calling thread's CPU clock (the thread that calls record_fill: the fill
poller, or the trading loop), in rounds that alternate with the baseline (paired ratio per round):

- same run:     a fill of an order this run placed (the usual case): answered from memory;
- earlier run:  the first fill of an order an earlier run placed: memory miss, one primary-key
                SELECT on the index file (every order is filled once, so every call reads the file);
- unknown:      an order nobody knows: memory miss and a file miss, recorded unmatched.

Also the order path: `add` of the in-memory book vs the index (a dict insert plus a deque append),
ns per call. Every record_fill writes its JSON line and its ledger record (ledger=sqlite).

    python bench/record_fill.py [--rounds 20] [--fills 500]

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.trace import SpanContext, TraceFlags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--fills", type=int, default=500, help="record_fill calls per round and case")
    args = parser.parse_args()

    import dora_otel
    from dora_otel import _runtime
    from dora_otel.ledger.orders import OrderIndex, index_path

    data_dir = Path(tempfile.mkdtemp(prefix="dora-bench-fill-"))
    devnull = open(os.devnull, "w")  # noqa: SIM115  (open for the whole run, like a bot's stdout)
    telemetry = dora_otel.setup(container_mode=True, stream=devnull, data_dir=data_dir, ledger="sqlite",
                                install_signal_handlers=False, watchdog_seconds=0)
    runtime = _runtime.ACTIVE
    assert runtime is not None
    path = index_path(data_dir)

    def ref(i: int, tag: str) -> _runtime.OrderRef:
        ctx = SpanContext(trace_id=0x1234_0000 + i, span_id=0x99 + i, is_remote=False,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED))
        return _runtime.OrderRef(format(ctx.trace_id, "032x"), ctx, "KXBENCH-1", i % 2, "yes", 0.45, 10,
                                 f"{tag}-coid-{i}")

    # The earlier run: every order of every round, written to the index file.
    earlier = OrderIndex(path)
    total = (args.rounds + 1) * args.fills
    for i in range(total):
        earlier.add(f"old-{i}", ref(i, "old"))
    assert earlier.flush(60), "the index writer did not catch up"
    earlier.close()

    book = _runtime.OrderBook()  # today's runtime book
    index = OrderIndex(path)
    for i in range(args.fills):
        book.add(f"now-{i}", ref(i, "now"))
        index.add(f"now-{i}", ref(i, "now"))

    clock = time.thread_time

    def timed(orders: Any, ids: Callable[..., str]) -> float:
        runtime.orders = orders
        start = clock()
        for i in range(args.fills):
            dora_otel.record_fill(order_id=ids(i=i), price=0.45, size=1, pnl_delta=0.0)
        elapsed = clock() - start
        telemetry.flush(60)
        return elapsed / args.fills

    cases: dict[str, list[float]] = {"same run": [], "earlier run": [], "unknown": []}
    base_us: list[float] = []
    timed(book, "now-{i}".format)  # warm up
    for r in range(args.rounds):
        fresh = OrderIndex(path)  # a restarted process: nothing of the earlier run in memory
        first = r * args.fills
        measured: dict[str, Callable[[], float]] = {
            "same run": functools.partial(timed, index, "now-{i}".format),
            "earlier run": functools.partial(timed, fresh, lambda i, first=first: f"old-{first + i}"),
            "unknown": functools.partial(timed, index, lambda i, r=r: f"nobody-{r}-{i}"),
        }
        for name, run in measured.items():
            if r % 2:
                t, b = run(), timed(book, "now-{i}".format)
            else:
                b, t = timed(book, "now-{i}".format), run()
            cases[name].append(t / b)
            base_us.append(b * 1e6)
        fresh.close()

    add_ratio = _add_cost(book, index, ref)
    telemetry.shutdown(reason="bench")
    index.close()
    print(f"record_fill (ledger=sqlite, calling thread's CPU clock, {args.rounds} paired rounds of {args.fills} "
          f"fills; today's record_fill median {statistics.median(base_us):.1f} us):")
    for name, ratios in cases.items():
        q = statistics.quantiles(ratios, n=4)
        print(f"  {name:<12} / today = {statistics.median(ratios):.2f}x (quartiles {q[0]:.2f}-{q[2]:.2f})")
    print(f"  order path: index add / in-memory add = {add_ratio[0]:.2f}x ({add_ratio[1]:.0f} ns vs "
          f"{add_ratio[2]:.0f} ns per call)")
    return 0


def _add_cost(book: Any, index: Any, ref: Callable[[int, str], Any]) -> tuple[float, float, float]:
    refs = [ref(i, "add") for i in range(2000)]
    ratios, idx_ns, book_ns = [], [], []
    for r in range(20):
        timings = []
        for orders in ((book, index) if r % 2 == 0 else (index, book)):
            start = time.perf_counter_ns()
            for i, one in enumerate(refs):
                orders.add(f"add-{r}-{i}", one)
            timings.append((orders, (time.perf_counter_ns() - start) / len(refs)))
        per = {id(o): t for o, t in timings}
        ratios.append(per[id(index)] / per[id(book)])
        idx_ns.append(per[id(index)])
        book_ns.append(per[id(book)])
        index.flush(10)
    return statistics.median(ratios), statistics.median(idx_ns), statistics.median(book_ns)


if __name__ == "__main__":
    sys.exit(main())
