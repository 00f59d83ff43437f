"""The runtime's in-memory order book (client_order_id / order_id -> the decision slot): bounded,
oldest forgotten first, whatever the number of orders a long-running bot has placed."""

from __future__ import annotations

import gc

from opentelemetry.trace import SpanContext, TraceFlags

from dora_otel._runtime import OrderBook, OrderRef


def _ref(n: int) -> OrderRef:
    return OrderRef(f"{n:032x}", SpanContext(n + 1, n + 1, False), "KX", 0, "yes", 0.5, 1, f"c-{n}")


def test_a_full_book_keeps_the_newest_orders_and_forgets_old_ones() -> None:
    book = OrderBook(capacity=1_000)
    for n in range(25_000):  # 25 times the capacity
        book.add(f"c-{n}", _ref(n))
    # The newest `capacity` orders are always known; nothing older than twice that is kept.
    assert [book.find(f"c-{n}") for n in range(24_000, 25_000)] == [_ref(n) for n in range(24_000, 25_000)]
    assert all(book.find(f"c-{n}") is None for n in range(23_000))
    assert 1_000 <= len(book) <= 2_000


def test_updating_a_known_order_keeps_it_and_does_not_grow_the_book() -> None:
    book = OrderBook(capacity=3)
    book.add("c-0", _ref(0))
    book.add("c-0", _ref(7))  # an order id learnt later for the same key
    assert book.find("c-0") == _ref(7)
    assert len(book) == 1
    for n in range(1, 7):  # twice the capacity of newer orders: c-0 is forgotten
        book.add(f"c-{n}", _ref(n))
    assert book.find("c-0") is None
    assert [book.find(f"c-{n}") for n in (4, 5, 6)] == [_ref(4), _ref(5), _ref(6)]


def test_an_order_and_its_exchange_id_find_the_same_ref_whatever_its_values() -> None:
    book = OrderBook()
    odd = OrderRef("ab" * 16, SpanContext(2**128 - 1, 2**64 - 1, True, TraceFlags(1)), None, "slot-a",
                   None, 2**70, 1.5e-300, "c-odd")  # a huge int (not JSON), a tiny float, no market
    book.add("c-odd", odd)
    book.add("o-odd", odd)
    assert book.find("c-odd") == odd
    assert book.find(None, "o-odd") == odd
    assert book.find("o-odd").span_context.trace_flags.sampled


def test_a_bot_that_placed_many_orders_gives_the_garbage_collector_nothing_more_to_walk() -> None:
    """Every full collection walks every object the collector tracks. The book lives as long as the
    bot and holds up to 200k orders: it must not add them to that walk (an OrderedDict of OrderRefs
    did: ~30 ms per full collection at 100k orders, paid by whichever thread triggered it)."""
    book = OrderBook(capacity=10_000)
    gc.collect()
    before = len(gc.get_objects())
    for n in range(15_000):
        ref = _ref(n)
        book.add(f"c-{n}", ref)
        book.add(f"o-{n}", ref)
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert book.find("o-14999") == _ref(14_999)


def test_a_slots_client_order_id_is_the_same_in_every_version() -> None:
    """A retry after a restart (possibly onto an upgraded dora-otel) must send the id the exchange
    already has for that slot, so the derivation is pinned: blake2b-128 of "<decision_id>:<slot>"."""
    from dora_otel._runtime import client_order_id_for

    decision_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert client_order_id_for(decision_id, 0) == "ac8c2d55-6374-1232-9255-3f7069d70f2d"
    assert client_order_id_for(decision_id, 7) == "3d93b22b-2247-c843-65a5-bcd390fdc272"
