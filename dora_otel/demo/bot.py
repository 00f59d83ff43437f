"""The demo bot: strategy, exchange client, state manager and risk manager of a small market maker.

Instrumented only through `dora_otel`'s public API, the way the real Dora bot adopts it:
decorators on the strategy and exchange methods, `record_fill` in the state manager, `risk_halt`
and `order_suppressed` in the risk manager, `order_suppressed` in the rate limiter, `heartbeat` in
the main loop, and plain `logger.info` calls everywhere else.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from typing import Any

import dora_otel
from dora_otel.demo.exchange import (
    ExchangeRejectError,
    ExchangeTimeoutError,
    PaperExchange,
)

logger = logging.getLogger("dora_bot")


@dataclasses.dataclass(frozen=True)
class Quote:
    side: str
    price: float
    size: int


class Strategy:
    """Quotes both sides of each market around the mid, a little wider when inventory builds up."""

    def __init__(self, half_spread: float = 0.03, size: int = 10) -> None:
        self.half_spread = half_spread
        self.size = size

    @dora_otel.decision_cycle(loop="loop")
    def quote(self, market: str, book: dict[str, float], inventory: int, loop: int) -> list[Quote]:
        skew = 0.01 * max(-3, min(3, inventory // 10))
        yes = round(book["mid"] - self.half_spread - skew, 2)
        no = round(1 - book["mid"] - self.half_spread + skew, 2)
        logger.info("quoting %s around %.2f (inventory %d)", market, book["mid"], inventory)
        return [Quote("yes", yes, self.size), Quote("no", no, self.size)]


class ExchangeClient:
    """The bot's Kalshi client, pointed at the paper exchange. Note the parameter names: `ticker`
    and `count`, as Kalshi names them, mapped for the decorators."""

    def __init__(self, exchange: PaperExchange, api_key_id: str) -> None:
        self._exchange = exchange
        self._headers = {"KALSHI-ACCESS-KEY": api_key_id}  # never captured: decorators read named fields only

    @dora_otel.order_place(market="ticker", size="count")
    def place_order(self, ticker: str, side: str, price: float, count: int, client_order_id: str | None = None) -> dict:
        return self._exchange.create_order(ticker, side, price, count, client_order_id or "")

    @dora_otel.order_cancel(market="ticker")
    def cancel_order(self, order_id: str, ticker: str) -> dict:
        return self._exchange.cancel_order(order_id)

    def rate_limit_ok(self) -> bool:
        """Client-side rate limiting: never send into an exhausted budget (Kalshi answers 429)."""
        return self._exchange.rate_limit_remaining() > 0


class StateManager:
    """Tracks open orders and positions. Fills arrive on a separate thread (the exchange's
    websocket feed) and are reported with `dora_otel.record_fill`."""

    def __init__(self) -> None:
        self.open_orders: dict[str, tuple[str, str]] = {}  # order_id -> (ticker, side)
        self.inventory: dict[str, int] = {}
        self.realized_pnl = 0.0
        self.fill_count = 0
        self._lock = threading.Lock()
        self._fills: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._fill_feed, name="fill-feed", daemon=True)
        self._thread.start()

    def order_placed(self, response: dict, ticker: str, side: str) -> None:
        with self._lock:
            self.open_orders[response["order"]["order_id"]] = (ticker, side)

    def orders_for(self, ticker: str) -> list[str]:
        with self._lock:
            return [oid for oid, (t, _) in self.open_orders.items() if t == ticker]

    def order_gone(self, order_id: str) -> None:
        with self._lock:
            self.open_orders.pop(order_id, None)

    def deliver(self, fills: list[dict[str, Any]]) -> None:
        for fill in fills:
            self._fills.put(fill)

    def _fill_feed(self) -> None:
        while True:
            fill = self._fills.get()
            if fill is None:
                return
            try:
                self._on_fill(fill)
            finally:
                self._fills.task_done()

    def _on_fill(self, fill: dict[str, Any]) -> None:
        pnl = fill["pnl"]  # marked to the mid after the fill
        with self._lock:
            sign = 1 if fill["side"] == "yes" else -1
            self.inventory[fill["ticker"]] = self.inventory.get(fill["ticker"], 0) + sign * fill["count"]
            self.realized_pnl += pnl
            self.fill_count += 1
        dora_otel.record_fill(market=fill["ticker"], side=fill["side"], price=fill["price"], size=fill["count"],
                              pnl_delta=pnl, order_id=fill["order_id"])

    def drain(self) -> None:
        self._fills.join()

    def stop(self) -> None:
        self._fills.put(None)
        self._thread.join(timeout=5)


class RiskManager:
    """Halts trading when the day's P&L draws down more than the limit from its peak, and holds back
    any order that would take a market's position past `max_position` contracts (YES adds, NO takes
    away), saying so with `dora_otel.order_suppressed`."""

    def __init__(self, drawdown_limit: float, max_position: int = 40) -> None:
        self.drawdown_limit = drawdown_limit
        self.max_position = max_position
        self.peak = 0.0
        self.halted = False

    def check(self, daily_pnl: float) -> bool:
        self.peak = max(self.peak, daily_pnl)
        if not self.halted and self.peak - daily_pnl > self.drawdown_limit:
            self.halted = True
            dora_otel.risk_halt(reason=f"drawdown {self.peak - daily_pnl:.2f} beyond limit {self.drawdown_limit:.2f}",
                                daily_pnl=round(daily_pnl, 4), peak_pnl=round(self.peak, 4))
        return self.halted

    def refusal(self, market: str, quote: Quote, inventory: int) -> str | None:
        """Why ``quote`` must not go out (said with `dora_otel.order_suppressed`), or None to send it."""
        after = inventory + (quote.size if quote.side == "yes" else -quote.size)
        if abs(after) <= self.max_position or abs(after) < abs(inventory):
            return None
        reason = f"position limit: {inventory:+d} contracts, {quote.side} {quote.size} would exceed {self.max_position}"
        dora_otel.order_suppressed(reason, market=market, side=quote.side, price=quote.price, size=quote.size,
                                   inventory=inventory)
        return reason


@dataclasses.dataclass
class RunSummary:
    decisions: int = 0
    orders: dict[str, int] = dataclasses.field(default_factory=dict)
    cancels: int = 0
    fills: int = 0
    halted_at_loop: int | None = None
    last_decision_id: str | None = None
    # the bot's own record of every order it held back: market, loop, side, price, size, reason
    suppressed: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class DemoBot:
    def __init__(self, exchange: PaperExchange, markets: list[str], *, drawdown_limit: float = 2.0,
                 shock_at: int | None = None) -> None:
        self.exchange = exchange
        self.markets = markets
        self.strategy = Strategy()
        self.client = ExchangeClient(exchange, api_key_id="a952bcbe-ec3b-4b5b-b8f9-11dae589608c")
        self.state = StateManager()
        self.risk = RiskManager(drawdown_limit)
        self.shock_at = shock_at
        self.summary = RunSummary()

    def run(self, cycles: int, heartbeat_every: int = 10) -> RunSummary:
        for loop in range(1, cycles + 1):
            if self.risk.halted:
                break
            for market in self.markets:
                self._cycle(market, loop)
            self.state.deliver(self.exchange.step(shock=loop == self.shock_at))
            self.state.drain()
            if self.risk.check(self.state.realized_pnl):
                self.summary.halted_at_loop = loop
            if loop % heartbeat_every == 0:
                dora_otel.heartbeat(markets_active=len(self.markets), open_orders_count=len(self.state.open_orders))
        self.state.stop()
        self.summary.fills = self.state.fill_count
        return self.summary

    def _cycle(self, market: str, loop: int) -> None:
        book = self.exchange.book(market)
        quotes = self.strategy.quote(market, book, self.state.inventory.get(market, 0), loop)
        self.summary.decisions += 1
        with dora_otel.bind(market=market):  # the bot's own lines below say which market they are about
            for order_id in self.state.orders_for(market):  # requote: cancel what rests from the last cycle
                try:
                    self.client.cancel_order(order_id, market)
                    self.summary.cancels += 1
                except ExchangeRejectError as exc:
                    logger.warning("cancel of %s failed: %s", order_id, exc)
                self.state.order_gone(order_id)
            for q in quotes:
                self._place(market, q, loop)

    def _place(self, market: str, q: Quote, loop: int) -> None:
        why = self.risk.refusal(market, q, self.state.inventory.get(market, 0))
        if why is None and not self.client.rate_limit_ok():
            why = "rate limit budget exhausted"
            dora_otel.order_suppressed(why, market=market, side=q.side, price=q.price, size=q.size)
        if why is not None:
            self.summary.suppressed.append({"market": market, "loop": loop, "side": q.side, "price": q.price,
                                            "size": q.size, "reason": why})
            self._count("SUPPRESSED")
            return
        for attempt in (1, 2):
            try:
                response = self.client.place_order(market, q.side, q.price, q.size)
            except ExchangeTimeoutError:
                # The order may be live: retry the same slot; its client_order_id is reused, so the
                # exchange deduplicates instead of opening a second order.
                logger.warning("place %s %s timed out (attempt %d)", market, q.side, attempt)
                self._count("UNKNOWN")
                continue
            except ExchangeRejectError as exc:
                logger.warning("order rejected on %s: %s", market, exc)
                self._count("REJECTED")
                return
            self._count("ACCEPTED")
            self.state.order_placed(response, market, q.side)
            return

    def _count(self, status: str) -> None:
        self.summary.orders[status] = self.summary.orders.get(status, 0) + 1
