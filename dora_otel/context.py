"""Bound context: the decision a log line belongs to, fields a bot binds for a block of code, and
the reserved base-field names a bot's own keys may not take (`rename_reserved`).

One ContextVar per bound key (never a shared mutable dict), so threads and asyncio tasks each see
their own values and a binding always resets when its block exits.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

from opentelemetry.trace import SpanContext


class DecisionLike(Protocol):
    """What a log line, an order or a fill needs to know about the decision it belongs to: a
    `DecisionRef`, or the running `_runtime.Decision` itself (no copy made per call)."""

    @property
    def decision_id(self) -> str: ...
    @property
    def market(self) -> Any: ...
    @property
    def span_context(self) -> SpanContext: ...


class DecisionRef(NamedTuple):
    """A decision known by its ids only (a fill joined to an order of an earlier decision).
    (A NamedTuple: construction is kept cheap.)"""

    decision_id: str
    market: str | None
    span_context: SpanContext


current_decision: contextvars.ContextVar[DecisionLike | None] = contextvars.ContextVar(
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


#: The base fields of every log line: they always hold dora-otel's own values.
RESERVED_FIELDS = frozenset({"ts", "level", "service", "env", "bot_version", "bot_run_id", "message",
                             "event_type", "seq", "logger", "trace_id", "span_id", "decision_id"})
RENAMED_PREFIX = "field_"


def rename_reserved(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` (the bot's own: `extra=`, bound fields, an event helper's keyword arguments) with
    every reserved base-field name renamed `field_<name>` (`field_field_<name>` if that is taken
    too), so the bot's value is kept and never replaces dora-otel's. Returns `fields` itself when
    nothing collides. Any thread; cheap."""
    if fields.keys().isdisjoint(RESERVED_FIELDS):
        return fields
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key in RESERVED_FIELDS:
            alt = RENAMED_PREFIX + key
            while alt in fields or alt in out:
                alt = RENAMED_PREFIX + alt
            out[alt] = value
        else:
            out[key] = value
    return out
