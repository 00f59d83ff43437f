"""`setup()` and the `Telemetry` handle: one call configures JSON logging, tracing and the
execution ledger; `Telemetry.shutdown()` flushes within a time budget and restores what it changed.

STARTUP is the first line a run logs; SHUTDOWN (reason, graceful) the last — also on SIGTERM and at
normal interpreter exit. `setup()` twice returns the same handle.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from opentelemetry import trace

from dora_otel import _runtime, identity, logs, otel_setup, scrub, tracing
from dora_otel._version import __version__
from dora_otel.config import (
    DORA_DATA_DIR,
    Config,
    EnvProblem,
    otel_batch_settings,
    otel_log_limit_overrides,
    otel_span_limit_overrides,
)

_log = logging.getLogger("dora_otel")
_lock = threading.RLock()
_current: Telemetry | None = None
_global_provider_installed = False


class Telemetry:
    """The handle `setup()` returns. Attributes: `bot_run_id`, `bot_version`, `env`, `config`,
    `resource_attributes` (those dora's spans carry), `ledger` (or None), and the tracing seam:
    `tracer_provider` (ours, or the bot's SDK provider when adopted, see otel_setup.py),
    `owns_provider` (False when adopted: shutdown() then only flushes it), `span_resource` (the
    Resource dora's spans carry) and `span_processor` (the processor dora's ended spans are handed
    to: the provider's active processor, or otel_setup.AdoptedSpanProcessor)."""

    def __init__(self, config: Config, bot_version: str, resource_attributes: dict[str, str]) -> None:
        self.config = config
        self.bot_run_id = identity.BOT_RUN_ID
        self.bot_version = bot_version
        self.env = config.env
        # str values from identity; once setup() adopts the bot's provider, its merged resource's
        # attributes, which may be any OTel attribute value (int, bool, sequences).
        self.resource_attributes: dict[str, Any] = resource_attributes
        self.ledger: Any = None
        self.tracer_provider: Any = None
        self.owns_provider = True
        self.span_resource: Any = None
        self.span_processor: Any = None
        self._span_exporter: Any = None  # ours only: its spans_dropped counter (the spans file's)
        self._bot_log_filters: list[tuple[logging.Handler, logging.Filter]] = []  # see otel_setup.ScrubDoraRecords
        self.logger_provider: Any = None
        self.closed = False
        self._handlers: list[logging.Handler] = []
        self._pipeline: logs.LogPipeline | None = None
        self._saved_root: tuple[int, list[logging.Handler]] | None = None
        self._saved_otel_propagate = True
        self._saved_sigterm: Any = None
        self._shutdown_lock = threading.Lock()

    # ------------------------------------------------------------------ health
    def stats(self) -> dict[str, Any]:
        """The ledger's counters (enqueued, shipped, retried, rejected, dropped, journal_bytes and
        journal_records as on disk, oldest_unshipped_age_s, memory_records, durable, ...; see
        `Ledger`) plus `logs_dropped`, lines dropped because the log queue was full, and
        `spans_dropped`: spans the spans file could not write plus, when the log pipeline counts them
        (`stats()`), spans its queue refused. Cheap; any thread."""
        out: dict[str, Any] = {}
        if self.ledger is not None:
            try:
                out.update(self.ledger.stats())
            except Exception:
                pass
        queued_spans_dropped = 0
        if self._pipeline is not None:
            out["logs_dropped"] = self._pipeline.dropped
            pipeline_stats = getattr(self._pipeline, "stats", None)  # an event pipeline's own counters
            if callable(pipeline_stats):
                try:
                    queued_spans_dropped = int(pipeline_stats().get("spans_dropped", 0) or 0)
                except Exception:
                    pass
        if self.tracer_provider is not None:
            out["spans_dropped"] = int(getattr(self._span_exporter, "spans_dropped", 0) or 0) + queued_spans_dropped
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
        close_orders = getattr(getattr(runtime, "orders", None), "close", None)
        if close_orders is not None:  # the order index writes what this run placed, for the next run's fills
            try:
                close_orders(max(0.2, min(1.0, _left(deadline))))
            except Exception:
                pass
        stats = self.stats()
        fields = {"reason": reason, "graceful": graceful, "flushed": flushed, "bot_version": self.bot_version}
        fields.update({k if k.startswith(("logs_", "spans_")) else f"ledger_{k}": v for k, v in stats.items()})
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
                if self.owns_provider:
                    self.tracer_provider.shutdown()
                else:  # the bot's provider: its spans keep flowing after ours stop
                    flushed &= bool(self.tracer_provider.force_flush(int(max(0.1, _left(deadline)) * 1000)))
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
        otel_setup.unwatch(self._bot_log_filters)
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
            logging.getLogger("opentelemetry").propagate = self._saved_otel_propagate
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
    Raises ValueError naming the argument when an argument is invalid (before anything is changed).
    Never raises because of the environment: a bad DORA_* / OTEL_* value, or an unusable data
    directory, is logged as one ERROR line naming it, and a fallback is used (see `_setup`). If
    anything else fails, the bot's logging configuration is restored before the exception leaves.
    """
    global _current
    with _lock:
        if _current is not None and not _current.closed:
            return _current
        problems: list[EnvProblem] = []
        config = Config.resolve(overrides, problems=problems)
        saved = _LoggingState.save()
        try:
            telemetry = _setup(config, problems, overrides)
        except BaseException:
            _abort(saved)
            raise
        _current = telemetry
        return telemetry


_partial: Any = None  # the handle being built, for _abort


def _setup(config: Config, problems: list[EnvProblem], overrides: dict[str, Any]) -> Telemetry:
    """Build everything. Fallbacks (each announced by one ERROR line): a bad environment value ->
    its default; an unusable data directory -> JSON lines on stdout only, no spans file, and a
    memory-only ledger (not durable: records still in memory at exit are counted in
    `ledger_dropped`); a log file, spans file or ledger that cannot be opened -> that part only."""
    global _partial
    scrub.register_secrets(scrub.secrets_from_env())  # before the first line is formatted
    scrub.register_secrets(config.secrets or ())
    bot_version = config.bot_version or identity.resolve_bot_version()
    attributes = identity.resource_attributes(
        service_name=config.service_name, env=config.env, bot_version=bot_version,
        bot_run_id=identity.BOT_RUN_ID, instance_id=identity.resolve_instance_id())
    telemetry = Telemetry(config, bot_version, attributes)
    _partial = telemetry
    identity_fields = {"service": config.service_name, "env": config.env,
                       "bot_version": bot_version, "bot_run_id": identity.BOT_RUN_ID}
    batch_span = otel_batch_settings("OTEL_BSP_", problems=problems)
    otlp_logs = config.otlp_target("logs") is not None
    batch_log = otel_batch_settings("OTEL_BLRP_", problems=problems) if otlp_logs else None
    log_limits = otel_log_limit_overrides(problems=problems) if otlp_logs else None
    limits = otel_span_limit_overrides(problems=problems)
    data_dir_error = _probe_data_dir(config)
    selection = otel_setup.Selection("own") if config.sdk_disabled else otel_setup.select_provider()
    adoption = None
    if selection.provider is not None and config.adopt_provider:
        try:
            adoption = otel_setup.adopt(selection.provider, attributes, __version__)
        except Exception as err:  # an SDK whose Tracer we do not know: our own pipeline, as before
            selection = otel_setup.Selection("own", foreign=f"{type(selection.provider).__name__} ({err})")
        else:
            telemetry.resource_attributes = dict(adoption.resource.attributes)
    late_errors = _install_logging(telemetry, config, identity_fields, data_dir_error is None, batch_log,
                                   log_limits)
    reported: set[str] = set()
    for problem in problems:
        if problem.name in reported:  # e.g. OTEL_ATTRIBUTE_COUNT_LIMIT, read for spans and for logs
            continue
        reported.add(problem.name)
        _log.error(problem.message(), extra={"event_type": "ERROR", "error_type": "ConfigError",
                                             "env_var": problem.name, "env_value": problem.value})
    if data_dir_error is not None:
        _report_data_dir(config, overrides, data_dir_error)
    for message, exc in late_errors:
        _log.error(message, exc, extra={"event_type": "ERROR", "error_type": type(exc).__name__,
                                        "error_msg": str(exc)})
    notices: list[tuple[int, str, dict[str, Any]]] = []  # logged after STARTUP, the run's first line
    kept = otel_setup.otel_log_handlers(logging.getLogger().handlers)
    if kept:
        notices.append((logging.INFO, f"the bot's OpenTelemetry log handler ({type(kept[0]).__name__}) stays on "
                        "the root logger" + ("; dora-otel adds no second OTLP log export" if otlp_logs else ""),
                        {"otel_log_handler": "bot"}))
    if config.sdk_disabled:  # OTEL_SDK_DISABLED: JSON lines with decision ids, no spans, no ledger
        tracer: Any = tracing.IdOnlyTracer()
    elif adoption is not None:  # the bot's SDK provider: its processors and exporters, no second pipeline
        telemetry.tracer_provider = selection.provider
        telemetry.owns_provider = False
        telemetry.span_resource = adoption.resource
        telemetry.span_processor = adoption.processor
        telemetry.ledger = _start_ledger(config, adoption.processor, identity_fields, bot_version,
                                         durable=data_dir_error is None)
        tracer = adoption.tracer
        notices.append((logging.INFO, "dora-otel's spans go through the TracerProvider the bot installed (its "
                        "processors and exporters; no spans file" + (", and OTEL_EXPORTER_OTLP_* is not used for "
                        "traces" if config.otlp_target("traces") is not None else "") + ")",
                        {"tracer_provider": "adopted"}))
    else:
        if selection.foreign is not None:
            notices.append((logging.WARNING, f"the installed tracer provider {selection.foreign} is not an "
                            "OpenTelemetry SDK TracerProvider and cannot be adopted; dora-otel's spans use their "
                            "own provider and exporter", {"tracer_provider": "own"}))
        elif selection.provider is not None:
            notices.append((logging.INFO, "adopt_provider=False: dora-otel's spans use their own provider and "
                            "exporter, next to the TracerProvider the bot installed", {"tracer_provider": "own"}))
        provider = _build_provider(telemetry, config, attributes, data_dir_error is None, batch_span, limits)
        otel_setup.mark_ours(provider)
        telemetry.tracer_provider = provider
        telemetry.span_resource = provider.resource
        telemetry.span_processor = getattr(provider, "_active_span_processor", None)
        if selection.mode == "own" and selection.provider is None and selection.foreign is None:
            _install_global_provider(provider)  # a foreign / the bot's provider keeps the global slot
        telemetry.ledger = _start_ledger(config, provider, identity_fields, bot_version,
                                         durable=data_dir_error is None)
        tracer = provider.get_tracer("dora_otel")
    runtime = _runtime.Runtime(
        tracer=tracer, strict=config.strict, identity_fields=identity_fields,
        stats=telemetry.stats, ttl_days=config.ledger_ttl_days)
    if telemetry.ledger is not None:  # fills and cancels of earlier runs' orders join their decision
        from dora_otel.ledger.orders import open_index
        runtime.orders = open_index(config.data_dir, runtime.orders)
    _runtime.ACTIVE = runtime
    starting = f"{config.service_name} {bot_version} starting (run {identity.BOT_RUN_ID}, env {config.env})"
    runtime.emit(logging.INFO, "STARTUP", starting, {
        "bot_version": bot_version, "env": config.env, "ledger": config.ledger if not config.sdk_disabled else "off",
        "otlp_endpoint": config.otlp_endpoint, "data_dir": str(config.data_dir),
        # where each signal is exported over OTLP by dora-otel itself (None: local, or the bot's set-up)
        "otlp_traces": _target_text(config.otlp_target("traces")) if telemetry.owns_provider else None,
        "otlp_logs": _target_text(config.otlp_target("logs")) if telemetry.logger_provider is not None else None,
        "tracer_provider": "off" if config.sdk_disabled else "own" if telemetry.owns_provider else "adopted",
        "service_instance_id": attributes["service.instance.id"],
        "dora_otel_version": __version__,
        "ledger_durable": telemetry.ledger is not None and not telemetry.ledger.memory_only,
    })
    for level, message, fields in notices:
        _log.log(level, "%s", message, extra={"_dora": fields})
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
    _partial = None
    return telemetry


class _LoggingState:
    """The parts of the bot's logging configuration setup() changes: the root logger's level and
    handlers, and the "opentelemetry" logger's propagate flag."""

    def __init__(self, level: int, handlers: list[logging.Handler], otel_propagate: bool) -> None:
        self.level = level
        self.handlers = handlers
        self.otel_propagate = otel_propagate

    @classmethod
    def save(cls) -> _LoggingState:
        root = logging.getLogger()
        return cls(root.level, list(root.handlers), logging.getLogger("opentelemetry").propagate)

    def restore(self) -> None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if handler not in self.handlers:
                root.removeHandler(handler)
        for handler in self.handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(self.level)
        logging.getLogger("opentelemetry").propagate = self.otel_propagate


def _abort(saved: _LoggingState) -> None:
    """setup() failed part-way: stop what was started and give the bot its logging back."""
    global _partial
    telemetry, _partial = _partial, None
    if telemetry is not None:
        with contextlib.suppress(Exception):
            if telemetry.ledger is not None:
                telemetry.ledger.shutdown(0.5)
        with contextlib.suppress(Exception):
            if telemetry._pipeline is not None:
                telemetry._pipeline.stop(0.5)
        for handler in telemetry._handlers:
            with contextlib.suppress(Exception):
                if handler.name != "dora-otel-stdout":
                    handler.close()
        owned = (telemetry.tracer_provider if telemetry.owns_provider else None, telemetry.logger_provider)
        for provider in owned:
            with contextlib.suppress(Exception):
                if provider is not None:
                    provider.shutdown()
        with contextlib.suppress(Exception):
            atexit.unregister(telemetry._at_exit)
        otel_setup.unwatch(telemetry._bot_log_filters)
    if _runtime.ACTIVE is not None and telemetry is not None:
        _runtime.ACTIVE = None
    saved.restore()


def _probe_data_dir(config: Config) -> OSError | None:
    """Can files be created in the data directory? Only asked when something would write there."""
    uses_disk = (not config.container_mode) or (not config.sdk_disabled and (
        config.otlp_target("traces") is None or config.ledger != "off" or config.ledger_sink is not None))
    if not uses_disk:
        return None
    probe = config.data_dir / f".dora-otel-probe-{os.getpid()}"
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"probe\n")
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        return exc
    return None


def _report_data_dir(config: Config, overrides: dict[str, Any], exc: OSError) -> None:
    source = "the data_dir argument" if overrides.get("data_dir") is not None else (
        f"{DORA_DATA_DIR}" if os.environ.get(DORA_DATA_DIR, "").strip() else "the default data directory")
    ledger = "off"
    if not config.sdk_disabled and (config.ledger != "off" or config.ledger_sink is not None):
        ledger = ("records are kept in memory only: NOT durable, counted in ledger_unjournaled, and "
                  "those not shipped at exit are lost and counted in ledger_dropped")
    spans = "exported over OTLP" if config.otlp_target("traces") is not None else "not kept"
    _log.error(
        "data directory %s (%s) is unusable (%s: %s); falling back: JSON lines on the stream only, "
        "spans %s, execution ledger: %s",
        str(config.data_dir), source, type(exc).__name__, exc, spans, ledger,
        extra={"event_type": "ERROR", "error_type": type(exc).__name__, "error_msg": str(exc),
               "env_var": DORA_DATA_DIR if source == DORA_DATA_DIR else None,
               "env_value": str(config.data_dir), "ledger_durable": False})


def _install_logging(telemetry: Telemetry, config: Config, identity_fields: dict[str, str], disk_ok: bool,
                     batch_log: dict[str, int] | None,
                     log_limits: dict[str, int] | None = None) -> list[tuple[str, Exception]]:
    """Replace the root handlers with our pipeline. Returns the errors to log once it runs."""
    errors: list[tuple[str, Exception]] = []
    root = logging.getLogger()
    telemetry._saved_root = (root.level, list(root.handlers))
    telemetry._saved_otel_propagate = logging.getLogger("opentelemetry").propagate
    formatter = logs.JsonFormatter(identity_fields)
    bot_otel_handlers = otel_setup.otel_log_handlers(root.handlers)  # the bot's own OTel log export stays
    telemetry._bot_log_filters = otel_setup.watch_bot_log_handlers(bot_otel_handlers)  # sees dora's scrubbed
    handlers = [logs.stream_handler(config.stream if config.stream is not None else sys.stdout, formatter)]
    if not config.container_mode and disk_ok:
        try:
            handlers.append(logs.file_handler(config.data_dir, formatter))
        except OSError as exc:
            message = "cannot open the log file under the data directory (%s); lines go to the stream only"
            errors.append((message, exc))
    logs_target = config.otlp_target("logs")
    if logs_target is not None and not bot_otel_handlers:  # else the bot's handler exports them already
        try:
            telemetry.logger_provider = otel_setup.otlp_log_provider(
                logs_target, telemetry.resource_attributes, _export_timeout(config),
                batch_options=batch_log, log_limits=_log_record_limits(log_limits))
            handlers.append(logs.otlp_handler(telemetry.logger_provider))
        except Exception as exc:  # the environment (SDK variables) can break it: lines still reach stdout
            telemetry.logger_provider = None
            errors.append(("cannot export log records over OTLP (%s); JSON lines go to the stream only", exc))
    pipeline = logs.LogPipeline(handlers)
    pipeline.start()
    telemetry._pipeline = pipeline
    for handler in list(root.handlers):  # our JSON lines replace the bot's own formatting
        if handler not in bot_otel_handlers:
            root.removeHandler(handler)
    root.addHandler(pipeline.handler)
    root.setLevel(config.log_level)
    # The OTel SDK's and exporters' own chatter must not recurse into the OTLP handler endlessly.
    logging.getLogger("opentelemetry").propagate = True
    telemetry._handlers = handlers
    return errors


def _log_record_limits(overrides: dict[str, int] | None) -> Any:
    if not overrides:
        return None
    from opentelemetry.sdk._logs import LogRecordLimits

    return LogRecordLimits(**overrides)


def _build_provider(telemetry: Telemetry, config: Config, attributes: dict[str, str], disk_ok: bool,
                    batch_span: dict[str, int], limits: dict[str, int]) -> Any:
    """Our TracerProvider and its one exporter: OTLP when traces have an OTLP target (config.otlp_target),
    else the spans file, else (no usable data directory) nothing. The exporter is kept on `telemetry`
    for its `spans_dropped` counter. An exporter the environment breaks falls back, with one ERROR."""
    from opentelemetry.sdk.trace import SpanLimits

    from dora_otel.spanfile import SpanFileExporter

    target = config.otlp_target("traces")

    def exporter(kind: str) -> Any:
        if kind == "otlp" and target is not None:
            return otel_setup.otlp_span_exporter(target, _export_timeout(config))
        if kind == "file":
            return SpanFileExporter(tracing.spans_file_path(config.data_dir), max_bytes=config.spans_max_bytes,
                                    backups=config.spans_backups)
        return _DiscardingExporter()  # no spans file without a data directory (said in its ERROR)

    def build(kind: str) -> Any:
        telemetry._span_exporter = exporter(kind)
        return tracing.build_provider(
            resource_attributes=attributes, exporter=telemetry._span_exporter,
            export_timeout_s=_export_timeout(config), batch_options=batch_span,
            span_limits=SpanLimits(**limits) if limits else None)

    kind = "otlp" if target is not None else "file" if disk_ok else "none"
    try:
        return build(kind)
    except Exception as exc:  # the SDK's exporter rejected its environment, or the spans file failed
        fallback, kind = "not exported", "none"
        if target is not None and disk_ok:  # the local spans file instead of the collector
            fallback, kind = f"written to {tracing.spans_file_path(config.data_dir)} instead", "file"
        _log.error("cannot set up span export (%s: %s); spans are %s (the execution ledger still records)",
                   type(exc).__name__, exc, fallback,
                   extra={"event_type": "ERROR", "error_type": type(exc).__name__, "error_msg": str(exc)})
        try:
            return build(kind)
        except Exception:
            return build("none")


def _target_text(target: Any) -> str | None:
    return None if target is None else f"{target.endpoint} ({target.protocol})"


class _DiscardingExporter:
    """The span exporter when spans have nowhere to go (no endpoint and no usable data directory)."""

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


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


def _start_ledger(config: Config, provider: Any, identity_fields: dict[str, str], bot_version: str,
                  durable: bool = True) -> Any:
    """The Ledger and its span processor. ``durable=False`` (unusable data directory): memory only.
    A ledger that cannot be built at all is reported in one ERROR line and left off."""
    if config.ledger == "off" and config.ledger_sink is None:
        return None
    from dora_otel.ledger import Ledger
    from dora_otel.ledger.processor import ExecutionLedgerProcessor
    from dora_otel.ledger.records import RecordBuilder
    from dora_otel.sinks import make_sink

    try:
        sink = config.ledger_sink or make_sink(config.ledger, env=config.env, data_dir=config.data_dir,
                                               client=config.ledger_client)
        ledger = Ledger(sink, config.data_dir / "ledger" / "journal", fsync=config.ledger_fsync,
                        max_journal_bytes=config.ledger_max_bytes, memory_only=not durable)
    except Exception as exc:
        _log.error("cannot start the execution ledger (%s: %s); no execution records are kept",
                   type(exc).__name__, exc,
                   extra={"event_type": "ERROR", "target": "execution_log", "error_type": type(exc).__name__,
                          "error_msg": str(exc)})
        return None
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
