"""A stand-in bot for the kill -9 test: appends records through a Ledger that ships to DynamoDB.

Protocol on stdout/stdin: appends ``--first`` records, waits until they are shipped, prints
``READY``; waits for a line on stdin; appends the rest (``--count`` in all), prints ``DONE`` and
sleeps until it is killed.
"""

from __future__ import annotations

import argparse
import sys
import time

from dora_otel.ledger import Ledger
from dora_otel.sinks.dynamodb import DynamoDBSink, create_client

RUN_ID = "20261124-000000-k9k9"


def record(seq: int) -> dict[str, object]:
    return {
        "kind": "execution",
        "bot_run_id": RUN_ID,
        "decision_id": f"{seq // 3:032x}",
        "event_ts": f"2026-11-24T00:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq:06d}Z",
        "seq": seq,
        "event_id": f"{RUN_ID}:{seq}",
        "event_type": ("ORDER_PLACE", "ORDER_RESULT", "FILL")[seq % 3],
        "market": "KXBTC-26NOV24-B97000",
        "price": 0.55,
        "size": 10,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first", type=int, required=True)
    args = parser.parse_args()

    client = create_client(
        endpoint_url=args.endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        connect_timeout_s=0.5,
        read_timeout_s=0.5,
    )
    ledger = Ledger(DynamoDBSink(args.env, client=client), args.journal, retry_base_s=0.05, retry_max_s=0.2)
    ledger.start()
    for seq in range(args.first):
        ledger.append(record(seq))
    if not ledger.flush(60):
        print("FLUSH-FAILED", flush=True)
        sys.exit(1)
    print("READY", flush=True)
    sys.stdin.readline()
    for seq in range(args.first, args.count):
        ledger.append(record(seq))
    print("DONE", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
