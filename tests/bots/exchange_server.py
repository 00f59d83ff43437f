"""A Kalshi-shaped HTTP exchange on 127.0.0.1 with seeded faults and its OWN ground truth per order.

Written apart from dora_otel.demo (it imports nothing from dora_otel): it is the "real exchange" the
second bot talks to, and the truth its test compares `dora-otel explain` with.

Paths (Kalshi Trade API v2 shapes):
  POST   /trade-api/v2/portfolio/orders                 -> 201 {"order": {...}} | 4xx/5xx {"error": {...}}
  DELETE /trade-api/v2/portfolio/orders/{order_id}      -> 200 {"order": {...}} | 404 not_found
  GET    /trade-api/v2/portfolio/orders?client_order_id=X | ?status=resting -> {"orders": [...]}
  GET    /trade-api/v2/portfolio/orders/{order_id}      -> {"order": {...}} (with its client_order_id)
  GET    /trade-api/v2/portfolio/fills?cursor=N          -> {"fills": [...], "cursor": "M"}  (order_id only)
  POST   /admin/phase {"phase": 2}                       -> releases the fills held for the second run

Faults are planned per client_order_id from a seeded hash, on the FIRST attempt of that id:
  reject   400 {"error": {"code": "insufficient_balance"}}: no order (a retry is rejected the same way)
  e503     503, no order created (the retry places it)
  e500live 500, but the order WAS created (the retry gets 409 order_already_exists)
  slow     answers after `slow_s` (longer than the client's timeout); the order is live
  drop     201 with an order id, but the order never rests (a cancel answers 404)
Fill plans: none / full / partial, executed at creation, REPORTED later (after `fill_delay_s`, or only
in phase 2: fills of the first run's orders that the restarted bot receives).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

PREFIX = "/trade-api/v2/portfolio"
DUPLICATE_CODE = "order_already_exists"  # the 409 code the exchange gives a reused client_order_id
FAULTS = ("ok", "reject", "e503", "e500live", "slow", "drop")


@dataclass
class Order:
    """The exchange's ground truth for one order (one client_order_id)."""

    client_order_id: str
    ticker: str
    side: str
    price: int  # cents
    count: int
    fault: str
    fill_plan: int  # contracts that will fill
    order_id: str | None = None
    status: str = "none"  # none | rejected | resting | canceled | executed | dropped
    attempts: int = 0
    answers: list[int] = field(default_factory=list)  # HTTP status per attempt
    filled: int = 0  # contracts filled (reported or not yet)
    reported: int = 0  # contracts in fills the bot could have fetched
    cancel_answers: list[int] = field(default_factory=list)
    created_time: float = 0.0

    def public(self) -> dict[str, Any]:
        status = "resting" if self.status == "dropped" else self.status
        return {"order_id": self.order_id, "client_order_id": self.client_order_id, "ticker": self.ticker,
                "side": self.side, "yes_price" if self.side == "yes" else "no_price": self.price,
                "count": self.count, "status": status, "fill_count": self.filled,
                "remaining_count": self.count - self.filled, "created_time": self.created_time}


class Exchange:
    """The state behind the HTTP handler. Thread-safe (one lock); the handler threads call it."""

    def __init__(self, *, seed: int = 7, fault_rate: float = 0.45, slow_s: float = 0.45,
                 fill_delay_s: float = 0.05) -> None:
        self.seed = seed
        self.fault_rate = fault_rate
        self.slow_s = slow_s
        self.fill_delay_s = fill_delay_s
        self.lock = threading.Lock()
        self.orders: dict[str, Order] = {}  # by client_order_id
        self.by_id: dict[str, Order] = {}
        self.fills: list[dict[str, Any]] = []  # released, in order
        self.held: list[tuple[float, int, dict[str, Any]]] = []  # (release at, phase, fill)
        self.phase = 1

    # --- planning --------------------------------------------------------------------------------
    def _roll(self, coid: str, what: str) -> float:
        digest = hashlib.sha256(f"{self.seed}:{what}:{coid}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def _plan(self, coid: str, ticker: str, side: str, price: int, count: int) -> Order:
        r = self._roll(coid, "fault")
        fault = "ok"
        if r < self.fault_rate:
            fault = FAULTS[1 + int(r / self.fault_rate * (len(FAULTS) - 1))]
        f = self._roll(coid, "fill")
        fill_plan = count if f < 0.3 else (max(1, count // 3) if f < 0.6 else 0)
        if fault in ("reject", "drop"):
            fill_plan = 0
        return Order(coid, ticker, side, price, count, fault, fill_plan)

    # --- endpoints -------------------------------------------------------------------------------
    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
        """-> (HTTP status, body, seconds to wait before answering)."""
        coid = str(body.get("client_order_id") or "")
        ticker, side, count = body.get("ticker"), body.get("side"), body.get("count")
        price = body.get("yes_price") if side == "yes" else body.get("no_price")
        if not (coid and ticker and side in ("yes", "no") and isinstance(count, int) and isinstance(price, int)):
            error = {"code": "invalid_order", "message": "invalid order", "details": "bad fields"}
            return 400, {"error": error}, 0.0
        with self.lock:
            order = self.orders.get(coid)
            if order is None:
                order = self.orders[coid] = self._plan(coid, str(ticker), str(side), price, count)
            order.attempts += 1
            first = order.attempts == 1
            if order.order_id is not None and order.status != "rejected":
                order.answers.append(409)
                return 409, {"error": {"code": DUPLICATE_CODE, "message": "order already exists",
                                       "details": f"client_order_id {coid}"}}, 0.0
            if order.fault == "reject":
                order.status = "rejected"
                order.answers.append(400)
                return 400, {"error": {"code": "insufficient_balance", "message": "insufficient balance",
                                       "details": ""}}, 0.0
            if first and order.fault == "e503":
                order.answers.append(503)
                return 503, {"error": {"code": "service_unavailable", "message": "try again"}}, 0.0
            self._go_live(order)
            if first and order.fault == "e500live":
                order.answers.append(500)
                return 500, {"error": {"code": "internal_server_error", "message": "internal error"}}, 0.0
            order.answers.append(201)
            delay = self.slow_s if first and order.fault == "slow" else 0.0
            return 201, {"order": order.public()}, delay

    def _go_live(self, order: Order) -> None:
        digest = hashlib.sha256(f"{self.seed}:{order.client_order_id}".encode()).digest()
        order.order_id = str(uuid.UUID(bytes=digest[:16]))
        self.by_id[order.order_id] = order
        order.created_time = time.time()
        if order.fault == "drop":
            order.status = "dropped"
            return
        order.filled = order.fill_plan
        order.status = "executed" if order.filled == order.count else "resting"
        if order.filled:
            # A partial fill arrives in two pieces; either piece may be held for the second run.
            half = order.filled // 2
            pieces = [order.filled] if order.filled == 1 else [order.filled - half, half]
            phase = 2 if self._roll(order.client_order_id, "phase") < 0.4 else 1
            for i, size in enumerate(pieces):
                fill = {"fill_id": f"{order.order_id}-{i}", "trade_id": uuid.uuid4().hex,
                        "order_id": order.order_id,
                        "ticker": order.ticker, "side": order.side, "action": "buy", "count": size,
                        "yes_price" if order.side == "yes" else "no_price": order.price, "is_taker": False}
                self.held.append((time.monotonic() + self.fill_delay_s * (i + 1), phase, fill))

    def cancel(self, order_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            order = self.by_id.get(order_id)
            if order is None or order.status in ("dropped", "executed", "canceled"):
                if order is not None:
                    order.cancel_answers.append(404)
                return 404, {"error": {"code": "not_found", "message": "order not found"}}
            order.status = "canceled"
            order.cancel_answers.append(200)
            return 200, {"order": order.public()}

    def list_orders(self, query: dict[str, list[str]]) -> dict[str, Any]:
        with self.lock:
            found = list(self.orders.values())
            if "client_order_id" in query:
                found = [o for o in found if o.client_order_id == query["client_order_id"][0] and o.order_id]
            if "status" in query:  # a dropped order is not on the book (only its 201 answer said so)
                found = [o for o in found if o.order_id and o.status != "dropped"
                         and o.public()["status"] == query["status"][0]]
            return {"orders": [o.public() for o in found if o.order_id], "cursor": ""}

    def get_order(self, order_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            order = self.by_id.get(order_id)
            if order is None:
                return 404, {"error": {"code": "not_found", "message": "order not found"}}
            return 200, {"order": order.public()}

    def list_fills(self, cursor: int) -> dict[str, Any]:
        now = time.monotonic()
        with self.lock:
            still = []
            for release_at, phase, fill in self.held:
                if release_at <= now and phase <= self.phase:
                    self.fills.append(fill)
                    self.by_id[fill["order_id"]].reported += fill["count"]
                else:
                    still.append((release_at, phase, fill))
            self.held = still
            page = self.fills[cursor:]
            return {"fills": page, "cursor": str(cursor + len(page))}

    def set_phase(self, phase: int) -> None:
        with self.lock:
            self.phase = phase

    def pending_fills(self) -> int:
        with self.lock:
            return len(self.held)


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet request handler that answers JSON (shared by the test exchanges)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client timed out and went away
            pass


class _Handler(JsonHandler):
    exchange: Exchange  # set on the subclass made by serve()

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            value = json.loads(self.rfile.read(length) or b"{}")
            return value if isinstance(value, dict) else {}
        except ValueError:
            return {}

    def do_POST(self) -> None:
        url = urlparse(self.path)
        if url.path == f"{PREFIX}/orders":
            status, body, delay = self.exchange.create(self._body())
            if delay:
                time.sleep(delay)
            self._send(status, body)
        elif url.path == "/admin/phase":
            self.exchange.set_phase(int(self._body().get("phase", 1)))
            self._send(200, {"phase": self.exchange.phase})
        else:
            self._send(404, {"error": {"code": "not_found", "message": "no such path"}})

    def do_DELETE(self) -> None:
        url = urlparse(self.path)
        if url.path.startswith(f"{PREFIX}/orders/"):
            self._send(*self.exchange.cancel(url.path.rsplit("/", 1)[1]))
        else:
            self._send(404, {"error": {"code": "not_found", "message": "no such path"}})

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == f"{PREFIX}/orders":
            self._send(200, self.exchange.list_orders(query))
        elif url.path.startswith(f"{PREFIX}/orders/"):
            self._send(*self.exchange.get_order(url.path.rsplit("/", 1)[1]))
        elif url.path == f"{PREFIX}/fills":
            self._send(200, self.exchange.list_fills(int((query.get("cursor") or ["0"])[0] or 0)))
        else:
            self._send(404, {"error": {"code": "not_found", "message": "no such path"}})


def serve(exchange: Exchange) -> tuple[ThreadingHTTPServer, str]:
    """Start the exchange on 127.0.0.1 (a free port) in a daemon thread; returns (server, base url)."""
    handler = type("Handler", (_Handler,), {"exchange": exchange})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="kalshi-exchange", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
