"""The public API used as the README and docs/ADOPTING.md document it, for `mypy --strict`.

Never run; tests/typing/test_public_api.py type-checks it (a user's bot under --strict must not
need casts or ignores to use dora_otel). Every name in `dora_otel.__all__` appears here.
"""

from __future__ import annotations

from typing import Any

import dora_otel
from dora_otel import EventType, OrderStatus, Outcome, SchemaError, Telemetry


class Strategy:
    @dora_otel.decision_cycle(market="market")
    def quote(self, market: str, book: dict[str, float]) -> list[dict[str, Any]]:
        return [{"side": "yes", "price": book["yes_bid"], "size": 10}]


class Exchange:
    @dora_otel.order_place
    def place_order(self, market: str, side: str, price: float, size: int,
                    client_order_id: str | None = None) -> dict[str, Any]:
        return {"order": {"order_id": "o-1", "status": "resting"}}

    @dora_otel.order_cancel
    def cancel_order(self, order_id: str) -> dict[str, Any]:
        return {"order": {"order_id": order_id, "status": "canceled"}}


def run_bot() -> bool:
    telemetry: Telemetry = dora_otel.setup(env="demo", ledger="sqlite")
    assert dora_otel.current() is telemetry
    version: str = dora_otel.__version__
    run_id: str = telemetry.bot_run_id
    targets: list[dict[str, Any]] = Strategy().quote("KXBTC-25", {"yes_bid": 0.45})
    placed: dict[str, Any] = Exchange().place_order("KXBTC-25", "yes", 0.45, 10)
    Exchange().cancel_order(str(placed["order"]["order_id"]))
    with dora_otel.bind(market="KXBTC-25"):
        joined: str | None = dora_otel.record_fill(market="KXBTC-25", side="yes", price=0.45, size=10,
                                                   order_id="o-1")
    dora_otel.heartbeat(markets_active=1, open_orders_count=len(targets))
    dora_otel.risk_halt(reason="daily loss limit", daily_pnl=-250.0)
    linked: str | None = dora_otel.link_order(client_order_id="c-1", order_id="o-1")
    why_not: str | None = dora_otel.order_suppressed("position limit", market="KXBTC-25", side="yes",
                                                     price=0.45, size=10)
    outcome = Outcome(OrderStatus.REJECTED, error_msg="insufficient_balance")
    kinds: list[str] = [EventType.ORDER_RESULT.value, outcome.status.value, version, run_id, str(joined),
                        str(linked), str(why_not)]
    try:
        pass
    except SchemaError as exc:
        kinds.append(str(exc))
    flushed: bool = telemetry.shutdown(reason="done", timeout_s=5.0)
    return flushed and bool(kinds)
