"""Read CloudFormation YAML templates (with !Ref, !Sub, !GetAtt ... short forms) into plain dicts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


class _CfnLoader(yaml.SafeLoader):
    pass


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)


def resources(template: dict[str, Any], rtype: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, res in (template.get("Resources") or {}).items():
        if res.get("Type") == rtype:
            yield name, res.get("Properties") or {}


def sub_text(value: Any) -> str:
    """The template text of a plain string or a one-argument !Sub."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
        return value["Fn::Sub"]
    raise TypeError(f"not a string or a simple !Sub: {value!r}")


def render(value: Any, params: dict[str, str]) -> str:
    """Resolve a string / !Sub / !Ref against parameter values and pseudo parameters."""
    if isinstance(value, dict) and "Ref" in value:
        return params[value["Ref"]]
    text = sub_text(value)
    for key, val in params.items():
        text = text.replace("${" + key + "}", val)
    return text
