"""Metric filters and saved queries against what the real ADOT exporter delivered (not a model of it).

Every alarm's OTLP-path metric filter must match exactly the fixture events it is about — expected
sets computed here from the events' own attributes (event_type, status), not by the filter
evaluator — and every field a saved Logs Insights query (or explain's CloudWatch backend) reads must
exist in the events it filters for. Broken inputs (a filter that misses events, a query on a field
the exporter does not deliver) are fed to the same checks to show they fail.
"""

from __future__ import annotations

import json
from collections import Counter

import cfn_template
import cw_alarms
import cw_filter_pattern as fp
import pytest
import real_exporter as rx

from dora_otel.query.aws import decision_insights_query

OBS = cw_alarms.load()
MESSAGES = rx.load_events()
EVENTS = [json.loads(m) for m in MESSAGES]
CURRENT = [rx.current_shape(e) for e in EVENTS]


def _attrs(i: int) -> dict:
    return EVENTS[i]["attributes"]


# Which fixture events each alarm is about, from the attributes alone.
EXPECTED = {
    "errors": {i for i in range(len(EVENTS)) if _attrs(i).get("event_type") == "ERROR"},
    "order-failures": {i for i in range(len(EVENTS)) if _attrs(i).get("event_type") == "ORDER_RESULT"
                       and _attrs(i).get("status") != "ACCEPTED"},
    "risk-halt": {i for i in range(len(EVENTS)) if _attrs(i).get("event_type") == "RISK_HALT"},
}


def filter_mismatches(patterns: list[fp.FilterPattern], expected: set[int]) -> tuple[list[int], list[int]]:
    """(missed, extra): fixture events the patterns should count but do not, and the reverse."""
    matched = {i for i, message in enumerate(MESSAGES) if any(p.matches(message) for p in patterns)}
    return sorted(expected - matched), sorted(matched - expected)


def field_problems(name: str, query: str, events: list[dict]) -> list[str]:
    """Fields `query` reads that no event of the event types it filters on holds."""
    kinds = rx.query_event_types(query)
    pool = [e for e in events if not kinds or e["attributes"].get("event_type") in kinds]
    if not pool:
        return [f"{name}: no fixture event has event_type in {sorted(kinds)}"]
    present = set().union(*(rx.insights_fields(e) for e in pool))
    return [f"{name}: {field} is in no {'/'.join(sorted(kinds)) or 'fixture'} event"
            for field in sorted(rx.query_fields(query)) if field not in present]


def _app_queries() -> dict[str, str]:
    obs = cfn_template.load(cw_alarms.TEMPLATE)
    return {cfn_template.sub_text(p["Name"]): p["QueryString"]
            for _, p in cfn_template.resources(obs, "AWS::Logs::QueryDefinition")
            if p["LogGroupNames"] == [{"Ref": "AppLogGroup"}]}


# --- the fixture is what its README says ---------------------------------------------------------------

def test_fixture_holds_the_demo_run_its_readme_describes():
    kinds = Counter(e["attributes"]["event_type"] for e in EVENTS)
    assert len(EVENTS) == 4772
    assert kinds == {"ORDER_PLACE": 1109, "ORDER_RESULT": 1109, "ORDER_CANCEL": 1028, "LOG": 665,
                     "DECISION_MADE": 540, "FILL": 272, "ERROR": 28, "HEARTBEAT": 18, "STARTUP": 1,
                     "RISK_HALT": 1, "SHUTDOWN": 1}
    statuses = Counter(e["attributes"].get("status") for e in EVENTS if e["attributes"]["event_type"] == "ORDER_RESULT")
    assert statuses == {"ACCEPTED": 1034, "UNKNOWN": 52, "REJECTED": 23}
    assert {len(v) for v in EXPECTED.values()} == {28, 52 + 23, 1}


# --- metric filters ------------------------------------------------------------------------------------

@pytest.mark.parametrize("alarm", sorted(EXPECTED))
def test_every_alarms_otlp_filter_matches_exactly_the_events_it_is_about(alarm):
    filters = OBS.filters_for(alarm, "otlp")
    assert filters
    missed, extra = filter_mismatches([f.pattern for f in filters], EXPECTED[alarm])
    assert (missed, extra) == ([], []), (
        f"{alarm}: missed {[MESSAGES[i][:200] for i in missed[:3]]}, extra {[MESSAGES[i][:200] for i in extra[:3]]}")


def test_alarm_values_over_the_whole_run_are_the_fixture_counts():
    counts = OBS.counts({"otlp": MESSAGES})
    assert OBS.alarms["errors"].value(counts) == 28
    assert OBS.alarms["order-failures"].value(counts) == 75
    assert OBS.alarms["risk-halt"].value(counts) == 1


@pytest.mark.parametrize("broken, missed", [
    # Counts REJECTED only: the 52 UNKNOWN results (timeouts) slip through.
    ('{ $.attributes.event_type = "ORDER_RESULT" && $.attributes.status = "REJECTED" }', 52),
    # Addresses the field at the top level, as with raw_log: true: the exporter's JSON has it under attributes.
    ('{ $.event_type = "ORDER_RESULT" && $.status != "ACCEPTED" }', 75),
])
def test_a_filter_that_misses_fixture_events_fails_the_check(broken, missed):
    got_missed, extra = filter_mismatches([fp.compile_pattern(broken)], EXPECTED["order-failures"])
    assert (len(got_missed), extra) == (missed, [])


def test_a_filter_that_counts_too_much_fails_the_check():
    # Forgets the event_type: every ERROR-status cancel and each non-ACCEPTED status anywhere counts.
    _, extra = filter_mismatches([fp.compile_pattern('{ $.attributes.status != "ACCEPTED" }')],
                                 EXPECTED["order-failures"])
    assert extra


# --- Logs Insights field names -------------------------------------------------------------------------

def test_fixture_in_todays_shape_has_no_repeated_ids_and_names_exceptions_by_convention():
    assert not any({"trace_id", "span_id"} & set(e["attributes"]) for e in CURRENT)
    with_exc = [e for e in CURRENT if "exception.type" in e["attributes"]]
    assert len(with_exc) == 103 and all("exception.stacktrace" in e["attributes"] for e in with_exc)
    assert not any({"error_type", "error_msg", "stack"} & set(e["attributes"]) for e in CURRENT)


@pytest.mark.parametrize("name", sorted(_app_queries()))
def test_saved_query_reads_only_fields_the_exporter_delivers(name):
    query = _app_queries()[name]
    assert rx.query_fields(query), f"{name}: no fields found (the parser is broken?)"
    assert field_problems(name, query, CURRENT) == []


def test_explains_cloudwatch_query_reads_only_fields_the_exporter_delivers():
    query = decision_insights_query(EVENTS[1]["attributes"]["decision_id"])
    assert field_problems("explain", query, CURRENT) == []


def test_a_query_on_a_field_the_exporter_does_not_deliver_fails_the_check():
    # The pre-convention names: not in today's records (error_msg is now exception.message).
    broken = 'fields attributes.error_msg as error_msg, attributes.trace_id | filter attributes.event_type = "ERROR"'
    assert field_problems("broken", broken, CURRENT) == [
        "broken: attributes.error_msg is in no ERROR event", "broken: attributes.trace_id is in no ERROR event"]
    # A field that only other event types carry is caught too.
    assert field_problems("fills", 'fields attributes.pnl_delta | filter attributes.event_type = "ERROR"', CURRENT) == [
        "fills: attributes.pnl_delta is in no ERROR event"]
