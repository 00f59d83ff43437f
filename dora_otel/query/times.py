"""Time arguments of the query commands: `--at`, `--since`, `--until` and `--window`.

Owns the parsing of what an operator types ("2026-11-24T04:47:54Z", "2026-11-24 04:47",
"10 minutes ago", "2h ago", "now") into timezone-aware UTC datetimes, and of durations ("2m", "90s",
"1h30m", "2 minutes"). A naive ISO-8601 time is UTC, as every timestamp dora-otel writes is.
Errors are :class:`TimeParseError` (a ValueError) naming the text and the accepted forms.

Pure functions; no I/O.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

__all__ = ["TimeParseError", "iso", "iso_ms", "parse_duration", "parse_time"]

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", re.IGNORECASE)
_FRACTION = re.compile(r"\.(\d+)")
_FORMS = ("ISO-8601 (2026-11-24T04:47:54Z, 2026-11-24 04:47:54+01:00; no offset means UTC), "
          "'now', or a time ago ('10 minutes ago', '2h ago', '1h30m ago')")


class TimeParseError(ValueError):
    """A time or duration argument that cannot be read; the message names it and the accepted forms."""


def parse_duration(text: str) -> timedelta:
    """'2m', '90s', '1h30m', '2 minutes', '1.5h' -> timedelta. A bare number is seconds."""
    raw = str(text).strip().lower()
    if not raw:
        raise TimeParseError("empty duration; use e.g. '2m', '90s', '1h'")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = _sum_parts(raw, text)
    if seconds < 0:
        raise TimeParseError(f"duration {text!r} must not be negative")
    return timedelta(seconds=seconds)


def _sum_parts(raw: str, original: str) -> float:
    pos, total = 0, 0.0
    compact = raw.replace(" and ", " ").replace(",", " ")
    while pos < len(compact):
        match = _PART.match(compact, pos)
        if match is None or match.group(2) not in _UNITS:
            raise TimeParseError(f"cannot read duration {original!r}; use e.g. '2m', '90s', '1h30m', '2 minutes'")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An operator's time -> aware UTC datetime. See the module docstring for the forms."""
    raw = str(text).strip()
    low = raw.lower()
    current = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    if not raw:
        raise TimeParseError(f"empty time; use {_FORMS}")
    if low == "now":
        return current
    if low.endswith("ago"):
        amount = low[: -len("ago")].strip()
        if amount:
            try:
                return current - parse_duration(amount)
            except TimeParseError:
                pass
        raise TimeParseError(f"cannot read time {text!r}; use {_FORMS}")
    value = raw.replace(" ", "T", 1) if re.match(r"^\d{4}-\d{2}-\d{2} \d", raw) else raw
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    # Python 3.10's fromisoformat takes exactly 3 or 6 fraction digits: pad / cut to 6.
    value = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], value, count=1)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise TimeParseError(f"cannot read time {text!r}; use {_FORMS}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def iso(value: datetime) -> str:
    """The ledger records' format: ISO-8601 UTC with microseconds and Z (sorts as text)."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_ms(value: datetime) -> str:
    """The log lines' format: ISO-8601 UTC with milliseconds and Z."""
    text = value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[:-3] + "Z"


def from_iso(text: str) -> datetime:
    """A record's or line's timestamp back to an aware datetime."""
    return parse_time(text)
