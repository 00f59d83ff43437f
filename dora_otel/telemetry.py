"""`setup()` and the `Telemetry` handle: one call configures JSON logging, tracing and the
execution ledger; `Telemetry.shutdown()` flushes within a time budget and restores what it changed.

STARTUP is the first line a run logs; SHUTDOWN (reason, graceful) the last — also on SIGTERM and at
normal interpreter exit. `setup()` twice returns the same handle.
"""

from __future__ import annotations

import atexit
import logging
import signal
import sys
import threading
import time
from typing import Any

from opentelemetry import trace

from dora_otel import _runtime, identity, logs, scrub, tracing
from dora_otel.config import Config

_log = logging.getLogger("dora_otel")
_lock = threading.RLock()
_current: Telemetry | None = None
_global_provider_installed = False


class Telemetry:
    """The handle `setup()` returns. Attributes: `bot_run_id`, `bot_version`, `env`, `config`,
    `resource_attributes`, `ledger` (or None)."""

    def __init__(self, config: Config, bot_version: str, resource_attributes: dict[str, str]) -> None:
        self.config = config
        self.bot_run_id = identity.BOT_RUN_ID
        self.bot_version = bot_version
        self.env = config.env
        self.resource_attributes = resource_attributes
        self.ledger: Any = None
        self.tracer_provider: Any = None
        self.logger_provider: Any = None
        self.closed = False
        self._handlers: list[logging.Handler] = []
        self._pipeline: logs.LogPipeline | None = None
        self._saved_root: tuple[int, list[logging.Handler]] | None = None
        self._saved_sigterm: Any = None
        self._shutdown_lock = threading.Lock()

    # ------------------------------------------------------------------ health
    def stats(self) -> dict[str, Any]:
        """The ledger's counters (enqueued, shipped, retried, rejected, dropped, journal_bytes,
        oldest_unshipped_age_s, ...) plus `logs_dropped`, lines dropped because the log queue was
        full. Cheap; any thread."""
        out: dict[str, Any] = {}
        if self.ledger is not None:
            try:
                out.update(self.ledger.stats())
            except Exception:
                pass
        if self._pipeline is not None:
            out["logs_dropped"] = self._pipeline.dropped
        return out

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Write every log line logged so far, export ended spans and ship the ledger's queue,
        within `timeout_s`. Any thread; blocks up to the timeout. True when all of it finished."""
        deadline = time.monotonic() + timeout_s
        ok = True
        if self._pipeline is not None:
            ok &= self._pipeline.flush(_left(deadline))
        if self.tracer_provider is not None:
            try:
                ok &= bool(self.tracer_provider.force_flush(int(_left(deadline) * 1000)))
            except Exception:
                ok = False
        if self.ledger is not None:
            try:
                ok &= bool(self.ledger.flush(_left(deadline)))
            except Exception:
                ok = False
        return ok

    # ------------------------------------------------------------------ shutdown
    def shutdown(self, reason: str = "requested", graceful: bool = True, timeout_s: float | None = None) -> bool:
        """Flush the ledger and spans within `timeout_s` (default: config.shutdown_timeout_s), log
        SHUTDOWN as the last line, and restore logging, signal handlers and globals.

        Returns True when everything was flushed in time; what the ledger could not ship stays in
        its journal and is replayed by the next run. Safe to call twice (the second is a no-op).
        """
        global _current
        with self._shutdown_lock:
            if self.closed:
                return True
            self.closed = True
        budget = self.config.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget
        flushed = True
        runtime = _runtime.ACTIVE
        if runtime is not None and runtime.watchdog is not None:
            runtime.watchdog.stop()
        if self.tracer_provider is not None:
            try:
                flushed &= bool(self.tracer_provider.force_flush(int(max(0.0, _left(deadline) * 0.3) * 1000)))
            except Exception:
                flushed = False
        if self.ledger is not None:
            try:
                flushed &= bool(self.ledger.shutdown(max(0.05, _left(deadline) * 0.8)))
            except Exception:
                flushed = False
        stats = self.stats()
        fields = {"reason": reason, "graceful": graceful, "flushed": flushed, "bot_version": self.bot_version}
        fields.update({k if k.startswith("logs_") else f"ledger_{k}": v for k, v in stats.items()})
        try:
            if runtime is not None:
                runtime.emit(logging.INFO, "SHUTDOWN", f"shutdown: {reason}", fields)
        except Exception:
            pass
        _runtime.ACTIVE = None
        if self._pipeline is not None:  # writes SHUTDOWN and everything before it, to every handler
            flushed &= self._pipeline.stop(max(0.5, _left(deadline)))
        if self.tracer_provider is not None:
            try:
                self.tracer_provider.shutdown()
            except Exception:
                flushed = False
        if self.logger_provider is not None:
            try:
                self.logger_provider.force_flush(int(max(0.1, _left(deadline)) * 1000))
                self.logger_provider.shutdown()
            except Exception:
                flushed = False
        self._restore()
        with _lock:
            if _current is self:
                _current = None
        return flushed

    def _restore(self) -> None:
        root = logging.getLogger()
        if self._pipeline is not None:
            root.removeHandler(self._pipeline.handler)
        for handler in self._handlers:
            try:
                handler.flush()
                if handler.name != "dora-otel-stdout":
                    handler.close()
            except Exception:
                pass
        if self._saved_root is not None:
            level, handlers = self._saved_root
            root.setLevel(level)
            for handler in handlers:
                root.addHandler(handler)
        try:
            atexit.unregister(self._at_exit)
        except Exception:
            pass
        if self._saved_sigterm is not None and threading.current_thread() is threading.main_thread():
            try:
                signal.signal(signal.SIGTERM, self._saved_sigterm)
            except (ValueError, OSError):
                pass

    def _at_exit(self) -> None:
        self.shutdown(reason="exit", graceful=True)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        # The handler interrupts the main thread at an arbitrary point, possibly inside a lock the
        # shutdown needs; so the flush runs on its own thread and the handler waits a bounded time.
        worker = threading.Thread(target=self.shutdown, kwargs={"reason": "SIGTERM", "graceful": True},
                                  name="dora-otel-sigterm", daemon=True)
        worker.start()
        worker.join(self.config.shutdown_timeout_s + 2.0)
        # 128 + 15, like a process killed by SIGTERM; SystemExit lets the bot's finally blocks run.
        raise SystemExit(143)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def current() -> Telemetry | None:
    """The active handle, or None before setup() / after shutdown()."""
    return _current


def setup(**overrides: Any) -> Telemetry:
    """Configure logging, tracing and the execution ledger from the environment and arguments
    (arguments win; see config.Config for the names). Returns the `Telemetry` handle.

    Calling it again while a handle is active returns that handle unchanged.
    Raises ValueError naming the argument when an argument is invalid.
    """
    global _current
    with _lock:
        if _current is not None and not _current.closed:
            return _current
        config = Config.resolve(overrides)
        scrub.register_secrets(scrub.secrets_from_env())
        scrub.register_secrets(config.secrets or ())
        bot_version = config.bot_version or identity.resolve_bot_version()
        attributes = identity.resource_attributes(
            service_name=config.service_name, env=config.env, bot_version=bot_version,
            bot_run_id=identity.BOT_RUN_ID, instance_id=identity.resolve_instance_id())
        telemetry = Telemetry(config, bot_version, attributes)
        identity_fields = {"service": config.service_name, "env": config.env,
                           "bot_version": bot_version, "bot_run_id": identity.BOT_RUN_ID}
        _install_logging(telemetry, config, identity_fields)
        if config.sdk_disabled:  # OTEL_SDK_DISABLED: JSON lines with decision ids, no spans, no ledger
            tracer: Any = tracing.IdOnlyTracer()
        else:
            provider = tracing.build_provider(
                resource_attributes=attributes, endpoint=config.otlp_endpoint, protocol=config.otlp_protocol,
                data_dir=config.data_dir, export_timeout_s=_export_timeout(config),
                spans_max_bytes=config.spans_max_bytes, spans_backups=config.spans_backups)
            telemetry.tracer_provider = provider
            _install_global_provider(provider)
            telemetry.ledger = _start_ledger(config, provider, identity_fields, bot_version)
            tracer = provider.get_tracer("dora_otel")
        runtime = _runtime.Runtime(
            tracer=tracer, strict=config.strict, identity_fields=identity_fields,
            stats=telemetry.stats, ttl_days=config.ledger_ttl_days)
        _runtime.ACTIVE = runtime
        runtime.emit(logging.INFO, "STARTUP", f"{config.service_name} {bot_version} starting (run {identity.BOT_RUN_ID}, env {config.env})", {
            "bot_version": bot_version, "env": config.env, "ledger": config.ledger if not config.sdk_disabled else "off",
            "otlp_endpoint": config.otlp_endpoint, "data_dir": str(config.data_dir),
            "service_instance_id": attributes["service.instance.id"],
        })
        if telemetry.ledger is not None:
            telemetry.ledger.start()
        if config.watchdog_seconds > 0:
            runtime.watchdog = _start_watchdog(runtime, config.watchdog_seconds)
        atexit.register(telemetry._at_exit)
        if config.install_signal_handlers and threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGTERM)
            if previous in (signal.SIG_DFL, None):  # a bot with its own handler keeps it; atexit logs SHUTDOWN
                telemetry._saved_sigterm = previous if previous is not None else signal.SIG_DFL
                signal.signal(signal.SIGTERM, telemetry._on_sigterm)
        _current = telemetry
        return telemetry


def _install_logging(telemetry: Telemetry, config: Config, identity_fields: dict[str, str]) -> None:
    root = logging.getLogger()
    telemetry._saved_root = (root.level, list(root.handlers))
    for handler in list(root.handlers):  # our JSON lines replace the bot's own formatting
        root.removeHandler(handler)
    formatter = logs.JsonFormatter(identity_fields)
    handlers = [logs.stream_handler(config.stream if config.stream is not None else sys.stdout, formatter)]
    if not config.container_mode:
        handlers.append(logs.file_handler(config.data_dir, formatter))
    if config.otlp_endpoint and not config.sdk_disabled:
        telemetry.logger_provider = tracing.build_log_provider(
            resource_attributes=telemetry.resource_attributes, endpoint=config.otlp_endpoint,
            protocol=config.otlp_protocol, export_timeout_s=_export_timeout(config))
        handlers.append(logs.otlp_handler(telemetry.logger_provider))
    pipeline = logs.LogPipeline(handlers)
    pipeline.start()
    root.addHandler(pipeline.handler)
    root.setLevel(config.log_level)
    telemetry._pipeline = pipeline
    # The OTel SDK's and exporters' own chatter must not recurse into the OTLP handler endlessly.
    logging.getLogger("opentelemetry").propagate = True
    telemetry._handlers = handlers


def _export_timeout(config: Config) -> float:
    """One OTLP export may not outlast the shutdown budget (an unreachable collector must not hold
    a SIGTERM'd bot past it); 10 s at most, the OTel default."""
    return max(0.5, min(10.0, config.shutdown_timeout_s))


def _install_global_provider(provider: Any) -> None:
    """Install our SDK provider as the global one, once per process (the OTel API allows one), so
    other instrumentation the bot uses (HTTP, botocore) lands in the same traces."""
    global _global_provider_installed
    if _global_provider_installed:
        return
    trace.set_tracer_provider(provider)
    _global_provider_installed = True


def _start_ledger(config: Config, provider: Any, identity_fields: dict[str, str], bot_version: str) -> Any:
    if config.ledger == "off" and config.ledger_sink is None:
        return None
    from dora_otel.ledger import Ledger
    from dora_otel.ledger.processor import ExecutionLedgerProcessor
    from dora_otel.ledger.records import RecordBuilder
    from dora_otel.sinks import make_sink

    sink = config.ledger_sink or make_sink(config.ledger, env=config.env, data_dir=config.data_dir,
                                           client=config.ledger_client)
    ledger = Ledger(sink, config.data_dir / "ledger" / "journal", fsync=config.ledger_fsync,
                    max_journal_bytes=config.ledger_max_bytes)
    builder = RecordBuilder(bot_run_id=identity.BOT_RUN_ID, env=config.env, bot_version=bot_version,
                            ttl_days=config.ledger_ttl_days)
    provider.add_span_processor(ExecutionLedgerProcessor(ledger, builder))
    return ledger


def _start_watchdog(runtime: Any, seconds: float) -> Any:
    try:
        from dora_otel.watchdog import Watchdog
    except ImportError:
        return None
    watchdog = Watchdog(runtime, seconds)
    watchdog.start()
    return watchdog
