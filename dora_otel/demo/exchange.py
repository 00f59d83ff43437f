"""A paper exchange with Kalshi-shaped responses and seeded faults.

Faults (each drawn per order with probability `fault_rate`, split evenly):
- reject:        a definitive 400 reject (the order is not live);
- timeout_live:  the request times out, but the order went live anyway;
- timeout_lost:  the request times out and the order never reached the book;
- drop:          the exchange acknowledges the order, then silently drops it (never rests, never fills).
And, with probability `fault_rate / 4` per order, the API's rate-limit budget is briefly exhausted
(`rate_limit_remaining()` answers 0): a well-behaved client skips the order instead of sending it.
Fills are partial or full and arrive later, on a separate "websocket" thread.

The exchange's `truth()` is its own record per client_order_id: what really happened, with no help
from telemetry. It also implements the `OrderSource` protocol (dora_otel.protocols) for
`dora-otel reconcile --live`.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import uuid
from typing import Any

FAULTS = ("reject", "timeout_live", "timeout_lost", "drop")


class ExchangeRejectError(Exception):
    """A definitive reject: Kalshi answered 4xx."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class ExchangeTimeoutError(TimeoutError):
    """The request timed out: the order may or may not be live."""


@dataclasses.dataclass
class PaperOrder:
    order_id: str
    client_order_id: str
    ticker: str
    side: str
    price: float
    count: int
    status: str = "resting"  # resting | canceled | executed | dropped
    filled: int = 0
    fault: str | None = None
    cancel_requested: bool = False


class PaperExchange:
    def __init__(self, markets: list[str], *, seed: int, fault_rate: float) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate ({fault_rate}) must be between 0 and 1")
        self._rng = random.Random(seed)
        self.fault_rate = fault_rate
        self.mid = {m: self._rng.uniform(0.3, 0.7) for m in markets}
        self.orders: dict[str, PaperOrder] = {}  # by order_id
        self.by_client_id: dict[str, PaperOrder] = {}
        self.rejected: dict[str, str] = {}  # client_order_id -> reason
        self.lost: set[str] = set()  # client_order_ids that never reached the book
        self.answers: dict[str, list[str]] = {}  # client_order_id -> what each create_order call answered
        self.fills: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    # -- market data ----------------------------------------------------------------------------
    def book(self, ticker: str) -> dict[str, float]:
        mid = min(0.9, max(0.1, self.mid[ticker] + self._rng.gauss(0, 0.01)))
        self.mid[ticker] = mid
        return {"mid": round(mid, 2), "yes_bid": round(mid - 0.02, 2), "no_bid": round(1 - mid - 0.02, 2)}

    # -- trading API (Kalshi-shaped) ----------------------------------------------------------------
    def rate_limit_remaining(self) -> int:
        """Requests left in the current rate-limit window (0 now and then when faults are on)."""
        with self._lock:
            if self.fault_rate and self._rng.random() < self.fault_rate / 4:
                return 0
            return 10

    def create_order(self, ticker: str, side: str, price: float, count: int, client_order_id: str) -> dict[str, Any]:
        with self._lock:
            answers = self.answers.setdefault(client_order_id, [])
            existing = self.by_client_id.get(client_order_id)
            if existing is not None:  # Kalshi deduplicates on client_order_id: a retry gets the same order
                answers.append("ok")
                return {"order": self._view(existing)}
            self.lost.discard(client_order_id)  # a retry of a lost request: what happens now is the outcome
            fault = self._rng.choice(FAULTS) if self._rng.random() < self.fault_rate else None
            if fault == "reject":
                self.rejected[client_order_id] = "insufficient_balance"
                answers.append("rejected")
                raise ExchangeRejectError(400, "insufficient_balance: order would exceed available balance")
            if fault == "timeout_lost":
                self.lost.add(client_order_id)
                answers.append("timeout")
                raise ExchangeTimeoutError("read timed out after 2.0 s (order never reached the book)")
            order = PaperOrder(str(uuid.UUID(int=self._rng.getrandbits(128))), client_order_id, ticker, side,
                               price, count, fault=fault)
            if fault == "drop":
                order.status = "dropped"
            self.orders[order.order_id] = order
            self.by_client_id[client_order_id] = order
            if fault == "timeout_live":
                answers.append("timeout")
                raise ExchangeTimeoutError("read timed out after 2.0 s")
            answers.append("ok")
            return {"order": self._view(order) if fault != "drop" else dict(self._view(order), status="resting")}

    def cancel_order(self, order_id: str) -> dict[str, Any]:
        with self._lock:
            order = self.orders.get(order_id)
            if order is not None:
                order.cancel_requested = True
            if order is None or order.status == "dropped":
                raise ExchangeRejectError(404, f"order {order_id} not found")
            if order.status == "resting":
                order.status = "canceled"
            return {"order": self._view(order)}

    def step(self, shock: bool = False) -> list[dict[str, Any]]:
        """Move the market one tick and fill some resting orders (partially or fully).

        With `shock`, every market gaps 30 cents against the resting YES bids and fills them all:
        the stale-quote loss that trips the risk manager's drawdown limit.
        """
        new_fills = []
        with self._lock:
            if shock:
                for ticker in self.mid:
                    self.mid[ticker] = max(0.02, self.mid[ticker] - 0.3)
            for order in list(self.orders.values()):
                hit = shock and order.side == "yes"
                if order.status != "resting" or (shock and not hit) or (not shock and self._rng.random() > 0.25):
                    continue
                qty = order.count - order.filled
                if not hit and self._rng.random() < 0.5 and qty > 1:
                    qty = self._rng.randint(1, qty - 1)
                order.filled += qty
                if order.filled >= order.count:
                    order.status = "executed"
                mark = self.mid[order.ticker]
                value = mark if order.side == "yes" else 1 - mark
                fill = {"order_id": order.order_id, "client_order_id": order.client_order_id, "ticker": order.ticker,
                        "side": order.side, "price": order.price, "count": qty,
                        "pnl": round((value - order.price) * qty, 4)}
                self.fills.append(fill)
                new_fills.append(fill)
        return new_fills

    # -- the exchange's own record --------------------------------------------------------------
    def _view(self, order: PaperOrder) -> dict[str, Any]:
        return {"order_id": order.order_id, "client_order_id": order.client_order_id, "ticker": order.ticker,
                "side": order.side, "yes_price" if order.side == "yes" else "no_price": order.price,
                "count": order.count, "status": order.status, "filled": order.filled}

    def truth(self) -> dict[str, dict[str, Any]]:
        """What really happened to each client_order_id the bot sent.

        `outcome`: rejected | never_received | resting | canceled | executed | dropped; `answers`: what
        each create_order call for it answered the bot (ok | rejected | timeout), in order;
        `cancel_requested`: whether the bot asked to cancel it.
        """
        with self._lock:
            out: dict[str, dict[str, Any]] = {}
            for coid, reason in self.rejected.items():
                out[coid] = {"outcome": "rejected", "reason": reason, "filled": 0}
            for coid in self.lost:
                out[coid] = {"outcome": "never_received", "filled": 0}
            for coid, order in self.by_client_id.items():
                out[coid] = {"outcome": order.status, "order_id": order.order_id, "filled": order.filled,
                             "count": order.count, "fault": order.fault, "cancel_requested": order.cancel_requested}
            for coid, entry in out.items():
                entry["answers"] = list(self.answers.get(coid, []))
            return out

    def silently_drop(self, client_order_id: str) -> bool:
        """Drop a resting order without telling anyone (for tests of `reconcile --live`)."""
        with self._lock:
            order = self.by_client_id.get(client_order_id)
            if order is None or order.status != "resting":
                return False
            order.status = "dropped"
            order.fault = "drop"
            return True

    # -- OrderSource (for reconcile --live) ------------------------------------------------------
    def open_orders(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._view(o) for o in self.orders.values() if o.status == "resting"]

    def order_status(self, client_order_id: str) -> dict[str, Any] | None:
        with self._lock:
            order = self.by_client_id.get(client_order_id)
            return None if order is None else self._view(order)
