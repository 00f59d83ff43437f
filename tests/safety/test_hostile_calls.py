"""Telemetry never changes or stops a bot call (issue 8, item 2), whatever the bot passes or raises.

A hypothesis property test over decorated sync and async place calls, with hostile argument values
(raising __str__/__repr__, lone surrogates, unhashable and recursive objects, huge values) and hostile
exceptions, the client_order_id passed by keyword, positionally, empty or not at all. For every call:

- the function receives exactly the bot's objects, plus a generated client_order_id only where the
  bot left that parameter empty;
- the bot gets back its own return value or its own exception object;
- ORDER_PLACE and ORDER_RESULT are both logged (and, inside a decision, both in the ledger);
- every line is one JSON object with its base fields.

Bounded: few examples, no deadline, the whole module runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import io
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dora_otel
from dora_otel.sinks.memory import MemorySink

BASE_FIELDS = ("ts", "level", "service", "env", "bot_version", "bot_run_id", "message", "event_type", "seq", "logger")
STATUSES = {"ACCEPTED", "REJECTED", "DUPLICATE", "ERROR", "UNKNOWN"}
EMPTY = object()  # "the bot did not pass client_order_id at all"


class Unprintable:
    """__str__ and __repr__ both raise; unhashable; == raises."""

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparisons")

    def __bool__(self) -> bool:
        raise RuntimeError("no truth value")


class BadStrError(Exception):
    def __str__(self) -> str:
        raise ValueError("exception text refuses")


class NonStrError(Exception):
    def __str__(self) -> Any:
        return 42  # str() then raises TypeError


class BadResponse:
    @property
    def status_code(self) -> int:
        raise RuntimeError("status refuses")


class HttpishError(Exception):
    """An HTTP-error-shaped exception whose response misbehaves."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.response = BadResponse()


def _recursive() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def _recursive_dict() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


surrogates = st.sampled_from(["\ud800", "a\udfffb", "\udc80" * 3, "ok\ud83d"])
hostile_values = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True), st.text(max_size=20), surrogates, st.binary(max_size=8),
    st.just(10**5000), st.just("x" * 100_000), st.builds(Unprintable), st.builds(_recursive),
    st.builds(_recursive_dict), st.lists(st.integers(), max_size=3), st.builds(set), st.builds(object),
    st.sampled_from([Decimal("sNaN"), float("nan"), 2**70, -(2**70), True]),
)
hostile_messages = st.one_of(st.text(max_size=30), surrogates, st.just("y" * 50_000))
hostile_exceptions = st.one_of(
    st.builds(ValueError, hostile_messages), st.builds(BadStrError), st.builds(NonStrError),
    st.builds(HttpishError, hostile_messages), st.builds(TimeoutError, hostile_messages),
    st.builds(KeyboardInterrupt), st.builds(asyncio.CancelledError),
    st.builds(RuntimeError, st.sampled_from(["400 Bad Request: insufficient balance", "HTTP Error 503: x"])),
)
returns = st.one_of(hostile_values, st.builds(lambda v: {"order": {"order_id": v, "status": v}}, hostile_values),
                    st.just({"order": {"order_id": "o-1", "status": "resting"}}))
coid_modes = st.sampled_from(["keyword-none", "positional-none", "absent", "keyword-empty", "keyword-value",
                              "positional-value"])


class Harness:
    """One telemetry setup per test, shared by its examples (one per example would dominate)."""

    def __init__(self, tmp_path: Any) -> None:
        self.stream = io.StringIO()
        self.sink = MemorySink()
        self.telemetry = dora_otel.setup(stream=self.stream, container_mode=True, data_dir=tmp_path, strict=False,
                                         ledger_sink=self.sink, install_signal_handlers=False, watchdog_seconds=0)
        self.offset = 0
        self.calls: list[tuple[Any, ...]] = []
        self.behaviour: dict[str, Any] = {}

    def new_lines(self) -> list[str]:
        assert self.telemetry.flush(10)
        text = self.stream.getvalue()
        new, self.offset = text[self.offset:], len(text)
        return [line for line in new.split("\n") if line]

    def ledger_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.sink.all_records():
            kind = record.get("event_type", record.get("kind"))
            counts[kind] = counts.get(kind, 0) + 1
        return counts


@pytest.fixture
def harness(tmp_path: Any) -> Any:
    h = Harness(tmp_path)
    yield h
    h.telemetry.shutdown(reason="test")


def _call_args(mode: str, market: Any, side: Any, price: Any, size: Any,
               coid: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args: tuple[Any, ...] = (market, side, price, size)
    if mode == "keyword-none":
        return args, {"client_order_id": None}
    if mode == "positional-none":
        return (*args, None), {}
    if mode == "keyword-empty":
        return args, {"client_order_id": ""}
    if mode == "keyword-value":
        return args, {"client_order_id": coid}
    if mode == "positional-value":
        return (*args, coid), {}
    return args, {}


def _check(harness: Harness, mode: str, sent: tuple[Any, ...], coid: Any, outcome: tuple[str, Any],
           expected: tuple[str, Any], inside: bool, before: dict[str, int]) -> None:
    assert len(harness.calls) == 1, "the bot's function must run exactly once"
    got = harness.calls[0]
    for mine, theirs in zip(sent[:4], got[:4], strict=True):
        assert theirs is mine, "an argument was replaced on its way to the bot's function"
    assert outcome[0] == expected[0] and outcome[1] is expected[1], "the bot must see its own result"

    lines = [json.loads(text) for text in harness.new_lines()]
    for line in lines:
        missing = [f for f in BASE_FIELDS if f not in line]
        assert not missing, f"line lacks base fields {missing}: {line}"
        assert isinstance(line["seq"], int) and isinstance(line["message"], str)
    kinds = [line["event_type"] for line in lines]
    assert kinds.count("ORDER_PLACE") == 1 and kinds.count("ORDER_RESULT") == 1, kinds
    place = next(line for line in lines if line["event_type"] == "ORDER_PLACE")
    result = next(line for line in lines if line["event_type"] == "ORDER_RESULT")
    assert result["status"] in STATUSES
    joined = bool(place.get("decision_id"))  # outside a decision it may still join the market's latest one
    assert joined or not inside
    if mode in ("keyword-value", "positional-value") and not (coid is None or (type(coid) is str and coid == "")):
        assert got[4] is coid, "a client_order_id the bot passed is never replaced"
    elif joined:
        assert isinstance(got[4], str) and got[4] and got[4] == place["client_order_id"], \
            "an empty client_order_id gets the slot's id"
    else:  # no decision: nothing to generate from, the bot's own (empty) value goes through
        assert got[4] is None or got[4] == ""
    if joined:
        after = harness.ledger_counts()
        for kind in ("ORDER_PLACE", "ORDER_RESULT"):
            assert after.get(kind, 0) == before.get(kind, 0) + 1, f"{kind} missing from the ledger"


def _setup_example(harness: Harness, raise_: Any, value: Any) -> dict[str, int]:
    harness.new_lines()
    harness.calls.clear()
    harness.behaviour.update(raise_=raise_, value=value)
    return harness.ledger_counts()


SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


def test_hostile_sync_calls_reach_the_bot_unchanged_and_are_recorded(harness: Harness) -> None:
    @dora_otel.order_place
    def place(market: Any, side: Any, price: Any, size: Any, client_order_id: Any = None) -> Any:
        harness.calls.append((market, side, price, size, client_order_id))
        if harness.behaviour["raise_"] is not None:
            raise harness.behaviour["raise_"]
        return harness.behaviour["value"]

    @dora_otel.decision_cycle
    def decide(market: Any, args: Any, kwargs: Any) -> Any:
        return place(*args, **kwargs)

    @given(market=hostile_values, side=hostile_values, price=hostile_values, size=hostile_values,
           coid=hostile_values, mode=coid_modes, raise_=st.one_of(st.none(), hostile_exceptions),
           value=returns, inside=st.booleans())
    @SETTINGS
    def run(market: Any, side: Any, price: Any, size: Any, coid: Any, mode: str, raise_: Any, value: Any,
            inside: bool) -> None:
        before = _setup_example(harness, raise_, value)
        args, kwargs = _call_args(mode, market, side, price, size, coid)
        try:
            outcome: tuple[str, Any] = ("value", decide(market, args, kwargs) if inside else place(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 (KeyboardInterrupt and CancelledError are part of the test)
            outcome = ("exc", exc)
        expected = ("exc", raise_) if raise_ is not None else ("value", value)
        _check(harness, mode, (market, side, price, size), coid, outcome, expected, inside, before)

    run()


def test_hostile_async_calls_reach_the_bot_unchanged_and_are_recorded(harness: Harness) -> None:
    @dora_otel.order_place
    async def place(market: Any, side: Any, price: Any, size: Any, client_order_id: Any = None) -> Any:
        await asyncio.sleep(0)
        harness.calls.append((market, side, price, size, client_order_id))
        if harness.behaviour["raise_"] is not None:
            raise harness.behaviour["raise_"]
        return harness.behaviour["value"]

    @dora_otel.decision_cycle
    async def decide(market: Any, args: Any, kwargs: Any) -> Any:
        return await place(*args, **kwargs)

    @given(market=hostile_values, side=hostile_values, price=hostile_values, size=hostile_values,
           coid=hostile_values, mode=coid_modes, raise_=st.one_of(st.none(), hostile_exceptions),
           value=returns, inside=st.booleans())
    @SETTINGS
    def run(market: Any, side: Any, price: Any, size: Any, coid: Any, mode: str, raise_: Any, value: Any,
            inside: bool) -> None:
        before = _setup_example(harness, raise_, value)
        args, kwargs = _call_args(mode, market, side, price, size, coid)

        async def main() -> tuple[str, Any]:
            try:
                return ("value", await (decide(market, args, kwargs) if inside else place(*args, **kwargs)))
            except BaseException as exc:  # noqa: BLE001 (as above: CancelledError is part of the test)
                return ("exc", exc)

        outcome = asyncio.run(main())
        expected = ("exc", raise_) if raise_ is not None else ("value", value)
        _check(harness, mode, (market, side, price, size), coid, outcome, expected, inside, before)

    run()


def test_client_order_id_passed_positionally_as_none_is_filled_in_not_doubled(harness: Harness) -> None:
    """The reported bug: `create_order(market, side, price, size, None)` raised TypeError ("got
    multiple values for argument 'client_order_id'") into the bot and the order was never sent."""
    seen = []

    @dora_otel.order_place
    def create_order(market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> Any:
        seen.append(client_order_id)
        return {"order": {"order_id": "o-positional"}}

    @dora_otel.decision_cycle
    def decide(market: str) -> Any:
        return [{"side": "yes", "price": 0.45, "size": 10}]

    harness.new_lines()
    targets = decide("KXPOS")
    assert create_order("KXPOS", "yes", 0.45, 10, None) == {"order": {"order_id": "o-positional"}}
    lines = [json.loads(t) for t in harness.new_lines()]
    decision = next(line for line in lines if line["event_type"] == "DECISION_MADE")
    assert targets and seen == [decision["targets"][0]["client_order_id"]]
    assert [line["status"] for line in lines if line["event_type"] == "ORDER_RESULT"] == ["ACCEPTED"]
