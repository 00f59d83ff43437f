"""Static checks of an OpenTelemetry collector config against the component catalogue.

The catalogue (data/collector_components.yaml) lists the components shipped in the ADOT collector
release we deploy and, for the ones we use, every config key their structs accept. `check_config`
returns problems as sentences that name the key path, e.g.
``exporters.awscloudwatchlogs.sending_queue.storrage: unknown key (accepted: ...)``.

Besides keys it checks what the collector itself refuses at start-up and what we rely on:
component names that are deprecated aliases in the release (catalogue `deprecated_aliases`),
pipelines name defined components of the right kind, extensions used by a queue are enabled,
`${env:NAME}` references are well formed, CloudWatch Logs name placeholders are valid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cwl_placeholders
import yaml

DATA = Path(__file__).parent / "data"
KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")
SIGNALS = ("traces", "metrics", "logs", "profiles")
# ${env:NAME} (and ${NAME}, the older form) are expanded by the collector's confmap at start-up.
_ENV_REF = re.compile(r"\$\{(?P<body>[^}]*)\}")
_ENV_BODY = re.compile(r"^(env:)?[A-Z_][A-Z0-9_]*(:-[^}]*)?$")


def load_catalogue(path: Path = DATA / "collector_components.yaml") -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_config(path: Path) -> dict[str, Any]:
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a collector config must be a mapping, got {type(cfg).__name__}")
    return cfg


def expand_env(value: Any, environ: dict[str, str]) -> Any:
    """Expand ${env:NAME} the way the collector does at start-up (unset -> empty string)."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name = m.group("body").removeprefix("env:").split(":-", 1)[0]
            return environ.get(name, "")
        return _ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v, environ) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, environ) for k, v in value.items()}
    return value


def component_type(component_id: str) -> str:
    """`batch/logs` -> `batch` (the part before the first slash is the type)."""
    return component_id.split("/", 1)[0]


# ---------------------------------------------------------------------------------------------------
# Key checking


def _struct_keys(spec: dict[str, Any], types: dict[str, Any], where: str) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for name in spec.get("include", []) or []:
        if name not in types:
            raise KeyError(f"catalogue: {where} includes unknown type {name!r}")
        keys.update(_struct_keys(types[name], types, f"type {name}"))
    keys.update(spec.get("struct", {}) or {})
    return keys


def _check_value(value: Any, spec: Any, path: str, types: dict[str, Any]) -> Iterable[str]:
    if spec == "any":
        return
    if spec == "scalar":
        if isinstance(value, (dict, list)):
            yield f"{path}: expected a single value, got a {type(value).__name__}"
        return
    if spec == "list":
        if not isinstance(value, list):
            yield f"{path}: expected a list, got {type(value).__name__}"
        elif any(isinstance(v, (dict, list)) for v in value):
            yield f"{path}: expected a list of single values"
        return
    if spec == "map":
        if value is not None and not isinstance(value, dict):
            yield f"{path}: expected a mapping, got {type(value).__name__}"
        return
    if isinstance(spec, dict) and "ref" in spec:
        if spec["ref"] not in types:
            raise KeyError(f"catalogue: {path} refers to unknown type {spec['ref']!r}")
        yield from _check_value(value, types[spec["ref"]], path, types)
        return
    if isinstance(spec, dict) and "list_of" in spec:
        if not isinstance(value, list):
            yield f"{path}: expected a list, got {type(value).__name__}"
            return
        for i, item in enumerate(value):
            yield from _check_value(item, spec["list_of"], f"{path}[{i}]", types)
        return
    if isinstance(spec, dict) and ("struct" in spec or "include" in spec):
        if value is None:  # `name:` with nothing after it means "defaults"
            return
        if not isinstance(value, dict):
            yield f"{path}: expected a mapping, got {type(value).__name__}"
            return
        keys = _struct_keys(spec, types, path)
        for key, sub in value.items():
            if key not in keys:
                accepted = ", ".join(sorted(keys)) or "none"
                yield f"{path}.{key}: unknown key (accepted: {accepted})"
                continue
            yield from _check_value(sub, keys[key], f"{path}.{key}", types)
        return
    raise ValueError(f"catalogue: bad spec at {path}: {spec!r}")


def check_component(kind: str, component_id: str, body: Any, catalogue: dict[str, Any]) -> list[str]:
    path = f"{kind}.{component_id}"
    ctype = component_type(component_id)
    shipped = catalogue["components"].get(kind, {}) or {}
    current = ((catalogue.get("deprecated_aliases") or {}).get(kind) or {}).get(ctype)
    if current is not None:
        return [f"{path}: {ctype!r} is a deprecated alias in {catalogue['release']}; "
                f"use {current!r} (the collector warns at start-up)"]
    if ctype not in shipped:
        missing = (catalogue.get("not_in_release", {}) or {}).get(kind, [])
        why = (f"not shipped in {catalogue['release']}" if ctype in missing
               else f"unknown {kind[:-1]} type (not in {catalogue['release']})")
        return [f"{path}: {why}"]
    entry = shipped[ctype]
    if entry is None:
        return [f"{path}: shipped, but its keys are not catalogued in data/collector_components.yaml "
                f"(read them from its config struct and add them)"]
    return list(_check_value(body, entry["spec"], path, catalogue["types"]))


# ---------------------------------------------------------------------------------------------------
# Whole-config checks


def _env_refs(value: Any, path: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        for m in _ENV_REF.finditer(value):
            yield path, m.group("body")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _env_refs(v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _env_refs(v, f"{path}.{k}")


def check_config(cfg: dict[str, Any], catalogue: dict[str, Any] | None = None) -> list[str]:
    """Every problem found in a collector config, as sentences naming the key path."""
    catalogue = catalogue or load_catalogue()
    problems: list[str] = []
    allowed_top = set(KINDS) | {"service"}
    for key in cfg:
        if key not in allowed_top:
            problems.append(f"{key}: unknown top-level section (accepted: {', '.join(sorted(allowed_top))})")

    defined: dict[str, set[str]] = {}
    for kind in KINDS:
        section = cfg.get(kind) or {}
        if not isinstance(section, dict):
            problems.append(f"{kind}: expected a mapping of component ids")
            continue
        defined[kind] = set(section)
        for cid, body in section.items():
            problems.extend(check_component(kind, cid, body, catalogue))

    service = cfg.get("service")
    if not isinstance(service, dict):
        problems.append("service: missing")
        return problems
    problems.extend(_check_value(service, catalogue["service"], "service", catalogue["types"]))

    for ext in service.get("extensions") or []:
        if ext not in defined.get("extensions", set()):
            problems.append(f"service.extensions: {ext!r} is not defined under extensions")
    for ext in defined.get("extensions", set()):
        if ext not in (service.get("extensions") or []):
            problems.append(f"extensions.{ext}: defined but not enabled in service.extensions")

    pipelines = service.get("pipelines")
    if not isinstance(pipelines, dict) or not pipelines:
        problems.append("service.pipelines: no pipeline defined")
        pipelines = {}
    used: dict[str, set[str]] = {k: set() for k in KINDS}
    for pid, pipe in pipelines.items():
        ppath = f"service.pipelines.{pid}"
        if component_type(pid) not in SIGNALS:
            problems.append(f"{ppath}: unknown signal {component_type(pid)!r} (accepted: {', '.join(SIGNALS)})")
        if not isinstance(pipe, dict):
            problems.append(f"{ppath}: expected a mapping")
            continue
        for key in pipe:
            if key not in ("receivers", "processors", "exporters"):
                problems.append(f"{ppath}.{key}: unknown key (accepted: exporters, processors, receivers)")
        for role in ("receivers", "exporters"):
            if not pipe.get(role):
                problems.append(f"{ppath}.{role}: a pipeline needs at least one")
        for role in ("receivers", "processors", "exporters"):
            for cid in pipe.get(role) or []:
                used[role].add(cid)
                if cid not in defined.get(role, set()):
                    problems.append(f"{ppath}.{role}: {cid!r} is not defined under {role}")
        procs = pipe.get("processors") or []
        limiters = [p for p in procs if component_type(p) == "memory_limiter"]
        if limiters and component_type(procs[0]) != "memory_limiter":
            problems.append(f"{ppath}.processors: memory_limiter must come first")
    for role in ("receivers", "processors", "exporters"):
        for cid in sorted(defined.get(role, set()) - used[role]):
            problems.append(f"{role}.{cid}: defined but used by no pipeline")

    # A persistent queue names its storage extension, which must exist and be enabled.
    for kind in ("exporters",):
        for cid, body in (cfg.get(kind) or {}).items():
            queue = (body or {}).get("sending_queue") if isinstance(body, dict) else None
            if isinstance(queue, dict) and queue.get("storage") is not None:
                storage = queue["storage"]
                if storage not in (service.get("extensions") or []):
                    problems.append(f"{kind}.{cid}.sending_queue.storage: extension {storage!r} "
                                    f"is not enabled in service.extensions")
                elif component_type(storage) != "file_storage":
                    problems.append(f"{kind}.{cid}.sending_queue.storage: {storage!r} is not a storage extension")

    # The CloudWatch Logs exporter refuses unknown {Placeholders} when it starts.
    for cid, body in (cfg.get("exporters") or {}).items():
        if component_type(cid) == "awscloudwatchlogs" and isinstance(body, dict):
            for key in ("log_group_name", "log_stream_name"):
                if not body.get(key):
                    problems.append(f"exporters.{cid}.{key}: must be set")
                    continue
                # ${env:...} is expanded when the config is resolved, before the exporter validates.
                resolved = _ENV_REF.sub("env", str(body[key]))
                bad = cwl_placeholders.invalid_placeholder(resolved)
                if bad is not None:
                    problems.append(f"exporters.{cid}.{key}: invalid placeholder {{{bad}}} (accepted: "
                                    f"{', '.join('{' + k + '}' for k in cwl_placeholders.PATTERN_KEY_TO_ATTRIBUTE)})")

    for path, body in _env_refs(cfg, "config"):
        if not _ENV_BODY.match(body):
            problems.append(f"{path[len('config.'):]}: malformed reference ${{{body}}} (use ${{env:NAME}})")
    return problems


def endpoints(cfg: dict[str, Any]) -> dict[str, str]:
    """Every `endpoint` a receiver or extension listens on, by key path."""
    found: dict[str, str] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "endpoint" and isinstance(v, str):
                    found[f"{path}.{k}"] = v
                else:
                    walk(v, f"{path}.{k}")

    for kind in ("receivers", "extensions"):
        walk(cfg.get(kind) or {}, kind)
    return found
