"""The metric filters and alarms of deploy/cloudformation/observability.yaml, as an offline model.

`load()` reads the template and returns its metric filters (compiled with cw_filter_pattern) and its
alarms; `Alarm.value()` computes an alarm's metric-math expression from per-metric counts, and
`Alarm.breaches()` applies its threshold, so tests can say "these log events raise that alarm".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import cfn_template
import cw_filter_pattern

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "cloudformation" / "observability.yaml"
# Log group resource -> delivery path.
PATHS = {"AppLogGroup": "otlp", "JournalLogGroup": "journald"}


@dataclass(frozen=True)
class MetricFilter:
    resource: str
    path: str  # "otlp" | "journald"
    metric: str
    pattern: cw_filter_pattern.FilterPattern


@dataclass(frozen=True)
class Alarm:
    key: str  # "errors" | "order-failures" | "risk-halt"
    name_template: str
    threshold: float
    comparison: str
    treat_missing: str
    metrics: Mapping[str, str]  # metric-math id -> MetricName
    expression: str

    def value(self, counts: Mapping[str, int]) -> float:
        """The expression's value for one period, given Sum counts per MetricName."""
        m = re.fullmatch(r"MAX\(\[([a-z][A-Za-z0-9_]*(?:,\s*[a-z][A-Za-z0-9_]*)*)\]\)", self.expression)
        if m is None:
            raise ValueError(f"{self.key}: expression {self.expression!r} is not MAX([ids]) — extend the model")
        ids = [i.strip() for i in m.group(1).split(",")]
        return max(counts.get(self.metrics[i], 0) for i in ids)

    def breaches(self, counts: Mapping[str, int]) -> bool:
        v = self.value(counts)
        return {"GreaterThanThreshold": v > self.threshold,
                "GreaterThanOrEqualToThreshold": v >= self.threshold}[self.comparison]


@dataclass(frozen=True)
class Observability:
    filters: list[MetricFilter]
    alarms: dict[str, Alarm]

    def filters_for(self, alarm_key: str, path: str) -> list[MetricFilter]:
        names = set(self.alarms[alarm_key].metrics.values())
        return [f for f in self.filters if f.metric in names and f.path == path]

    def counts(self, events: Mapping[str, Iterable[str]]) -> dict[str, int]:
        """Sum per MetricName over CloudWatch events grouped by path ("otlp" / "journald")."""
        out: dict[str, int] = {}
        for f in self.filters:
            out[f.metric] = out.get(f.metric, 0) + sum(1 for e in events.get(f.path, ()) if f.pattern.matches(e))
        return out


def load(path: Path = TEMPLATE) -> Observability:
    template = cfn_template.load(path)
    filters = []
    for name, props in cfn_template.resources(template, "AWS::Logs::MetricFilter"):
        group = props["LogGroupName"]["Ref"]
        (transform,) = props["MetricTransformations"]
        filters.append(MetricFilter(name, PATHS[group], transform["MetricName"],
                                    cw_filter_pattern.compile_pattern(props["FilterPattern"])))
    alarms = {}
    for _, props in cfn_template.resources(template, "AWS::CloudWatch::Alarm"):
        name = cfn_template.sub_text(props["AlarmName"])
        key = re.fullmatch(r"dora-bot-(.+)-\$\{Env\}", name).group(1)  # type: ignore[union-attr]
        metrics = {q["Id"]: q["MetricStat"]["Metric"]["MetricName"] for q in props["Metrics"] if "MetricStat" in q}
        (expr,) = [q["Expression"] for q in props["Metrics"] if q.get("ReturnData")]
        alarms[key] = Alarm(key, name, float(props["Threshold"]), props["ComparisonOperator"],
                            props["TreatMissingData"], metrics, expr)
    return Observability(filters, alarms)
