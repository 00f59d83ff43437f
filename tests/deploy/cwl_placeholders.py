"""The awscloudwatchlogs exporter's log group / stream name placeholders, as the contrib source has them.

Source: opentelemetry-collector-contrib v0.156.0, exporter/awscloudwatchlogsexporter/util.go
(`patternKeyToAttributeMap`, `isPatternValid`, `replacePatterns`, `replacePatternWithAttrValue`,
`replace`, `anyMapToStringMap`) and its util_test.go. Reimplemented here (not copied) so tests can
compute the stream a set of resource attributes lands in:

* valid placeholders are exactly the keys of the map below; the exporter's config validation rejects
  any other ``{Name}``, including ``{}``;
* a placeholder is filled from the resource attribute named like the placeholder itself
  (e.g. ``InstanceId``) if present, else from the mapped semantic-convention attribute
  (``{InstanceId}`` <- ``service.instance.id``, *not* the EC2 host id);
* a missing attribute, or one whose value is the empty string, becomes the literal ``undefined``;
* non-string attribute values are formatted (Go ``%v``; bools as true/false).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

PATTERN_KEY_TO_ATTRIBUTE: dict[str, str] = {
    "ClusterName": "aws.ecs.cluster.name",
    "TaskId": "aws.ecs.task.id",
    "NodeName": "k8s.node.name",
    "PodName": "pod",
    "ServiceName": "service.name",
    "ContainerInstanceId": "aws.ecs.container.instance.id",
    "TaskDefinitionFamily": "aws.ecs.task.family",
    "InstanceId": "service.instance.id",
    "FaasName": "faas.name",
    "FaasVersion": "faas.version",
}
UNDEFINED = "undefined"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def invalid_placeholder(name_pattern: str) -> str | None:
    """The first placeholder the exporter would reject, or None when the pattern is valid."""
    if "{" not in name_pattern and "}" not in name_pattern:
        return None
    for match in _PLACEHOLDER.finditer(name_pattern):
        if match.group(1) not in PATTERN_KEY_TO_ATTRIBUTE:
            return match.group(1)
    return None


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def resolve(name_pattern: str, resource_attributes: Mapping[str, Any]) -> str:
    """The group/stream name the exporter derives for records with these resource attributes."""
    attrs = {k: _as_text(v) for k, v in resource_attributes.items()}
    out = name_pattern
    for key, attribute in PATTERN_KEY_TO_ATTRIBUTE.items():
        token = "{" + key + "}"
        if token not in out:
            continue
        if key in attrs:
            value = attrs[key]
        elif attribute in attrs:
            value = attrs[attribute]
        else:
            value = ""
        out = out.replace(token, value if value != "" else UNDEFINED)
    return out
