"""Configuration: every environment variable dora-otel reads, and the resolved `Config`.

Precedence: arguments to `setup()` win over the environment, which wins over the defaults here.
A bad *argument* fails early with a `ValueError` naming the parameter and its value; a bad
*environment* value is reported (an `EnvProblem`: `setup()` logs one ERROR line naming the variable
and value) and the default is used, so a typo in a unit file cannot stop a bot. That includes the
OpenTelemetry SDK's own variables that would make it raise (`otel_batch_settings`,
`otel_span_limit_overrides`): their valid values are passed to the SDK explicitly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

_log = logging.getLogger("dora_otel.config")

# Standard OpenTelemetry variables we honour.
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
# Per-signal variants (OTel spec "OTLP Exporter Configuration"): each wins over the base variable for
# its signal, and a per-signal endpoint is used as given (the base one gets /v1/traces or /v1/logs
# appended for http/protobuf).
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_EXPORTER_OTLP_LOGS_ENDPOINT = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
OTEL_EXPORTER_OTLP_LOGS_PROTOCOL = "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"
SIGNALS = ("traces", "logs")
OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"

# Ours.
DORA_ENV = "DORA_ENV"
BOT_VERSION = "BOT_VERSION"
CONTAINER_MODE = "CONTAINER_MODE"
DORA_DATA_DIR = "DORA_DATA_DIR"
DORA_LOG_LEVEL = "DORA_LOG_LEVEL"
DORA_LEDGER = "DORA_LEDGER"
DORA_LEDGER_FSYNC = "DORA_LEDGER_FSYNC"
DORA_LEDGER_MAX_BYTES = "DORA_LEDGER_MAX_BYTES"
DORA_LEDGER_TTL_DAYS = "DORA_LEDGER_TTL_DAYS"
DORA_STRICT = "DORA_STRICT"
DORA_SHUTDOWN_TIMEOUT = "DORA_SHUTDOWN_TIMEOUT"
DORA_INSTANCE_ID = "DORA_INSTANCE_ID"
DORA_WATCHDOG_SECONDS = "DORA_WATCHDOG_SECONDS"
DORA_SPANS_MAX_BYTES = "DORA_SPANS_MAX_BYTES"
DORA_SPANS_BACKUPS = "DORA_SPANS_BACKUPS"

# The SDK's batch span / log record processor variables, with the SDK's defaults.
_BATCH_DEFAULTS = {"MAX_QUEUE_SIZE": 2048, "SCHEDULE_DELAY": 5000, "MAX_EXPORT_BATCH_SIZE": 512}
_BATCH_ARGS = {"MAX_QUEUE_SIZE": "max_queue_size", "SCHEDULE_DELAY": "schedule_delay_millis",
               "MAX_EXPORT_BATCH_SIZE": "max_export_batch_size"}
# SpanLimits argument -> the SDK variable it reads when the argument is None (the SDK raises on a
# value that is not a non-negative integer).
_SPAN_LIMIT_VARS = {
    "max_attributes": "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "max_events": "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "max_links": "OTEL_SPAN_LINK_COUNT_LIMIT",
    "max_span_attributes": "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "max_event_attributes": "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "max_link_attributes": "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
    "max_attribute_length": "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "max_span_attribute_length": "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
}
# LogRecordLimits argument -> variable (the LoggerProvider behind OTLP log export reads these).
_LOG_LIMIT_VARS = {
    "max_attributes": "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "max_attribute_length": "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "max_log_record_attributes": "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT",
    "max_log_record_attribute_length": "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT",
}
_LIMIT_COUNT_DEFAULT = 128  # the SDK's default for every count limit; lengths default to no limit (-1: UNSET)
MIN_LEDGER_MAX_BYTES = 4096

ENVS = ("demo", "prod")
LEDGERS = ("sqlite", "dynamodb", "memory", "off")
PROTOCOLS = ("grpc", "http/protobuf")
FSYNC_POLICIES = ("always", "interval", "never")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class EnvProblem(NamedTuple):
    """A bad environment value: the variable, its raw value, what is wrong, and what is used."""

    name: str
    value: str
    reason: str
    using: Any

    def message(self) -> str:
        return f"ignoring {self.name}={self.value!r}: {self.reason}; using {self.using}"


def _report(problem: EnvProblem, problems: list[EnvProblem] | None) -> None:
    if problems is not None:
        problems.append(problem)
    else:
        _log.error(problem.message(), extra={"event_type": "ERROR", "error_type": "ConfigError",
                                             "env_var": problem.name, "env_value": problem.value})


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything `setup()` needs, resolved once. Field names are `setup()`'s keyword arguments."""

    service_name: str = "dora-bot"
    env: str = "demo"
    bot_version: str | None = None  # None: BOT_VERSION env, then git, then "unknown"
    container_mode: bool = False
    data_dir: Path = Path("dora-otel-data")
    log_level: str = "INFO"
    otlp_endpoint: str | None = None
    otlp_protocol: str = "grpc"
    # Per-signal: an endpoint used as given (a full URL for http/protobuf), a protocol; None means
    # "from otlp_endpoint / otlp_protocol". See `otlp_target`.
    otlp_traces_endpoint: str | None = None
    otlp_logs_endpoint: str | None = None
    otlp_traces_protocol: str | None = None
    otlp_logs_protocol: str | None = None
    sdk_disabled: bool = False
    ledger: str = "sqlite"
    ledger_fsync: str = "interval"
    ledger_max_bytes: int = 256 * 1024 * 1024
    ledger_ttl_days: int = 30
    strict: bool = False
    shutdown_timeout_s: float = 5.0
    watchdog_seconds: float = 10.0
    install_signal_handlers: bool = True
    stream: Any = None  # where JSON lines go; None means sys.stdout at setup time
    ledger_client: Any = None  # an injected boto3 DynamoDB client (tests, custom sessions)
    ledger_sink: Any = None  # an injected Sink object (wins over `ledger`)
    # exact secret values to mask everywhere, besides those read from env (scrub.py)
    secrets: Any = dataclasses.field(default=(), repr=False)
    spans_max_bytes: int = 32 * 1024 * 1024  # the spans file rotates past this size
    spans_backups: int = 3  # rotated spans files kept
    # An SDK TracerProvider the bot installed before setup() is used for dora's spans (otel_setup.py);
    # False: dora-otel builds its own provider and exporter next to it.
    adopt_provider: bool = True

    @classmethod
    def resolve(cls, overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None,
                problems: list[EnvProblem] | None = None) -> Config:
        """Merge defaults, `environ` and `overrides` (which win). Raises ValueError on a bad override.

        A bad environment value is appended to `problems` when given (setup() logs them once its
        logging is installed), else logged as an ERROR line right away; its default is used."""
        environ = os.environ if environ is None else environ
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"setup() got unknown argument(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        e = _EnvReader(environ, problems)
        values["service_name"] = e.text(OTEL_SERVICE_NAME, cls.service_name)
        values["env"] = e.choice(DORA_ENV, ENVS, cls.env)
        values["bot_version"] = e.text(BOT_VERSION, None)
        values["container_mode"] = e.flag(CONTAINER_MODE, False)
        values["data_dir"] = Path(e.text(DORA_DATA_DIR, None) or cls.data_dir)
        values["log_level"] = e.choice(DORA_LOG_LEVEL, ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", upper=True)
        values["otlp_endpoint"] = e.text(OTEL_EXPORTER_OTLP_ENDPOINT, None)
        values["otlp_protocol"] = e.choice(OTEL_EXPORTER_OTLP_PROTOCOL, PROTOCOLS, "grpc")
        values["otlp_traces_endpoint"] = e.url(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
        values["otlp_logs_endpoint"] = e.url(OTEL_EXPORTER_OTLP_LOGS_ENDPOINT)
        values["otlp_traces_protocol"] = e.choice(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, PROTOCOLS, None)
        values["otlp_logs_protocol"] = e.choice(OTEL_EXPORTER_OTLP_LOGS_PROTOCOL, PROTOCOLS, None)
        values["sdk_disabled"] = e.flag(OTEL_SDK_DISABLED, False)
        values["ledger"] = e.choice(DORA_LEDGER, LEDGERS, cls.ledger)
        values["ledger_fsync"] = e.choice(DORA_LEDGER_FSYNC, FSYNC_POLICIES, cls.ledger_fsync)
        values["ledger_max_bytes"] = e.number(DORA_LEDGER_MAX_BYTES, cls.ledger_max_bytes, int,
                                              MIN_LEDGER_MAX_BYTES, None)
        values["ledger_ttl_days"] = e.number(DORA_LEDGER_TTL_DAYS, cls.ledger_ttl_days, int, 30, 90)
        values["strict"] = e.flag(DORA_STRICT, False)
        values["shutdown_timeout_s"] = e.number(DORA_SHUTDOWN_TIMEOUT, cls.shutdown_timeout_s, float, 0.1, 300)
        values["watchdog_seconds"] = e.number(DORA_WATCHDOG_SECONDS, cls.watchdog_seconds, float, 0.0, 3600)
        values["spans_max_bytes"] = e.number(DORA_SPANS_MAX_BYTES, cls.spans_max_bytes, int, 4096, None)
        values["spans_backups"] = e.number(DORA_SPANS_BACKUPS, cls.spans_backups, int, 0, 100)
        for key, value in overrides.items():
            if value is not None:  # None means "not given": the environment or default stands
                values[key] = value
        for signal in SIGNALS:  # an argument beats every variable, the per-signal ones included
            for part in ("endpoint", "protocol"):
                if overrides.get(f"otlp_{part}") is not None and overrides.get(f"otlp_{signal}_{part}") is None:
                    values[f"otlp_{signal}_{part}"] = None
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ValueError naming the first bad field and its value."""
        _check_choice("env", self.env, ENVS)
        _check_choice("ledger", self.ledger, LEDGERS)
        _check_choice("otlp_protocol", self.otlp_protocol, PROTOCOLS)
        for signal in SIGNALS:
            protocol = getattr(self, f"otlp_{signal}_protocol")
            if protocol is not None:
                _check_choice(f"otlp_{signal}_protocol", protocol, PROTOCOLS)
            endpoint = getattr(self, f"otlp_{signal}_endpoint")
            if endpoint is not None and not _is_url(endpoint):
                raise ValueError(f"otlp_{signal}_endpoint ({endpoint!r}) must be an http:// or https:// URL")
        _check_choice("ledger_fsync", self.ledger_fsync, FSYNC_POLICIES)
        if not 30 <= int(self.ledger_ttl_days) <= 90:
            raise ValueError(f"ledger_ttl_days ({self.ledger_ttl_days}) must be between 30 and 90")
        if isinstance(self.ledger_max_bytes, bool) or not isinstance(self.ledger_max_bytes, int) \
                or self.ledger_max_bytes < MIN_LEDGER_MAX_BYTES:
            raise ValueError(
                f"ledger_max_bytes ({self.ledger_max_bytes!r}) must be an int >= {MIN_LEDGER_MAX_BYTES}")
        if self.shutdown_timeout_s <= 0:
            raise ValueError(f"shutdown_timeout_s ({self.shutdown_timeout_s}) must be > 0")
        try:
            secrets = () if isinstance(self.secrets, (str, bytes)) else tuple(self.secrets or ())
        except TypeError:
            secrets = ()
        if isinstance(self.secrets, (str, bytes)) or (self.secrets and not secrets) or not all(
                isinstance(v, (str, bytes)) for v in secrets):
            raise ValueError(f"secrets ({type(self.secrets).__name__}) must be a list of strings")
        object.__setattr__(self, "secrets", secrets)
        if int(self.spans_max_bytes) < 1024:
            raise ValueError(f"spans_max_bytes ({self.spans_max_bytes}) must be >= 1024")
        if not 0 <= int(self.spans_backups) <= 100:
            raise ValueError(f"spans_backups ({self.spans_backups}) must be between 0 and 100")
        if not isinstance(self.data_dir, Path):
            object.__setattr__(self, "data_dir", Path(self.data_dir))


    def otlp_target(self, signal: str) -> OtlpTarget | None:
        """Where `signal` ("traces" or "logs") is exported over OTLP, or None (it stays local).

        The OTel specification's precedence: the per-signal endpoint, used as given, else the base
        `otlp_endpoint` (with `/v1/traces` or `/v1/logs` appended for http/protobuf); the per-signal
        protocol, else `otlp_protocol`. Either endpoint alone enables OTLP for its signal. (setup()
        arguments already beat every variable, see `resolve`.)"""
        if self.sdk_disabled:
            return None
        protocol = getattr(self, f"otlp_{signal}_protocol") or self.otlp_protocol
        endpoint = getattr(self, f"otlp_{signal}_endpoint")
        if endpoint:
            return OtlpTarget(signal, endpoint, protocol)
        if not self.otlp_endpoint:
            return None
        if protocol == "http/protobuf":
            return OtlpTarget(signal, self.otlp_endpoint.rstrip("/") + f"/v1/{signal}", protocol)
        return OtlpTarget(signal, self.otlp_endpoint, protocol)


class OtlpTarget(NamedTuple):
    """One signal's OTLP destination: `endpoint` exactly as the exporter gets it."""

    signal: str
    endpoint: str
    protocol: str


def _is_url(value: str) -> bool:
    parsed = urlsplit(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} ({value!r}) must be one of {', '.join(choices)}")


def otel_batch_settings(prefix: str, environ: Mapping[str, str] | None = None,
                        problems: list[EnvProblem] | None = None) -> dict[str, int]:
    """Explicit `BatchSpanProcessor` / `BatchLogRecordProcessor` arguments (`prefix` "OTEL_BSP_" or
    "OTEL_BLRP_") from the environment: valid values as given, each bad one (not a positive integer,
    or a batch size above the queue size, which the SDK answers with ValueError) reported and
    replaced by the SDK default. Passed explicitly, the SDK does not read the variables itself."""
    environ = os.environ if environ is None else environ
    out: dict[str, int] = {}
    for key, default in _BATCH_DEFAULTS.items():
        name = prefix + key
        raw = environ.get(name)
        out[key] = default
        if raw is None or not raw.strip():
            continue
        try:
            value = int(raw.strip())
        except ValueError:
            _report(EnvProblem(name, raw, "not an integer", default), problems)
            continue
        if value <= 0:
            _report(EnvProblem(name, raw, "must be a positive integer", default), problems)
            continue
        out[key] = value
    if out["MAX_EXPORT_BATCH_SIZE"] > out["MAX_QUEUE_SIZE"]:
        # The SDK requires batch <= queue: blame the variable(s) that are set; the defaults fit.
        reason = (f"{prefix}MAX_EXPORT_BATCH_SIZE ({out['MAX_EXPORT_BATCH_SIZE']}) must not exceed "
                  f"{prefix}MAX_QUEUE_SIZE ({out['MAX_QUEUE_SIZE']})")
        for key in ("MAX_QUEUE_SIZE", "MAX_EXPORT_BATCH_SIZE"):
            name = prefix + key
            if out[key] != _BATCH_DEFAULTS[key]:
                _report(EnvProblem(name, environ.get(name, ""), reason, _BATCH_DEFAULTS[key]), problems)
                out[key] = _BATCH_DEFAULTS[key]
    return {_BATCH_ARGS[key]: value for key, value in out.items()}


def otel_span_limit_overrides(environ: Mapping[str, str] | None = None,
                              problems: list[EnvProblem] | None = None) -> dict[str, int]:
    """`SpanLimits` arguments replacing the span-limit variables the SDK would raise on (not a
    non-negative integer), with the SDK defaults; empty when every variable is fine."""
    return _limit_overrides(_SPAN_LIMIT_VARS, environ, problems)


def otel_log_limit_overrides(environ: Mapping[str, str] | None = None,
                             problems: list[EnvProblem] | None = None) -> dict[str, int]:
    """The same for `LogRecordLimits` (OTLP log export)."""
    return _limit_overrides(_LOG_LIMIT_VARS, environ, problems)


def _limit_overrides(variables: Mapping[str, str], environ: Mapping[str, str] | None,
                     problems: list[EnvProblem] | None) -> dict[str, int]:
    environ = os.environ if environ is None else environ
    out: dict[str, int] = {}
    for argument, name in variables.items():
        raw = environ.get(name)
        if raw is None or not raw.strip():
            continue
        text = raw.strip()
        if not (text.isdigit() and text.isascii()):
            default = -1 if argument.endswith("_length") else _LIMIT_COUNT_DEFAULT
            out[argument] = default
            _report(EnvProblem(name, raw, "must be a non-negative integer",
                               "no limit" if default < 0 else default), problems)
    return out


class _EnvReader:
    """Reads one variable at a time; a bad value is reported (see `_report`) and the default used."""

    def __init__(self, environ: Mapping[str, str], problems: list[EnvProblem] | None = None) -> None:
        self._env = environ
        self._problems = problems

    def text(self, name: str, default: str | None) -> str | None:
        value = self._env.get(name, "").strip()
        return value or default

    def flag(self, name: str, default: bool) -> bool:
        raw = self._env.get(name)
        if raw is None:
            return default
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        _report(EnvProblem(name, raw, "expected true or false", default), self._problems)
        return default

    def url(self, name: str) -> str | None:
        raw = self._env.get(name)
        if raw is None or not raw.strip():
            return None
        if _is_url(raw.strip()):
            return raw.strip()
        _report(EnvProblem(name, raw, "expected an http:// or https:// URL", "no per-signal endpoint"),
                self._problems)
        return None

    def choice(self, name: str, choices: tuple[str, ...], default: Any, upper: bool = False) -> Any:
        raw = self._env.get(name)
        if raw is None or not raw.strip():
            return default
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value in choices:
            return value
        _report(EnvProblem(name, raw, f"expected one of {', '.join(choices)}", default), self._problems)
        return default

    def number(self, name: str, default: Any, kind: type, low: Any, high: Any) -> Any:
        raw = self._env.get(name)
        if raw is None or not raw.strip():
            return default
        try:
            value = kind(raw.strip())
        except ValueError:
            _report(EnvProblem(name, raw, "not a number", default), self._problems)
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            _report(EnvProblem(name, raw, f"must be {bounds}", default), self._problems)
            return default
        return value
