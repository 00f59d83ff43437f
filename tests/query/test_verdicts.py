"""Slot verdict rules (dora_otel/query/verdicts.py), one behaviour per test, including the kinds a
demo run cannot produce reliably."""

from __future__ import annotations

import itertools
from typing import Any

from dora_otel.query.verdicts import MISMATCH_VERDICTS, Verdict, cancel_says_not_found, judge_decision, judge_slot

TARGET = {"slot": 0, "side": "yes", "price": 0.45, "size": 10, "client_order_id": "c0"}
_seq = itertools.count(1)


def ev(event_type: str, **fields: Any) -> dict[str, Any]:
    seq = next(_seq)
    record = {"event_type": event_type, "seq": seq, "event_ts": f"2026-11-24T04:47:54.{seq:06d}Z",
              "decision_id": "d" * 32, "slot": 0, "client_order_id": "c0", "side": "yes", "price": 0.45, "size": 10}
    record.update(fields)
    return record


def place() -> dict[str, Any]:
    return ev("ORDER_PLACE")


def result(status: str, **fields: Any) -> dict[str, Any]:
    base = {"ACCEPTED": {"order_id": "o1"}, "REJECTED": {"error_msg": "insufficient_balance"},
            "UNKNOWN": {"error_msg": "read timed out"}, "ERROR": {"error_msg": "connection refused"}}[status]
    return ev("ORDER_RESULT", status=status, latency_ms=12.0, **{**base, **fields})


def cancel(status: str, error_msg: str | None = None) -> dict[str, Any]:
    return ev("ORDER_CANCEL", status=status, order_id="o1", **({"error_msg": error_msg} if error_msg else {}))


def fill(size: int) -> dict[str, Any]:
    return ev("FILL", size=size, order_id="o1")


def verdict(*events: dict[str, Any]) -> Verdict:
    return judge_slot(0, TARGET, list(events)).verdict


def test_no_order_place_for_a_target_is_not_sent():
    assert verdict() is Verdict.NOT_SENT


def test_a_definitive_reject_is_rejected_with_the_exchanges_reason():
    out = judge_slot(0, TARGET, [place(), result("REJECTED")])
    assert out.verdict is Verdict.REJECTED and out.reason == "insufficient_balance"


def test_the_last_definitive_result_wins_over_earlier_timeouts():
    assert verdict(place(), result("UNKNOWN"), place(), result("REJECTED")) is Verdict.REJECTED
    assert verdict(place(), result("UNKNOWN"), place(), result("ACCEPTED")) is Verdict.RESTING


def test_only_timeouts_or_errors_are_unknown():
    assert verdict(place(), result("UNKNOWN"), place(), result("UNKNOWN")) is Verdict.UNKNOWN
    assert verdict(place(), result("ERROR")) is Verdict.UNKNOWN


def test_a_place_with_no_result_at_all_is_unknown():
    out = judge_slot(0, TARGET, [place()])
    assert out.verdict is Verdict.UNKNOWN and "no ORDER_RESULT" in out.note


def test_accepted_with_nothing_after_is_resting():
    assert verdict(place(), result("ACCEPTED")) is Verdict.RESTING


def test_fills_summing_to_the_size_are_filled_even_after_a_timeout():
    assert verdict(place(), result("ACCEPTED"), fill(4), fill(6)) is Verdict.FILLED
    assert verdict(place(), result("UNKNOWN"), fill(10)) is Verdict.FILLED


def test_some_fills_are_partial_whether_or_not_the_rest_was_cancelled():
    assert verdict(place(), result("ACCEPTED"), fill(4)) is Verdict.PARTIAL
    out = judge_slot(0, TARGET, [place(), result("ACCEPTED"), fill(4), cancel("CANCELLED")])
    assert out.verdict is Verdict.PARTIAL and out.filled == 4 and "cancelled" in out.note


def test_a_successful_cancel_with_nothing_filled_is_cancelled():
    assert verdict(place(), result("ACCEPTED"), cancel("CANCELLED")) is Verdict.CANCELLED


def test_a_not_found_cancel_of_an_accepted_unfilled_order_means_the_exchange_lost_it():
    out = judge_slot(0, TARGET, [place(), result("ACCEPTED"), cancel("CANCEL_FAILED", "order o1 not found")])
    assert out.verdict is Verdict.UNKNOWN
    assert "exchange does not know the order" in out.note


def test_a_cancel_that_failed_otherwise_leaves_the_order_resting_with_a_note():
    out = judge_slot(0, TARGET, [place(), result("ACCEPTED"), cancel("CANCEL_UNKNOWN", "read timed out")])
    assert out.verdict is Verdict.RESTING and "may still rest" in out.note


def test_a_result_whose_place_record_was_lost_still_counts():
    assert verdict(result("ACCEPTED")) is Verdict.RESTING


def test_not_found_reading_covers_kalshi_and_http_wording():
    assert cancel_says_not_found({"status": "CANCEL_FAILED", "error_msg": "not_found"})
    assert cancel_says_not_found({"status": "CANCEL_FAILED", "http_status": 404})
    assert not cancel_says_not_found({"status": "CANCEL_FAILED", "error_msg": "rate limited"})
    assert not cancel_says_not_found({"status": "CANCELLED", "error_msg": "not found"})


def test_a_decision_gets_a_verdict_per_target_and_for_unplanned_orders():
    targets = [TARGET, {"slot": 1, "side": "no", "price": 0.5, "size": 10, "client_order_id": "c1"}]
    events = [place(), result("ACCEPTED"),
              ev("ORDER_PLACE", slot=2, client_order_id="c2", side="yes", price=0.3, size=5),
              ev("ORDER_RESULT", slot=2, client_order_id="c2", status="ACCEPTED", order_id="o2"),
              ev("FILL", slot=None, client_order_id=None, order_id="o2", size=5)]
    verdicts, unassigned = judge_decision(targets, events)
    assert [(v.slot, v.verdict) for v in verdicts] == [(0, Verdict.RESTING), (1, Verdict.NOT_SENT), (2, Verdict.FILLED)]
    assert verdicts[2].expected is None and not unassigned


def test_events_are_joined_to_slots_by_client_order_id_or_order_id_when_the_slot_is_missing():
    events = [ev("ORDER_PLACE", slot=None), ev("ORDER_RESULT", slot=None, status="ACCEPTED", order_id="o9"),
              ev("ORDER_CANCEL", slot=None, client_order_id=None, order_id="o9", status="CANCELLED"),
              ev("ORDER_CANCEL", slot=None, client_order_id=None, order_id="other", status="CANCELLED")]
    verdicts, unassigned = judge_decision([TARGET], events)
    assert verdicts[0].verdict is Verdict.CANCELLED
    assert [u["order_id"] for u in unassigned] == ["other"]


def test_mismatch_verdicts_are_the_ones_reconcile_reports():
    assert {Verdict.NOT_SENT, Verdict.REJECTED, Verdict.UNKNOWN} == MISMATCH_VERDICTS


# --- issue 9: DUPLICATE results, why-not records, cancel request vs outcome --------------------------

def test_a_retry_answered_duplicate_means_the_order_exists_never_rejected():
    # a timeout (UNKNOWN), the retry with the same client_order_id gets Kalshi's 409: the first one landed
    dup = result("UNKNOWN"), place(), ev("ORDER_RESULT", status="DUPLICATE", error_msg="409 order_already_exists")
    out = judge_slot(0, TARGET, [place(), *dup])
    assert out.verdict is Verdict.RESTING and "DUPLICATE" in out.note
    assert verdict(place(), *dup, cancel("CANCELLED")) is Verdict.CANCELLED
    assert verdict(place(), *dup, fill(10)) is Verdict.FILLED
    assert verdict(place(), result("REJECTED"), place(), ev("ORDER_RESULT", status="DUPLICATE")) is Verdict.RESTING


def test_a_suppressed_slot_carries_the_bots_reason_and_is_not_a_mismatch():
    out = judge_slot(0, TARGET, [ev("ORDER_SUPPRESSED", reason="rate limit budget exhausted")])
    assert out.verdict is Verdict.SUPPRESSED and out.reason == "rate limit budget exhausted"
    assert "rate limit budget exhausted" in out.detail() and not out.mismatch
    verdicts, _ = judge_decision([TARGET, {"slot": 1, "side": "no", "price": 0.5, "size": 10, "client_order_id": "c1"}],
                                 [ev("ORDER_SUPPRESSED", slot=1, client_order_id="c1", reason="risk: max position")])
    assert [v.verdict for v in verdicts] == [Verdict.NOT_SENT, Verdict.SUPPRESSED]


def test_only_a_cancels_outcome_decides_and_a_request_without_one_is_noted():
    request = ev("ORDER_CANCEL", order_id="o1")  # the record journaled before the call: no status
    assert verdict(place(), result("ACCEPTED"), request, cancel("CANCELLED")) is Verdict.CANCELLED
    out = judge_slot(0, TARGET, [place(), result("ACCEPTED"), request])
    assert out.verdict is Verdict.RESTING and "no outcome was recorded" in out.note
    out = judge_slot(0, TARGET, [place(), result("ACCEPTED"), request, cancel("CANCEL_FAILED", "order o1 not found")])
    assert out.verdict is Verdict.UNKNOWN


def test_worst_verdict_orders_failures_first():
    from dora_otel.query.verdicts import worst

    assert worst([Verdict.FILLED, Verdict.SUPPRESSED, Verdict.CANCELLED]) is Verdict.SUPPRESSED
    assert worst([Verdict.FILLED, Verdict.REJECTED, Verdict.NOT_SENT]) is Verdict.REJECTED
    assert worst([]) is None
