"""Benchmark: does a DynamoDB outage slow the trading loop? And what does it cost in memory?

Starts DynamoDB Local (tests/servers.py; needs ``npm ci``) and runs a simulated bot loop in this
process: each cycle does a little Python work (building quotes) and appends three ledger records
(decision, ORDER_PLACE, ORDER_RESULT) to a started Ledger shipping to DynamoDB Local. The run
alternates blocks of ``--block`` seconds:

* healthy  — the server runs and the backlog is empty;
* outage   — the server is SIGSTOPped (the shipper's requests hang until their read timeout,
             then back off); records pile up in the journal;
* recovery — the server is resumed and the shipper catches up on the backlog (reported apart).

Per condition it prints the p50/p99/p99.9 of one cycle (work + 3 appends) and of a single append,
and the ratio outage/healthy (paired in one process: these machines drift up to 1.8x over seconds,
so only ratios mean anything). RSS is sampled during the outages. Prints; asserts nothing.

    python bench/ledger_outage.py --seconds 300
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import servers  # noqa: E402

from dora_otel.ledger import Ledger  # noqa: E402
from dora_otel.sinks.dynamodb import DynamoDBSink  # noqa: E402
from dora_otel.sinks.tables import create_tables  # noqa: E402

RUN_ID = "20261124-000000-outg"


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Loop:
    """A stand-in trading loop: some quote arithmetic, then the cycle's three ledger records."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.seq = 0
        self.book = [0.5 + i / 1000 for i in range(200)]

    def cycle(self, append_times: list[int]) -> None:
        mid = sum(self.book) / len(self.book)
        spread = max(self.book) - min(self.book)
        quotes = [
            {
                "slot": i,
                "side": "yes" if i % 2 else "no",
                "price": round(mid + (i - 1) * spread / 10, 4),
                "size": 10,
            }
            for i in range(2)
        ]
        decision_id = f"{self.seq:032x}"
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{self.seq % 1000000:06d}Z"
        base = {
            "bot_run_id": RUN_ID,
            "decision_id": decision_id,
            "env": "bench",
            "bot_version": "abc123",
            "market": "KXBTC-26NOV24-B97000",
            "expires_at": 1_900_000_000,
        }
        records = [
            {
                **base,
                "kind": "decision",
                "execution_log_partition": RUN_ID,
                "decision_ts": ts,
                "decision_day": ts[:10],
                "event_ts": ts,
                "seq": self.seq,
                "event_id": f"{RUN_ID}:{self.seq}",
                "loop": self.seq,
                "target_count": 2,
                "spread": spread,
                "target_orders": quotes,
            },
            {
                **base,
                "kind": "execution",
                "event_type": "ORDER_PLACE",
                "event_ts": ts,
                "seq": self.seq + 1,
                "event_id": f"{RUN_ID}:{self.seq + 1}",
                "side": "yes",
                "price": quotes[0]["price"],
                "size": 10,
            },
            {
                **base,
                "kind": "execution",
                "event_type": "ORDER_RESULT",
                "event_ts": ts,
                "seq": self.seq + 2,
                "event_id": f"{RUN_ID}:{self.seq + 2}",
                "status": "ACCEPTED",
                "latency_ms": 12.5,
                "order_id": "o1",
            },
        ]
        self.seq += 3
        for record in records:
            started = time.perf_counter_ns()
            self.ledger.append(record)
            append_times.append(time.perf_counter_ns() - started)


def percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000  # ns -> us


def run_block(loop: Loop, seconds: float, period_s: float, cycles: list[int], appends: list[int]) -> None:
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        started = time.perf_counter_ns()
        loop.cycle(appends)
        cycles.append(time.perf_counter_ns() - started)
        next_at += period_s
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300, help="total run time (default 300)")
    parser.add_argument(
        "--block", type=float, default=10, help="length of each healthy/outage block (default 10)"
    )
    parser.add_argument(
        "--period-ms", type=float, default=10.0, help="loop period (default 10 ms = 100 cycles/s)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="  [%(levelname)s %(name)s] %(message)s")

    server = servers.dynamodb_local().start()
    conditions: dict[str, tuple[list[int], list[int]]] = {
        c: ([], []) for c in ("healthy", "outage", "recovery")
    }
    rss_samples: list[float] = []
    recovery_s: list[float] = []
    try:
        client = server.client(connect_timeout_s=1.0, read_timeout_s=1.0)
        create_tables("bench", client=client, ttl_days=None)
        with tempfile.TemporaryDirectory() as tmp:
            ledger = Ledger(DynamoDBSink("bench", client=client), Path(tmp) / "journal")
            ledger.start()
            loop = Loop(ledger)
            run_block(loop, 2, args.period_ms / 1000, [], [])  # warm-up
            ledger.flush(60)
            gc.collect()
            rss_start = rss_mb()
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                run_block(loop, args.block, args.period_ms / 1000, *conditions["healthy"])
                server.pause()
                try:
                    end = time.monotonic() + args.block
                    while time.monotonic() < end:
                        run_block(
                            loop,
                            min(1.0, end - time.monotonic()),
                            args.period_ms / 1000,
                            *conditions["outage"],
                        )
                        rss_samples.append(rss_mb())
                finally:
                    server.resume()
                started = time.monotonic()
                while not ledger.flush(0) and time.monotonic() - started < 120:
                    run_block(loop, 0.5, args.period_ms / 1000, *conditions["recovery"])
                recovery_s.append(time.monotonic() - started)
            stats = ledger.stats()
            ledger.shutdown(30)
    finally:
        server.stop()

    print(
        f"loop: {args.period_ms:g} ms period, 3 appends/cycle; blocks of {args.block:g} s; total {args.seconds:g} s"
    )
    print(
        f"{'condition':<10} {'cycles':>8} {'cycle p50':>10} {'cycle p99':>10} {'cycle p99.9':>12} "
        f"{'append p50':>11} {'append p99':>11}  (us)"
    )
    for name, (cycles, appends) in conditions.items():
        print(
            f"{name:<10} {len(cycles):>8} {percentile(cycles, 0.5):>10.1f} {percentile(cycles, 0.99):>10.1f} "
            f"{percentile(cycles, 0.999):>12.1f} {percentile(appends, 0.5):>11.2f} {percentile(appends, 0.99):>11.2f}"
        )
    healthy, outage = conditions["healthy"], conditions["outage"]
    print(
        f"ratio outage/healthy: cycle p99 {percentile(outage[0], 0.99) / percentile(healthy[0], 0.99):.2f}, "
        f"cycle p50 {percentile(outage[0], 0.5) / percentile(healthy[0], 0.5):.2f}, "
        f"append p99 {percentile(outage[1], 0.99) / percentile(healthy[1], 0.99):.2f}  (target: cycle p99 <= 1.10)"
    )
    print(
        f"recovery (catch-up after each outage block): median {statistics.median(recovery_s):.2f} s, "
        f"max {max(recovery_s):.2f} s"
    )
    print(
        f"RSS: {rss_start:.1f} MB at start, max {max(rss_samples):.1f} MB during outages "
        f"(last {rss_samples[-1]:.1f} MB)"
    )
    print(
        f"ledger: shipped {stats['shipped']}, retried {stats['retried']}, dropped {stats['dropped']}, "
        f"over_bound {stats['over_bound']}, rejected {stats['rejected']}"
    )


if __name__ == "__main__":
    main()
