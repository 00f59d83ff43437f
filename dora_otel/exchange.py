"""Kalshi specifics, in one adapter-shaped place: reading an order placement's response and
classifying a failed call. Another exchange would get its own functions with the same shapes.

The rule that matters: a timeout, a disconnect or a 5xx is UNKNOWN (the order may be live on the
exchange), never REJECTED. Only a definitive answer from the exchange (4xx, an error body, a
reject exception) is REJECTED. Anything else that raised is ERROR.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from dora_otel.events import OrderStatus

_ORDER_ID_KEYS = ("order_id", "orderId", "id")
_UNKNOWN_NAME_PARTS = ("timeout", "timedout", "connectionerror", "connecterror", "disconnect",
                       "protocolerror", "readerror", "remoteprotocol", "brokenpipe", "cancellederror")
_REJECT_NAME_PARTS = ("reject", "insufficient", "invalidorder", "badrequest", "ratelimit")


class Outcome(NamedTuple):
    """What became of one placement (a NamedTuple: built on every order, so kept cheap)."""

    status: OrderStatus
    order_id: str | None = None
    exchange_status: str | None = None
    error_type: str | None = None
    error_msg: str | None = None
    http_status: int | None = None


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def read_response(response: Any) -> Outcome:
    """Outcome of a place call that returned. Kalshi's CreateOrder answers `{"order": {...}}`."""
    if response is None:
        return Outcome(OrderStatus.UNKNOWN, error_msg="the place call returned no response")
    body = _get(response, "order") or response
    error = _get(response, "error") or _get(body, "error")
    order_id = None
    for key in _ORDER_ID_KEYS:
        value = _get(body, key)
        if value is not None and value != "":
            order_id = str(value)
            break
    exchange_status = _get(body, "status")
    exchange_status = None if exchange_status is None else str(exchange_status)
    if error:
        message = _get(error, "message") or error
        code = _get(error, "code")
        return Outcome(OrderStatus.REJECTED, order_id, exchange_status, error_type=str(code) if code else "ExchangeReject",
                       error_msg=str(message))
    if order_id is None:
        return Outcome(OrderStatus.UNKNOWN, None, exchange_status,
                       error_msg=f"no order id in the response ({type(response).__name__})")
    return Outcome(OrderStatus.ACCEPTED, order_id, exchange_status)


def http_status_of(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        if holder is None:
            continue
        for attr in ("status_code", "status", "http_status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and 100 <= value <= 599:
                return value
    return None


def classify_exception(exc: BaseException) -> Outcome:
    """Outcome of a place call that raised."""
    names = " ".join(cls.__name__.lower() for cls in type(exc).__mro__)
    status_code = http_status_of(exc)
    error_type, error_msg = type(exc).__name__, str(exc) or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        status = OrderStatus.ERROR  # nothing reached the exchange: certainly not live
    elif isinstance(exc, (TimeoutError, ConnectionError)) or any(p in names for p in _UNKNOWN_NAME_PARTS):
        status = OrderStatus.UNKNOWN
    elif status_code is not None:
        status = OrderStatus.UNKNOWN if status_code >= 500 or status_code == 408 else OrderStatus.REJECTED
    elif any(p in names for p in _REJECT_NAME_PARTS):
        status = OrderStatus.REJECTED
    else:
        status = OrderStatus.ERROR
    return Outcome(status, error_type=error_type, error_msg=error_msg, http_status=status_code)
