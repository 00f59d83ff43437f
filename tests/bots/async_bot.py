"""A second bot, written apart from dora_otel.demo: an asyncio Kalshi-style market maker over HTTP.

Run as a process (the test runs it twice on one data directory: a restart mid-run):

    python async_bot.py --base http://127.0.0.1:PORT --data-dir DIR --loops 0:4 [--markets A,B,C]
                        [--inside B] [--cancel-leftovers]

- HTTP: stdlib urllib in `asyncio.to_thread` (no extra dependency), a client timeout shorter than
  the exchange's slow answers; placements retried with the SAME client_order_id on timeouts, 5xx and
  disconnects; a 409 duplicate is looked up by client_order_id and its order_id given to
  `dora_otel.link_order`.
- Strategy: a decorated async `quote`; for markets in `--inside` it places its orders itself, inside
  the decision body, with `asyncio.gather`; elsewhere the main loop places the returned targets with
  `asyncio.gather`. Each loop first cancels the market's open orders (a requote).
- Risk: a target over the size limit is not sent; the risk check says so with
  `dora_otel.order_suppressed` (when the installed dora_otel has it) and writes it to suppressed.jsonl.
- Fills: a poller THREAD reads GET /portfolio/fills (which carries only order_id) and calls
  `dora_otel.record_fill(order_id=...)`; for an order id this process has not learned yet (a fill
  racing the 409 look-up) it first GETs the order and passes its client_order_id too. Orders of the
  earlier run are NOT looked up: order_id alone must join them. The cursor survives restarts.
- At start with --cancel-leftovers: cancels the orders the exchange shows resting (an earlier run's).
  At the end: cancels, to confirm, its open orders the exchange no longer shows resting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import dora_otel

PREFIX = "/trade-api/v2/portfolio"
MAX_SIZE = 20  # the risk limit per order


class KalshiHTTPError(Exception):
    """An HTTP error answer from the exchange: status_code, Kalshi's error code and the body."""

    def __init__(self, status_code: int, code: str | None, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.body = body


class Client:
    def __init__(self, base: str, timeout_s: float) -> None:
        self.base = base
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One HTTP call (blocking: run it in a thread).

        Raises KalshiHTTPError, TimeoutError or ConnectionError."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read() or b"{}")
            except ValueError:
                payload = {}
            error = payload.get("error") if isinstance(payload.get("error"), dict) else payload
            message = str(error.get("message") or exc.reason)
            raise KalshiHTTPError(exc.code, error.get("code"), message, payload) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise TimeoutError(f"{method} {path}: {exc.reason}") from None
            raise ConnectionError(f"{method} {path}: {exc.reason}") from None

    @dora_otel.order_place(market="ticker", size="count")
    async def create_order(self, ticker: str, side: str, price: int, count: int,
                           client_order_id: str | None = None) -> dict[str, Any]:
        body = {"ticker": ticker, "side": side, "action": "buy", "type": "limit", "count": count,
                "yes_price" if side == "yes" else "no_price": price, "client_order_id": client_order_id}
        return await asyncio.to_thread(self.request, "POST", f"{PREFIX}/orders", body)

    @dora_otel.order_cancel
    async def cancel_order(self, order_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.request, "DELETE", f"{PREFIX}/orders/{order_id}")

    async def order_by_client_id(self, client_order_id: str) -> dict[str, Any] | None:
        found = await asyncio.to_thread(self.request, "GET", f"{PREFIX}/orders?client_order_id={client_order_id}")
        orders = found.get("orders") or []
        return orders[0] if orders else None

    async def resting_orders(self) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(self.request, "GET", f"{PREFIX}/orders?status=resting")
        return list(found.get("orders") or [])


class Bot:
    def __init__(self, client: Client, data_dir: Path, inside: set[str]) -> None:
        self.client = client
        self.data_dir = data_dir
        self.inside = inside
        self.open: dict[str, list[str]] = {}  # market -> order ids placed by its latest decision
        self.known: set[str] = set()  # every order id this process learned (the fill poller reads it)

    # --- the strategy ------------------------------------------------------------------------------
    @dora_otel.decision_cycle(market="ticker", loop="loop")
    async def quote(self, ticker: str, loop: int) -> list[dict[str, Any]]:
        k = sum(map(ord, ticker)) + loop
        targets = [{"side": "yes", "price": 30 + k % 17, "size": 5 + k % 4},
                   {"side": "no", "price": 40 + k % 13, "size": 10 + k % 3}]
        if k % 3 == 0:  # sometimes a big clip the risk manager will not send
            targets.append({"side": "yes", "price": 25 + k % 5, "size": 25 + k % 2})
        if ticker in self.inside:  # this market's orders go out from inside the decision
            await asyncio.gather(*(self.place(ticker, t) for t in targets))
        return targets

    # --- risk and placement ----------------------------------------------------------------------
    def risk_ok(self, ticker: str, target: dict[str, Any]) -> bool:
        if target["size"] <= MAX_SIZE:
            return True
        reason = f"position limit: size {target['size']} > {MAX_SIZE}"
        suppressed = getattr(dora_otel, "order_suppressed", None)
        if suppressed is not None:
            suppressed(reason, market=ticker, side=target["side"], price=target["price"], size=target["size"])
        with open(self.data_dir / "suppressed.jsonl", "a") as f:
            f.write(json.dumps({"market": ticker, **target, "reason": reason}) + "\n")
        return False

    async def place(self, ticker: str, target: dict[str, Any]) -> None:
        if not self.risk_ok(ticker, target):
            return
        coid = str(uuid.uuid4())
        for _attempt in range(4):
            try:
                answer = await self.client.create_order(ticker, target["side"], target["price"], target["size"],
                                                        client_order_id=coid)
                self.open.setdefault(ticker, []).append(answer["order"]["order_id"])
                self.known.add(answer["order"]["order_id"])
                return
            except KalshiHTTPError as exc:
                if exc.status_code == 409:  # the earlier attempt landed: find its order id
                    order = await self.client.order_by_client_id(coid)
                    if order is not None:
                        dora_otel.link_order(coid, order["order_id"])
                        self.open.setdefault(ticker, []).append(order["order_id"])
                        self.known.add(order["order_id"])
                    return
                if exc.status_code < 500 and exc.status_code != 408:
                    return  # rejected
            except (TimeoutError, ConnectionError):
                pass
            await asyncio.sleep(0.02)

    async def cancel(self, order_id: str) -> None:
        try:
            await self.client.cancel_order(order_id)
        except (KalshiHTTPError, TimeoutError, ConnectionError):
            pass  # 404: gone already (filled, or the exchange dropped it)

    async def cycle(self, ticker: str, loop: int) -> None:
        previous = self.open.pop(ticker, [])
        await asyncio.gather(*(self.cancel(oid) for oid in previous))
        targets = await self.quote(ticker, loop)
        if ticker not in self.inside:
            await asyncio.gather(*(self.place(ticker, t) for t in targets))

    async def confirm_gone(self) -> None:
        """Orders this run thinks open that the exchange no longer shows resting: cancel to confirm."""
        resting = {o["order_id"] for o in await self.client.resting_orders()}
        mine = [oid for oids in self.open.values() for oid in oids if oid not in resting]
        await asyncio.gather(*(self.cancel(oid) for oid in mine))


class FillPoller(threading.Thread):
    """Reads fills on its own thread and reports each with record_fill(order_id=...) only."""

    def __init__(self, client: Client, cursor_file: Path, known: set[str]) -> None:
        super().__init__(name="fill-poller", daemon=True)
        self.client = client
        self.known = known
        self.started = time.time()
        self.cursor_file = cursor_file
        self.cursor = int(cursor_file.read_text()) if cursor_file.exists() else 0
        self.stop = threading.Event()

    def poll(self) -> None:
        page = self.client.request("GET", f"{PREFIX}/fills?cursor={self.cursor}")
        for fill in page.get("fills", []):
            price = fill.get("yes_price") if fill.get("side") == "yes" else fill.get("no_price")
            order_id = fill["order_id"]
            coid = None
            if order_id not in self.known:  # e.g. a 409'd order whose id the loop has not looked up yet
                try:
                    order = self.client.request("GET", f"{PREFIX}/orders/{order_id}")["order"]
                    if order["created_time"] >= self.started:  # this run's order (not an earlier run's)
                        coid = order["client_order_id"]
                except KalshiHTTPError:
                    pass
            # an order of an earlier run: order_id alone joins it; with coid, dora-otel also learns the pair
            dora_otel.record_fill(order_id=order_id, client_order_id=coid, price=price, size=fill["count"],
                                  pnl_delta=0.0)
        self.cursor = int(page.get("cursor") or self.cursor)
        self.cursor_file.write_text(str(self.cursor))

    def run(self) -> None:
        while not self.stop.wait(0.03):
            try:
                self.poll()
            except (KalshiHTTPError, TimeoutError, ConnectionError, OSError):
                pass


async def run(args: argparse.Namespace) -> None:
    client = Client(args.base, timeout_s=args.timeout)
    bot = Bot(client, args.data_dir, set(filter(None, args.inside.split(","))))
    markets = args.markets.split(",")
    poller = FillPoller(client, args.data_dir / "fill-cursor.txt", bot.known)
    poller.start()
    if args.cancel_leftovers:  # an earlier run's orders, unknown to this process
        await asyncio.gather(*(bot.cancel(o["order_id"]) for o in await client.resting_orders()))
    first, last = (int(x) for x in args.loops.split(":"))
    for loop in range(first, last):
        await asyncio.gather(*(bot.cycle(m, loop) for m in markets))
    await bot.confirm_gone()
    await asyncio.sleep(0.3)  # fills reported shortly after the last orders
    poller.stop.set()
    poller.join()
    poller.poll()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--loops", required=True, help="first:last (last excluded)")
    parser.add_argument("--markets", default="KXBOT-A,KXBOT-B,KXBOT-C")
    parser.add_argument("--inside", default="", help="markets whose orders are placed inside the decision")
    parser.add_argument("--timeout", type=float, default=0.25)
    parser.add_argument("--cancel-leftovers", action="store_true")
    args = parser.parse_args()
    telemetry = dora_otel.setup(data_dir=args.data_dir, ledger="sqlite", container_mode=False,
                                watchdog_seconds=0, service_name="async-bot")
    try:
        asyncio.run(run(args))
    finally:
        telemetry.shutdown(reason="restart", graceful=True)


if __name__ == "__main__":
    main()
