"""Parts of the instrumented cycle that a benchmark can switch off, to price them (shared by
cycle_parts.py, which times them paired, and cycle_instructions.py, which counts instructions).

Each knock-out replaces one part with a no-op (or the cheapest stand-in that keeps the cycle
running) and can be undone, so one process can alternate with and without it.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

Patch = tuple[Callable[[], None], Callable[[], None]]  # (switch off, switch back on)


def _patch(obj: Any, name: str, value: Any) -> Patch:
    old = getattr(obj, name)
    return (lambda: setattr(obj, name, value)), (lambda: setattr(obj, name, old))


def _all(*patches: Patch) -> Patch:
    def off() -> None:
        for switch_off, _ in patches:
            switch_off()

    def on() -> None:
        for _, switch_on in patches:
            switch_on()

    return off, on


def _plain_decide(self: Any, raw: list[Any]) -> list[dict[str, Any]]:
    """Decision.decide without slots and client order ids."""
    self.decided = True
    self.targets = [{"slot": n, "side": s, "price": p, "size": z, "client_order_id": f"c-{n}"}
                    for n, (s, p, z, _) in enumerate(raw)]
    return self.targets


def _emit(self: Any, level: int, event_type: str, message: Any, fields: dict[str, Any], span: Any = None) -> Any:
    return fields


def knockouts() -> dict[str, Patch]:
    """name -> (off, on). Call after the cycle is built (`_cycle.instrumented_cycle`)."""
    from dora_otel import _runtime, decorators, exchange, logs, spans

    accepted = exchange.Outcome(exchange.OrderStatus.ACCEPTED, "o-1")
    return {
        "emit": _patch(_runtime.Runtime, "emit", _emit),  # every dora line (not the bot's own)
        "put_line": _patch(logs.LogPipeline, "put_line", lambda *a: None),  # queuing dora's lines
        "span_end": _patch(spans.LiteTracer, "ended", lambda self, span: None),  # journal at end + queue the span
        "attach": _all(_patch(decorators.otel_context, "attach", lambda ctx: None),  # spans current while
                       _patch(spans.LiteSpan, "context", lambda self: None)),        # the bot's code runs
        "order_book": _patch(_runtime.OrderBook, "add", lambda *a: None),
        "decide": _patch(_runtime.Decision, "decide", _plain_decide),  # slots and client order ids of targets
        "client_order_id": _patch(_runtime, "client_order_id_for", lambda d, s: f"c-{s}"),
        "orders_hash": _patch(decorators, "expected_orders_hash", lambda targets: "x"),
        "spread": _patch(decorators, "default_spread", lambda result, targets: None),
        "read_response": _patch(exchange, "read_response", lambda response: accepted),
        "bot_line": _patch(logging.getLogger("bench.bot"), "disabled", True),  # the bot's own line
        "bot_line_queue": _patch(logs._EnqueueHandler, "handle", lambda self, record: True),  # dora's part of it
        "gc": (gc.disable, gc.enable),
    }
