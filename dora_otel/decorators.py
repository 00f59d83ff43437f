"""The decorators a bot adds to its strategy and exchange methods: `@decision_cycle`,
`@order_place`, `@order_cancel`. Sync functions, async functions and methods alike.

- `@decision_cycle` starts a NEW root span (a new trace) on every call; its trace id is the
  decision_id, bound for every log line inside. When the strategy returns, DECISION_MADE is logged
  with the target orders read from the return value.
- `@order_place` / `@order_cancel` are child spans of the decision: the one active in the calling
  context, else the latest decision for the order's market (strategies usually return targets and
  the main loop places them), and for a cancel, the decision that placed the order.

Fields are found by parameter name (`market`, `side`, `price`, `size`, `client_order_id`,
`order_id`, `slot`); override a name with a keyword (`market="ticker"`), or reach into an argument
with a dotted path (`market="order.ticker"`). Only those named fields are captured, never whole
argument lists, so credentials cannot leak through a decorator.

Telemetry never raises into bot code: if building a span or a line fails, the bot's function runs
as if undecorated. The bot's own exceptions pass through unchanged (same object, same traceback).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import time
import traceback
from typing import Any, Callable, Iterable, TypeVar

import orjson
from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, Status, StatusCode, set_span_in_context

from dora_otel import _runtime, exchange, identity
from dora_otel._runtime import (Decision, OrderRef, attr, attrs as _attrs, client_order_id_for, price_key, size_key,
                                span_attributes)
from dora_otel.context import DecisionRef, current_decision
from dora_otel.events import OrderStatus, SchemaError

F = TypeVar("F", bound=Callable[..., Any])
_EMPTY = otel_context.Context()
_internal = logging.getLogger("dora_otel.internal")
_perf = time.perf_counter
_next_seq = identity.next_seq


def _report_internal_error(where: str) -> None:
    """A failure inside telemetry: one line, never an exception into the bot."""
    try:
        _internal.error("dora-otel failed in %s; the bot call proceeds undecorated", where, exc_info=True)
    except Exception:
        pass


# ---------------------------------------------------------------------------------------------
# Finding fields in a call's arguments
# ---------------------------------------------------------------------------------------------

class _Extractor:
    """Reads named fields from (args, kwargs), planned once at decoration time (no per-call
    signature binding: that costs more than the whole span)."""

    __slots__ = ("_plan",)

    def __init__(self, fn: Callable[..., Any], fields: Iterable[str], overrides: dict[str, Any]) -> None:
        params = inspect.signature(fn).parameters
        names = list(params)
        plan = []
        for field in fields:
            spec = overrides.get(field, field)
            if callable(spec):
                plan.append((field, None, None, inspect.Parameter.empty, spec))
                continue
            root, *path = str(spec).split(".")
            if root not in params:
                if field in overrides:
                    raise TypeError(f"{fn.__qualname__} has no parameter {root!r} (given as {field}={spec!r})")
                continue
            param = params[root]
            index = names.index(root) if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) else None
            plan.append((field, root, index, param.default, tuple(path)))
        self._plan = tuple(plan)

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for field, name, index, default, path in self._plan:
            if name is None:  # a callable override: fn(args, kwargs)
                value = path(args, kwargs)
            elif name in kwargs:
                value = kwargs[name]
            elif index is not None and index < len(args):
                value = args[index]
            elif default is not inspect.Parameter.empty:
                value = default
            else:
                continue
            for part in path if name is not None else ():
                value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
            if value is not None:
                out[field] = value
        return out


def _make(fn: Callable[..., Any], before: Callable, after_ok: Callable, after_error: Callable) -> Callable[..., Any]:
    """Wrap `fn` (sync or async) so that telemetry failures never change what the bot sees."""

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            state = _guard(before, args, kwargs)
            if state is None:
                return await fn(*args, **kwargs)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                _guard_after(after_error, state, exc)
                raise
            _guard_after(after_ok, state, result)
            return result

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = _guard(before, args, kwargs)
        if state is None:
            return fn(*args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _guard_after(after_error, state, exc)
            raise
        _guard_after(after_ok, state, result)
        return result

    return wrapper


def _guard(before: Callable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    runtime = _runtime.ACTIVE
    if runtime is None:
        return None
    try:
        return before(runtime, args, kwargs)
    except SchemaError:
        if runtime.strict:
            raise
        return None
    except Exception:
        _report_internal_error(getattr(before, "__qualname__", "a decorator"))
        return None


def _guard_after(after: Callable, state: Any, value: Any) -> None:
    try:
        after(state, value)
    except SchemaError:
        if state.runtime.strict:
            raise
    except Exception:
        _report_internal_error(getattr(after, "__qualname__", "a decorator"))
        state.cleanup()


class _CallState:
    """What a decorated call carries from before the call to after it."""

    __slots__ = ("runtime", "span", "token", "decision_token", "fields", "started", "decision", "ref")

    def cleanup(self) -> None:
        """Restore the caller's context and end the span, whatever happened."""
        try:
            if self.decision_token is not None:
                current_decision.reset(self.decision_token)
                self.decision_token = None
            if self.token is not None:
                otel_context.detach(self.token)
                self.token = None
            if self.span is not None and self.span.is_recording():
                self.span.end()
        except Exception:
            pass


def _record_exception(span: Any, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _stack(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


# ---------------------------------------------------------------------------------------------
# @decision_cycle
# ---------------------------------------------------------------------------------------------

_TARGET_KEYS = ("targets", "orders", "quotes", "target_orders")


def default_targets(result: Any) -> list[Any]:
    """Target orders from a strategy's return value: a list/tuple of orders, or a dict / object
    with `targets`, `orders` or `quotes`. None means no targets."""
    if result is None:
        return []
    if isinstance(result, (list, tuple)):
        return list(result)
    for key in _TARGET_KEYS:
        value = result.get(key) if isinstance(result, dict) else getattr(result, key, None)
        if value is not None:
            return list(value)
    raise TypeError(f"cannot read target orders from a {type(result).__name__}; "
                    "pass @decision_cycle(targets=lambda result: ...)")


def _field(order: Any, name: str) -> Any:
    return order.get(name) if isinstance(order, dict) else getattr(order, name, None)


def default_spread(result: Any, targets: list[dict[str, Any]]) -> float | None:
    """`spread` from the return value, else from a two-sided quote: Kalshi YES and NO bids on the
    same market cost 1.00 (or 100 cents) together, so spread = 1 - yes - no."""
    value = result.get("spread") if isinstance(result, dict) else getattr(result, "spread", None)
    if value is not None and not isinstance(result, (list, tuple)):
        return float(value)
    yes = [t["price"] for t in targets if str(t.get("side")).lower() in ("yes", "buy", "bid") and t.get("price") is not None]
    no = [t["price"] for t in targets if str(t.get("side")).lower() in ("no", "sell", "ask") and t.get("price") is not None]
    if not yes or not no:
        return None
    best_yes, best_no = max(map(float, yes)), max(map(float, no))
    whole = 100.0 if max(best_yes, best_no) > 1.0 else 1.0
    return round(whole - best_yes - best_no, 6)


def expected_orders_hash(targets: list[dict[str, Any]]) -> str:
    """A stable hash of the sorted target orders (side, price, size): equal plans hash equal."""
    keys = sorted((str(t.get("side")), price_key(t.get("price")) or 0.0, size_key(t.get("size")) or 0.0) for t in targets)
    return hashlib.sha256(orjson.dumps(keys)).hexdigest()[:32]


def decision_cycle(fn: F | None = None, /, *, market: Any = None, loop: Any = None,
                   targets: Callable[[Any], Iterable[Any]] | None = None,
                   spread: Callable[[Any], Any] | None = None) -> Any:
    """Decorate the strategy method that decides one cycle for one market.

    Each call is a new trace whose trace id is the decision_id. The return value is passed back
    unchanged; its target orders are read by `targets(result)` (default: `default_targets`).
    `market` / `loop` name the parameters holding the market ticker and loop counter (a dotted path
    or a callable `(args, kwargs) -> value` also work); without a loop parameter a per-market
    counter is kept.
    """

    def decorate(func: F) -> F:
        names = {k: v for k, v in (("market", market), ("loop", loop)) if v is not None}
        extract = _Extractor(func, ("market", "loop"), names)
        read_targets = targets or default_targets
        name = getattr(func, "__qualname__", "decision")

        def before(runtime: _runtime.Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _CallState:
            found = extract(args, kwargs)
            mkt = found.get("market")
            loop_no = found.get("loop")
            if loop_no is None:
                with runtime.lock:
                    runtime.loops[mkt] += 1
                    loop_no = runtime.loops[mkt]
            span = runtime.tracer.start_span(
                f"decision {mkt}" if mkt is not None else "decision", context=_EMPTY,
                attributes=_attrs({"dora.event_type": "DECISION_MADE", "dora.market": attr(mkt), "dora.loop": attr(loop_no)}),
            )
            ctx = span.get_span_context()
            state = _CallState()
            state.runtime, state.span, state.started = runtime, span, _perf()
            state.decision = DecisionRef(format(ctx.trace_id, "032x"), mkt, ctx)
            state.fields = {"market": mkt, "loop": loop_no}
            state.ref = None
            state.token = otel_context.attach(set_span_in_context(span))
            state.decision_token = current_decision.set(state.decision)
            return state

        def after_ok(state: _CallState, result: Any) -> None:
            try:
                raw = read_targets(result)
                normalized = _normalize_targets(raw, state.decision.decision_id)
                spread_value = spread(result) if spread else default_spread(result, normalized)
                _decided(state, normalized, spread_value)
            finally:
                state.cleanup()

        def after_error(state: _CallState, exc: BaseException) -> None:
            try:
                runtime, span = state.runtime, state.span
                _record_exception(span, exc)
                fields = {"market": state.fields["market"], "loop": state.fields["loop"],
                          "error_type": type(exc).__name__, "error_msg": str(exc) or type(exc).__name__,
                          "stack": _stack(exc), "where": name}
                fields["seq"] = _next_seq()
                span.set_attributes(span_attributes("DECISION_MADE", dict(
                    fields, target_count=0, targets=[], error_msg=fields["error_msg"][:1000]), ("error_type",)))
                runtime.emit(logging.ERROR, "ERROR", f"decision for {state.fields['market']} raised {type(exc).__name__}", fields)
            finally:
                state.cleanup()

        return _make(func, before, after_ok, after_error)  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


def _normalize_targets(raw: Iterable[Any], decision_id: str) -> list[dict[str, Any]]:
    out = []
    for slot, order in enumerate(raw):
        side, price, size = _field(order, "side"), _field(order, "price"), _field(order, "size")
        coid = _field(order, "client_order_id") or client_order_id_for(decision_id, slot)
        out.append({"slot": slot, "side": attr(side), "price": attr(price), "size": attr(size),
                    "client_order_id": coid})
    return out


def _decided(state: _CallState, targets: list[dict[str, Any]], spread_value: Any) -> None:
    runtime, span, ref = state.runtime, state.span, state.decision
    mkt = state.fields["market"]
    fields = {"seq": _next_seq(), "market": mkt, "decision_id": ref.decision_id, "loop": state.fields["loop"],
              "target_count": len(targets), "spread": spread_value, "targets": targets,
              "expected_orders_hash": expected_orders_hash(targets)}
    span.set_attributes(span_attributes("DECISION_MADE", fields, ("target_count",)))
    decision = Decision(ref.decision_id, mkt, ref.span_context, targets,
                        [(t["side"], price_key(t["price"]), size_key(t["size"])) for t in targets])
    with runtime.lock:
        runtime.latest[mkt] = decision
    runtime.emit(logging.INFO, "DECISION_MADE", f"decision for {mkt}: {len(targets)} target orders", fields, span)
    if runtime.watchdog is not None:
        runtime.watchdog.decision_made(ref.decision_id, mkt)


def _decision_for(runtime: _runtime.Runtime, market: Any) -> Decision | None:
    """The decision an order belongs to: the active one, else the latest for the market."""
    active = current_decision.get()
    with runtime.lock:
        if active is not None:
            found = runtime.latest.get(active.market)
            if found is not None and found.decision_id == active.decision_id:
                return found
            return Decision(active.decision_id, active.market, active.span_context, [], [])
        return runtime.latest.get(market)


# ---------------------------------------------------------------------------------------------
# @order_place
# ---------------------------------------------------------------------------------------------

_ORDER_FIELDS = ("market", "side", "price", "size", "client_order_id", "slot")


def order_place(fn: F | None = None, /, *, result: Callable[[Any], Any] | None = None,
                classify: Callable[[BaseException], Any] | None = None, **field_names: Any) -> Any:
    """Decorate the exchange call that places one order.

    ORDER_PLACE is logged (and recorded in the ledger) before the call; ORDER_RESULT after it with
    status ACCEPTED | REJECTED | ERROR | UNKNOWN, order_id, latency_ms and error_msg. A timeout,
    disconnect or 5xx is UNKNOWN: the order may be live. When no client_order_id is passed, one is
    made from decision_id + slot, so a retry of the same slot reuses it (pass it on to the exchange
    by accepting a `client_order_id=None` parameter).

    `result(response)` may return an `exchange.Outcome` or a dict with `status`, `order_id`,
    `exchange_status`, `error_msg` for response shapes the default reader does not know;
    `classify(exc)` may return an `Outcome` (or None for the default) for exceptions.
    Field names: `market="ticker"`, `price="order.limit_price"`, ...
    """
    unknown = set(field_names) - set(_ORDER_FIELDS)
    if unknown:
        raise TypeError(f"order_place got unknown field override(s) {sorted(unknown)}; known: {list(_ORDER_FIELDS)}")

    def decorate(func: F) -> F:
        extract = _Extractor(func, _ORDER_FIELDS, field_names)
        pass_coid = "client_order_id" in inspect.signature(func).parameters and "client_order_id" not in field_names

        def before(runtime: _runtime.Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _CallState:
            found = extract(args, kwargs)
            mkt, side, price, size = found.get("market"), found.get("side"), found.get("price"), found.get("size")
            decision = _decision_for(runtime, mkt)
            if decision is not None:
                with runtime.lock:
                    slot = found.get("slot")
                    if slot is None:
                        slot = decision.claim_slot(side, price, size)
                decision_id, parent = decision.decision_id, decision.span_context
                coid = found.get("client_order_id")
                if coid is None:
                    coid = (decision.targets[slot]["client_order_id"] if isinstance(slot, int) and slot < len(decision.targets)
                            else client_order_id_for(decision_id, slot))
                    if pass_coid:
                        kwargs["client_order_id"] = coid
                parent_ctx = decision.parent_context
            else:
                slot, decision_id, parent_ctx = found.get("slot"), None, _EMPTY
                coid = found.get("client_order_id")
            state = _CallState()
            state.fields = fields = {"seq": _next_seq(), "market": mkt, "decision_id": decision_id, "side": side,
                                     "price": price, "size": size, "client_order_id": coid, "slot": slot}
            span = runtime.tracer.start_span("order.place", context=parent_ctx, attributes=span_attributes(
                "ORDER_PLACE", fields, ("market", "side", "client_order_id")))
            state.runtime, state.span, state.decision = runtime, span, decision
            state.token = otel_context.attach(set_span_in_context(span))
            state.decision_token = (current_decision.set(DecisionRef(decision_id, mkt, parent))
                                    if decision is not None and current_decision.get() is None else None)
            state.ref = (OrderRef(decision_id, decision.span_context, mkt, slot, side, price, size, coid)
                         if decision is not None else None)
            if state.ref is not None and coid is not None:
                runtime.orders.add(str(coid), state.ref)
            try:
                runtime.emit(logging.INFO, "ORDER_PLACE", f"placing {side} {size}@{price} on {mkt}", dict(fields), span)
                if runtime.watchdog is not None and decision_id is not None:
                    runtime.watchdog.order_started(decision_id, slot, coid, mkt)
            except BaseException:  # (SchemaError in strict mode) leave the caller's context as it was
                state.cleanup()
                raise
            state.started = _perf()
            return state

        def after_ok(state: _CallState, response: Any) -> None:
            latency_ms = (_perf() - state.started) * 1000.0
            try:
                outcome = _outcome_from(result(response)) if result else exchange.read_response(response)
                _order_result(state, outcome, latency_ms, None)
            finally:
                state.cleanup()

        def after_error(state: _CallState, exc: BaseException) -> None:
            latency_ms = (_perf() - state.started) * 1000.0
            try:
                outcome = (classify and _outcome_from(classify(exc))) or exchange.classify_exception(exc)
                _record_exception(state.span, exc)
                _order_result(state, outcome, latency_ms, exc)
            finally:
                state.cleanup()

        return _make(func, before, after_ok, after_error)  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


def _outcome_from(value: Any) -> exchange.Outcome | None:
    if value is None or isinstance(value, exchange.Outcome):
        return value
    if isinstance(value, dict):
        return exchange.Outcome(OrderStatus(str(value["status"]).upper()), value.get("order_id"),
                                value.get("exchange_status"), value.get("error_type"), value.get("error_msg"))
    return exchange.Outcome(OrderStatus(str(value).upper()))


def _order_result(state: _CallState, outcome: exchange.Outcome, latency_ms: float, exc: BaseException | None) -> None:
    runtime, f = state.runtime, state.fields
    seq = _next_seq()
    latency_ms = round(latency_ms, 3)
    status = outcome.status.value
    fields: dict[str, Any] = {
        "seq": seq, "market": f["market"], "decision_id": f["decision_id"], "side": f["side"], "price": f["price"],
        "size": f["size"], "client_order_id": f["client_order_id"], "slot": f["slot"], "status": status,
        "order_id": outcome.order_id, "exchange_status": outcome.exchange_status, "latency_ms": latency_ms,
        "error_type": outcome.error_type, "error_msg": outcome.error_msg,
    }
    if outcome.http_status is not None:
        fields["http_status"] = outcome.http_status
    if exc is not None:
        fields["stack"] = _stack(exc)
    # ORDER_RESULT is its own child span of the decision, at the moment the answer arrived.
    parent_ctx = state.decision.parent_context if state.decision else _EMPTY
    result_span = runtime.tracer.start_span("order.result", context=parent_ctx, attributes=span_attributes(
        "ORDER_RESULT", fields, ("status", "order_id", "client_order_id")))
    if status != "ACCEPTED":
        result_span.set_status(Status(StatusCode.ERROR, outcome.error_msg or status))
    result_span.end()
    state.span.set_attribute("dora.status", status)
    if outcome.order_id and state.ref is not None:
        runtime.orders.add(str(outcome.order_id), state.ref)
    if state.decision is not None and status in ("ACCEPTED", "REJECTED") and isinstance(f["slot"], int):
        with runtime.lock:
            state.decision.settled.add(f["slot"])
    level = logging.INFO if status == "ACCEPTED" else logging.WARNING if status == "REJECTED" else logging.ERROR
    text = (f"order {outcome.order_id} accepted ({latency_ms:.1f} ms)" if status == "ACCEPTED"
            else f"order {status.lower()}: {outcome.error_msg}")
    runtime.emit(level, "ORDER_RESULT", text, fields, state.span)
    if runtime.watchdog is not None:
        runtime.watchdog.order_result(f["decision_id"], f["slot"], status, f["client_order_id"])


# ---------------------------------------------------------------------------------------------
# @order_cancel
# ---------------------------------------------------------------------------------------------

def order_cancel(fn: F | None = None, /, **field_names: Any) -> Any:
    """Decorate the exchange call that cancels one order (`order_id`, and `market` if it has one).

    ORDER_CANCEL is logged before the call. The span is a child of the decision that placed the
    order (found by order_id), else of the active / latest decision for the market; the ledger
    records the cancel with its outcome when the call returns.
    """
    unknown = set(field_names) - {"market", "order_id", "client_order_id"}
    if unknown:
        raise TypeError(f"order_cancel got unknown field override(s) {sorted(unknown)}")

    def decorate(func: F) -> F:
        extract = _Extractor(func, ("market", "order_id", "client_order_id"), field_names)

        def before(runtime: _runtime.Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _CallState:
            found = extract(args, kwargs)
            order_id, coid = found.get("order_id"), found.get("client_order_id")
            ref = runtime.orders.find(coid, order_id)
            mkt = found.get("market", ref.market if ref else None)
            requested_by = current_decision.get()
            if ref is not None:
                decision_id, parent, slot = ref.decision_id, ref.span_context, ref.slot
                coid = coid or ref.client_order_id
            else:
                decision = _decision_for(runtime, mkt)
                decision_id = decision.decision_id if decision else None
                parent, slot = (decision.span_context if decision else None), None
            state = _CallState()
            state.fields = fields = {
                "seq": _next_seq(), "market": mkt, "order_id": order_id, "client_order_id": coid,
                "decision_id": decision_id, "slot": slot,
                "requested_by_decision_id": requested_by.decision_id if requested_by else None}
            span = runtime.tracer.start_span(
                "order.cancel", context=set_span_in_context(NonRecordingSpan(parent)) if parent else _EMPTY,
                attributes=span_attributes("ORDER_CANCEL", fields, ("market", "order_id")))
            state.runtime, state.span, state.decision, state.ref = runtime, span, None, ref
            state.token = otel_context.attach(set_span_in_context(span))
            state.decision_token = None
            try:
                runtime.emit(logging.INFO, "ORDER_CANCEL", f"cancelling order {order_id} on {mkt}", dict(fields), span)
            except BaseException:  # (SchemaError in strict mode) leave the caller's context as it was
                state.cleanup()
                raise
            state.started = _perf()
            return state

        def after_ok(state: _CallState, response: Any) -> None:
            try:
                state.span.set_attributes({"dora.status": "CANCELLED",
                                           "dora.latency_ms": round((_perf() - state.started) * 1000.0, 3)})
            finally:
                state.cleanup()

        def after_error(state: _CallState, exc: BaseException) -> None:
            try:
                outcome = exchange.classify_exception(exc)
                status = "CANCEL_UNKNOWN" if outcome.status is OrderStatus.UNKNOWN else "CANCEL_FAILED"
                _record_exception(state.span, exc)
                state.span.set_attributes({"dora.status": status, "dora.error_type": type(exc).__name__,
                                           "dora.error_msg": str(exc)[:1000],
                                           "dora.latency_ms": round((_perf() - state.started) * 1000.0, 3)})
                state.runtime.emit(logging.ERROR, "ERROR", f"cancel of order {state.fields['order_id']} failed: {exc}",
                                   dict(state.fields, seq=_next_seq(), error_type=type(exc).__name__, error_msg=str(exc) or type(exc).__name__,
                                        stack=_stack(exc), status=status))
            finally:
                state.cleanup()

        return _make(func, before, after_ok, after_error)  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate
