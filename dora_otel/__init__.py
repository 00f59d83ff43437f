"""dora_otel: observability for the Dora market-making bot.

Each decision cycle is an OpenTelemetry trace whose trace id is the decision_id; every log line is
one JSON object carrying run identity and the decision's trace context; execution spans are
mirrored into a durable ledger (SQLite by default, DynamoDB in production).

    import dora_otel
    telemetry = dora_otel.setup()

    class Strategy:
        @dora_otel.decision_cycle
        def quote(self, market, book): return [{"side": "yes", "price": 0.45, "size": 10}]

    class Exchange:
        @dora_otel.order_place
        def place_order(self, market, side, price, size, client_order_id=None): ...

        @dora_otel.order_cancel
        def cancel_order(self, order_id): ...

    # the risk manager / rate limiter, for a target it decides not to send:
    dora_otel.order_suppressed("position limit", market="KXBTC", side="yes", price=0.45, size=10)

Only the names in `__all__` are public; everything else may change.
"""

from dora_otel._version import __version__
from dora_otel.context import bind
from dora_otel.decorators import decision_cycle, order_cancel, order_place, order_suppressed
from dora_otel.events import EventType, OrderStatus, SchemaError
from dora_otel.exchange import Outcome
from dora_otel.execution import heartbeat, link_order, record_fill, risk_halt
from dora_otel.telemetry import Telemetry, current, setup

__all__ = [
    "EventType",
    "OrderStatus",
    "Outcome",
    "SchemaError",
    "Telemetry",
    "__version__",
    "bind",
    "current",
    "decision_cycle",
    "heartbeat",
    "link_order",
    "order_cancel",
    "order_place",
    "order_suppressed",
    "record_fill",
    "risk_halt",
    "setup",
]
