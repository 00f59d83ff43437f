"""What the real ADOT v0.49.0 `awscloudwatchlogs` exporter delivered for one demo run, for tests.

The fixture (../../../shared/fixtures/adot-0.49.0-cloudwatch-logs-demo.jsonl.gz, see the README beside
it) holds 4,772 CloudWatch events, one JSON object per line, exactly as the exporter built them. It
was recorded before the app's OTLP records followed the OTel conventions (it still repeats trace_id /
span_id as attributes and names exceptions error_type / error_msg / stack); `current_shape` applies the
app's present attribute mapping (dora_otel.logs.otlp_attributes) to an event, so query field names
are checked against what the exporter delivers today.

Also: `insights_fields` lists the field names Logs Insights discovers in an event (nested JSON keys
joined with dots, as Insights flattens them) and `query_fields` the `attributes.*` / `body` names a
query refers to.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# CI and every worktree have shared/ beside the clone (here ../shared is a symlink to it).
FIXTURE = REPO.parent / "shared" / "fixtures" / "adot-0.49.0-cloudwatch-logs-demo.jsonl.gz"


def load_events(path: Path = FIXTURE) -> list[str]:
    """The event messages, byte for byte as the exporter wrote them (what metric filters read)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: the real-exporter fixture is missing; CI must check out shared/ "
                                f"beside the repository (see shared/fixtures/README.md)")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def current_shape(event: dict[str, Any]) -> dict[str, Any]:
    """The event as the exporter delivers it for today's app: the app's attribute mapping applied."""
    from dora_otel.logs import otlp_attributes

    return {**event, "attributes": otlp_attributes(event.get("attributes") or {})}


def insights_fields(event: dict[str, Any], prefix: str = "") -> set[str]:
    """Field names Logs Insights discovers in a JSON event: nested keys joined with '.'."""
    out: set[str] = set()
    for key, value in event.items():
        name = f"{prefix}{key}"
        out.add(name)
        if isinstance(value, dict):
            out |= insights_fields(value, f"{name}.")
    return out


# attributes.<name> where <name> may itself hold dots (exception.type); stops at space, comma, bracket.
_FIELD = re.compile(r"\b(attributes\.[A-Za-z0-9_.]*[A-Za-z0-9_]|body(?:\.[A-Za-z0-9_]+)?)\b")
_EVENT_TYPE = re.compile(r'attributes\.event_type\s*=\s*"([A-Z_]+)"')
_EVENT_TYPES_IN = re.compile(r'attributes\.event_type\s+in\s+\[([^\]]*)\]')


def query_fields(query: str) -> set[str]:
    """Every event field a Logs Insights query reads (`@`-fields and aliases left out)."""
    return set(_FIELD.findall(query))


def query_event_types(query: str) -> set[str]:
    """The event_type values a query filters on (empty: any)."""
    found = set(_EVENT_TYPE.findall(query))
    for group in _EVENT_TYPES_IN.findall(query):
        found |= set(re.findall(r'"([A-Z_]+)"', group))
    return found
