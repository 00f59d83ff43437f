"""The decorators a bot adds to its strategy and exchange methods: `@decision_cycle`,
`@order_place`, `@order_cancel` (sync functions, async functions and methods alike), and
`order_suppressed`, the bot's "this target was deliberately not sent, because R".

- `@decision_cycle` starts a NEW root span (a new trace) on every call; its trace id is the
  decision_id, bound for every log line inside. When the strategy returns, DECISION_MADE is logged
  with the target orders read from the return value, each with its slot and client_order_id.
- `@order_place` / `@order_cancel` are child spans of the decision: the one active in the calling
  context (also inside asyncio tasks), else the decision for the order's market that is running now
  (orders placed from threads inside a decision), else the latest for the market (strategies usually
  return targets and the main loop places them), and for a cancel, the decision that placed the order.
- Every order of a decision has its own slot and client_order_id (`_runtime.Decision.claim`): the
  strategy's targets first (by side/price/size), then the next free slot. A *retry* keeps its slot
  and id: the bot passes that client_order_id (or `slot=`) again, or places the same side/price/size
  again after a non-terminal outcome (UNKNOWN, ERROR, suppressed) with no attempt in flight.

Fields are found by parameter name (`market`, `side`, `price`, `size`, `client_order_id`,
`order_id`, `slot`); override a name with a keyword (`market="ticker"`), or reach into an argument
with a dotted path (`market="order.ticker"`). Only those named fields are captured, never whole
argument lists, so credentials cannot leak through a decorator.

Telemetry never changes or stops the bot's call. The call receives exactly the arguments the bot
passed, plus a generated client_order_id only where the bot left that parameter empty (None or "",
by keyword, positionally or not at all). Field values are copied as text where they are not plain
numbers (placeholders for what cannot be printed), so a hostile value cannot lose a record. If
building a span or a line fails, the bot's function runs as if undecorated. The bot's own return
value and exceptions pass through unchanged (same object, same traceback).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import hashlib
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from opentelemetry import context as otel_context
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    Status,
    StatusCode,
    set_span_in_context,
)

from dora_otel import _runtime, exchange, identity
from dora_otel._runtime import (
    Decision,
    OrderRef,
    attr,
    price_key,
    safe_value,
    size_key,
    span_event,
)
from dora_otel.context import current_decision
from dora_otel.events import OrderStatus, SchemaError
from dora_otel.exchange import safe_text
from dora_otel.logs import Template

F = TypeVar("F", bound=Callable[..., Any])
_EMPTY = otel_context.Context()
_internal = logging.getLogger("dora_otel.internal")
_perf = time.perf_counter
_next_seq = identity.next_seq
_STACK_LIMIT = 20_000

# The decision whose strategy body is running in this context (asyncio tasks inherit it).
_active_decision: contextvars.ContextVar[Decision | None] = contextvars.ContextVar("dora_otel_active_decision",
                                                                                     default=None)


def _report_internal_error(where: str) -> None:
    """A failure inside telemetry: one line, never an exception into the bot."""
    try:
        _internal.error("dora-otel failed in %s; the bot call proceeds", where, exc_info=True)
    except Exception:
        pass


# ---------------------------------------------------------------------------------------------
# Finding fields in a call's arguments, and passing a generated client_order_id
# ---------------------------------------------------------------------------------------------

class _Extractor:
    """Reads named fields from (args, kwargs), planned once at decoration time (no per-call
    signature binding: that costs more than the whole span). Returns one value per field asked
    for, in that order; None where the call has none. A field that cannot be read (a hostile
    attribute) is None rather than failing the record."""

    __slots__ = ("_empty", "_plan", "_simple")

    def __init__(self, fn: Callable[..., Any], fields: Iterable[str], overrides: dict[str, Any]) -> None:
        params = inspect.signature(fn).parameters
        names = list(params)
        fields = tuple(fields)
        plan: list[tuple[int, str | None, int | None, Any, Any]] = []
        for position, field in enumerate(fields):
            spec = overrides.get(field, field)
            if callable(spec):
                plan.append((position, None, None, inspect.Parameter.empty, spec))
                continue
            root, *path = str(spec).split(".")
            if root not in params:
                if field in overrides:
                    raise TypeError(f"{fn.__qualname__} has no parameter {root!r} (given as {field}={spec!r})")
                continue
            param = params[root]
            index = names.index(root) if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) else None
            plan.append((position, root, index, param.default, tuple(path)))
        self._plan = tuple(plan)
        self._empty = [None] * len(fields)
        # Every field a plain parameter (no dotted path, no callable): the per-call loop skips both.
        self._simple = all(name is not None and not path for _, name, _, _, path in plan)

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        out = self._empty.copy()
        simple = self._simple
        nargs = len(args)
        for position, name, index, default, path in self._plan:
            try:
                if name is None:  # a callable override: fn(args, kwargs)
                    value = path(args, kwargs)
                elif name in kwargs:
                    value = kwargs[name]
                elif index is not None and index < nargs:
                    value = args[index]
                elif default is not inspect.Parameter.empty:
                    value = default
                else:
                    continue
                if not simple:
                    for part in path if name is not None else ():
                        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
            except Exception:
                continue
            out[position] = value
        return out


class _CoidSlot:
    """Where a generated client_order_id goes in a call, planned at decoration time: the
    `client_order_id` parameter's position and kind (the per-call work is a tuple/dict update)."""

    __slots__ = ("index", "keyword")

    def __init__(self, fn: Callable[..., Any], name: str = "client_order_id") -> None:
        params = list(inspect.signature(fn).parameters.values())
        found = next((p for p in params if p.name == name), None)
        self.index: int | None = None
        self.keyword = False
        if found is None or found.kind in (found.VAR_POSITIONAL, found.VAR_KEYWORD):
            return
        if found.kind in (found.POSITIONAL_ONLY, found.POSITIONAL_OR_KEYWORD):
            self.index = params.index(found)
        self.keyword = found.kind in (found.POSITIONAL_OR_KEYWORD, found.KEYWORD_ONLY)

    @property
    def usable(self) -> bool:
        return self.index is not None or self.keyword

    def fill(self, args: tuple[Any, ...], kwargs: dict[str, Any], coid: str,
             name: str = "client_order_id") -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(args, kwargs) with `coid` where the bot left the parameter empty; the bot's own objects
        otherwise (a non-empty value is never replaced)."""
        if self.keyword and name in kwargs:
            if _empty(kwargs[name]):
                kwargs = dict(kwargs)
                kwargs[name] = coid
            return args, kwargs
        if self.index is not None and self.index < len(args):
            if _empty(args[self.index]):
                args = (*args[:self.index], coid, *args[self.index + 1:])
            return args, kwargs
        if self.keyword:
            kwargs = dict(kwargs)
            kwargs[name] = coid
        elif self.index is not None and self.index == len(args):  # positional-only, next in line
            args = (*args, coid)
        return args, kwargs


def _empty(value: Any) -> bool:
    return value is None or (type(value) is str and value == "")


# ---------------------------------------------------------------------------------------------
# Running a decorated call
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class _CallState:
    """What a decorated call carries from before the call to after it (the thread or task that
    makes the call owns it)."""

    runtime: _runtime.Runtime
    span: Any
    fields: dict[str, Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    started: float = 0.0
    decision: Decision | None = None
    ref: OrderRef | None = None
    token: Any = None
    decision_token: Any = None
    active_token: Any = None

    def cleanup(self) -> None:
        """Restore the caller's context and end the span, whatever happened."""
        try:
            if self.active_token is not None:
                _active_decision.reset(self.active_token)
                self.active_token = None
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


def _make(fn: Callable[..., Any], before: Callable[..., Any], after_ok: Callable[..., Any],
          after_error: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap `fn` (sync or async) so that telemetry failures never change what the bot sees. The call
    gets `state.args` / `state.kwargs`: the bot's own, plus a generated client_order_id at most."""

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            state = _guard(before, args, kwargs)
            if state is None:
                return await fn(*args, **kwargs)
            try:
                result = await fn(*state.args, **state.kwargs)
            except BaseException as exc:
                _guard_after(after_error, state, exc, reraise=False)
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
            result = fn(*state.args, **state.kwargs)
        except BaseException as exc:
            _guard_after(after_error, state, exc, reraise=False)
            raise
        _guard_after(after_ok, state, result)
        return result

    return wrapper


def _guard(before: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> _CallState | None:
    runtime = _runtime.ACTIVE
    if runtime is None:
        return None
    try:
        state: _CallState = before(runtime, args, kwargs)
        return state
    except SchemaError:
        if runtime.strict:
            raise
        return None
    except Exception:
        _report_internal_error(getattr(before, "__qualname__", "a decorator"))
        return None


def _guard_after(after: Callable[..., Any], state: _CallState, value: Any, *, reraise: bool = True) -> None:
    """Run an after-hook. A strict-mode SchemaError reaches the bot only after a call that returned
    (never in place of the bot's own exception)."""
    try:
        after(state, value)
    except SchemaError:
        state.cleanup()
        if state.runtime.strict and reraise:
            raise
    except Exception:
        _report_internal_error(getattr(after, "__qualname__", "a decorator"))
        state.cleanup()


def _record_exception(span: Any, exc: BaseException) -> None:
    """The exception on the span, whatever its __str__ does."""
    text = safe_text(exc)
    name = safe_text(type(exc).__name__, 200)
    try:
        span.record_exception(exc, attributes={"exception.message": text, "exception.stacktrace": _stack(exc)})
    except Exception:
        try:
            span.add_event("exception", {"exception.type": name, "exception.message": text})
        except Exception:
            pass
    try:
        span.set_status(Status(StatusCode.ERROR, f"{name}: {text}"))
    except Exception:
        pass


def _stack(exc: BaseException) -> str:
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        text = f"{type(exc).__name__}: <traceback could not be formatted>"
    return safe_text(text, _STACK_LIMIT)


def _error_msg(exc: BaseException) -> str:
    return safe_text(exc) or safe_text(type(exc).__name__, 200)


# ---------------------------------------------------------------------------------------------
# @decision_cycle
# ---------------------------------------------------------------------------------------------

def decision_cycle(fn: F | None = None, /, *, market: Any = None, loop: Any = None,
                   targets: Callable[[Any], Iterable[Any]] | None = None,
                   spread: Callable[[Any], Any] | None = None) -> Any:
    """Decorate the strategy method that decides one cycle for one market.

    Each call is a new trace whose trace id is the decision_id. The return value is passed back
    unchanged; its target orders are read by `targets(result)` (default: `default_targets`).
    `market` / `loop` name the parameters holding the market ticker and loop counter (a dotted path
    or a callable `(args, kwargs) -> value` also work); without a loop parameter a per-market
    counter is kept. Orders placed while the body runs (also under `asyncio.gather` or from threads)
    belong to this decision, each with its own slot.
    """

    def decorate(func: F) -> F:
        names = {k: v for k, v in (("market", market), ("loop", loop)) if v is not None}
        extract = _Extractor(func, ("market", "loop"), names)
        read_targets = targets or default_targets
        name = getattr(func, "__qualname__", "decision")

        def before(runtime: _runtime.Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _CallState:
            found_market, found_loop = extract(args, kwargs)
            mkt = _market(found_market)
            loop_no = safe_value(found_loop, 200)
            if loop_no is None:
                with runtime.lock:
                    runtime.loops[mkt] += 1
                    loop_no = runtime.loops[mkt]
            state_fields = {"market": mkt, "loop": loop_no}
            span = runtime.tracer.start_root(f"decision {mkt}" if mkt is not None else "decision",
                                             ("DECISION_MADE", state_fields))
            decision = Decision(f"{span.trace_id:032x}", mkt, span.get_span_context())
            with runtime.lock:
                runtime.running[mkt] = decision
            state = _CallState(runtime, span, state_fields, args, kwargs, _perf(), decision)
            state.token = otel_context.attach(span.context())
            state.decision_token = current_decision.set(decision)
            state.active_token = _active_decision.set(decision)
            return state

        def after_ok(state: _CallState, result: Any) -> None:
            decision = state.decision
            assert decision is not None
            try:
                raw = [_target(t) for t in read_targets(result)]
                with state.runtime.lock:
                    normalized = decision.decide(raw)
                try:
                    spread_value = spread(result) if spread else default_spread(result, normalized)
                except Exception:
                    if spread:
                        raise
                    spread_value = None
                _decided(state, normalized, safe_value(spread_value))
            finally:
                _finish_running(state, keep=True)
                state.cleanup()

        def after_error(state: _CallState, exc: BaseException) -> None:
            try:
                runtime, span = state.runtime, state.span
                _record_exception(span, exc)
                error_msg = _error_msg(exc)
                fields = {"market": state.fields["market"], "loop": state.fields["loop"],
                          "error_type": safe_text(type(exc).__name__, 200), "error_msg": error_msg,
                          "stack": _stack(exc), "where": name, "seq": _next_seq()}
                span.set_event("DECISION_MADE", dict(fields, target_count=0, targets=[], error_msg=error_msg[:1000]))
                runtime.emit(logging.ERROR, "ERROR",
                             f"decision for {state.fields['market']} raised {fields['error_type']}", fields)
            finally:
                _finish_running(state, keep=False)
                state.cleanup()

        return _make(func, before, after_ok, after_error)  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


def _market(value: Any) -> str | None:
    """A market as a dictionary key and a field: a ticker is text; an empty one is no market."""
    if value is None or (type(value) is str and value == ""):
        return None
    text = safe_value(value, 200)
    return text if type(text) is str else safe_text(text, 200)


def _coid_text(value: Any) -> str | None:
    return None if _empty(value) else str(safe_value(value, 200))


def _finish_running(state: _CallState, *, keep: bool) -> None:
    """The strategy body ended: its decision stops being the market's running one; when it returned,
    it becomes the market's latest (orders placed after it returns join it)."""
    decision, runtime = state.decision, state.runtime
    if decision is None:
        return
    with runtime.lock:
        if runtime.running.get(decision.market) is decision:
            del runtime.running[decision.market]
        if keep:
            runtime.latest[decision.market] = decision


def _decided(state: _CallState, targets: list[dict[str, Any]], spread_value: Any) -> None:
    runtime, span, decision = state.runtime, state.span, state.decision
    assert decision is not None
    mkt = state.fields["market"]
    fields = {"seq": _next_seq(), "market": mkt, "decision_id": decision.decision_id, "loop": state.fields["loop"],
              "target_count": len(targets), "spread": spread_value, "targets": targets,
              "expected_orders_hash": expected_orders_hash(targets)}
    span.set_event("DECISION_MADE", fields)
    runtime.emit(logging.INFO, "DECISION_MADE", _DECIDED_MSG, fields, span)
    if runtime.watchdog is not None:
        runtime.watchdog.decision_made(decision.decision_id, mkt)


def _decision_for(runtime: _runtime.Runtime, market: Any) -> Decision | None:
    """The decision an order belongs to: the one active in this context, else the one running now
    for the market (an order placed from a thread inside the decision), else the market's latest."""
    active = _active_decision.get()
    if active is not None:
        return active
    # Two dict reads, each atomic (str / None keys): no lock needed to read them.
    return runtime.running.get(market) or runtime.latest.get(market)


# ---------------------------------------------------------------------------------------------
# @order_place
# ---------------------------------------------------------------------------------------------

_ORDER_FIELDS = ("market", "side", "price", "size", "client_order_id", "slot")


def order_place(fn: F | None = None, /, *, result: Callable[[Any], Any] | None = None,
                classify: Callable[[BaseException], Any] | None = None, **field_names: Any) -> Any:
    """Decorate the exchange call that places one order.

    ORDER_PLACE is logged (and recorded in the ledger) before the call; ORDER_RESULT after it with
    status ACCEPTED | REJECTED | DUPLICATE | ERROR | UNKNOWN, order_id, latency_ms, reason and
    error_msg (the rules are in `dora_otel.exchange`). A timeout, disconnect or 5xx is UNKNOWN: the
    order may be live. A 409 duplicate client_order_id is DUPLICATE: an earlier attempt exists.
    When the bot leaves `client_order_id` empty (None or "", by keyword, positionally or not at all),
    the slot's id is passed in its place, so a retry of the same slot reuses it.

    `result(response)` may return an `exchange.Outcome` or a dict with `status`, `order_id`,
    `exchange_status`, `error_msg`, `reason` for response shapes the default reader does not know (None:
    use the default); `classify(exc)` may return an `Outcome` (or None for the default) for exceptions.
    Field names: `market="ticker"`, `price="order.limit_price"`, ...
    """
    unknown = set(field_names) - set(_ORDER_FIELDS)
    if unknown:
        raise TypeError(f"order_place got unknown field override(s) {sorted(unknown)}; known: {list(_ORDER_FIELDS)}")

    def decorate(func: F) -> F:
        extract = _Extractor(func, _ORDER_FIELDS, field_names)
        coid_param = field_names.get("client_order_id", "client_order_id")
        coid_slot = _CoidSlot(func, coid_param) if isinstance(coid_param, str) and "." not in coid_param else None

        def before(runtime: _runtime.Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _CallState:
            mkt, side, price, size, bot_coid, bot_slot = extract(args, kwargs)
            mkt = _market(mkt)
            side = safe_value(side, 200)
            price, size = safe_value(price), safe_value(size)
            bot_coid = _coid_text(bot_coid)
            if bot_slot is not None and (type(bot_slot) is not int):
                bot_slot = safe_value(bot_slot, 200)
            decision = _decision_for(runtime, mkt)
            slot: Any
            coid: Any
            if decision is not None:
                with runtime.lock:
                    slot, coid = decision.claim(side, price, size, bot_coid, bot_slot)
                if bot_coid is None and coid is not None and coid_slot is not None and coid_slot.usable:
                    args, kwargs = coid_slot.fill(args, kwargs, coid, coid_param)
                fields = {"seq": _next_seq(), "market": mkt, "decision_id": decision.decision_id, "side": side,
                          "price": price, "size": size, "client_order_id": coid, "slot": slot}
                span = runtime.tracer.start_child("order.place", decision.trace_id, decision.span_id,
                                                  decision.sampled, ("ORDER_PLACE", fields))
            else:
                slot, coid = bot_slot, bot_coid
                fields = {"seq": _next_seq(), "market": mkt, "decision_id": None, "side": side,
                          "price": price, "size": size, "client_order_id": coid, "slot": slot}
                span = runtime.tracer.start_span("order.place", _EMPTY, ("ORDER_PLACE", fields))
            state = _CallState(runtime, span, fields, args, kwargs, decision=decision)
            state.token = otel_context.attach(span.context())
            if decision is not None:
                if current_decision.get() is None:
                    state.decision_token = current_decision.set(decision)
                state.ref = OrderRef(decision.decision_id, decision.span_context, mkt, slot, side, price, size, coid)
                if coid is not None:
                    runtime.orders.add(str(coid), state.ref)
            try:
                # `fields` is handed over: the span and the line share it (Runtime.emit).
                runtime.emit(logging.INFO, "ORDER_PLACE", _PLACE_MSG, fields, span)
                if runtime.watchdog is not None and decision is not None:
                    runtime.watchdog.order_started(decision.decision_id, slot, coid, mkt)
            except BaseException:  # (SchemaError in strict mode) leave the caller's context as it was
                _settle(state, "ERROR")
                state.cleanup()
                raise
            state.started = _perf()
            return state

        def after_ok(state: _CallState, response: Any) -> None:
            latency_ms = (_perf() - state.started) * 1000.0
            try:
                outcome = None
                if result is not None:
                    try:
                        outcome = _outcome_from(result(response))
                    except Exception:
                        _report_internal_error("the result= hook of @order_place")
                        outcome = exchange.Outcome(OrderStatus.UNKNOWN, error_type="ResultHookError",
                                                   error_msg="the result= hook raised; see the dora_otel.internal line",
                                                   reason="result_hook_error")
                if outcome is None:
                    outcome = exchange.read_response(response)
                _order_result(state, outcome, latency_ms, None)
            finally:
                state.cleanup()

        def after_error(state: _CallState, exc: BaseException) -> None:
            latency_ms = (_perf() - state.started) * 1000.0
            try:
                outcome = None
                if classify is not None:
                    try:
                        outcome = _outcome_from(classify(exc))
                    except Exception:
                        _report_internal_error("the classify= hook of @order_place")
                if outcome is None:
                    outcome = exchange.classify_exception(exc)
                _record_exception(state.span, exc)
                _order_result(state, outcome, latency_ms, exc)
            finally:
                state.cleanup()

        return _make(func, before, after_ok, after_error)  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


def _outcome_from(value: Any) -> exchange.Outcome | None:
    """What a `result=` / `classify=` hook returned, as an Outcome with storable fields (None: use the
    default reading)."""
    if value is None:
        return None
    if isinstance(value, exchange.Outcome):
        status, rest = value.status, list(value[1:])
    elif isinstance(value, dict):
        status = OrderStatus(str(value["status"]).upper())
        rest = [value.get(k)
                for k in ("order_id", "exchange_status", "error_type", "error_msg", "http_status", "reason")]
    else:
        return exchange.Outcome(OrderStatus(str(value).upper()))
    order_id, exchange_status, error_type, error_msg, http_status, reason = rest
    text = [None if v is None else safe_text(v, 200) for v in (order_id, exchange_status, error_type, reason)]
    return exchange.Outcome(OrderStatus(status), text[0], text[1], text[2],
                            None if error_msg is None else safe_text(error_msg),
                            http_status if type(http_status) is int else None, text[3])


# Line messages, rendered from the event's fields on the event thread (logs.Template).
_DECIDED_MSG = Template("decision for {market}: {target_count} target orders")
_PLACE_MSG = Template("placing {side} {size}@{price} on {market}")
_RESULT_LINES = {
    "ACCEPTED": (logging.INFO, Template("order {order_id} accepted ({latency_ms:.1f} ms)")),
    "DUPLICATE": (logging.WARNING,
                  Template("order duplicate: {error_msg} (an earlier attempt with this client_order_id exists)")),
    "REJECTED": (logging.WARNING, Template("order rejected: {error_msg}")),
    "UNKNOWN": (logging.ERROR, Template("order unknown: {error_msg}")),
}
_RESULT_ERROR = (logging.ERROR, Template("order error: {error_msg}"))


def _settle(state: _CallState, status: str) -> None:
    if state.decision is not None:
        with state.runtime.lock:
            state.decision.settle(state.fields["slot"], status)


def _order_result(state: _CallState, outcome: exchange.Outcome, latency_ms: float, exc: BaseException | None) -> None:
    runtime, f = state.runtime, state.fields
    seq = _next_seq()
    latency_ms = round(latency_ms, 3)
    status = outcome.status.value
    _settle(state, status)
    order_id, error_msg = outcome.order_id, outcome.error_msg  # (safe text: see exchange / _outcome_from)
    fields: dict[str, Any] = {
        "seq": seq, "market": f["market"], "decision_id": f["decision_id"], "side": f["side"], "price": f["price"],
        "size": f["size"], "client_order_id": f["client_order_id"], "slot": f["slot"], "status": status,
        "order_id": order_id, "exchange_status": outcome.exchange_status, "latency_ms": latency_ms,
        "error_type": outcome.error_type, "error_msg": error_msg,
    }
    if outcome.reason is not None:
        fields["reason"] = outcome.reason
    if outcome.http_status is not None:
        fields["http_status"] = outcome.http_status
    if exc is not None:
        fields["stack"] = _stack(exc)
    # ORDER_RESULT is its own child span of the decision, at the moment the answer arrived; the
    # ledger journals it when it starts (before its line), and `fields` is handed over to both.
    decision = state.decision
    if decision is not None:
        result_span = runtime.tracer.start_child("order.result", decision.trace_id, decision.span_id,
                                                 decision.sampled, ("ORDER_RESULT", fields))
    else:
        result_span = runtime.tracer.start_span("order.result", _EMPTY, ("ORDER_RESULT", fields))
    if status != "ACCEPTED":
        result_span.set_status(Status(StatusCode.ERROR, error_msg or status))
    state.span.set_attribute("dora.status", status)
    if order_id and state.ref is not None:
        runtime.orders.add(str(order_id), state.ref)
    level, text = _RESULT_LINES.get(status, _RESULT_ERROR)
    try:
        runtime.emit(level, "ORDER_RESULT", text, fields, state.span)
    finally:
        result_span.end()
    if runtime.watchdog is not None:
        runtime.watchdog.order_result(f["decision_id"], f["slot"], status, f["client_order_id"])


# ---------------------------------------------------------------------------------------------
# @order_cancel
# ---------------------------------------------------------------------------------------------

def order_cancel(fn: F | None = None, /, **field_names: Any) -> Any:
    """Decorate the exchange call that cancels one order (`order_id`, and `market` if it has one).

    Two ORDER_CANCEL lines and ledger records per cancel: the request, logged and journaled BEFORE
    the call (no `status`), and the outcome when it returns, with `status` CANCELLED | CANCEL_FAILED |
    CANCEL_UNKNOWN, `latency_ms` and `reason` (the exchange's error code or the cause). A cancel that
    raised also logs an ERROR line with the stack. The span is a child of the decision that placed the
    order (found by order_id / client_order_id), else of the active / latest decision for the market.
    """
    unknown = set(field_names) - {"market", "order_id", "client_order_id"}
    if unknown:
        raise TypeError(f"order_cancel got unknown field override(s) {sorted(unknown)}")

    def decorate(func: F) -> F:
        extract = _Extractor(func, ("market", "order_id", "client_order_id"), field_names)

        def before(runtime: _runtime.Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _CallState:
            found_market, found_order_id, found_coid = extract(args, kwargs)
            order_id, coid = safe_value(found_order_id, 200), _coid_text(found_coid)
            ref = runtime.orders.find(coid, order_id)
            mkt = _market(found_market) if found_market is not None else (ref.market if ref else None)
            requested_by = current_decision.get()
            decision_id: str | None
            parent: SpanContext | None
            if ref is not None:
                decision_id, parent, slot = ref.decision_id, ref.span_context, ref.slot
                coid = coid or ref.client_order_id
            else:
                decision = _decision_for(runtime, mkt)
                decision_id = decision.decision_id if decision else None
                parent, slot = (decision.span_context if decision else None), None
            fields = {
                "seq": _next_seq(), "market": mkt, "order_id": order_id, "client_order_id": coid,
                "decision_id": decision_id, "slot": slot,
                "requested_by_decision_id": requested_by.decision_id if requested_by else None}
            # The ledger journals the request when this span starts (before the call) and the outcome
            # when it ends (ledger/processor.py), so a kill -9 during a slow cancel keeps the intent.
            # A cancel of an order no decision of this run knows is kept under unmatched:<market>
            # like a FILL (the ledger refuses a record without decision_id); explain joins it to the
            # decision that placed the order by order_id at read time (query/sources.OrderJoin).
            record = fields if decision_id else dict(
                fields, decision_id=f"unmatched:{mkt if mkt is not None else 'unknown'}")
            span = runtime.tracer.start_span(
                "order.cancel", context=set_span_in_context(NonRecordingSpan(parent)) if parent else _EMPTY,
                event=span_event("ORDER_CANCEL", record))
            state = _CallState(runtime, span, fields, args, kwargs, ref=ref)
            state.token = otel_context.attach(span.context())
            try:
                runtime.emit(logging.INFO, "ORDER_CANCEL", f"cancelling order {order_id} on {mkt}", dict(fields), span)
            except BaseException:  # (SchemaError in strict mode) leave the caller's context as it was
                state.cleanup()
                raise
            state.started = _perf()
            return state

        def after_ok(state: _CallState, response: Any) -> None:
            latency_ms = (_perf() - state.started) * 1000.0
            try:
                _cancel_result(state, *exchange.cancel_outcome(response=response), latency_ms, None)
            finally:
                state.cleanup()

        def after_error(state: _CallState, exc: BaseException) -> None:
            latency_ms = (_perf() - state.started) * 1000.0
            try:
                _record_exception(state.span, exc)
                _cancel_result(state, *exchange.cancel_outcome(exc=exc), latency_ms, exc)
            finally:
                state.cleanup()

        return _make(func, before, after_ok, after_error)  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


def _cancel_result(state: _CallState, status: str, outcome: exchange.Outcome, latency_ms: float,
                   exc: BaseException | None) -> None:
    """The cancel's outcome: flat attributes on its span (the ledger's outcome record: they win over
    the request's fields, with their own seq) and an ORDER_CANCEL line with the status."""
    runtime, span = state.runtime, state.span
    outcome_fields: dict[str, Any] = {"seq": _next_seq(), "status": status, "latency_ms": round(latency_ms, 3)}
    if status != exchange.CANCELLED:
        outcome_fields.update(reason=safe_value(outcome.reason, 200), error_type=safe_value(outcome.error_type, 200),
                              error_msg=safe_value(outcome.error_msg))
    if outcome.http_status is not None:
        outcome_fields["http_status"] = outcome.http_status
    outcome_fields = {k: v for k, v in outcome_fields.items() if v is not None}
    span.set_attributes({f"dora.{k}": attr(v) for k, v in outcome_fields.items()})
    if status != exchange.CANCELLED and exc is None:
        span.set_status(Status(StatusCode.ERROR, str(outcome_fields.get("error_msg") or status)))
    fields = dict(state.fields, **outcome_fields)
    order_id = fields["order_id"]
    if status == exchange.CANCELLED:
        text = f"order {order_id} cancelled ({fields['latency_ms']:.1f} ms)"
    else:
        text = f"cancel of order {order_id} {status.lower()}: {fields.get('error_msg')}"
    level = logging.INFO if status == exchange.CANCELLED else logging.WARNING
    runtime.emit(level, "ORDER_CANCEL", text, fields, span)
    if exc is not None:  # the ERROR line (alarms count these) with the stack
        runtime.emit(logging.ERROR, "ERROR", f"cancel of order {order_id} failed: {_error_msg(exc)}",
                     dict(state.fields, seq=_next_seq(), error_type=safe_text(type(exc).__name__, 200),
                          error_msg=_error_msg(exc), stack=_stack(exc), status=status, reason=fields.get("reason")))


# ---------------------------------------------------------------------------------------------
# order_suppressed: the why-not record
# ---------------------------------------------------------------------------------------------

_SUPPRESSED_OWN = frozenset({"seq", "market", "decision_id", "side", "price", "size", "slot",
                             "client_order_id", "reason", "event_type"})


def order_suppressed(reason: str, *, market: Any, side: Any = None, price: Any = None, size: Any = None,
                     slot: Any = None, **fields: Any) -> str | None:
    """Record that the bot deliberately did not send an order, and why (risk limit, rate limit, halt).

    Logs ORDER_SUPPRESSED and records it in the ledger with decision_id, slot, client_order_id,
    market, side, price, size and `reason`, linked to the market's decision: the one active here,
    else the one running for the market, else its latest (also after the strategy returned). The slot
    is the matching target's (same side/price/size), or `slot=`; it stays retryable: placing the same
    target later reuses its slot and client_order_id. Extra keyword fields ride along on the line.

    Returns the decision_id it was linked to, or None. Call it from any thread. Never raises into the
    bot (SchemaError in strict mode only, e.g. for an empty reason).
    """
    runtime = _runtime.ACTIVE
    if runtime is None:
        return None
    try:
        return _suppressed(runtime, reason, market, side, price, size, slot, fields)
    except SchemaError:
        if runtime.strict:
            raise
    except Exception:
        _report_internal_error("order_suppressed")
    return None


def _suppressed(runtime: _runtime.Runtime, reason: Any, market: Any, side: Any, price: Any, size: Any,
                slot: Any, extra: dict[str, Any]) -> str | None:
    mkt = _market(market)
    side, price, size = safe_value(side, 200), safe_value(price), safe_value(size)
    if slot is not None and type(slot) is not int:
        slot = safe_value(slot, 200)
    decision = _decision_for(runtime, mkt)
    coid = None
    if decision is not None:
        with runtime.lock:
            slot, coid = decision.claim(side, price, size, None, slot, state=_runtime.OPEN)
    fields: dict[str, Any] = {str(k): safe_value(v) for k, v in extra.items() if k not in _SUPPRESSED_OWN}
    fields.update(seq=_next_seq(), market=mkt, decision_id=decision.decision_id if decision else None,
                  side=side, price=price, size=size, slot=slot, client_order_id=coid,
                  reason=None if reason is None else safe_value(reason))
    record = dict(fields, decision_id=fields["decision_id"] or f"unmatched:{mkt}")
    span = runtime.tracer.start_span(  # the ledger records ORDER_SUPPRESSED when its span starts
        "order.suppressed", context=decision.parent_context if decision is not None else _EMPTY,
        event=span_event("ORDER_SUPPRESSED", record))
    try:
        what = f"{side} {size}@{price}" if side is not None or price is not None else "an order"
        runtime.emit(logging.INFO, "ORDER_SUPPRESSED", f"not sending {what} on {mkt}: {fields['reason']}",
                     {k: v for k, v in fields.items() if v is not None}, span)
    finally:
        span.end()
    return decision.decision_id if decision else None


# ---------------------------------------------------------------------------------------------
# Reading a strategy's return value
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
    try:
        return order.get(name) if isinstance(order, dict) else getattr(order, name, None)
    except Exception:
        return None


def _target(order: Any) -> tuple[Any, Any, Any, str | None]:
    """(side, price, size, client_order_id) of one target order, as storable values."""
    if type(order) is dict:  # the usual shape: plain dict lookups cannot raise
        get = order.get
        return (safe_value(get("side")), safe_value(get("price")), safe_value(get("size")),
                _coid_text(get("client_order_id")))
    return (safe_value(_field(order, "side")), safe_value(_field(order, "price")),
            safe_value(_field(order, "size")), _coid_text(_field(order, "client_order_id")))


_YES_SIDES = frozenset({"yes", "buy", "bid"})
_NO_SIDES = frozenset({"no", "sell", "ask"})


def default_spread(result: Any, targets: list[dict[str, Any]]) -> float | None:
    """`spread` from the return value, else from a two-sided quote: Kalshi YES and NO bids on the
    same market cost 1.00 (or 100 cents) together, so spread = 1 - yes - no."""
    if not isinstance(result, (list, tuple)):  # (a list has no `spread`: no failed getattr per decision)
        value = result.get("spread") if isinstance(result, dict) else getattr(result, "spread", None)
        if value is not None:
            return float(value)
    best_yes: float | None = None
    best_no: float | None = None
    for t in targets:
        price = t.get("price")
        if price is not None:
            side = t.get("side")
            side = (side if type(side) is str else str(side)).lower()
            if side in _YES_SIDES:
                price = float(price)
                best_yes = price if best_yes is None or price > best_yes else best_yes
            elif side in _NO_SIDES:
                price = float(price)
                best_no = price if best_no is None or price > best_no else best_no
    if best_yes is None or best_no is None:
        return None
    whole = 100.0 if max(best_yes, best_no) > 1.0 else 1.0
    return round(whole - best_yes - best_no, 6)


def expected_orders_hash(targets: list[dict[str, Any]]) -> str:
    """A stable hash of the sorted target orders (side, price, size): equal plans hash equal.
    (Prices and sizes as floats, 0.0 when missing or not numbers; the usual float / int read
    without a call.)"""
    keys = []
    for t in targets:
        side, price, size = t.get("side"), t.get("price"), t.get("size")
        keys.append((side if type(side) is str else str(side),
                     (price or 0.0) if type(price) is float else (price_key(price) or 0.0),
                     float(size) if type(size) is int else (size_key(size) or 0.0)))
    keys.sort()
    plan = tuple(keys)
    digest = _PLAN_HASHES.get(plan)
    if digest is None:
        digest = hashlib.sha256(orjson.dumps(keys)).hexdigest()[:32]
        if len(_PLAN_HASHES) >= 4096:  # a market maker repeats its plans: a small cache, emptied when full
            _PLAN_HASHES.clear()
        _PLAN_HASHES[plan] = digest
    return digest


_PLAN_HASHES: dict[tuple[tuple[str, float, float], ...], str] = {}
