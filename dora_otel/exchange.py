"""Kalshi specifics, in one adapter-shaped place: what a place or cancel call's answer means.

`read_response` reads what a place call returned, `classify_exception` what it raised, and
`cancel_outcome` does the same for a cancel. Another exchange would get its own functions with the
same shapes; nothing else in dora_otel knows Kalshi's error codes or HTTP statuses.

The rules, each from Kalshi's documentation (read 2026-11-30, summarised in FACTS.md "Kalshi"):

[OE] "Order Errors", https://docs.kalshi.com/getting_started/order_errors
[CO] "Create Order", https://docs.kalshi.com/api-reference/orders/create-order

- An error body is `{"error": {"code", "message", "details"}}`; a body the API cannot parse is a 400
  with `code` / `message` / `details` at the top level. Read `error.code`, fall back to `code` [OE].
- A duplicate client_order_id is refused with 409: an earlier attempt exists on the exchange. That is
  DUPLICATE, not REJECTED: the order's fate comes from its fills, cancels and live state [OE].
- 400, 403, 404, 409, 410, 429 with any other code are rejections: REJECTED, reason = the code [OE].
  Other 4xx (401, 405, 422, ...) are answers that refused the request too: REJECTED.
- 408, any 5xx, a timeout or a dropped connection: the outcome is unknown, the order may exist [OE].
  So are `asyncio.CancelledError` and `KeyboardInterrupt` arriving during the call: the request may
  already be on the wire. UNKNOWN.
- 201 from Create Order means accepted, not resting: the returned order carries its status [CO].

Decisions of ours (not from Kalshi's pages):
- A 409 whose code cannot be read (an error type that hides its body, e.g. urllib's HTTPError whose
  body is a stream telemetry must not consume) is DUPLICATE: the duplicate client_order_id is the
  409 Create Order documents. A 409 with a readable code that does not say "duplicate" / "already
  exists" is REJECTED with that code.
- An exception with no status attribute whose message *starts* with an HTTP status
  (`RuntimeError("400 Bad Request: insufficient balance")`, "HTTP Error 503: ...") is judged by that
  status. A status anywhere else in the text is ignored (too easy to misread "500 contracts").
- A refused connection (`ConnectionRefusedError`) never reached the exchange: ERROR. Any other
  exception we cannot read is ERROR (reason = its class name), shown as ERROR, never as REJECTED.
- Every function here never raises: an answer it cannot read becomes UNKNOWN with what it saw.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, NamedTuple

import orjson

from dora_otel.events import OrderStatus

_ORDER_ID_KEYS = ("order_id", "orderId", "id")
_UNKNOWN_NAME_PARTS = ("timeout", "timedout", "connectionerror", "connecterror", "disconnect",
                       "protocolerror", "readerror", "remoteprotocol", "brokenpipe", "connectionreset",
                       "incompleteread", "chunkedencoding", "networkerror", "cancellederror")
_REJECT_NAME_PARTS = ("reject", "insufficient", "invalidorder", "badrequest", "ratelimit")
_REJECT_STATUSES = frozenset({400, 403, 404, 409, 410, 429})  # [OE]: an unknown code here is a rejection
_DUPLICATE_HINTS = ("duplicate", "already_exists", "already exists", "alreadyexists")
# A status at the very start of a message: "400 Bad Request: ...", "HTTP Error 409: Conflict",
# "HTTP/1.1 503 Service Unavailable". Not "4000 contracts", not "order 404 ...".
_LEADING_STATUS = re.compile(r"^\s*(?:HTTP(?:/[\d.]+)?\s+)?(?:Error\s+)?([1-5]\d\d)(?=$|[\s:,;)\-])", re.IGNORECASE)
_BODY_LIMIT = 65_536
_TEXT_LIMIT = 2_000


class Outcome(NamedTuple):
    """What became of one placement (a NamedTuple: built on every order, so kept cheap).

    `reason` is the exchange's error code when it gave one (Kalshi's `error.code`), else a short cause
    ("timeout", "connection", "cancelled", "no_response", "http_503", an exception class name).
    """

    status: OrderStatus
    order_id: str | None = None
    exchange_status: str | None = None
    error_type: str | None = None
    error_msg: str | None = None
    http_status: int | None = None
    reason: str | None = None


# ---------------------------------------------------------------------------------------------
# Reading values that may be anything (never raise)
# ---------------------------------------------------------------------------------------------

def safe_text(value: Any, limit: int = _TEXT_LIMIT) -> str:
    """`str(value)` that never raises and is valid UTF-8 (lone surrogates escaped), cut at `limit`."""
    try:
        text = value if isinstance(value, str) else str(value)
        if not isinstance(text, str):
            raise TypeError
    except Exception:
        try:
            text = repr(value)
        except Exception:
            return f"<unprintable {type(value).__name__}>"
    if len(text) > limit:
        text = f"{text[:limit]}…(+{len(text) - limit} chars)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    try:
        if isinstance(obj, dict):
            return obj.get(key)
        return getattr(obj, key, None)
    except Exception:
        return None


def _int_status(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    return None


def _status_of(holder: Any) -> int | None:
    for attr in ("status_code", "status", "http_status"):
        found = _int_status(_get(holder, attr))
        if found is not None:
            return found
    return None


def _parse_json(text: Any) -> Any:
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text[:_BODY_LIMIT])
    elif isinstance(text, str):
        text = text[:_BODY_LIMIT]
    else:
        return None
    try:
        return orjson.loads(text)
    except Exception:
        return None


def _body_of(response: Any) -> Any:
    """The JSON body of an HTTP response object (requests / httpx / aiohttp-like) or a dict, without
    reading a stream the bot has not read yet."""
    if response is None or isinstance(response, (dict, list)):
        return response
    if isinstance(response, (str, bytes, bytearray)):
        return _parse_json(response)
    try:
        if getattr(response, "_content", None) is False:  # requests, stream=True, body not read yet
            return None
        if getattr(response, "is_stream_consumed", False) and not getattr(response, "is_closed", True):
            return None  # httpx: a stream being read by someone else
        json_method = getattr(response, "json", None)
        if callable(json_method) and not asyncio.iscoroutinefunction(json_method):
            body = json_method()
            if not asyncio.iscoroutine(body):
                return body
            body.close()  # aiohttp's json() is async: we cannot await it here
    except Exception:
        pass
    for attr in ("text", "content", "body"):
        raw = _get(response, attr)
        if isinstance(raw, (str, bytes, bytearray)):
            return _parse_json(raw)
    return None


def _error_fields(body: Any) -> tuple[str | None, str | None]:
    """(code, message) from a Kalshi error body: `error.code`, falling back to a top-level `code` [OE]."""
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    code = message = None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        details = error.get("details")
        if details and message:
            message = f"{message} ({details})"
    elif isinstance(error, str) and error:
        message = error
    if code is None:
        code = body.get("code")
        message = message or body.get("message")
        if body.get("details") and message:
            message = f"{message} ({body['details']})"
    return (safe_text(code, 200) if code not in (None, "") else None,
            safe_text(message) if message not in (None, "") else None)


def _says_duplicate(*texts: str | None) -> bool:
    joined = " ".join(t for t in texts if t).lower()
    return any(h in joined for h in _DUPLICATE_HINTS)


def _judge(http_status: int | None, code: str | None, message: str | None, error_type: str) -> Outcome:
    """An answer from the exchange (an HTTP status and/or an error code) -> Outcome [OE]."""
    head = " ".join(part for part in (f"HTTP {http_status}" if http_status else "", code or "") if part)
    text = f"{head}: {message}" if head and message else head or message or error_type
    reason = code or (f"http_{http_status}" if http_status else error_type)
    if http_status == 409 and (code is None or _says_duplicate(code, message)):
        return Outcome(OrderStatus.DUPLICATE, error_type=error_type, error_msg=text, http_status=http_status,
                       reason=code or "duplicate_client_order_id")
    if http_status is None and code is not None and _says_duplicate(code):
        return Outcome(OrderStatus.DUPLICATE, error_type=error_type, error_msg=text, reason=code)
    if http_status is not None and (http_status == 408 or http_status >= 500):
        return Outcome(OrderStatus.UNKNOWN, error_type=error_type, error_msg=text, http_status=http_status,
                       reason=reason)
    if http_status is None or http_status in _REJECT_STATUSES or 400 <= http_status < 500:
        return Outcome(OrderStatus.REJECTED, error_type=error_type, error_msg=text, http_status=http_status,
                       reason=reason)
    # 1xx / 2xx / 3xx carrying an error body: an answer we cannot read as a placement.
    return Outcome(OrderStatus.UNKNOWN, error_type=error_type, error_msg=text, http_status=http_status, reason=reason)


# ---------------------------------------------------------------------------------------------
# Place calls
# ---------------------------------------------------------------------------------------------

NO_RESPONSE = ("the place call returned no response (None): return the exchange's answer, e.g. Kalshi's "
               '{"order": {...}}, or pass @order_place(result=...)')


def read_response(response: Any) -> Outcome:
    """Outcome of a place call that returned. Understood: Kalshi's `{"order": {...}}` [CO], a dict or
    object with `order_id`, an HTTP response object (its status and JSON body), an error body
    (`{"error": {...}}` or a top-level `code`), and None ("returned no response": UNKNOWN)."""
    try:
        return _read_response(response)
    except Exception:
        return Outcome(OrderStatus.UNKNOWN, error_type="UnreadableResponse", reason="unreadable_response",
                       error_msg=f"could not read the place call's response ({type(response).__name__})")


def _read_response(response: Any) -> Outcome:
    if type(response) is dict and len(response) == 1:
        # Kalshi's usual answer, exactly {"order": {...}} (no error, no code): what the general path
        # below concludes for it, without its probes (this runs on the trading thread per order).
        order = response.get("order")
        if type(order) is dict:
            order_id = order.get("order_id")  # Kalshi's key, a short ASCII id: taken as it is
            if type(order_id) is not str or not order_id or len(order_id) > 200 or not order_id.isascii():
                order_id = _order_id(order)
            if order_id is not None:
                status = order.get("status")
                return Outcome(OrderStatus.ACCEPTED, order_id, None if status is None else safe_text(status, 100))
    if response is None:
        return Outcome(OrderStatus.UNKNOWN, error_msg=NO_RESPONSE, reason="no_response")
    http_status = None if isinstance(response, dict) else _status_of(response)
    body = _body_of(response) if http_status is not None else response
    code, message = _error_fields(body)
    has_error = _get(body, "error") not in (None, "", {})
    if (http_status is not None and http_status >= 300) or has_error or (code is not None and not _order_id(body)):
        return _judge(http_status, code, message, "ExchangeError")
    order = _get(body, "order")
    order = body if order is None else order
    order_id = _order_id(order)
    exchange_status = _get(order, "status")
    exchange_status = None if exchange_status is None else safe_text(exchange_status, 100)
    if order_id is None:
        return Outcome(OrderStatus.UNKNOWN, None, exchange_status, reason="no_order_id",
                       error_msg=f"no order id in the place call's response ({type(response).__name__})")
    return Outcome(OrderStatus.ACCEPTED, order_id, exchange_status, http_status=http_status)


def _order_id(obj: Any) -> str | None:
    for key in _ORDER_ID_KEYS:
        value = _get(obj, key)
        if value is not None and value != "" and isinstance(value, (str, int)):
            return safe_text(value, 200)
    return None


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries: `status_code` / `status` / `http_status` / an int `code`
    (urllib's HTTPError), on the exception or on its `.response`."""
    found = _status_of(exc)
    if found is None:
        found = _int_status(_get(exc, "code"))
    if found is None:
        found = _status_of(_get(exc, "response"))
    return found


def _exception_body(exc: BaseException) -> Any:
    body = _body_of(_get(exc, "response"))
    if body is None:
        body = _get(exc, "body")  # kalshi-python and other generated SDKs: ApiException.body (JSON text)
        body = body if isinstance(body, dict) else _parse_json(body)
    return body


def classify_exception(exc: BaseException) -> Outcome:
    """Outcome of a place call that raised (see the rules in the module docstring). Never raises."""
    try:
        return _classify(exc)
    except Exception:
        return Outcome(OrderStatus.UNKNOWN, error_type=safe_text(type(exc).__name__, 200), reason="unreadable_error",
                       error_msg=f"could not read the exception ({type(exc).__name__})")


def _classify(exc: BaseException) -> Outcome:
    error_type = safe_text(type(exc).__name__, 200)
    error_msg = safe_text(exc) or error_type
    if isinstance(exc, asyncio.CancelledError):
        return Outcome(OrderStatus.UNKNOWN, error_type=error_type, reason="cancelled",
                       error_msg=f"the call was cancelled while in flight ({error_msg}): the order may be live")
    if isinstance(exc, KeyboardInterrupt):
        return Outcome(OrderStatus.UNKNOWN, error_type=error_type, reason="interrupted",
                       error_msg="interrupted (KeyboardInterrupt) while in flight: the order may be live")
    if not isinstance(exc, Exception):  # SystemExit, GeneratorExit, ...: stopped mid-call
        return Outcome(OrderStatus.UNKNOWN, error_type=error_type, error_msg=error_msg, reason=error_type)
    http_status = http_status_of(exc)
    code, message = _error_fields(_exception_body(exc))
    if http_status is not None or code is not None:
        judged = _judge(http_status, code, message or error_msg, error_type)
        return judged
    if isinstance(exc, ConnectionRefusedError):  # nothing reached the exchange: certainly not live
        return Outcome(OrderStatus.ERROR, error_type=error_type, error_msg=error_msg, reason="connection_refused")
    names = " ".join(cls.__name__.lower() for cls in type(exc).__mro__)
    if isinstance(exc, TimeoutError) or "timeout" in names or "timedout" in names:
        return Outcome(OrderStatus.UNKNOWN, error_type=error_type, error_msg=error_msg, reason="timeout")
    if isinstance(exc, ConnectionError) or any(p in names for p in _UNKNOWN_NAME_PARTS):
        return Outcome(OrderStatus.UNKNOWN, error_type=error_type, error_msg=error_msg, reason="connection")
    leading = _LEADING_STATUS.match(error_msg)
    if leading:
        return _judge(int(leading.group(1)), None, error_msg, error_type)
    if any(p in names for p in _REJECT_NAME_PARTS):
        return Outcome(OrderStatus.REJECTED, error_type=error_type, error_msg=error_msg, reason=error_type)
    return Outcome(OrderStatus.ERROR, error_type=error_type, error_msg=error_msg, reason=error_type)


# ---------------------------------------------------------------------------------------------
# Cancel calls
# ---------------------------------------------------------------------------------------------

CANCELLED, CANCEL_FAILED, CANCEL_UNKNOWN = "CANCELLED", "CANCEL_FAILED", "CANCEL_UNKNOWN"


def cancel_outcome(response: Any = None, exc: BaseException | None = None) -> tuple[str, Outcome]:
    """(CANCELLED | CANCEL_FAILED | CANCEL_UNKNOWN, details) for a cancel call that returned `response`
    or raised `exc`. A returned error body counts as a failed cancel; UNKNOWN outcomes (timeout, 5xx,
    cancelled mid-call) are CANCEL_UNKNOWN; everything else that failed is CANCEL_FAILED."""
    if exc is not None:
        outcome = classify_exception(exc)
    else:
        try:
            http_status = None if isinstance(response, dict) else _status_of(response)
            body = _body_of(response) if http_status is not None else response
            code, message = _error_fields(body)
            failed = (http_status is not None and http_status >= 300) or _get(body, "error") not in (None, "", {})
        except Exception:
            return CANCELLED, Outcome(OrderStatus.ACCEPTED)
        if not failed:
            return CANCELLED, Outcome(OrderStatus.ACCEPTED, http_status=http_status)
        outcome = _judge(http_status, code, message, "ExchangeError")
    if outcome.status is OrderStatus.UNKNOWN:
        return CANCEL_UNKNOWN, outcome
    return CANCEL_FAILED, outcome
