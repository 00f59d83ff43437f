"""What a place or cancel call's answer means (issue 9, item 1): Kalshi's rules from its "Order Errors"
page, applied to real HTTP answers from a small server on 127.0.0.1 read through `requests` (raising,
returning the JSON body, or returning the response) and `urllib`, and to what bots return or raise
without HTTP. Every case goes through a decorated call: the ORDER_RESULT line says the status and
reason, and the bot gets its own answer or exception back.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

import dora_otel
from dora_otel import exchange
from dora_otel.events import OrderStatus

ORDER = {"order": {"order_id": "ord-77", "client_order_id": "c-1", "status": "resting"}}


def _error(code: str, message: str = "refused") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": ""}}


# path -> (HTTP status, JSON body); "slow" answers after the client's timeout, "drop" hangs up.
ROUTES: dict[str, Any] = {
    "/created": (201, ORDER),
    "/duplicate": (409, _error("order_already_exists", "an order with this client_order_id already exists")),
    "/conflict-other": (409, _error("market_closed", "market is closed")),
    "/insufficient": (400, _error("insufficient_balance", "insufficient balance")),
    "/unparseable": (400, {"code": "bad_request", "message": "bad request", "details": "malformed JSON"}),
    "/unauthorized": (401, _error("unauthorized")),
    "/forbidden": (403, _error("trading_not_allowed")),
    "/not-found": (404, _error("market_not_found")),
    "/gone": (410, _error("market_expired")),
    "/rate-limited": (429, _error("too_many_requests")),
    "/request-timeout": (408, _error("request_timeout")),
    "/internal": (500, _error("internal_server_error")),
    "/bad-gateway": (502, {"message": "bad gateway"}),
    "/unavailable": (503, _error("service_unavailable")),
    "/cancelled": (200, {"order": {"order_id": "ord-77", "status": "canceled"}}),
    "/slow": "slow",
    "/drop": "drop",
}


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        route = ROUTES[self.path]
        try:
            if route == "drop":
                self.close_connection = True
                return  # no status line at all: the client sees the connection dropped
            if route == "slow":
                time.sleep(0.6)
                route = ROUTES["/created"]
            status, body = route
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): expected for "/slow"

    do_POST = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@dora_otel.decision_cycle
def decide(market: str) -> list[dict[str, Any]]:
    return [{"side": "yes", "price": 0.45, "size": 10}]


# --- the table: (route, expected status, expected reason, expected http_status) -----------------------
HTTP_TABLE = [
    ("/created", "ACCEPTED", None, 201),
    ("/duplicate", "DUPLICATE", "order_already_exists", 409),
    ("/conflict-other", "REJECTED", "market_closed", 409),
    ("/insufficient", "REJECTED", "insufficient_balance", 400),
    ("/unparseable", "REJECTED", "bad_request", 400),  # top-level code: the fallback [OE]
    ("/unauthorized", "REJECTED", "unauthorized", 401),
    ("/forbidden", "REJECTED", "trading_not_allowed", 403),
    ("/not-found", "REJECTED", "market_not_found", 404),
    ("/gone", "REJECTED", "market_expired", 410),
    ("/rate-limited", "REJECTED", "too_many_requests", 429),
    ("/request-timeout", "UNKNOWN", "request_timeout", 408),
    ("/internal", "UNKNOWN", "internal_server_error", 500),
    ("/bad-gateway", "UNKNOWN", "http_502", 502),
    ("/unavailable", "UNKNOWN", "service_unavailable", 503),
]


def _result(cap: Any) -> dict[str, Any]:
    return cap.events("ORDER_RESULT")[-1]


@pytest.mark.parametrize("route,status,reason,http_status", HTTP_TABLE)
def test_requests_http_errors_raised_by_raise_for_status(cap, server, route, status, reason, http_status):
    @dora_otel.order_place
    def place(market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> Any:
        with requests.post(server + route, json={"client_order_id": client_order_id}, timeout=5) as resp:
            resp.raise_for_status()
            return resp.json()

    decide("KXOUT")
    if status == "ACCEPTED":
        assert place("KXOUT", "yes", 0.45, 10) == ORDER
    else:
        with pytest.raises(requests.HTTPError) as info:
            place("KXOUT", "yes", 0.45, 10)
        assert info.value.response.status_code == http_status  # the bot's own exception, untouched
    line = _result(cap)
    assert (line["status"], line.get("reason")) == (status, reason)
    if status != "ACCEPTED":  # (an accepted order's answer here is the JSON body, without its status)
        assert line["http_status"] == http_status and f"HTTP {http_status}" in line["error_msg"]


@pytest.mark.parametrize("route,status,reason,http_status", HTTP_TABLE)
def test_requests_response_returned_without_raising(cap, server, route, status, reason, http_status):
    @dora_otel.order_place
    def place(market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> Any:
        return requests.post(server + route, json={"client_order_id": client_order_id}, timeout=5)

    decide("KXOUT")
    response = place("KXOUT", "yes", 0.45, 10)
    response.close()
    assert isinstance(response, requests.Response)
    line = _result(cap)
    assert (line["status"], line.get("reason"), line.get("http_status")) == (status, reason, http_status)


@pytest.mark.parametrize("route,status,reason", [
    ("/created", "ACCEPTED", None),
    ("/duplicate", "DUPLICATE", "order_already_exists"),
    ("/insufficient", "REJECTED", "insufficient_balance"),
    ("/unparseable", "REJECTED", "bad_request"),
])
def test_error_shaped_json_returned_as_the_answer(cap, server, route, status, reason):
    @dora_otel.order_place
    def place(market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> Any:
        with requests.post(server + route, json={}, timeout=5) as resp:
            return resp.json()  # no raise_for_status: the body is the answer

    decide("KXOUT")
    place("KXOUT", "yes", 0.45, 10)
    line = _result(cap)
    assert (line["status"], line.get("reason")) == (status, reason)
    if status == "ACCEPTED":
        assert line["order_id"] == "ord-77" and line["exchange_status"] == "resting"


@pytest.mark.parametrize("route,status,reason", [("/slow", "UNKNOWN", "timeout"), ("/drop", "UNKNOWN", "connection")])
def test_timeouts_and_dropped_connections_are_unknown(cap, server, route, status, reason):
    @dora_otel.order_place
    def place(market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> Any:
        with requests.post(server + route, json={}, timeout=0.2) as resp:
            return resp.json()

    decide("KXOUT")
    with pytest.raises(requests.RequestException):
        place("KXOUT", "yes", 0.45, 10)
    line = _result(cap)
    assert (line["status"], line["reason"]) == (status, reason)


@pytest.mark.parametrize("route,status,http_status", [
    ("/duplicate", "DUPLICATE", 409),  # urllib's body is a stream we must not read: 409 alone is the duplicate
    ("/insufficient", "REJECTED", 400),
    ("/unavailable", "UNKNOWN", 503),
])
def test_urllib_http_errors(cap, server, route, status, http_status):
    @dora_otel.order_place
    def place(market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> Any:
        request = urllib.request.Request(server + route, data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as resp:
            return json.loads(resp.read())

    decide("KXOUT")
    with pytest.raises(urllib.error.HTTPError) as info:
        place("KXOUT", "yes", 0.45, 10)
    assert json.loads(info.value.read())["error"]["code"]  # the body is still there for the bot to read
    info.value.close()
    line = _result(cap)
    assert (line["status"], line["http_status"]) == (status, http_status)


class Order:
    def __init__(self) -> None:
        self.order_id, self.status = "obj-1", "resting"


class KalshiApiException(Exception):
    """Shaped like a generated SDK's ApiException: status + JSON text body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"({status})")
        self.status, self.body = status, json.dumps(body)


@pytest.mark.parametrize("answer,status,reason", [
    (ORDER, "ACCEPTED", None),
    ({"order_id": "plain-1"}, "ACCEPTED", None),
    (Order(), "ACCEPTED", None),
    (None, "UNKNOWN", "no_response"),
    ({"status": "ok"}, "UNKNOWN", "no_order_id"),
    (_error("order_already_exists"), "DUPLICATE", "order_already_exists"),
    (_error("post_only_cross"), "REJECTED", "post_only_cross"),
    (RuntimeError("400 Bad Request: insufficient balance"), "REJECTED", "http_400"),
    (RuntimeError("HTTP Error 503: Service Unavailable"), "UNKNOWN", "http_503"),
    (RuntimeError("order 404 went missing"), "ERROR", "RuntimeError"),  # a status not at the start: not read
    (KeyError("bug in the bot"), "ERROR", "KeyError"),
    (KalshiApiException(409, _error("order_already_exists")), "DUPLICATE", "order_already_exists"),
    (KalshiApiException(400, {"code": "invalid_parameters"}), "REJECTED", "invalid_parameters"),
    (TimeoutError("read timed out"), "UNKNOWN", "timeout"),
    (ConnectionResetError("reset by peer"), "UNKNOWN", "connection"),
    (ConnectionRefusedError("refused"), "ERROR", "connection_refused"),
    (KeyboardInterrupt(), "UNKNOWN", "interrupted"),
    (asyncio.CancelledError(), "UNKNOWN", "cancelled"),
], ids=lambda v: type(v).__name__ if not isinstance(v, str) else v)
def test_answers_without_http(cap, answer, status, reason):
    @dora_otel.order_place
    def place(market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> Any:
        if isinstance(answer, BaseException):
            raise answer
        return answer

    decide("KXOUT")
    if isinstance(answer, BaseException):
        with pytest.raises(type(answer)) as info:
            place("KXOUT", "yes", 0.45, 10)
        assert info.value is answer
    else:
        assert place("KXOUT", "yes", 0.45, 10) is answer
    line = _result(cap)
    assert (line["status"], line.get("reason")) == (status, reason)
    if answer is None:
        assert "returned no response" in line["error_msg"]


def test_cancelled_error_inside_an_async_place_is_unknown_and_still_propagates(cap):
    @dora_otel.order_place
    async def place(market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> Any:
        await asyncio.sleep(10)

    async def main() -> None:
        decide("KXOUT")
        task = asyncio.create_task(place("KXOUT", "yes", 0.45, 10))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    line = _result(cap)
    assert (line["status"], line["reason"]) == ("UNKNOWN", "cancelled")


def test_result_and_classify_hooks_still_win(cap):
    @dora_otel.order_place(
        result=lambda r: {"status": "accepted", "order_id": r["id"]},
        classify=lambda exc: exchange.Outcome(OrderStatus.REJECTED, error_msg="custom", reason="mine"))
    def place(market: str, side: str, price: float, size: int, fail: bool = False) -> Any:
        if fail:
            raise RuntimeError("503 would be unknown by default")
        return {"id": "hook-1"}

    decide("KXOUT")
    place("KXOUT", "yes", 0.45, 10)
    with pytest.raises(RuntimeError):
        place("KXOUT", "yes", 0.45, 10, fail=True)
    first, second = cap.events("ORDER_RESULT")
    assert (first["status"], first["order_id"]) == ("ACCEPTED", "hook-1")
    assert (second["status"], second["reason"], second["error_msg"]) == ("REJECTED", "mine", "custom")


@pytest.mark.parametrize("route,status,reason", [
    ("/cancelled", "CANCELLED", None),
    ("/not-found", "CANCEL_FAILED", "market_not_found"),
    ("/unavailable", "CANCEL_UNKNOWN", "service_unavailable"),
])
def test_cancel_outcomes_from_http(cap, server, route, status, reason):
    @dora_otel.order_cancel
    def cancel(order_id: str, market: str) -> Any:
        with requests.delete(server + route, timeout=5) as resp:
            resp.raise_for_status()
            return resp.json()

    decide("KXOUT")
    try:
        cancel("ord-77", "KXOUT")
    except requests.HTTPError:
        assert status != "CANCELLED"
    request, outcome = cap.events("ORDER_CANCEL")
    assert "status" not in request and request["seq"] < outcome["seq"]
    assert (outcome["status"], outcome.get("reason")) == (status, reason)
    assert isinstance(outcome["latency_ms"], float) and outcome["order_id"] == "ord-77"


def test_a_retry_after_a_timeout_answered_409_is_a_duplicate_of_the_same_slot(cap, server):
    """Kalshi's documented case: the first attempt landed although the bot saw a timeout; the retry with
    the same client_order_id gets 409. Same slot, same id, status DUPLICATE (never REJECTED)."""
    routes = iter(["/slow", "/duplicate"])
    sent = []

    @dora_otel.order_place
    def place(market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> Any:
        sent.append(client_order_id)
        with requests.post(server + next(routes), json={"client_order_id": client_order_id}, timeout=0.2) as resp:
            resp.raise_for_status()
            return resp.json()

    decide("KXDUP")
    with pytest.raises(requests.Timeout):
        place("KXDUP", "yes", 0.45, 10)
    with pytest.raises(requests.HTTPError):
        place("KXDUP", "yes", 0.45, 10)
    first, second = cap.events("ORDER_RESULT")
    assert (first["status"], second["status"]) == ("UNKNOWN", "DUPLICATE")
    assert sent[0] == sent[1] == first["client_order_id"] == second["client_order_id"]
    assert first["slot"] == second["slot"] == 0
