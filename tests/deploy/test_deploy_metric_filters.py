"""Metric filters count exactly the events each alarm is about, on both delivery paths.

The filters are read from deploy/cloudformation/observability.yaml and evaluated offline with
cw_filter_pattern (the CloudWatch "Filter pattern syntax" rules) against log events shaped as each
path stores them (cw_shapes; hand-written fixtures in data/).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cw_alarms
import cw_filter_pattern as fp
import cw_shapes
import pytest
import yaml

DATA = Path(__file__).resolve().parent / "data"
FIXTURES = yaml.safe_load((DATA / "app_lines.yaml").read_text(encoding="utf-8"))
EVENTS = yaml.safe_load((DATA / "cloudwatch_events.yaml").read_text(encoding="utf-8"))["events"]
ALARMS = ("errors", "order-failures", "risk-halt")
OBS = cw_alarms.load()


def _stdout_text(line: dict) -> str:
    # The app writes compact JSON (orjson): no spaces after ':' and ','.
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


def _counted_by(alarm: str, path: str, event: str) -> bool:
    return any(f.pattern.matches(event) for f in OBS.filters_for(alarm, path))


# --- the template wires filters and alarms as intended ----------------------------------------------

def test_the_three_alarms_exist_with_the_agreed_thresholds():
    assert set(OBS.alarms) == set(ALARMS)
    assert (OBS.alarms["errors"].comparison, OBS.alarms["errors"].threshold) == ("GreaterThanThreshold", 0)
    failures = OBS.alarms["order-failures"]
    assert (failures.comparison, failures.threshold) == ("GreaterThanThreshold", 3)
    assert (OBS.alarms["risk-halt"].comparison, OBS.alarms["risk-halt"].threshold) == ("GreaterThanThreshold", 0)
    assert {a.treat_missing for a in OBS.alarms.values()} == {"notBreaching"}


@pytest.mark.parametrize("alarm", ALARMS)
def test_every_alarm_reads_a_filter_on_each_delivery_path(alarm):
    assert OBS.filters_for(alarm, "otlp"), f"{alarm}: no filter on the OTLP (/app) group"
    assert OBS.filters_for(alarm, "journald"), f"{alarm}: no filter on the journald (/journal) group"
    produced = {f.metric for f in OBS.filters}
    assert set(OBS.alarms[alarm].metrics.values()) <= produced


def test_regex_use_stays_within_cloudwatch_quotas():
    per_group: dict[str, int] = {}
    for f in OBS.filters:
        assert f.pattern.regex_count <= fp.MAX_REGEX_PER_PATTERN
        if f.pattern.regex_count:
            per_group[f.path] = per_group.get(f.path, 0) + 1
    # At most 5 filter patterns containing regex per log group.
    assert all(n <= 5 for n in per_group.values()), per_group


def test_otlp_filters_address_app_fields_under_attributes():
    for f in OBS.filters:
        if f.path == "otlp":
            assert "$.attributes.event_type" in f.pattern.text


# --- hand-written lines, delivered on both paths ----------------------------------------------------

@pytest.mark.parametrize("case", FIXTURES["lines"], ids=lambda c: c["name"])
@pytest.mark.parametrize("alarm", ALARMS)
def test_alarm_counts_an_app_line_iff_it_should_on_both_paths(case, alarm):
    expected = alarm in case["alarms"]
    otlp = cw_shapes.otlp_event(case["line"], FIXTURES["resource"])
    journald = cw_shapes.journald_event(_stdout_text(case["line"]))
    assert _counted_by(alarm, "otlp", otlp) is expected, otlp
    assert _counted_by(alarm, "journald", journald) is expected, journald


@pytest.mark.parametrize("case", FIXTURES["raw"], ids=lambda c: c["name"])
@pytest.mark.parametrize("alarm", ALARMS)
def test_alarm_counts_text_that_only_journald_sees_iff_it_should(case, alarm):
    event = cw_shapes.journald_event(case["text"])
    assert _counted_by(alarm, "journald", event) is (alarm in case["alarms"]), event


@pytest.mark.parametrize("case", EVENTS, ids=lambda c: c["name"])
@pytest.mark.parametrize("alarm", ALARMS)
def test_alarm_counts_a_hand_written_cloudwatch_event_iff_it_should(case, alarm):
    assert _counted_by(alarm, case["path"], case["message"]) is (alarm in case["alarms"])


@pytest.mark.parametrize("case", [e for e in EVENTS if e.get("same_as")], ids=lambda c: c["name"])
def test_otlp_shape_builder_reproduces_the_hand_written_event(case):
    (line,) = [c["line"] for c in FIXTURES["lines"] if c["name"] == case["same_as"]]
    assert cw_shapes.otlp_record(line, FIXTURES["resource"]) == json.loads(case["message"])


def test_an_event_delivered_on_both_paths_is_counted_once_and_on_one_path_still_counted():
    rejected = next(c["line"] for c in FIXTURES["lines"] if c["name"] == "order result rejected")
    otlp = [cw_shapes.otlp_event(rejected, FIXTURES["resource"])]
    journald = [cw_shapes.journald_event(_stdout_text(rejected))]
    alarm = OBS.alarms["order-failures"]
    # 4 failures in one 5-minute period, seen on both paths: value 4 (> 3) -> ALARM.
    assert alarm.value(OBS.counts({"otlp": otlp * 4, "journald": journald * 4})) == 4
    assert alarm.breaches(OBS.counts({"otlp": otlp * 4, "journald": journald * 4}))
    # 3 is not more than 3.
    assert not alarm.breaches(OBS.counts({"otlp": otlp * 3, "journald": journald * 3}))
    # Collector down: only the journal delivers, the alarm still fires.
    assert alarm.breaches(OBS.counts({"journald": journald * 4}))
    # CloudWatch agent down: only OTLP delivers.
    assert alarm.breaches(OBS.counts({"otlp": otlp * 4}))


def test_a_single_risk_halt_raises_the_critical_alarm():
    halt = next(c["line"] for c in FIXTURES["lines"] if c["name"] == "risk halt")
    counts = OBS.counts({"otlp": [cw_shapes.otlp_event(halt, FIXTURES["resource"])]})
    assert OBS.alarms["risk-halt"].breaches(counts)
    assert not OBS.alarms["errors"].breaches(counts)


# --- the evaluator follows the documented syntax ------------------------------------------------------

DOC = json.dumps({"a": {"b": "X", "n": 7, "f": 0.5, "nil": None, "t": True, "list": [{"k": "v"}]},
                  "c": "Yes-please", "eventType": "UpdateTrail", "ip": "123.123.1.9"})


@pytest.mark.parametrize("pattern, expected", [
    ('{ $.a.b = "X" }', True),
    ('{ $.a.b = "Y" }', False),
    ('{ $.a.b = "X" && $.c != "Y" }', True),
    ('{ $.a.b = "Y" || $.c = "Yes-please" }', True),
    ('{ ($.a.b = "Y" || $.c = "Yes*") && $.a.n > 5 }', True),
    ('{ $.a.b = "Y" || ($.c = "Yes*" && $.a.n > 7) }', False),
    ('{ $.a.n >= 7 && $.a.n <= 7 && $.a.n != 8 && $.a.f < 1 }', True),
    ('{ $.a.n = 7 }', True),
    ('{ $.a.nil IS NULL }', True),
    ('{ $.a.b IS NULL }', False),
    ('{ $.a.missing NOT EXISTS }', True),
    ('{ $.a.b NOT EXISTS }', False),
    ('{ $.a.t IS TRUE }', True),
    ('{ $.a.t IS FALSE }', False),
    ('{ $.a.list[0].k = "v" }', True),
    ('{ $.eventType = "Update*" }', True),
    ('{ $.ip != 123.123.* }', False),
    ('{ $.ip = 123.123.* }', True),
    ('{ $.c = %please$% }', True),
    ('{ $.c = %^please% }', False),
    ('{ $.c != %Nope% }', True),
    # A comparison on a field the event does not have is false, also for != (use NOT EXISTS).
    ('{ $.a.missing != "X" }', False),
    ('{ $.a.missing = "X" || $.a.b = "X" }', True),
    ('{ $.a.b > 3 }', False),
])
def test_evaluator_follows_the_filter_pattern_syntax(pattern, expected):
    assert fp.matches(pattern, DOC) is expected


def test_a_json_pattern_never_matches_a_non_json_event():
    assert fp.matches('{ $.a NOT EXISTS }', "ERROR 401 UNAUTHORIZED") is False
    assert fp.matches('{ $.a NOT EXISTS }', '["not", "an", "object"]') is False


@pytest.mark.parametrize("pattern, message", [
    ('{ $.a.b = "X" ', "only JSON filter patterns"),
    ('{ ($.a.b = "X" }', "pattern ends early: expected ')'"),
    ('{ $.a.b == "X" }', "expected a quoted string or a word or a number or a %regex% at position 9"),
    ('{ $.a.b = "X" && }', "pattern ends early"),
    ('{ a.b = "X" }', "expected a selector like $.field at position 2, got 'a.b'"),
    ('{ $.a.b IS MAYBE }', "expected a keyword at position 11, got 'MAYBE'"),
    ('{ $.a.b NOT NULL }', "NOT must be followed by EXISTS"),
    ('{ $.a.b > "X" }', "needs a number"),
    ('{ $.a = %"quoted"% }', "does not support"),
    ('{ $.a = %(group)% }', "does not support"),
    ('{ $.a = %a b% }', "does not support"),
    ('{ $.a = %x% && $.b = %y% && $.c = %z% }', "at most 2"),
    ('{ }', "empty JSON filter pattern"),
])
def test_evaluator_rejects_a_broken_pattern(pattern, message):
    with pytest.raises(fp.PatternError, match=re.escape(message)):
        fp.compile_pattern(pattern)
