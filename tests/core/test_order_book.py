"""The runtime's in-memory order book (client_order_id / order_id -> the decision slot): bounded,
oldest forgotten first, whatever the number of orders a long-running bot has placed."""

from __future__ import annotations

from opentelemetry.trace import SpanContext

from dora_otel._runtime import OrderBook, OrderRef


def _ref(n: int) -> OrderRef:
    return OrderRef(f"{n:032x}", SpanContext(n + 1, n + 1, False), "KX", 0, "yes", 0.5, 1, f"c-{n}")


def test_a_full_book_forgets_the_oldest_orders_first_and_keeps_the_newest() -> None:
    book = OrderBook(capacity=1_000)
    for n in range(25_000):  # 25 times the capacity: every add past 1,000 evicts one
        book.add(f"c-{n}", _ref(n))
    assert book.find("c-0") is None
    assert book.find("c-23999") is None
    assert book.find("c-24000") == _ref(24_000)
    assert book.find("c-24999") == _ref(24_999)
    assert len(book._refs) == 1_000


def test_updating_a_known_order_keeps_it_and_does_not_grow_the_book() -> None:
    book = OrderBook(capacity=3)
    for n in range(3):
        book.add(f"c-{n}", _ref(n))
    book.add("c-0", _ref(7))  # an order id learnt later for the same key
    assert book.find("c-0") == _ref(7)
    book.add("c-3", _ref(3))  # full: the oldest key (c-0, first added) goes
    assert book.find("c-0") is None
    assert [book.find(f"c-{n}") for n in (1, 2, 3)] == [_ref(1), _ref(2), _ref(3)]


def test_a_slots_client_order_id_is_the_same_in_every_version() -> None:
    """A retry after a restart (possibly onto an upgraded dora-otel) must send the id the exchange
    already has for that slot, so the derivation is pinned: blake2b-128 of "<decision_id>:<slot>"."""
    from dora_otel._runtime import client_order_id_for

    decision_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert client_order_id_for(decision_id, 0) == "ac8c2d55-6374-1232-9255-3f7069d70f2d"
    assert client_order_id_for(decision_id, 7) == "3d93b22b-2247-c843-65a5-bcd390fdc272"
