"""Decorators: decision spans are new traces whose id is the decision_id; orders are child spans;
sync, async and methods; exceptions recorded and re-raised unchanged; field discovery; fills joined."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

import dora_otel

TARGETS = [{"side": "yes", "price": 0.45, "size": 10}, {"side": "no", "price": 0.50, "size": 10}]


class Strategy:
    @dora_otel.decision_cycle
    def quote(self, market, book=None):
        logging.getLogger("bot.strategy").info("computing quotes")
        return list(TARGETS)


class Exchange:
    def __init__(self, behaviour="accept"):
        self.behaviour = behaviour
        self.seen_client_ids = []

    @dora_otel.order_place
    def place_order(self, market, side, price, size, client_order_id=None, api_secret="s3cr3t-value"):
        self.seen_client_ids.append(client_order_id)
        if self.behaviour == "timeout":
            raise TimeoutError("timed out")
        if self.behaviour == "reject":
            err = RuntimeError("insufficient balance")
            err.status_code = 400
            raise err
        if self.behaviour == "5xx":
            err = RuntimeError("bad gateway")
            err.response = type("R", (), {"status_code": 502})()
            raise err
        if self.behaviour == "bug":
            raise KeyError("oops")
        return {"order": {"order_id": f"ord-{len(self.seen_client_ids)}", "status": "resting"}}

    @dora_otel.order_cancel
    def cancel_order(self, order_id):
        return {"order": {"order_id": order_id, "status": "canceled"}}


def test_decision_span_trace_id_is_the_decision_id_on_every_line(cap):
    Strategy().quote("KXBTC")
    decision = cap.events("DECISION_MADE")[0]
    span = cap.spans("decision")[0]
    assert decision["decision_id"] == format(span.context.trace_id, "032x")
    assert len(decision["decision_id"]) == 32
    assert span.parent is None and span.attributes["dora.market"] == "KXBTC"
    inner = next(l for l in cap.lines() if l["message"] == "computing quotes")
    assert inner["decision_id"] == decision["decision_id"] == inner["trace_id"]
    assert inner["span_id"] == format(span.context.span_id, "016x")
    assert decision["target_count"] == 2 and decision["spread"] == pytest.approx(0.05)
    assert [t["side"] for t in decision["targets"]] == ["yes", "no"]


def test_each_decision_is_a_new_trace_even_inside_another_span(cap):
    tracer = trace.get_tracer("bot")
    strategy = Strategy()
    with tracer.start_as_current_span("bot loop"):
        strategy.quote("A")
        strategy.quote("A")
    ids = [d["decision_id"] for d in cap.events("DECISION_MADE")]
    assert len(set(ids)) == 2
    assert all(s.parent is None for s in cap.spans("decision"))


def test_orders_are_child_spans_of_the_latest_decision_for_their_market(cap):
    strategy, exchange = Strategy(), Exchange()
    for t in strategy.quote("KXBTC"):
        exchange.place_order("KXBTC", t["side"], t["price"], t["size"])
    decision_id = cap.events("DECISION_MADE")[0]["decision_id"]
    decision_span = cap.spans("decision")[0]
    for name in ("order.place", "order.result"):
        spans = cap.spans(name)
        assert len(spans) == 2
        for span in spans:
            assert format(span.context.trace_id, "032x") == decision_id
            assert span.parent.span_id == decision_span.context.span_id
    for event in ("ORDER_PLACE", "ORDER_RESULT"):
        assert [l["decision_id"] for l in cap.events(event)] == [decision_id] * 2
    results = cap.events("ORDER_RESULT")
    assert [r["status"] for r in results] == ["ACCEPTED", "ACCEPTED"]
    assert results[0]["order_id"] == "ord-1" and results[0]["exchange_status"] == "resting"
    assert isinstance(results[0]["latency_ms"], float)


def test_order_place_line_precedes_the_call_and_result_follows(cap):
    order = []

    class Ex:
        @dora_otel.order_place
        def place(self, market, side, price, size):
            order.append([l["event_type"] for l in cap.lines()][-1])
            return {"order_id": "x"}

    Strategy().quote("M")
    Ex().place("M", "yes", 0.45, 10)
    assert order == ["ORDER_PLACE"]
    assert cap.lines()[-1]["event_type"] == "ORDER_RESULT"


def test_client_order_id_is_generated_deterministically_and_reused_on_retry(cap):
    strategy, exchange = Strategy(), Exchange("timeout")
    strategy.quote("KXBTC")
    for _ in range(2):
        with pytest.raises(TimeoutError):
            exchange.place_order("KXBTC", "yes", 0.45, 10)
    first, second = exchange.seen_client_ids
    assert first == second and first
    assert [p["client_order_id"] for p in cap.events("ORDER_PLACE")] == [first, first]
    assert cap.events("DECISION_MADE")[0]["targets"][0]["client_order_id"] == first
    assert [p["slot"] for p in cap.events("ORDER_PLACE")] == [0, 0]


@pytest.mark.parametrize("behaviour,status", [("timeout", "UNKNOWN"), ("5xx", "UNKNOWN"), ("reject", "REJECTED"),
                                              ("bug", "ERROR")])
def test_failed_place_is_classified_recorded_and_reraised_unchanged(cap, behaviour, status):
    exchange = Exchange(behaviour)
    Strategy().quote("KXBTC")
    with pytest.raises(Exception) as info:
        exchange.place_order("KXBTC", "yes", 0.45, 10)
    result = cap.events("ORDER_RESULT")[-1]
    assert result["status"] == status and result["error_msg"]
    assert "Traceback" in result["stack"]
    place = cap.spans("order.place")[-1]
    assert place.status.status_code is StatusCode.ERROR
    assert [e.name for e in place.events] == ["exception"]
    assert info.value.__traceback__ is not None  # the bot's own exception object came through


def test_the_bots_exception_passes_through_as_the_same_object(cap):
    boom = ValueError("strategy bug")

    class S:
        @dora_otel.decision_cycle
        def quote(self, market):
            raise boom

    with pytest.raises(ValueError) as info:
        S().quote("M")
    assert info.value is boom
    error = cap.events("ERROR")[-1]
    assert error["error_type"] == "ValueError" and "strategy bug" in error["stack"]
    span = cap.spans("decision")[-1]
    assert span.status.status_code is StatusCode.ERROR and span.events[0].name == "exception"


def test_async_functions_and_methods_are_decorated_too(cap):
    class AsyncStrategy:
        @dora_otel.decision_cycle(market="ticker")
        async def quote(self, ticker):
            await asyncio.sleep(0)
            logging.getLogger("bot").info("async inside")
            return {"quotes": TARGETS[:1], "spread": 0.02}

    @dora_otel.order_place(market="ticker", size="count")
    async def place(ticker, side, price, count):
        await asyncio.sleep(0)
        return {"order": {"order_id": "a-1"}}

    async def main():
        for q in (await AsyncStrategy().quote("KXETH"))["quotes"]:
            await place("KXETH", q["side"], q["price"], q["size"])

    asyncio.run(main())
    decision = cap.events("DECISION_MADE")[0]
    assert decision["market"] == "KXETH" and decision["spread"] == 0.02 and decision["target_count"] == 1
    assert next(l for l in cap.lines() if l["message"] == "async inside")["decision_id"] == decision["decision_id"]
    place_line = cap.events("ORDER_PLACE")[0]
    assert place_line["decision_id"] == decision["decision_id"] and place_line["size"] == 10


def test_fields_found_by_dotted_path_and_static_methods(cap):
    class Order:
        def __init__(self):
            self.ticker, self.side, self.yes_price, self.count = "KXINX", "yes", 0.45, 10

    class Client:
        @staticmethod
        @dora_otel.order_place(market="order.ticker", side="order.side", price="order.yes_price", size="order.count")
        def submit(order, signature="sig-should-not-appear"):
            return {"order_id": "o-9"}

    Strategy().quote("KXINX")
    Client.submit(Order())
    place = cap.events("ORDER_PLACE")[0]
    assert (place["market"], place["side"], place["price"], place["size"]) == ("KXINX", "yes", 0.45, 10)
    assert "sig-should-not-appear" not in (cap.flush() or cap.stream.getvalue())


def test_decorators_capture_only_named_fields_never_other_arguments(cap):
    Strategy().quote("KXBTC")
    Exchange().place_order("KXBTC", "yes", 0.45, 10, api_secret="hunter2-very-secret")
    assert "hunter2" not in (cap.flush() or cap.stream.getvalue())
    span_text = str([dict(s.attributes) for s in cap.spans()])
    assert "hunter2" not in span_text


def test_unknown_field_override_is_a_clear_error_at_decoration_time():
    with pytest.raises(TypeError, match="has no parameter 'ticker'"):
        @dora_otel.order_place(market="ticker")
        def place(market, side, price, size):
            return None
    with pytest.raises(TypeError, match="unknown field override"):
        dora_otel.order_place(colour="red")


def test_telemetry_failure_never_reaches_bot_code(cap):
    class S:
        @dora_otel.decision_cycle(targets=lambda result: 1 / 0)
        def quote(self, market):
            return "the bot's own return value"

    assert S().quote("M") == "the bot's own return value"
    internal = [l for l in cap.lines() if l["logger"] == "dora_otel.internal"]
    assert internal and "ZeroDivisionError" in internal[0]["stack"]


def test_cancel_is_a_child_of_the_decision_that_placed_the_order(cap):
    strategy, exchange = Strategy(), Exchange()
    strategy.quote("KXBTC")
    exchange.place_order("KXBTC", "yes", 0.45, 10)
    first = cap.events("DECISION_MADE")[0]["decision_id"]
    strategy.quote("KXBTC")
    exchange.cancel_order("ord-1")
    cancel = cap.events("ORDER_CANCEL")[0]
    assert cancel["order_id"] == "ord-1" and cancel["market"] == "KXBTC" and cancel["decision_id"] == first
    span = cap.spans("order.cancel")[0]
    assert format(span.context.trace_id, "032x") == first and span.attributes["dora.status"] == "CANCELLED"


def test_fill_on_another_thread_loops_later_joins_the_placing_decision(cap):
    strategy, exchange = Strategy(), Exchange()
    strategy.quote("KXBTC")
    exchange.place_order("KXBTC", "yes", 0.45, 10)
    placing = cap.events("DECISION_MADE")[0]["decision_id"]
    for _ in range(3):  # several loops later
        strategy.quote("KXBTC")
    joined = []
    thread = threading.Thread(target=lambda: joined.append(
        dora_otel.record_fill(price=0.45, size=4, pnl_delta=0.02, order_id="ord-1")))
    thread.start()
    thread.join()
    fill = cap.events("FILL")[0]
    assert joined == [placing] and fill["decision_id"] == placing and fill["trace_id"] == placing
    assert fill["market"] == "KXBTC" and fill["side"] == "yes" and fill["matched"] is True
    span = cap.spans("fill")[0]
    assert format(span.context.trace_id, "032x") == placing


def test_fill_matching_no_order_is_still_logged_as_unmatched(cap):
    assert dora_otel.record_fill("KXBTC", "no", 0.5, 1, 0.0, order_id="unknown") is None
    fill = cap.events("FILL")[0]
    assert fill["matched"] is False and "decision_id" not in fill


def test_risk_halt_and_heartbeat_lines(cap):
    dora_otel.risk_halt("daily loss limit", -123.5)
    dora_otel.heartbeat(markets_active=3, open_orders_count=5)
    halt, beat = cap.events("RISK_HALT")[0], cap.events("HEARTBEAT")[0]
    assert halt["reason"] == "daily loss limit" and halt["daily_pnl"] == -123.5 and halt["level"] == "ERROR"
    assert beat["markets_active"] == 3 and beat["open_orders_count"] == 5


def test_decorated_functions_run_unchanged_before_setup():
    assert dora_otel.current() is None
    assert Strategy().quote("M") == TARGETS
    assert dora_otel.record_fill("M", "yes", 0.4, 1, 0.0) is None


def test_strict_schema_error_in_a_decorator_leaves_no_span_or_context_behind(cap):
    from opentelemetry import trace as trace_api

    @dora_otel.order_place
    def place(market, side, price, size):
        raise AssertionError("the call must not run when its ORDER_PLACE is malformed")

    Strategy().quote("KXBTC")
    before = trace_api.get_current_span()
    with pytest.raises(dora_otel.SchemaError, match="'price'"):
        place("KXBTC", "yes", None, 10)
    assert trace_api.get_current_span() is before
    assert [s.name for s in cap.spans("order.place")] == ["order.place"]  # ended, not leaked


# --- every order of a decision has its own slot and client_order_id (issue 9, item 3) -------------

class Recorder:
    """An exchange that remembers the client_order_id each place call received."""

    def __init__(self):
        self.ids = []
        self.lock = threading.Lock()

    @dora_otel.order_place
    def place(self, market, side, price, size, client_order_id=None):
        with self.lock:
            self.ids.append(client_order_id)
        return {"order": {"order_id": f"o-{client_order_id}"}}

    @dora_otel.order_place
    async def aplace(self, market, side, price, size, client_order_id=None):
        await asyncio.sleep(0)
        self.ids.append(client_order_id)
        return {"order": {"order_id": f"o-{client_order_id}"}}


def _slots(cap, decision_id):
    return [(p["slot"], p["client_order_id"]) for p in cap.events("ORDER_PLACE") if p["decision_id"] == decision_id]


def test_orders_placed_inside_a_decision_get_distinct_slots_matched_to_its_targets(cap):
    ex = Recorder()

    @dora_otel.decision_cycle
    def quote(market):
        ex.place(market, "no", 0.50, 10)  # the strategy's second target, placed first
        ex.place(market, "yes", 0.45, 10)
        ex.place(market, "yes", 0.40, 5)  # not among the targets it returns
        return TARGETS

    quote("KXIN")
    decision = cap.events("DECISION_MADE")[0]
    slots = _slots(cap, decision["decision_id"])
    assert len({s for s, _ in slots}) == 3 and len(set(ex.ids)) == 3 and None not in ex.ids
    assert [c for _, c in slots] == ex.ids
    by_side = {(t["side"], t["price"]): (t["slot"], t["client_order_id"]) for t in decision["targets"]}
    assert by_side[("no", 0.50)] == slots[0] and by_side[("yes", 0.45)] == slots[1]
    assert slots[2][0] not in {t["slot"] for t in decision["targets"]}  # the unplanned order keeps its own slot


def test_orders_placed_with_gather_inside_a_decision_get_distinct_slots(cap):
    ex = Recorder()

    @dora_otel.decision_cycle
    async def quote(market):
        await asyncio.gather(*(ex.aplace(market, t["side"], t["price"], t["size"]) for t in TARGETS),
                             ex.aplace(market, "yes", 0.45, 10))  # a second, identical order
        return TARGETS

    asyncio.run(quote("KXGATHER"))
    decision = cap.events("DECISION_MADE")[0]
    slots = _slots(cap, decision["decision_id"])
    assert len(slots) == 3 and len({s for s, _ in slots}) == 3 and len(set(ex.ids)) == 3
    assert {t["client_order_id"] for t in decision["targets"]} <= set(ex.ids)


def test_orders_placed_from_threads_inside_a_decision_get_distinct_slots(cap):
    ex = Recorder()

    @dora_otel.decision_cycle
    def quote(market):
        threads = [threading.Thread(target=ex.place, args=(market, "yes", 0.45 + i / 100, 10)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return []

    quote("KXTHREADS")
    decision_id = cap.events("DECISION_MADE")[0]["decision_id"]
    slots = _slots(cap, decision_id)
    assert len(slots) == 4 and sorted(s for s, _ in slots) == [0, 1, 2, 3] and len(set(ex.ids)) == 4


def test_orders_after_the_decision_returns_take_the_next_free_slot_and_a_retry_keeps_its_id(cap):
    strategy, ex = Strategy(), Exchange("timeout")
    strategy.quote("KXRETRY")
    decision = cap.events("DECISION_MADE")[0]
    for _ in range(2):  # the same target after an UNKNOWN outcome: a retry of slot 0
        with pytest.raises(TimeoutError):
            ex.place_order("KXRETRY", "yes", 0.45, 10)
    ex.behaviour = "accept"
    ex.place_order("KXRETRY", "yes", 0.45, 10)  # still a retry: slot 0 was never answered for good
    ex.place_order("KXRETRY", "yes", 0.45, 10)  # slot 0 is ACCEPTED: this is a new order, past the targets
    ex.place_order("KXRETRY", "no", 0.50, 10)
    slots = [p["slot"] for p in cap.events("ORDER_PLACE")]
    assert slots == [0, 0, 0, 2, 1]
    target_ids = [t["client_order_id"] for t in decision["targets"]]
    assert ex.seen_client_ids[:3] == [target_ids[0]] * 3 and ex.seen_client_ids[4] == target_ids[1]
    assert ex.seen_client_ids[3] not in target_ids


def test_passing_the_slots_client_order_id_back_is_a_retry_of_that_slot(cap):
    strategy, ex = Strategy(), Exchange()
    strategy.quote("KXCOID")
    coid = cap.events("DECISION_MADE")[0]["targets"][1]["client_order_id"]
    ex.place_order("KXCOID", "no", 0.50, 10, client_order_id=coid)
    ex.place_order("KXCOID", "no", 0.51, 10, client_order_id=coid)  # repriced, same id: same slot
    assert [p["slot"] for p in cap.events("ORDER_PLACE")] == [1, 1]
    assert ex.seen_client_ids == [coid, coid]


# --- ORDER_CANCEL: the request before the call, the outcome after (issue 8 item 6, issue 9 item 6) ---

def test_cancel_request_is_journaled_before_the_call_and_its_outcome_after(tmp_path):
    from dora_otel.sinks.memory import MemorySink

    from .conftest import start

    sink = MemorySink()
    captured = start(tmp_path, ledger_sink=sink)
    try:
        seen_during_call = []

        class Ex(Exchange):
            @dora_otel.order_cancel
            def cancel_order(self, order_id):
                assert captured.telemetry.ledger.flush(5)
                seen_during_call.extend(r for r in sink.all_records() if r.get("event_type") == "ORDER_CANCEL")
                raise TimeoutError("cancel timed out")

        Strategy().quote("KXCXL")
        ex = Ex()
        ex.place_order("KXCXL", "yes", 0.45, 10)
        with pytest.raises(TimeoutError):
            ex.cancel_order("ord-1")
        assert [("status" in r, r["order_id"]) for r in seen_during_call] == [(False, "ord-1")]
        captured.flush()
        records = [r for r in sink.all_records() if r.get("event_type") == "ORDER_CANCEL"]
        outcome = next(r for r in records if "status" in r)
        assert outcome["status"] == "CANCEL_UNKNOWN" and outcome["reason"] == "timeout"
        assert outcome["seq"] != seen_during_call[0]["seq"] and isinstance(outcome["latency_ms"], float)
        request_line, outcome_line = captured.events("ORDER_CANCEL")
        assert "status" not in request_line and request_line["seq"] == seen_during_call[0]["seq"]
        assert (outcome_line["status"], outcome_line["seq"]) == ("CANCEL_UNKNOWN", outcome["seq"])
        assert outcome_line["latency_ms"] == outcome["latency_ms"] and outcome_line["reason"] == "timeout"
    finally:
        captured.telemetry.shutdown(reason="test")


# --- order_suppressed: the why-not record (issue 9, item 5) -----------------------------------------

def test_order_suppressed_after_the_strategy_returned_is_linked_to_the_targets_slot(tmp_path):
    from dora_otel.sinks.memory import MemorySink

    from .conftest import start

    sink = MemorySink()
    captured = start(tmp_path, ledger_sink=sink)
    try:
        Strategy().quote("KXWHY")
        decision = captured.events("DECISION_MADE")[0]
        linked = dora_otel.order_suppressed("rate limit budget exhausted", market="KXWHY", side="no", price=0.50,
                                            size=10, budget=0)
        assert linked == decision["decision_id"]
        line = captured.events("ORDER_SUPPRESSED")[0]
        target = decision["targets"][1]
        assert (line["decision_id"], line["slot"], line["client_order_id"]) == (
            decision["decision_id"], 1, target["client_order_id"])
        assert (line["market"], line["side"], line["price"], line["size"]) == ("KXWHY", "no", 0.5, 10)
        assert line["reason"] == "rate limit budget exhausted" and line["budget"] == 0
        assert line["trace_id"] == decision["decision_id"]
        captured.flush()
        record = next(r for r in sink.all_records() if r.get("event_type") == "ORDER_SUPPRESSED")
        for key in ("decision_id", "slot", "client_order_id", "market", "side", "price", "size", "reason"):
            assert record[key] == line[key], key
        # the slot stays retryable: sending it later reuses its id
        Exchange().place_order("KXWHY", "no", 0.50, 10)
        assert captured.events("ORDER_PLACE")[0]["client_order_id"] == target["client_order_id"]
    finally:
        captured.telemetry.shutdown(reason="test")


def test_order_suppressed_without_a_decision_is_still_logged_and_never_raises(cap):
    assert dora_otel.order_suppressed("halted", market="KXNONE") is None
    line = cap.events("ORDER_SUPPRESSED")[0]
    assert line["reason"] == "halted" and line["market"] == "KXNONE" and "decision_id" not in line
    assert "order_suppressed" in dora_otel.__all__
