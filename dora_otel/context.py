"""Bound context: the decision a log line belongs to, and fields a bot binds for a block of code.

One ContextVar per bound key (never a shared mutable dict), so threads and asyncio tasks each see
their own values and a binding always resets when its block exits.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from typing import Any, Iterator, NamedTuple

from opentelemetry.trace import SpanContext


class DecisionRef(NamedTuple):
    """What a log line, an order or a fill needs to know about the decision it belongs to.
    (A NamedTuple: one is made per order, so construction is kept cheap.)"""

    decision_id: str
    market: str | None
    span_context: SpanContext


current_decision: contextvars.ContextVar[DecisionRef | None] = contextvars.ContextVar(
    "dora_otel_decision", default=None
)

_bound_vars: dict[str, contextvars.ContextVar[Any]] = {}
_bound_lock = threading.Lock()
_UNSET = object()


def _var(key: str) -> contextvars.ContextVar[Any]:
    var = _bound_vars.get(key)
    if var is None:
        with _bound_lock:
            var = _bound_vars.setdefault(key, contextvars.ContextVar(f"dora_otel_bound_{key}", default=_UNSET))
    return var


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add `fields` to every log line emitted inside the block (this thread / task only).

    >>> with dora_otel.bind(market="KXBTC-25"):
    ...     logger.info("book refreshed")   # the line carries "market": "KXBTC-25"
    """
    tokens = [(_var(k), _var(k).set(v)) for k, v in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def has_bound_fields() -> bool:
    """Cheap test: was any key ever bound in this process?"""
    return bool(_bound_vars)


def bound_fields() -> dict[str, Any]:
    """The fields bound in the current context (a fresh dict; callers may change it)."""
    if not _bound_vars:
        return {}
    out = {}
    for key, var in list(_bound_vars.items()):
        value = var.get()
        if value is not _UNSET:
            out[key] = value
    return out
