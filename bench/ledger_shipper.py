"""Benchmark: the ledger shipper's throughput into DynamoDB Local and its catch-up time for a backlog.

Starts DynamoDB Local itself (tests/servers.py; needs ``npm ci``), creates the ledger tables, appends
``--records`` execution records to a Ledger whose shipper is not yet running (a backlog, as after an
outage or a crash), then starts the shipper and times how long it takes to ship them all.

Prints figures; asserts nothing about time. Usage::

    python bench/ledger_shipper.py --records 100000
"""

from __future__ import annotations

import argparse
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

RUN_ID = "20261124-000000-bnch"


def record(seq: int) -> dict[str, object]:
    return {
        "kind": "execution",
        "bot_run_id": RUN_ID,
        "decision_id": f"{seq // 3:032x}",
        "event_ts": f"2026-11-24T{seq // 3600 % 24:02d}:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq % 1000000:06d}Z",
        "seq": seq,
        "event_id": f"{RUN_ID}:{seq}",
        "event_type": ("ORDER_PLACE", "ORDER_RESULT", "FILL")[seq % 3],
        "env": "bench",
        "bot_version": "abc123",
        "market": "KXBTC-26NOV24-B97000",
        "client_order_id": f"{seq // 3:032x}-{seq % 2}",
        "side": "yes",
        "price": 0.55,
        "size": 10,
        "status": "ACCEPTED",
        "latency_ms": 12.5,
        "trace_id": f"{seq // 3:032x}",
        "span_id": f"{seq:016x}",
        "expires_at": 1_900_000_000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="backlog size (default 100000)")
    args = parser.parse_args()

    server = servers.dynamodb_local().start()
    try:
        client = server.client(read_timeout_s=10.0)
        create_tables("bench", client=client, ttl_days=None)
        with tempfile.TemporaryDirectory() as tmp:
            sink = DynamoDBSink("bench", client=client)
            ledger = Ledger(sink, Path(tmp) / "journal")
            started = time.perf_counter()
            for seq in range(args.records):
                ledger.append(record(seq))
            appended = time.perf_counter() - started
            backlog = ledger.stats()["journal_bytes"]

            started = time.perf_counter()
            ledger.start()
            if not ledger.flush(3600):
                print("flush timed out", file=sys.stderr)
            shipped_in = time.perf_counter() - started
            stats = ledger.stats()
            ledger.shutdown(10)

        count = client.describe_table(TableName="dora_execution_log_bench")["Table"]["ItemCount"]
        print(f"records                 {args.records}")
        print(f"backlog on disk         {backlog / 1e6:.1f} MB ({backlog / args.records:.0f} B/record)")
        print(f"append (no shipper)     {appended / args.records * 1e6:.2f} us/record")
        print(f"catch-up time           {shipped_in:.1f} s")
        print(f"shipper throughput      {args.records / shipped_in:,.0f} events/s")
        print(
            f"BatchWriteItem calls    {sink.write_calls} ({args.records / max(1, sink.write_calls):.1f} records/call)"
        )
        print(f"shipped / retried       {stats['shipped']} / {stats['retried']}")
        print(f"items in table (approx) {count}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
