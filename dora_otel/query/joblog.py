"""The reconcile job's own JSON lines (RECONCILIATION_RESULT per decision with a mismatch, and a
summary line): the same line shape and identity fields as every dora-otel line, on a stream and/or
over OTLP to the collector (/dora-bot/{env}/app in CloudWatch, where the deploy/ metric filters look).

Why not ``dora_otel.setup()``: the job is a reader, not a bot. setup() would log STARTUP / SHUTDOWN
lines claiming ``"ledger": "off"`` while the job reads a ledger, install root handlers that catch
the CLI's own messages, and start a watchdog. A job line is exactly one formatted line per event.

Runs on the caller's thread; the OTLP exporter (when configured) has its own batch thread.
"""

from __future__ import annotations

import logging
from typing import Any, TextIO

from dora_otel import identity, logs
from dora_otel.config import OtlpTarget
from dora_otel.query.output import scrub_json, scrub_text

__all__ = ["JobLines"]

SERVICE = "dora-reconcile"
_EXPORT_TIMEOUT_S = 10.0  # one OTLP export of the job's lines (the SDK exporters' own default)


class _StreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that notes a closed pipe instead of printing logging's traceback for it."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self.pipe_closed = False

    def handleError(self, record: logging.LogRecord) -> None:
        import sys

        if isinstance(sys.exc_info()[1], BrokenPipeError):
            self.pipe_closed = True
            return
        super().handleError(record)


class JobLines:
    """Emits job lines. ``stream`` None: no stream; ``otlp`` None: no OTLP (else the logs target,
    ``config.otlp_target("logs")``, so the per-signal variables apply as they do to the bot)."""

    def __init__(self, env: str, *, stream: TextIO | None, otlp: OtlpTarget | None = None) -> None:
        fields = {"service": SERVICE, "env": env, "bot_version": identity.resolve_bot_version(),
                  "bot_run_id": identity.BOT_RUN_ID}
        self.log = logging.getLogger("dora_otel.reconcile.job")
        self.log.propagate = False
        self.log.setLevel(logging.INFO)
        self._handlers: list[logging.Handler] = []
        self._provider: Any = None
        if stream is not None:
            self._handlers.append(_StreamHandler(stream, logs.JsonFormatter(fields)))
        if otlp is not None:
            from dora_otel import otel_setup

            attributes = identity.resource_attributes(
                service_name=SERVICE, env=env, bot_version=fields["bot_version"], bot_run_id=identity.BOT_RUN_ID,
                instance_id=identity.resolve_instance_id())
            self._provider = otel_setup.otlp_log_provider(otlp, attributes, _EXPORT_TIMEOUT_S)
            self._handlers.append(logs.otlp_handler(self._provider))
        for handler in self._handlers:
            self.log.addHandler(handler)

    @property
    def active(self) -> bool:
        return bool(self._handlers)

    def emit(self, level: int, event_type: str, message: str, fields: dict[str, Any]) -> None:
        """One line (scrubbed like everything the query commands emit)."""
        if not self._handlers:
            return
        payload = scrub_json(dict(fields))
        payload["event_type"] = event_type
        payload["seq"] = identity.next_seq()
        record = logging.LogRecord(self.log.name, level, "dora_otel", 0, scrub_text(message), None, None)
        record._dora = payload  # type: ignore[attr-defined]  # read by logs.event_fields
        self.log.handle(record)
        if any(isinstance(h, _StreamHandler) and h.pipe_closed for h in self._handlers):
            raise BrokenPipeError("the reader of the job lines went away")

    def close(self) -> None:
        for handler in self._handlers:
            try:
                handler.flush()
            except Exception:  # noqa: BLE001, S110 - a closed stdout (| head): nothing more to say there
                pass
            self.log.removeHandler(handler)
        self._handlers = []
        if self._provider is not None:
            try:
                self._provider.shutdown()
            except Exception:  # noqa: BLE001, S110 - an unreachable collector must not fail the job's answer
                pass
            self._provider = None
