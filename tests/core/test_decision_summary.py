"""A decision's summary fields (`expected_orders_hash`, `spread`) are read by explain and compared
across runs and versions: the faster readers must give exactly what the first ones gave, for any
targets a strategy returns."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from dora_otel._runtime import price_key, size_key
from dora_otel.decorators import default_spread, expected_orders_hash


def _reference_hash(targets: list[dict[str, Any]]) -> str:
    """expected_orders_hash as first written (its values are stored in every ledger)."""
    keys = [(str(t.get("side")), price_key(t.get("price")) or 0.0, size_key(t.get("size")) or 0.0) for t in targets]
    keys.sort()
    return hashlib.sha256(orjson.dumps(keys)).hexdigest()[:32]


def _reference_spread(result: Any, targets: list[dict[str, Any]]) -> float | None:
    """default_spread as first written."""
    value = result.get("spread") if isinstance(result, dict) else getattr(result, "spread", None)
    if value is not None and not isinstance(result, (list, tuple)):
        return float(value)
    yes: list[float] = []
    no: list[float] = []
    for t in targets:
        price = t.get("price")
        if price is not None:
            side = str(t.get("side")).lower()
            if side in {"yes", "buy", "bid"}:
                yes.append(float(price))
            elif side in {"no", "sell", "ask"}:
                no.append(float(price))
    if not yes or not no:
        return None
    best_yes, best_no = max(yes), max(no)
    whole = 100.0 if max(best_yes, best_no) > 1.0 else 1.0
    return round(whole - best_yes - best_no, 6)


_numbers = st.one_of(st.none(), st.floats(allow_nan=False), st.floats(), st.integers(-10**6, 10**6),
                     st.sampled_from([0, 0.0, -0.0, 1, 45, 0.45, 99.5, True, "0.45", "", "x"]),
                     st.decimals(allow_nan=False, allow_infinity=False, places=2).map(Decimal))
_sides = st.one_of(st.sampled_from(["yes", "no", "YES", "No", "buy", "sell", "bid", "ask", "", "maybe"]),
                   st.none(), st.integers(0, 2), st.text(max_size=4))
_targets = st.lists(st.fixed_dictionaries({"side": _sides, "price": _numbers, "size": _numbers}), max_size=6)


def _same(a: Any, b: Any) -> bool:
    return a == b or (a != a and b != b)  # (NaN equals NaN here)


@settings(max_examples=300, deadline=None)
@given(_targets)
def test_the_expected_orders_hash_is_the_one_every_earlier_version_stored(targets: list[dict[str, Any]]) -> None:
    try:
        expected = _reference_hash(targets)
    except (OverflowError, ValueError, TypeError) as exc:
        try:
            expected_orders_hash(targets)
        except type(exc):
            return
        raise AssertionError(f"the reference raised {exc!r}, the new reader did not") from None
    assert expected_orders_hash(targets) == expected


@settings(max_examples=300, deadline=None)
@given(_targets, st.sampled_from(["list", "tuple", "dict", "dict-spread", "none"]))
def test_the_default_spread_is_what_it_always_was(targets: list[dict[str, Any]], shape: str) -> None:
    result: Any = {"list": targets, "tuple": tuple(targets), "dict": {"targets": targets},
                   "dict-spread": {"targets": targets, "spread": 0.03}, "none": None}[shape]
    try:
        expected = _reference_spread(result, targets)
    except (OverflowError, ValueError, TypeError) as exc:
        try:
            default_spread(result, targets)
        except type(exc):
            return
        raise AssertionError(f"the reference raised {exc!r}, the new reader did not") from None
    assert _same(default_spread(result, targets), expected)


def test_a_two_sided_quote_has_the_spread_a_kalshi_trader_expects() -> None:
    assert default_spread([], [{"side": "yes", "price": 0.45}, {"side": "no", "price": 0.50}]) == 0.05
    assert default_spread([], [{"side": "yes", "price": 45}, {"side": "no", "price": 52}]) == 3.0
    assert default_spread([], [{"side": "yes", "price": 0.45}]) is None
