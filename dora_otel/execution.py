"""Events the bot reports directly: `record_fill`, `link_order`, `risk_halt`, `heartbeat`.

A fill is joined to the decision that placed its order, by its order_id alone (Kalshi fills carry
only order_id since 2026-03-30), or by client_order_id, also when it arrives on another thread,
several loops later, or in a LATER RUN of the bot (a deploy, a crash): the runtime's order book is
then the order index of `dora_otel.ledger.orders`, which answers from memory and, for orders of
earlier runs, from `<data_dir>/ledger/orders.sqlite3`. The FILL line carries that decision's
decision_id and slot, and its span is a child of that decision's span.

A fill that matches no known order is still logged and recorded with the fields it has
(`matched: false`; in the ledger under decision_id `unmatched:<market>`, or `unmatched:unknown`
without a market, so it stays queryable): never a schema error, also in strict mode, as long as it
names its order (order_id, client_order_id or market).

These functions never raise into the bot (except SchemaError in strict mode, for a fill with no
price / size / pnl_delta or naming no order at all).
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, set_span_in_context

from dora_otel import _runtime, identity
from dora_otel._runtime import span_event
from dora_otel.context import DecisionRef, current_decision, rename_reserved
from dora_otel.events import SchemaError

_internal = logging.getLogger("dora_otel.internal")
_EMPTY = otel_context.Context()


def _guarded(fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        runtime = _runtime.ACTIVE
        if runtime is None:
            return None
        try:
            return fn(runtime, *args, **kwargs)
        except SchemaError:
            if runtime.strict:
                raise
        except Exception:
            try:
                _internal.error("dora-otel failed in %s", fn.__name__, exc_info=True)
            except Exception:
                pass
        return None

    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@_guarded
def record_fill(runtime: _runtime.Runtime, /, market: str | None = None, side: Any = None, price: Any = None,
                size: Any = None, pnl_delta: Any = None, *, order_id: Any = None, client_order_id: Any = None,
                **extra: Any) -> str | None:
    """Log FILL (and record it in the ledger), joined to the decision that placed the order.

    `order_id` alone is enough (also for an order placed by an earlier run on the same data
    directory). Passing both `client_order_id` and `order_id` also teaches dora-otel that pair (see
    `link_order`). Returns the decision_id the fill was joined to, or None when it matched no order.
    Call it from any thread. `market` and `side` default to those of the matched order.
    """
    orders = runtime.orders
    ref = orders.find(client_order_id, order_id)
    if ref is not None and client_order_id not in (None, "") and order_id not in (None, ""):
        _link(orders, ref, order_id)
    if ref is not None:
        market = market if market is not None else ref.market
        side = side if side is not None else ref.side
        client_order_id = client_order_id or ref.client_order_id
    seq = identity.next_seq()
    fields: dict[str, Any] = {
        **rename_reserved(extra), "seq": seq, "market": market, "side": side, "price": price, "size": size,
        "pnl_delta": pnl_delta, "order_id": order_id, "client_order_id": client_order_id,
        "matched": ref is not None,
    }
    if ref is not None:
        fields["decision_id"], fields["slot"] = ref.decision_id, ref.slot
        parent_ctx = set_span_in_context(NonRecordingSpan(ref.span_context))
    else:
        parent_ctx = _EMPTY
    unmatched_id = f"unmatched:{market}" if market is not None else "unmatched:unknown"
    record = dict(fields, decision_id=ref.decision_id if ref else unmatched_id)
    span = runtime.tracer.start_span("fill", context=parent_ctx, event=span_event("FILL", record))
    token = otel_context.attach(span.context())
    decision_token = (current_decision.set(DecisionRef(ref.decision_id, market, ref.span_context))
                      if ref else None)
    try:
        if ref is not None:
            text = f"fill {side} {size}@{price} on {market}"
        else:
            ids = (("order", order_id), ("client_order_id", client_order_id), ("on", market))
            named = " ".join(f"{k} {v}" for k, v in ids if v not in (None, ""))
            text = f"fill {size}@{price} {named} (matches no known order)"
        runtime.emit(logging.INFO, "FILL", text, fields)
    finally:
        if decision_token is not None:
            current_decision.reset(decision_token)
        otel_context.detach(token)
        span.end()
    if ref is not None and runtime.watchdog is not None:
        runtime.watchdog.fill(ref.decision_id, ref.slot)
    return ref.decision_id if ref else None


def _link(orders: Any, ref: Any, order_id: Any) -> None:
    link = getattr(orders, "link", None)
    if link is not None:
        link(ref.client_order_id, order_id)
    elif orders.find(order_id) is None:
        orders.add(str(order_id), ref)


@_guarded
def link_order(runtime: _runtime.Runtime, /, client_order_id: Any, order_id: Any) -> str | None:
    """Tell dora-otel the exchange's order_id of an order it knows by client_order_id.

    For a placement whose answer never came (a timeout: UNKNOWN) and whose retry got Kalshi's 409
    duplicate: the bot usually fetches the order by client_order_id
    (`GET /portfolio/orders?client_order_id=...`); passing the pair here lets later fills and cancels
    that carry only the order_id join the decision, also after a restart. Writes no line and no ledger
    record. Returns the decision_id of the order, or None when the client_order_id is unknown.
    Call it from any thread; cheap (memory, or one indexed lookup).
    """
    orders = runtime.orders
    ref = orders.find(client_order_id)
    if ref is None or order_id in (None, ""):
        return None
    _link(orders, ref, order_id)
    return str(ref.decision_id)


@_guarded
def risk_halt(runtime: _runtime.Runtime, /, reason: str, daily_pnl: Any, **extra: Any) -> None:
    """Log RISK_HALT: trading was halted (the `dora-bot-risk-halt` alarm fires on it)."""
    runtime.emit(logging.ERROR, "RISK_HALT", f"trading halted: {reason}",
                 {**rename_reserved(extra), "reason": reason, "daily_pnl": daily_pnl})


@_guarded
def heartbeat(runtime: _runtime.Runtime, /, markets_active: int, open_orders_count: int, **extra: Any) -> None:
    """Log HEARTBEAT with the ledger's health counters (`ledger_*` fields). Call it every N loops."""
    fields = {**rename_reserved(extra), "markets_active": markets_active, "open_orders_count": open_orders_count}
    for key, value in runtime.stats().items():  # logs_dropped / spans_dropped keep their names
        fields[key if key.startswith(("logs_", "spans_")) else f"ledger_{key}"] = value
    runtime.emit(logging.INFO, "HEARTBEAT",
                 f"heartbeat: {markets_active} markets, {open_orders_count} open orders", fields)
