"""Least-privilege checks for IAM policy documents.

Rules: policy language version 2012-10-17; Allow statements only; no NotAction / NotResource; every
action named in full (no `*` anywhere in an action); `"Resource": "*"` only for actions that support
no resource-level permissions (Service Authorization Reference, "Actions, resources, and condition
keys" for AWS X-Ray and Amazon CloudWatch Logs: the Resource types column is empty for these).
"""

from __future__ import annotations

from typing import Any

NO_RESOURCE_LEVEL = frozenset({
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "logs:GetQueryResults",
    "logs:StopQuery",
})


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def actions(doc: dict[str, Any]) -> set[str]:
    return {a for st in _as_list(doc.get("Statement", [])) for a in _as_list(st.get("Action", []))}


def problems(doc: Any) -> list[str]:
    """Every least-privilege violation in a policy document, as sentences naming the statement."""
    if not isinstance(doc, dict):
        return ["policy: must be a JSON object"]
    out: list[str] = []
    if doc.get("Version") != "2012-10-17":
        out.append(f"Version: must be 2012-10-17, got {doc.get('Version')!r}")
    statements = _as_list(doc.get("Statement"))
    if not statements or statements == [None]:
        out.append("Statement: missing")
        return out
    for i, st in enumerate(statements):
        where = f"Statement[{i}]" + (f" ({st.get('Sid')})" if isinstance(st, dict) and st.get("Sid") else "")
        if not isinstance(st, dict):
            out.append(f"{where}: must be an object")
            continue
        if st.get("Effect") != "Allow":
            out.append(f"{where}: Effect must be Allow, got {st.get('Effect')!r}")
        for key in ("NotAction", "NotResource", "NotPrincipal"):
            if key in st:
                out.append(f"{where}: {key} grants everything not listed; name what is allowed")
        acts = _as_list(st.get("Action"))
        if not acts or acts == [None]:
            out.append(f"{where}: no Action")
        for act in acts:
            if isinstance(act, str) and "*" in act:
                out.append(f"{where}: wildcard action {act!r}; name each action")
            elif not isinstance(act, str) or ":" not in act:
                out.append(f"{where}: malformed action {act!r}")
        resources = _as_list(st.get("Resource"))
        if not resources or resources == [None]:
            out.append(f"{where}: no Resource")
        if "*" in resources:
            broad = sorted(a for a in acts if isinstance(a, str) and a not in NO_RESOURCE_LEVEL)
            if broad:
                out.append(f"{where}: Resource \"*\" for {', '.join(broad)}, which support resource-level "
                           f"permissions; scope them to the log group / table")
    return out
