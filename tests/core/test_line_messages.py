"""What an operator reads in each event line: the message, and the ids that tie the line to its span.

Both are completed on the event thread now (the trading thread hands over the event's fields: the
message is a template over them, the span's ids are formatted there), so these pin the result, on an
async bot placing through a method whose parameters are named differently from the demo's."""

from __future__ import annotations

import asyncio
from typing import Any

import dora_otel
from tests.core.conftest import Captured, start


class _Exchange:
    """An exchange with its own answers per ticker: accepted, rejected, timed out, duplicate."""

    @dora_otel.order_place(market="ticker", price="limit")
    async def submit(self, ticker: str, side: str, limit: float, size: int, client_order_id: str | None = None) -> Any:
        await asyncio.sleep(0)
        if ticker == "REJ":
            return {"error": {"code": "insufficient_balance", "message": "insufficient balance"}}
        if ticker == "SLOW":
            raise TimeoutError("read timed out")
        if ticker == "DUP":
            return {"error": {"code": "order_already_exists", "message": "duplicate client_order_id"}, "status": 409}
        return {"order": {"order_id": f"ord-{ticker}-{side}", "status": "resting"}}


@dora_otel.decision_cycle(market="ticker")
async def _quote(ticker: str) -> dict[str, Any]:
    return {"targets": [{"side": "yes", "price": 0.41, "size": 3}, {"side": "no", "price": 0.52, "size": 3}]}


async def _run(ex: _Exchange, ticker: str) -> None:
    plan = await _quote(ticker)
    for t in plan["targets"]:
        try:
            await ex.submit(ticker, t["side"], t["price"], t["size"])
        except TimeoutError:
            pass


def _by_type(captured: Captured, event_type: str, market: str) -> list[dict[str, Any]]:
    return [line for line in captured.events(event_type) if line.get("market") == market]


def test_event_lines_say_what_happened_in_words(tmp_path: Any) -> None:
    captured = start(tmp_path, strict=False)
    ex = _Exchange()
    for ticker in ("OK", "REJ", "SLOW", "DUP"):
        asyncio.run(_run(ex, ticker))

    assert [line["message"] for line in _by_type(captured, "DECISION_MADE", "OK")] == [
        "decision for OK: 2 target orders"]
    assert [line["message"] for line in _by_type(captured, "ORDER_PLACE", "OK")] == [
        "placing yes 3@0.41 on OK", "placing no 3@0.52 on OK"]
    accepted = _by_type(captured, "ORDER_RESULT", "OK")
    assert [line["message"].split(" (")[0] for line in accepted] == ["order ord-OK-yes accepted",
                                                                    "order ord-OK-no accepted"]
    assert all(line["message"].endswith(" ms)") and line["level"] == "INFO" for line in accepted)
    rejected = _by_type(captured, "ORDER_RESULT", "REJ")[0]
    assert rejected["level"] == "WARNING"
    assert rejected["message"] == "order rejected: insufficient_balance: insufficient balance"
    unknown = _by_type(captured, "ORDER_RESULT", "SLOW")[0]
    assert unknown["level"] == "ERROR" and unknown["message"].startswith("order unknown: ")
    assert "read timed out" in unknown["message"]
    duplicate = _by_type(captured, "ORDER_RESULT", "DUP")[0]
    assert duplicate["level"] == "WARNING"
    assert duplicate["message"] == ("order duplicate: order_already_exists: duplicate client_order_id "
                                    "(an earlier attempt with this client_order_id exists)")
    captured.telemetry.shutdown()


def test_each_event_line_carries_the_ids_of_its_own_span(tmp_path: Any) -> None:
    captured = start(tmp_path)
    asyncio.run(_run(_Exchange(), "OK"))
    spans = {format(s.context.span_id, "016x"): s for s in captured.spans()}
    decision = _by_type(captured, "DECISION_MADE", "OK")[0]
    assert spans[decision["span_id"]].name == "decision OK"
    assert decision["trace_id"] == decision["decision_id"]
    places = _by_type(captured, "ORDER_PLACE", "OK")
    results = _by_type(captured, "ORDER_RESULT", "OK")
    for place, result in zip(places, results, strict=True):
        span = spans[place["span_id"]]
        assert span.name == "order.place"
        assert format(span.context.trace_id, "032x") == place["trace_id"] == decision["trace_id"]
        assert span.parent is not None and format(span.parent.span_id, "016x") == decision["span_id"]
        # ORDER_RESULT's line belongs to the order's span; the result has its own child span too
        assert (result["trace_id"], result["span_id"]) == (place["trace_id"], place["span_id"])
        assert span.attributes["dora.status"] == "ACCEPTED"
    captured.telemetry.shutdown()
