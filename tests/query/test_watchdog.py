"""The in-process watchdog: a decision whose placed order gets no terminal ORDER_RESULT in time is
reported exactly once, naming the decision and slot; normal orders are never reported."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from typing import Any

import dora_otel
from dora_otel.watchdog import Watchdog


def start(tmp_path: Any, seconds: float) -> tuple[dora_otel.Telemetry, io.StringIO]:
    stream = io.StringIO()
    telemetry = dora_otel.setup(stream=stream, container_mode=True, data_dir=tmp_path, ledger="off", strict=True,
                                install_signal_handlers=False, watchdog_seconds=seconds)
    return telemetry, stream


def overdue(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line]
    return [line for line in lines if line.get("error_type") == "OrderResultOverdue"]


class Strategy:
    @dora_otel.decision_cycle
    def quote(self, market: str) -> list[dict[str, Any]]:
        return [{"side": "yes", "price": 0.45, "size": 10}, {"side": "no", "price": 0.5, "size": 10}]


class Exchange:
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()

    @dora_otel.order_place
    def place_order(self, market: str, side: str, price: float, size: int, client_order_id: str | None = None) -> dict:
        if side == "yes":  # this call hangs until the test lets it go
            self.entered.set()
            self.gate.wait(10)
        return {"order": {"order_id": f"o-{side}", "status": "resting"}}


def test_a_hanging_place_call_is_reported_once_naming_the_decision_and_slot(tmp_path):
    telemetry, stream = start(tmp_path, seconds=0.3)
    exchange = Exchange()
    Strategy().quote("KXBTC")
    telemetry.flush()  # lines are written by a background thread
    decision_id = json.loads(stream.getvalue().splitlines()[-1])["decision_id"]
    hanging = threading.Thread(target=exchange.place_order, args=("KXBTC", "yes", 0.45, 10))
    hanging.start()
    assert exchange.entered.wait(5)
    exchange.place_order("KXBTC", "no", 0.5, 10)  # a normal order: answered at once
    deadline = time.monotonic() + 5
    while not overdue(stream) and time.monotonic() < deadline:
        time.sleep(0.02)
        telemetry.flush()
    time.sleep(0.5)  # more checks run: still one report
    exchange.gate.set()
    hanging.join(5)
    time.sleep(0.2)
    telemetry.shutdown(reason="test")
    (report,) = overdue(stream)
    assert report["event_type"] == "ERROR" and report["level"] == "ERROR"
    assert report["decision_id"] == decision_id and report["slots"] == [0] and report["market"] == "KXBTC"
    assert "slot(s) [0]" in report["error_msg"] and report["client_order_ids"][0]


def test_normal_orders_are_never_reported(tmp_path):
    telemetry, stream = start(tmp_path, seconds=0.1)
    exchange = Exchange()
    exchange.gate.set()
    for _ in range(3):
        Strategy().quote("KXBTC")
        exchange.place_order("KXBTC", "yes", 0.45, 10)
        exchange.place_order("KXBTC", "no", 0.5, 10)
    time.sleep(0.4)
    telemetry.shutdown(reason="test")
    assert overdue(stream) == []


class FakeRuntime:
    def __init__(self) -> None:
        self.lines: list[tuple[int, str, str, dict[str, Any]]] = []

    def emit(self, level: int, event_type: str, message: str, fields: dict[str, Any]) -> dict[str, Any]:
        self.lines.append((level, event_type, message, fields))
        return fields


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watchdog() -> tuple[Watchdog, FakeRuntime, Clock]:
    runtime, clock = FakeRuntime(), Clock()
    return Watchdog(runtime, 10, clock=clock), runtime, clock


def test_unknown_is_not_terminal_but_a_fill_resolves_the_slot():
    dog, runtime, clock = watchdog()
    dog.order_started("d1", 0, "c0", "M")
    dog.order_result("d1", 0, "UNKNOWN", "c0")
    dog.order_started("d2", 0, "c2", "M")
    dog.order_result("d2", 0, "UNKNOWN", "c2")
    dog.fill("d2", 0)
    clock.now += 11
    assert dog.check() == 1
    (level, kind, _, fields), = runtime.lines
    assert (level, kind, fields["decision_id"], fields["slots"]) == (logging.ERROR, "ERROR", "d1", [0])


def test_terminal_results_settle_and_a_retry_keeps_the_first_start():
    dog, runtime, clock = watchdog()
    for status, slot in (("ACCEPTED", 0), ("REJECTED", 1), ("ERROR", 2)):
        dog.order_started("d1", slot, f"c{slot}", "M")
        dog.order_result("d1", slot, status, f"c{slot}")
    dog.order_started("d3", 0, "c", "M")
    clock.now += 6
    dog.order_started("d3", 0, "c", "M")  # a retry of the same slot
    clock.now += 5
    assert dog.check() == 1 and runtime.lines[0][3]["decision_id"] == "d3"
    assert dog.pending() == 0


def test_a_decision_is_reported_once_even_when_more_slots_go_overdue_later():
    dog, runtime, clock = watchdog()
    dog.order_started("d1", 0, "c0", "M")
    clock.now += 5
    dog.order_started("d1", 1, "c1", "M")
    clock.now += 6
    dog.check()
    clock.now += 10
    dog.check()
    assert len(runtime.lines) == 1 and runtime.lines[0][3]["slots"] == [0]


def test_hooks_never_raise_and_memory_is_bounded():
    runtime = FakeRuntime()
    dog = Watchdog(runtime, 10, max_pending=3)
    dog.order_started("d", [1], "c", "M")  # an unhashable slot: ignored, not raised
    dog.order_result(None, None, object(), None)
    dog.fill("d", {})
    for i in range(10):
        dog.order_started(f"d{i}", 0, "c", "M")
    assert dog.pending() == 3 and dog.forgotten == 7


def test_start_and_stop_are_idempotent():
    dog = Watchdog(FakeRuntime(), 1)
    dog.start()
    dog.start()
    dog.stop()
    dog.stop()
