"""`dora-otel explain` on a local ledger of 1,000,000 execution events (issue: explain/reconcile, speed).

Builds, in a temporary data directory (or --dir), what a long bot run leaves behind:
* the SQLite ledger (`ledger/ledger.sqlite3`, the sink's own schema and indexes) with --events
  execution records (default 1,000,000) and their decision records: --markets markets (default 20),
  one decision per market every 5 s, two target orders each, every order placed, answered
  (5% rejected, 2% timed out), cancelled at the next requote, 10% partly or fully filled, and 0.5%
  fills that match no decision;
* the rotating JSON log file (`logs/dora-bot.jsonl` + `.1` … `.5`, 50 MB each, as the bot's
  RotatingFileHandler keeps them) with the same events as log lines, one plain line per decision.

Records are inserted with `executemany` on the schema the SQLite sink creates (faster than
write_batch's 25-record transactions; the rows are the same). Then it times, in this process:
`explain --market X --at T --window 2m` (the default window) and `explain DECISION_ID`, cold
(first call: opens the database) and warm (median of 5), plus the whole CLI as a user runs it
(a subprocess, including Python start-up). It prints the figures and SQLite's query plans; it
asserts nothing.

    python bench/explain_1m.py [--events 1000000] [--markets 20] [--dir PATH] [--no-logs]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

RUN = "20261124-000000-bnch"
T0 = datetime(2026, 11, 24, 0, 0, tzinfo=timezone.utc)
LOG_MAX = 50 * 1024 * 1024
LOG_BACKUPS = 5


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def coid(decision_id: str, slot: int) -> str:
    h = hashlib.blake2b(f"{decision_id}:{slot}".encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class LogWriter:
    """Appends JSON lines with the bot's rotation (50 MB, 5 backups)."""

    def __init__(self, directory: Path | None) -> None:
        self.dir = directory
        self.fh = None
        self.size = 0
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            # The writer owns its handle across calls (rotation reopens it; close() closes it).
            self.fh = open(directory / "dora-bot.jsonl", "wb")  # noqa: SIM115

    def write(self, line: dict) -> None:
        if self.fh is None:
            return
        data = orjson.dumps(line) + b"\n"
        if self.size + len(data) > LOG_MAX:
            self.fh.close()
            base = self.dir / "dora-bot.jsonl"
            for i in range(LOG_BACKUPS - 1, 0, -1):
                src = Path(f"{base}.{i}")
                if src.exists():
                    src.replace(Path(f"{base}.{i + 1}"))
            base.replace(Path(f"{base}.1"))
            self.fh = open(base, "wb")  # noqa: SIM115  (owned by the writer, as above)
            self.size = 0
        self.fh.write(data)
        self.size += len(data)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def build(data_dir: Path, events: int, markets: list[str], with_logs: bool) -> tuple[int, int, datetime]:
    from dora_otel.sinks.sqlite import SQLiteSink, sqlite_path

    path = sqlite_path(data_dir)
    sink = SQLiteSink(path)
    sink.decision("warm-up")  # creates the schema and its indexes
    sink.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous = OFF")
    logs = LogWriter(data_dir / "logs" if with_logs else None)
    rng = random.Random(1)
    seq = 0
    ts = T0
    exec_rows: list[tuple] = []
    dec_rows: list[tuple] = []
    pending_cancel: dict[str, list[tuple[str, int, str, str]]] = {m: [] for m in markets}
    n_events = n_decisions = 0
    base = {"bot_run_id": RUN, "env": "demo", "bot_version": "bench"}

    def line(kind: str, at: datetime, fields: dict, message: str) -> None:
        logs.write({"ts": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "level": "INFO", "service": "dora-bot",
                    "env": "demo", "bot_version": "bench", "bot_run_id": RUN, "message": message, "event_type": kind,
                    "seq": fields["seq"], "logger": "dora_otel", **{k: v for k, v in fields.items() if k != "seq"}})

    def execution(kind: str, at: datetime, decision_id: str, fields: dict, message: str) -> None:
        nonlocal seq, n_events
        seq += 1
        record = {**base, **fields, "seq": seq, "decision_id": decision_id, "event_ts": iso(at),
                  "event_id": f"{RUN}:{seq}", "kind": "execution", "event_type": kind, "expires_at": 1_900_000_000}
        record["sk"] = f"{decision_id}#{record['event_ts']}#{seq:012d}"
        exec_rows.append((record["event_id"], RUN, record["sk"], decision_id, record["event_ts"], seq,
                          1_900_000_000, orjson.dumps(record).decode()))
        line(kind, at, {k: v for k, v in record.items() if k in fields or k in ("seq", "decision_id")}, message)
        n_events += 1

    step = timedelta(seconds=5 / len(markets))
    while n_events < events:
        for market in markets:
            ts += step
            decision_id = f"{rng.getrandbits(128):032x}"
            seq += 1
            line("LOG", ts, {"seq": seq, "decision_id": decision_id, "market": market}, f"quoting {market}")
            seq += 1
            targets = [{"slot": s, "side": side, "price": round(0.3 + rng.random() * 0.4, 2), "size": 10,
                        "client_order_id": coid(decision_id, s)} for s, side in enumerate(("yes", "no"))]
            record = {**base, "seq": seq, "market": market, "decision_id": decision_id, "loop": n_decisions,
                      "target_count": 2, "spread": 0.04, "expected_orders_hash": "0" * 32, "event_ts": iso(ts),
                      "trace_id": decision_id, "event_id": f"{RUN}:{seq}", "kind": "decision",
                      "execution_log_partition": RUN, "decision_ts": iso(ts), "decision_day": iso(ts)[:10],
                      "target_orders": targets, "expires_at": 1_900_000_000}
            dec_rows.append((decision_id, RUN, market, record["decision_ts"], record["decision_day"], 1_900_000_000,
                             orjson.dumps(record).decode()))
            line("DECISION_MADE", ts, {"seq": seq, "market": market, "decision_id": decision_id, "targets": targets},
                 f"decision for {market}: 2 target orders")
            n_decisions += 1
            at = ts
            for old_decision, slot, old_coid, order_id in pending_cancel[market]:  # requote
                at += timedelta(microseconds=300)
                execution("ORDER_CANCEL", at, old_decision, {"market": market, "slot": slot,
                                                             "client_order_id": old_coid,
                                                             "order_id": order_id, "status": "CANCELLED"},
                          f"cancelling order {order_id}")
            pending_cancel[market] = []
            for t in targets:
                at += timedelta(microseconds=400)
                common = {"market": market, "slot": t["slot"], "side": t["side"], "price": t["price"], "size": 10,
                          "client_order_id": t["client_order_id"]}
                execution("ORDER_PLACE", at, decision_id, common, "placing order")
                at += timedelta(microseconds=900)
                roll = rng.random()
                if roll < 0.05:
                    execution("ORDER_RESULT", at, decision_id, {**common, "status": "REJECTED", "latency_ms": 0.9,
                                                                "error_msg": "insufficient_balance"}, "order rejected")
                    continue
                if roll < 0.07:
                    execution("ORDER_RESULT", at, decision_id, {**common, "status": "UNKNOWN", "latency_ms": 2000.0,
                                                                "error_msg": "read timed out"}, "order unknown")
                    continue
                order_id = f"{rng.getrandbits(64):016x}"
                execution("ORDER_RESULT", at, decision_id, {**common, "status": "ACCEPTED", "order_id": order_id,
                                                            "latency_ms": 0.9}, "order accepted")
                if rng.random() < 0.10:
                    at += timedelta(milliseconds=50)
                    execution("FILL", at, decision_id, {**common, "order_id": order_id, "size": rng.choice((4, 10)),
                                                        "pnl_delta": 0.01}, "fill")
                pending_cancel[market].append((decision_id, t["slot"], t["client_order_id"], order_id))
            if rng.random() < 0.005:
                execution("FILL", at, f"unmatched:{market}",
                          {"market": market, "side": "yes", "price": 0.5, "size": 3,
                           "order_id": "unknown", "matched": False}, "fill (no order)")
            if len(exec_rows) > 50_000:
                flush(db, exec_rows, dec_rows)
    flush(db, exec_rows, dec_rows)
    db.execute("ANALYZE")
    db.close()
    logs.close()
    return n_events, n_decisions, ts


def flush(db: sqlite3.Connection, exec_rows: list[tuple], dec_rows: list[tuple]) -> None:
    with db:
        db.executemany("INSERT OR REPLACE INTO execution_log (event_id, bot_run_id, sk, decision_id, event_ts, seq, "
                       "expires_at, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", exec_rows)
        db.executemany("INSERT OR REPLACE INTO decision_log (decision_id, bot_run_id, market, decision_ts, "
                       "decision_day, expires_at, record) VALUES (?, ?, ?, ?, ?, ?, ?)", dec_rows)
    exec_rows.clear()
    dec_rows.clear()


def timed(fn, repeat: int = 5) -> tuple[float, float, object]:
    start = time.perf_counter()
    result = fn()
    cold = time.perf_counter() - start
    warm = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - start)
    return cold, statistics.median(warm), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--dir", type=Path, default=None, help="keep the data directory here (default: a temp dir)")
    parser.add_argument("--no-logs", action="store_true", help="build the ledger only")
    args = parser.parse_args()

    from dora_otel.query.explain import explain_decision, explain_market
    from dora_otel.query.local import LocalSource
    from dora_otel.sinks.sqlite import sqlite_path

    data_dir = args.dir or Path(tempfile.mkdtemp(prefix="dora-explain-1m-"))
    markets = [f"KXBENCH-{i:03d}" for i in range(args.markets)]
    try:
        started = time.perf_counter()
        n_events, n_decisions, end = build(data_dir, args.events, markets, not args.no_logs)
        built = time.perf_counter() - started
        size = sqlite_path(data_dir).stat().st_size
        log_files = [] if args.no_logs else list((data_dir / "logs").glob("dora-bot.jsonl*"))
        log_bytes = sum(p.stat().st_size for p in log_files)
        print(f"built {n_events:,} execution records and {n_decisions:,} decisions in {built:.1f} s "
              f"(ledger {size / 1e6:.0f} MB, log files {log_bytes / 1e6:.0f} MB) in {data_dir}")

        at = T0 + (end - T0) / 2
        market = markets[len(markets) // 2]
        source = LocalSource(data_dir)
        cold, warm, report = timed(lambda: explain_market(source, market, at, timedelta(minutes=2)))
        decisions = report.decisions  # type: ignore[attr-defined]
        lines = sum(len(d.timeline) for d in decisions)
        from_log = sum(1 for d in decisions for e in d.timeline if e["in_log"])
        print(f"explain --market {market} --at {at.isoformat()} --window 2m: {len(decisions)} decisions, "
              f"{lines} timeline entries ({from_log} with their log line): cold {cold * 1000:.0f} ms, "
              f"warm {warm * 1000:.0f} ms")
        decision_id = decisions[len(decisions) // 2].decision_id
        cold, warm, _ = timed(lambda: explain_decision(source, decision_id))
        print(f"explain {decision_id}: cold {cold * 1000:.0f} ms, warm {warm * 1000:.0f} ms")

        cli = [sys.executable, "-m", "dora_otel.cli", "explain", "--market", market, "--at", at.isoformat(),
               "--json", "--data-dir", str(data_dir)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DORA_")}
        wall = []
        for _ in range(3):
            start = time.perf_counter()
            proc = subprocess.run(cli, capture_output=True, env=env)
            wall.append(time.perf_counter() - start)
        print(f"CLI `dora-otel explain --market … --json` end to end (incl. Python start-up): "
              f"median {statistics.median(wall) * 1000:.0f} ms (exit {proc.returncode})")
        startup = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import dora_otel.query.cli"], capture_output=True, env=env)
            startup.append(time.perf_counter() - start)
        print(f"  of which Python start-up + imports: median {statistics.median(startup) * 1000:.0f} ms")

        db = sqlite3.connect(sqlite_path(data_dir))
        for name, sql, params in (
            ("decisions_for_market", "SELECT record FROM decision_log WHERE market = ? AND decision_ts BETWEEN ? AND ? "
             "ORDER BY decision_ts, decision_id", (market, iso(at), iso(at))),
            ("events_for_decision", "SELECT record FROM execution_log WHERE decision_id = ? ORDER BY event_ts, seq",
             (decision_id,)),
        ):
            plan = "; ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params))
            print(f"query plan {name}: {plan}")
        db.close()
    finally:
        if args.dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
