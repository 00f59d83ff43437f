"""The README's adoption example runs as written, against a local Kalshi-shaped exchange, and its
orders get the outcome Kalshi's documentation gives them ("Order Errors"): 201 -> ACCEPTED,
400 with an error code -> REJECTED, 5xx -> UNKNOWN, a timeout -> UNKNOWN (the order may exist)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exchange_server import JsonHandler  # (the folder is put on sys.path just above)

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Adopting it in a bot"):]
    section = section[:section.index("\n## ", 1)]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no python block in the README's adoption section"
    return match.group(1)


class ScriptedExchange(JsonHandler):
    """Answers the order placements in turn: 201, 400 insufficient_balance, 503, too slow (timeout)."""

    answers = ((201, 0.0), (400, 0.0), (503, 0.0), (201, 2.6))
    placed: ClassVar[list[dict[str, Any]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        with self.lock:
            n = len(self.placed)
            self.placed.append(body)
        status, delay = self.answers[n % len(self.answers)]
        time.sleep(delay)
        if status == 201:
            self._send(201, {"order": {"order_id": f"ord-{n}", "client_order_id": body["client_order_id"],
                                       "ticker": body["ticker"], "status": "resting"}})
        elif status == 400:
            self._send(400, {"error": {"code": "insufficient_balance", "message": "insufficient balance"}})
        else:
            self._send(503, {"error": {"code": "service_unavailable", "message": "try again"}})


def test_readme_adoption_example_runs_and_classifies_like_kalshis_docs(tmp_path: Path) -> None:
    script = tmp_path / "example_bot.py"
    script.write_text(readme_example())
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedExchange)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ, KALSHI_API=f"http://127.0.0.1:{server.server_address[1]}",
               DORA_DATA_DIR=str(tmp_path / "data"), DORA_STRICT="true")
    try:
        done = subprocess.run([sys.executable, str(script)], check=False, cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    results = sorted((line for line in lines if line["event_type"] == "ORDER_RESULT"), key=lambda x: x["seq"])
    assert [r["status"] for r in results] == ["ACCEPTED", "REJECTED", "UNKNOWN", "UNKNOWN"]
    assert results[0]["order_id"] == "ord-0"
    assert [p["client_order_id"] for p in ScriptedExchange.placed] == [r["client_order_id"] for r in results]
    fill = next(line for line in lines if line["event_type"] == "FILL")
    assert fill["matched"] is True and fill["decision_id"] == results[0]["decision_id"]
    assert not [line for line in lines if line["level"] == "ERROR" and line["event_type"] != "ORDER_RESULT"]
