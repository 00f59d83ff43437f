"""Configuration: every environment variable dora-otel reads, and the resolved `Config`.

Precedence: arguments to `setup()` win over the environment, which wins over the defaults here.
A bad *argument* fails early with a `ValueError` naming the parameter and its value; a bad
*environment* value is logged and the default is used, so a typo in a unit file cannot stop a bot.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Mapping

_log = logging.getLogger("dora_otel.config")

# Standard OpenTelemetry variables we honour.
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
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

ENVS = ("demo", "prod")
LEDGERS = ("sqlite", "dynamodb", "memory", "off")
PROTOCOLS = ("grpc", "http/protobuf")
FSYNC_POLICIES = ("always", "interval", "never")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


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
    secrets: Any = dataclasses.field(default=(), repr=False)  # exact secret values to mask everywhere, besides those read from env (scrub.py)
    spans_max_bytes: int = 32 * 1024 * 1024  # the spans file rotates past this size
    spans_backups: int = 3  # rotated spans files kept

    @classmethod
    def resolve(cls, overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
        """Merge defaults, `environ` and `overrides` (which win). Raises ValueError on a bad override."""
        environ = os.environ if environ is None else environ
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"setup() got unknown argument(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        e = _EnvReader(environ)
        values["service_name"] = e.text(OTEL_SERVICE_NAME, cls.service_name)
        values["env"] = e.choice(DORA_ENV, ENVS, cls.env)
        values["bot_version"] = e.text(BOT_VERSION, None)
        values["container_mode"] = e.flag(CONTAINER_MODE, False)
        values["data_dir"] = Path(e.text(DORA_DATA_DIR, str(cls.data_dir)))
        values["log_level"] = e.choice(DORA_LOG_LEVEL, ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", upper=True)
        values["otlp_endpoint"] = e.text(OTEL_EXPORTER_OTLP_ENDPOINT, None)
        values["otlp_protocol"] = e.choice(OTEL_EXPORTER_OTLP_PROTOCOL, PROTOCOLS, "grpc")
        values["sdk_disabled"] = e.flag(OTEL_SDK_DISABLED, False)
        values["ledger"] = e.choice(DORA_LEDGER, LEDGERS, cls.ledger)
        values["ledger_fsync"] = e.choice(DORA_LEDGER_FSYNC, FSYNC_POLICIES, cls.ledger_fsync)
        values["ledger_max_bytes"] = e.number(DORA_LEDGER_MAX_BYTES, cls.ledger_max_bytes, int, 1024, None)
        values["ledger_ttl_days"] = e.number(DORA_LEDGER_TTL_DAYS, cls.ledger_ttl_days, int, 30, 90)
        values["strict"] = e.flag(DORA_STRICT, False)
        values["shutdown_timeout_s"] = e.number(DORA_SHUTDOWN_TIMEOUT, cls.shutdown_timeout_s, float, 0.1, 300)
        values["watchdog_seconds"] = e.number(DORA_WATCHDOG_SECONDS, cls.watchdog_seconds, float, 0.0, 3600)
        values["spans_max_bytes"] = e.number(DORA_SPANS_MAX_BYTES, cls.spans_max_bytes, int, 4096, None)
        values["spans_backups"] = e.number(DORA_SPANS_BACKUPS, cls.spans_backups, int, 0, 100)
        for key, value in overrides.items():
            if value is not None:  # None means "not given": the environment or default stands
                values[key] = value
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ValueError naming the first bad field and its value."""
        _check_choice("env", self.env, ENVS)
        _check_choice("ledger", self.ledger, LEDGERS)
        _check_choice("otlp_protocol", self.otlp_protocol, PROTOCOLS)
        _check_choice("ledger_fsync", self.ledger_fsync, FSYNC_POLICIES)
        if not 30 <= int(self.ledger_ttl_days) <= 90:
            raise ValueError(f"ledger_ttl_days ({self.ledger_ttl_days}) must be between 30 and 90")
        if self.ledger_max_bytes < 1024:
            raise ValueError(f"ledger_max_bytes ({self.ledger_max_bytes}) must be >= 1024")
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


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} ({value!r}) must be one of {', '.join(choices)}")


class _EnvReader:
    """Reads one variable at a time; a bad value is logged (once per read) and the default used."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._env = environ

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
        _log.warning("ignoring %s=%r: expected true or false; using %s", name, raw, default)
        return default

    def choice(self, name: str, choices: tuple[str, ...], default: str, upper: bool = False) -> str:
        raw = self._env.get(name)
        if raw is None or not raw.strip():
            return default
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value in choices:
            return value
        _log.warning("ignoring %s=%r: expected one of %s; using %s", name, raw, ", ".join(choices), default)
        return default

    def number(self, name: str, default: Any, kind: type, low: Any, high: Any) -> Any:
        raw = self._env.get(name)
        if raw is None or not raw.strip():
            return default
        try:
            value = kind(raw.strip())
        except ValueError:
            _log.warning("ignoring %s=%r: not a number; using %s", name, raw, default)
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            _log.warning("ignoring %s=%r: outside %s..%s; using %s", name, raw, low, high, default)
            return default
        return value
