"""No credential leaves the process: a Kalshi-shaped bot plants its key id, its PEM private key (and
the key's repr), a request signature, a bearer token and an AWS secret in exception messages, log
arguments, `extra=`, `bind()` and the event helpers' keyword arguments; then every output is grepped:
stdout and stderr, every file under the data directory (logs, spans, journal, SQLite bytes,
dead-letter file), what a real OTLP/HTTP receiver got over a socket, and `dora-otel explain` /
`reconcile` (text and --json). Every client_order_id, order_id and decision_id must stay intact.

Two ways the bot can be set up, both must leave 0 copies:
- "env": the key id and key file come from KALSHI_API_KEY_ID / KALSHI_PRIVATE_KEY_PATH and the AWS
  secret from AWS_SECRET_ACCESS_KEY (known secrets, masked wherever they appear);
- "shapes": nothing registered; every planting is labelled or shaped (the field-name and value-shape
  rules alone must catch them).
"""

from __future__ import annotations

import base64
import gzip
import http.server
import json
import os
import secrets as rnd
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import dora_otel.cli

ROOT = Path(__file__).resolve().parents[2]


def _planted() -> dict[str, str]:
    # Shaped like the RSA key file Kalshi hands out (PKCS#1 PEM, 64-character base64 lines).
    body = base64.b64encode(b"\x30\x82\x04\xa4\x02\x01\x00" + rnd.token_bytes(1185)).decode()
    pem = "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *textwrap.wrap(body, 64),
                      "-----END RSA PRIVATE KEY-----"]) + "\n"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+"
    return {
        "key_id": str(uuid.uuid4()),
        "pem": pem,
        "signature": base64.b64encode(rnd.token_bytes(256)).decode(),
        "bearer": "eyJ" + base64.urlsafe_b64encode(rnd.token_bytes(30)).decode().rstrip("=") + "."
                  + base64.urlsafe_b64encode(rnd.token_bytes(24)).decode().rstrip("="),
        "aws": "".join(rnd.choice(alphabet) for _ in range(40)),
    }


def _needles(planted: dict[str, str]) -> dict[str, str]:
    """What must not appear: each secret, and for the key also a body line (a partial leak) and
    its repr form."""
    body = [line for line in planted["pem"].splitlines() if not line.startswith("-----")]
    return {
        "key_id": planted["key_id"],
        "pem body line 2": body[1],
        "pem last body line": body[-2],
        "pem repr": repr(planted["pem"])[1:80],
        "signature": planted["signature"][:40],
        "signature tail": planted["signature"][-40:],
        "bearer": planted["bearer"],
        "bearer token part": planted["bearer"].split(".")[0],
        "aws": planted["aws"],
    }


BOT = textwrap.dedent('''
    """A Kalshi-shaped bot written for this test (not the demo)."""
    import json, logging, os, sys
    import dora_otel
    from dora_otel.protocols import InvalidRecordError, WriteResult
    from dora_otel.sinks import make_sink

    P = json.loads(os.environ["PLANTED"])
    MODE = os.environ["MODE"]
    log = logging.getLogger("kalshi_bot")

    class DeadLetteringSink:
        """SQLite, except records carrying an error are refused for good (so they are dead-lettered)."""
        def __init__(self, inner):
            self.inner = inner
        def write_batch(self, records):
            if os.environ.get("SINK_DOWN"):
                raise ConnectionError("ledger store unreachable")  # records stay in the journal
            bad = [r for r in records if r.get("error_msg")]
            result = self.inner.write_batch([r for r in records if not r.get("error_msg")])
            failed = list(result.failed) + [InvalidRecordError("refused by the test", record=r, field="error_msg")
                                            for r in bad]
            return WriteResult(written=result.written, unprocessed=result.unprocessed, failed=failed)
        def __getattr__(self, name):
            return getattr(self.inner, name)

    class KalshiHTTPError(Exception):
        pass

    class KalshiClient:
        def __init__(self, key_id, private_key_pem):
            self.key_id, self.private_key_pem = key_id, private_key_pem
            self.seen_client_order_ids, self.order_ids = [], []
            self.calls = 0

        def _headers(self):
            return {"KALSHI-ACCESS-KEY": self.key_id, "KALSHI-ACCESS-SIGNATURE": P["signature"],
                    "KALSHI-ACCESS-TIMESTAMP": "1703123456789"}

        @dora_otel.order_place(market="ticker", size="count")
        def order_place(self, ticker, side, price, count, client_order_id=None):
            self.seen_client_order_ids.append(client_order_id)
            self.calls += 1
            if self.calls % 2 == 1:
                raise KalshiHTTPError(f"401 Unauthorized for {ticker}: sent headers {self._headers()} "
                                      f"Authorization: Bearer {P['bearer']}")
            order_id = f"ord-{self.calls:04d}-5f085f00-8dd4-511c-a227-15be59e534e3"
            self.order_ids.append(order_id)
            return {"order": {"order_id": order_id, "status": "resting", "client_order_id": client_order_id}}

        @dora_otel.order_cancel(market="ticker")
        def order_cancel(self, order_id, ticker):
            raise KalshiHTTPError(f"cancel {order_id} failed: KALSHI-ACCESS-SIGNATURE: {P['signature']}")

    class Strategy:
        @dora_otel.decision_cycle(market="market")
        def quote(self, market, fail=False):
            if fail:
                raise ValueError(f"could not load the private key {P['pem']!r}")
            log.info("signing with headers %s", {"KALSHI-ACCESS-KEY": client.key_id,
                                                 "KALSHI-ACCESS-SIGNATURE": P["signature"]})
            return [{"side": "yes", "price": 0.45, "size": 10}, {"side": "no", "price": 0.5, "size": 10}]

    sink = DeadLetteringSink(make_sink("sqlite", env="demo", data_dir=os.environ["DORA_DATA_DIR"]))
    telemetry = dora_otel.setup(ledger_sink=sink, install_signal_handlers=False, watchdog_seconds=0)
    client = KalshiClient(P["key_id"], P["pem"])
    strategy = Strategy()
    for market in ("KXBTC-25DEC31", "KXETH-25DEC31"):
        targets = strategy.quote(market)
        for t in targets:
            try:
                client.order_place(market, t["side"], t["price"], t["size"])
            except KalshiHTTPError:
                log.exception("order rejected on %s", market)
        try:
            client.order_cancel(client.order_ids[-1], market)
        except KalshiHTTPError as exc:
            log.warning("cancel failed: %s", exc)
        dora_otel.record_fill(market, "no", 0.5, 3, -0.1, order_id=client.order_ids[-1],
                              note=f"authorized with Bearer {P['bearer']}")
    try:
        strategy.quote("KXBTC-25DEC31", fail=True)
    except ValueError:
        log.exception("strategy failed")
    log.error("key material: %s", P["pem"])
    log.error("could not sign", extra={"request": {"private_key": P["pem"], "key_id": P["key_id"]},
                                       "pem_repr": repr(P["pem"]), "auth": f"Bearer {P['bearer']}"})
    with dora_otel.bind(api_key=P["key_id"], kalshi_signature=P["signature"]):
        log.info("bound context line")
    dora_otel.heartbeat(2, 1, auth=f"Bearer {P['bearer']}",
                        aws_env=f"AWS_SECRET_ACCESS_KEY={P['aws']}", config={"aws_secret_access_key": P["aws"]})
    dora_otel.risk_halt(f"api key_id={P['key_id']} revoked by Kalshi", -12.5, session=P["bearer"])
    print("BOT-IDS " + json.dumps({"client_order_ids": client.seen_client_order_ids,
                                   "order_ids": client.order_ids}), file=sys.stderr)
    telemetry.shutdown(reason="done")
''')


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.bodies.append((self.path, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _run_bot(tmp_path: Path, data_dir: Path, planted: dict[str, str], mode: str, otlp: str | None) -> tuple[str, str]:
    script = tmp_path / "kalshi_bot.py"
    script.write_text(BOT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DORA_", "KALSHI_", "AWS_"))}
    env.update(PLANTED=json.dumps(planted), MODE=mode, DORA_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT),
               DORA_LEDGER="sqlite")
    if mode == "env":
        key_file = tmp_path / "kalshi.key"
        key_file.write_text(planted["pem"])
        env.update(KALSHI_API_KEY_ID=planted["key_id"], KALSHI_PRIVATE_KEY_PATH=str(key_file),
                   AWS_SECRET_ACCESS_KEY=planted["aws"])
    if otlp:  # this run's ledger store is down: its records stay in the journal for the next run
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=otlp, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   SINK_DOWN="1", DORA_SHUTDOWN_TIMEOUT="1")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
                          check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    try:
        dora_otel.cli.main(list(argv))
    except SystemExit:
        pass
    out = capsys.readouterr()
    return out.out + out.err


@pytest.mark.parametrize("mode", ["env", "shapes"])
def test_no_planted_secret_reaches_any_output_and_every_id_stays_intact(tmp_path, mode, capsys, monkeypatch):
    planted = _planted()
    data_dir = tmp_path / "data"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out1, err1 = _run_bot(tmp_path, data_dir, planted, mode, f"http://127.0.0.1:{server.server_address[1]}")
        after_run_1 = {f"run 1: {p.relative_to(data_dir)}": p.read_bytes() for p in data_dir.rglob("*") if p.is_file()}
        out2, err2 = _run_bot(tmp_path, data_dir, planted, mode, None)  # spans to the spans file
    finally:
        server.shutdown()
        server.server_close()
    otlp_bodies: list[tuple[str, bytes]] = server.bodies  # type: ignore[attr-defined]

    outputs: dict[str, bytes] = {"stdout run 1": out1.encode(), "stderr run 1": err1.encode(),
                                 "stdout run 2": out2.encode(), "stderr run 2": err2.encode()}
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    for path in files:
        outputs[str(path.relative_to(data_dir))] = path.read_bytes()
    outputs.update(after_run_1)
    for index, (path, body) in enumerate(otlp_bodies):
        outputs[f"otlp {path} #{index}"] = body

    # Every kind of output was really produced (the greps below are not vacuous).
    names = set(outputs)
    assert any(n.startswith("logs/dora-bot.jsonl") for n in names), names
    assert any(n.startswith("spans/spans.jsonl") for n in names), names
    assert any(n.startswith("ledger/ledger.sqlite3") for n in names), names
    assert any(n.startswith("run 1: ledger/journal/seg-") for n in names), names
    assert "ledger/journal/dead-letter.jsonl" in names and outputs["ledger/journal/dead-letter.jsonl"], names
    assert {p for p, _ in otlp_bodies} == {"/v1/traces", "/v1/logs"}

    lines = [json.loads(line) for line in out2.splitlines() if line.startswith("{")]
    decisions = {line["decision_id"] for line in lines if line.get("decision_id", "unmatched:").count(":") == 0}
    assert len(decisions) == 3, decisions
    monkeypatch.chdir(tmp_path)
    base = ["--data-dir", str(data_dir), "--logs", "file", "--color", "never"]
    for decision_id in sorted(decisions):
        outputs[f"explain {decision_id}"] = _cli(capsys, "explain", decision_id, *base).encode()
        outputs[f"explain --json {decision_id}"] = _cli(capsys, "explain", decision_id, "--json", *base).encode()
    outputs["reconcile"] = _cli(capsys, "reconcile", "--since", "1 hour ago", *base).encode()

    leaks = {(what, where) for what, needle in _needles(planted).items() for where, data in outputs.items()
             if needle.encode() in data}
    assert not leaks, sorted(leaks)
    assert b"[REDACTED]" in outputs["stdout run 2"]

    # Identifiers are intact everywhere they belong.
    ids = json.loads(next(line for line in err2.splitlines() if line.startswith("BOT-IDS "))[8:])
    placed = [line for line in lines if line["event_type"] == "ORDER_PLACE"]
    assert sorted(line["client_order_id"] for line in placed) == sorted(ids["client_order_ids"])
    results = {line["order_id"] for line in lines if line["event_type"] == "ORDER_RESULT" and line.get("order_id")}
    assert results == set(ids["order_ids"]) and len(results) == 2
    ledger_bytes = outputs["ledger/ledger.sqlite3"] + outputs.get("ledger/ledger.sqlite3-wal", b"")
    spans_bytes = b"".join(data for name, data in outputs.items() if name.startswith("spans/"))
    ledger_bytes += outputs["ledger/journal/dead-letter.jsonl"]  # records with an error were refused
    for ident in [*ids["client_order_ids"], *ids["order_ids"]]:
        assert ident.encode() in ledger_bytes, ident
    for decision_id in decisions:
        assert decision_id.encode() in spans_bytes and decision_id.encode() in ledger_bytes
        assert decision_id.encode() in outputs[f"explain {decision_id}"]
