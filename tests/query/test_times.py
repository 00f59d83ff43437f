"""Time arguments: ISO-8601 with or without Z / offset (naive is UTC), relative times, durations."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dora_otel.query.times import TimeParseError, iso, parse_duration, parse_time

NOW = datetime(2026, 11, 24, 4, 47, 54, 123456, tzinfo=timezone.utc)


@pytest.mark.parametrize("text, expected", [
    ("2026-11-24T04:47:54Z", datetime(2026, 11, 24, 4, 47, 54, tzinfo=timezone.utc)),
    ("2026-11-24T04:47:54.5Z", datetime(2026, 11, 24, 4, 47, 54, 500000, tzinfo=timezone.utc)),
    ("2026-11-24T04:47:54.123456789Z", datetime(2026, 11, 24, 4, 47, 54, 123456, tzinfo=timezone.utc)),
    ("2026-11-24T04:47:54", datetime(2026, 11, 24, 4, 47, 54, tzinfo=timezone.utc)),
    ("2026-11-24 04:47", datetime(2026, 11, 24, 4, 47, tzinfo=timezone.utc)),
    ("2026-11-24T05:47:54+01:00", datetime(2026, 11, 24, 4, 47, 54, tzinfo=timezone.utc)),
    ("2026-11-24", datetime(2026, 11, 24, tzinfo=timezone.utc)),
])
def test_iso_times_with_or_without_offset_are_utc_and_naive_means_utc(text, expected):
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text, delta", [
    ("now", timedelta(0)),
    ("10 minutes ago", timedelta(minutes=10)),
    ("2h ago", timedelta(hours=2)),
    ("90s ago", timedelta(seconds=90)),
    ("1h30m ago", timedelta(hours=1, minutes=30)),
    ("1 day ago", timedelta(days=1)),
    ("1.5 hours ago", timedelta(hours=1.5)),
])
def test_relative_times_count_back_from_now(text, delta):
    assert parse_time(text, now=NOW) == NOW - delta


@pytest.mark.parametrize("text", ["yesterday-ish", "10 parsecs ago", "ago", "", "2026-13-45T00:00:00Z"])
def test_an_unreadable_time_names_the_text_and_the_accepted_forms(text):
    with pytest.raises(TimeParseError) as err:
        parse_time(text, now=NOW)
    assert "ISO-8601" in str(err.value) or "empty" in str(err.value)


def test_durations_read_like_an_operator_writes_them():
    assert parse_duration("2m") == timedelta(minutes=2)
    assert parse_duration("90") == timedelta(seconds=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2 minutes") == timedelta(minutes=2)
    with pytest.raises(TimeParseError, match="2 fortnights"):
        parse_duration("2 fortnights")


def test_iso_is_the_ledger_records_format():
    assert iso(NOW) == "2026-11-24T04:47:54.123456Z"
