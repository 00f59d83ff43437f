"""The JSON a CloudWatch log event holds for one app log line, on each delivery path.

OTLP path (app -> OTLP -> ADOT awscloudwatchlogs exporter, raw_log: false) — the exporter marshals
`cwLogBody` (exporter/awscloudwatchlogsexporter/exporter.go, contrib v0.156.0): ``body``,
``severity_number``, ``severity_text``, ``dropped_attributes_count``, ``flags``, ``trace_id``,
``span_id``, ``attributes``, ``scope``, ``resource``, every one ``omitempty``. The app's OTLP log
handler puts the line's ``message`` in the body and every other line field except ts, level,
trace_id and span_id into the record's attributes (../../shared/FACTS.md); the ids travel only in
the record's own trace_id / span_id, and error_type / error_msg / stack are named as the OTel
semantic conventions name an exception: exception.type / exception.message / exception.stacktrace
(dora_otel.logs.otlp_attributes; written out again here so this model is an independent check).

journald path (stdout -> journald -> CloudWatch agent ``logs.logs_collected.journald``) — the agent
(amazon-cloudwatch-agent translator/translate/otel/pipeline/journald) runs the contrib journald
receiver and an awscloudwatchlogs exporter with the default ``raw_log: false``. The receiver
(pkg/stanza/operator/input/journald/input.go) makes the log body the whole ``journalctl
--output=json`` record minus ``__REALTIME_TIMESTAMP`` (the opt-in ``enable_otel_attributes`` mapping
is not used by the agent), so the app's JSON line is the *string* ``$.body.MESSAGE`` and its fields
are not addressable as JSON: the journal-path metric filters match them with regexes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# OTel logs data model: SeverityNumber for the stdlib level names the app writes.
SEVERITY_NUMBER = {"DEBUG": 5, "INFO": 9, "WARNING": 13, "WARN": 13, "ERROR": 17, "CRITICAL": 21, "FATAL": 21}
# Not record attributes: the line's own metadata (ts, level -> severity, message -> body, ids -> the
# record's trace context) and the run identity the formatter adds to every line (service, env,
# bot_version, bot_run_id: resource attributes on OTLP; logger: the instrumentation scope). A few
# events (STARTUP, SHUTDOWN) also carry env / bot_version as their own fields; this model, built
# from the flat line, cannot tell and leaves them out (test_deploy_otlp_conventions compares).
_NOT_ATTRIBUTES = ("ts", "level", "message", "trace_id", "span_id", "service", "env", "bot_version", "bot_run_id",
                   "logger")
# The OTel logging handler's severity text for a stdlib level name.
_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}
_EXCEPTION = {"error_type": "exception.type", "error_msg": "exception.message", "stack": "exception.stacktrace"}


def _attribute_value(value: Any) -> Any:
    """What an OTel attribute can hold: primitives and lists of primitives; others become JSON text."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, list) and all(isinstance(v, (str, bool, int, float)) for v in value):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)  # the app's compact JSON text


def otlp_record(line: Mapping[str, Any], resource: Mapping[str, Any]) -> dict[str, Any]:
    """The cwLogBody dict for one flat app line (before JSON encoding), zero values omitted."""
    attributes = {_EXCEPTION.get(k, k): _attribute_value(v) for k, v in line.items()
                  if k not in _NOT_ATTRIBUTES and v is not None}
    level = str(line.get("level", "")).upper()
    out: dict[str, Any] = {
        "body": line.get("message"),
        "severity_number": SEVERITY_NUMBER.get(level, 0),
        "severity_text": _SEVERITY_TEXT.get(level, level),
        "flags": 1 if line.get("trace_id") else 0,  # sampled trace context
        "trace_id": line.get("trace_id"),
        "span_id": line.get("span_id"),
        "attributes": attributes,
        "scope": {"name": line["logger"]} if line.get("logger") else None,
        "resource": dict(resource),
    }
    return {k: v for k, v in out.items() if v not in (None, "", 0, {})}


def otlp_event(line: Mapping[str, Any], resource: Mapping[str, Any]) -> str:
    """The CloudWatch event message for one app line delivered over OTLP."""
    return json.dumps(otlp_record(line, resource), separators=(",", ":"))


def journald_record(stdout_text: str, *, unit: str = "dora-bot.service", pid: int = 4242,
                    hostname: str = "ip-10-0-1-23", cursor: int = 1) -> dict[str, Any]:
    """The cwLogBody dict for one stdout line of the unit, as the CloudWatch agent ships it."""
    body = {
        "MESSAGE": stdout_text,
        "PRIORITY": "6",
        "SYSLOG_FACILITY": "3",
        "SYSLOG_IDENTIFIER": "dora-bot",
        "_TRANSPORT": "stdout",
        "_PID": str(pid),
        "_UID": "998",
        "_GID": "998",
        "_COMM": "python",
        "_EXE": "/opt/dora-bot/venv/bin/python3.11",
        "_CMDLINE": "/opt/dora-bot/venv/bin/python -m dora_bot",
        "_SYSTEMD_UNIT": unit,
        "_SYSTEMD_SLICE": "system.slice",
        "_HOSTNAME": hostname,
        "_BOOT_ID": "f0d1b58e375844c3961c527ffc365e6c",
        "_MACHINE_ID": "ec2a1b2c3d4e5f60718293a4b5c6d7e8",
        "__MONOTONIC_TIMESTAMP": str(598265666336 + cursor),
        "__CURSOR": f"s=92ed14a0f4d04f8f9b315bb73d09e814;i={cursor:x};b=f0d1b58e375844c3961c527ffc365e6c",
    }
    return {"body": body}


def journald_event(stdout_text: str, **kwargs: Any) -> str:
    """The CloudWatch event message for one stdout line delivered through journald."""
    return json.dumps(journald_record(stdout_text, **kwargs), separators=(",", ":"))
