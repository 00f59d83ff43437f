"""JSON log lines: the formatter every line goes through, the handlers that carry lines out
(stdout, a rotating file under the data directory, and OTLP to the collector when configured), and
the pipeline that keeps their cost off the trading thread.

Every record becomes exactly one JSON object on one line, including the bot's own plain
`logger.info("...")` calls. On the thread that logs, `LogPipeline` only captures what that thread
alone knows (trace context, decision, bound fields, `seq`, the formatted message and stack) and
enqueues the record (a stdlib QueueHandler); dora-otel's own event lines skip the LogRecord and are
queued as compact `_Line`s by `_runtime.Runtime.emit`, and dora's ended spans ride the same queue
(spans.py). The writer thread — the one event thread — drains the queue in batches, formats the
lines, writes each batch with one write per output, and builds and hands on the spans. Logs and
spans are best effort and never block: a full queue drops the line or span and counts it
(`LogPipeline.stats()`: `logs_dropped`, `spans_dropped`).

Scrubbing (scrub.py) happens on the writer thread, once per line, for every field: the message,
`extra=` values, bound fields and event fields alike. Reserved base fields keep dora-otel's own
values; a bot's colliding key is renamed `field_<name>` (context.rename_reserved). A log file that
cannot be written (disk full, EIO) produces one ERROR line per failure episode on the other
outputs, counts the lines it lost (`logs_dropped`) and says when writing works again.
"""

from __future__ import annotations

import datetime as _dt
import enum
import logging
import logging.handlers
import math
import os
import queue
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Mapping
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson
from opentelemetry import trace

from dora_otel import context, identity
from dora_otel._rotating import RotatingAppender
from dora_otel.scrub import (
    event_verdict,
    known_clean,
    ordinary_key,
    ordinary_keys,
    scrub_record,
    scrub_text,
    texts_clean,
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_PROBE = logging.LogRecord("probe", logging.INFO, "p", 0, "m", None, None)
_RESERVED = frozenset(vars(_PROBE)) | {"message", "asctime", "taskName", "_dora", "_dora_fields", "_dora_line"}
_BASE_LEN = len(vars(_PROBE))
# What dora-otel caches on a LogRecord (`_dora_fields`, `_dora_line`) is stored as (_OURS, value): a
# bot's `extra={"_dora_line": ...}` sets the same attribute, and must never be taken for a line
# already built (it would be written as it is: not JSON, not scrubbed).
_OURS = object()


def _ours(record: logging.LogRecord, name: str) -> Any:
    """What dora-otel cached on `record` under `name`, or None (nothing, or a bot's own value)."""
    cached = record.__dict__.get(name)
    if type(cached) is tuple and len(cached) == 2 and cached[0] is _OURS:
        return cached[1]
    return None


_ORJSON_OPTS = orjson.OPT_NON_STR_KEYS
_orjson_dumps = orjson.dumps
_get_current_span = trace.get_current_span
# Fields that are identity or line metadata; event fields may not overwrite them.
_PROTECTED = frozenset({"ts", "level", "service", "env", "bot_version", "bot_run_id", "logger", "message"})
_PLAIN = frozenset({str, bool})
_OWN_LOGGER = "dora_otel"
_EVENTS_LOGGER = _OWN_LOGGER  # the logger name of dora's event lines (_runtime.EVENTS_LOGGER)
_level_name = logging.getLevelName
# Base fields only dora-otel sets (a bot's colliding key was renamed): not scanned by the scrubber.
_LINE_TRUSTED = frozenset({"ts", "level", "service", "env", "bot_version", "bot_run_id", "seq",
                           "trace_id", "span_id", "decision_id", "event_type"})


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The event's own fields for `record`: extras, dora event fields, seq, trace context, decision.

    Computed once per record and cached on it, so the JSON and OTLP handlers agree (same `seq`).
    """
    cached = _ours(record, "_dora_fields")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    rd = record.__dict__
    name = record.name
    own_logger = name == _OWN_LOGGER or name.startswith(_OWN_LOGGER + ".")
    own = rd.get("_dora") if own_logger else None  # (dora-otel's own modules only: see _OURS)
    if type(own) is not dict:
        own = None
    fields: dict[str, Any] = context.bound_fields() if context.has_bound_fields() else {}
    if fields:  # the bot's own keys (bind(), extra=) never replace a base field: field_<name>
        fields = context.rename_reserved(fields)
    if len(rd) > _BASE_LEN + ("_dora" in rd):
        extras = {key: value for key, value in rd.items() if key not in _RESERVED and key[0] != "_"}
        if extras:
            # dora-otel's own modules (loggers "dora_otel.*") set event_type / error_msg this way.
            if not own_logger:
                extras = context.rename_reserved(extras)
            fields.update(extras)
    if own is not None:
        fields.update(own)
    if "seq" not in fields:
        fields["seq"] = identity.next_seq()
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        if fields.get("event_type", "LOG") == "LOG":
            fields["event_type"] = "ERROR"
        fields.setdefault("error_type", type(exc).__name__)
        fields.setdefault("error_msg", _safe_str(exc))
        fields.setdefault("stack", "".join(traceback.format_exception(*record.exc_info)))
    elif "event_type" not in fields:
        fields["event_type"] = "LOG"
    add_trace_context(fields)
    record._dora_fields = (_OURS, fields)  # type: ignore[attr-defined]
    return fields


def add_trace_context(fields: dict[str, Any]) -> None:
    """Add the calling thread's trace context to a line's fields: the current span's `trace_id` /
    `span_id` (unless the fields name them) and the current decision's `decision_id` and `market`
    (unless set). Runs on the thread that logs (it reads that thread's context); cheap."""
    if "trace_id" not in fields:
        ctx = _get_current_span().get_span_context()
        if ctx.is_valid:
            fields["trace_id"] = format(ctx.trace_id, "032x")
            fields["span_id"] = format(ctx.span_id, "016x")
    add_decision_context(fields)


def add_decision_context(fields: dict[str, Any]) -> None:
    """The current decision's `decision_id` and `market` (unless set): `add_trace_context`'s second
    half, for a line whose span the caller already knows."""
    decision = context.current_decision.get()
    if decision is not None:
        fields.setdefault("decision_id", decision.decision_id)
        if decision.market is not None:
            fields.setdefault("market", decision.market)


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # an object whose __str__ raises must not break the line
        try:
            return repr(value)
        except Exception:
            return f"<unprintable {type(value).__name__}>"


def _json_default(value: Any) -> Any:
    """orjson calls this for types it cannot encode itself."""
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, (set, frozenset)):
        return sorted(_safe_str(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return _safe_str(value)


_SIMPLE = (str, bool, type(None))
# Types orjson writes itself without calling str() on them (no text a credential could hide in).
_NATIVE = (_dt.datetime, _dt.date, _dt.time, uuid.UUID, enum.Enum)
_INT_MIN, _INT_MAX = -(2**63), 2**64  # orjson's integer range


def _clean(value: Any) -> Any:
    """Make a value JSON can hold. orjson would write NaN/inf as null; we keep them visible as text."""
    kind = type(value)
    if kind in _SIMPLE:
        return value
    if kind is int:
        return value if _INT_MIN <= value < _INT_MAX else str(value)
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {_safe_str(k) if not isinstance(k, str) else k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value < _INT_MAX:
        return str(value)
    if isinstance(value, (int, float, str, *_NATIVE)):
        return value
    # Anything else becomes its text here (not in orjson's default hook), so scrubbing sees it.
    converted = _json_default(value)
    return converted if type(converted) is str else _clean(converted)


def _escape_line_breaks(out: bytes) -> bytes:
    """U+2028/U+2029 are line breaks for some readers (str.splitlines, JS): written escaped."""
    return out.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")


def dumps_line(payload: dict[str, Any]) -> str:
    """Encode one line. Never raises: a value nothing can encode becomes its string form."""
    try:
        out = orjson.dumps(payload, default=_json_default, option=_ORJSON_OPTS)
    except Exception:
        out = orjson.dumps({k: v if type(v) is str else _safe_str(v) for k, v in payload.items()})
    if b"\xe2\x80" in out:
        out = _escape_line_breaks(out)
    return out.decode("utf-8")


class JsonFormatter(logging.Formatter):
    """Formats every record as one JSON object: base fields, event fields, trace context.

    `encode` is the one line builder: the writer thread calls it straight for dora's own event
    lines (`_Line`: no LogRecord), `format` for LogRecords. Never raises (a line that cannot be
    built is replaced by a minimal valid line saying so).
    """

    def __init__(self, identity_fields: Mapping[str, str]) -> None:
        super().__init__()
        self._identity = {k: identity_fields[k] for k in ("service", "env", "bot_version", "bot_run_id")}
        self._second_text: tuple[int, str] = (-1, "")
        # The keys every line starts with, in order (`encode` copies it and fills it in).
        self._line: dict[str, Any] = {"ts": None, "level": None, **self._identity, "message": None,
                                      "event_type": None, "seq": None, "logger": None}

    def _ts(self, created: float) -> str:
        # strftime once per second (its text kept with the dot: `...T05:53:10.`), the milliseconds
        # from a table; the (second, text) pair is swapped as one tuple (thread-safe).
        second = int(created)
        cached = self._second_text
        if cached[0] != second:
            cached = self._second_text = (second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)))
        millis = int((created - second) * 1000)
        if 0 <= millis <= 1000:
            return cached[1] + _MILLIS_Z[millis]
        return f"{cached[1]}{millis:03d}Z"  # (a time before 1970)

    def format(self, record: logging.LogRecord) -> str:
        cached = _ours(record, "_dora_line")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        try:
            line = self._build(record)
        except Exception as exc:  # telemetry never breaks logging
            line = self.error_line(exc)
        record._dora_line = (_OURS, line)  # type: ignore[attr-defined]
        return line

    def error_line(self, exc: Exception) -> str:
        """The line written instead of one that could not be built."""
        return dumps_line({"ts": self._ts(time.time()), "level": "ERROR", **self._identity,
                           "message": "dora-otel could not format a log record",
                           "event_type": "ERROR", "error_type": type(exc).__name__,
                           "error_msg": _safe_str(exc), "seq": identity.next_seq()})

    def _build(self, record: logging.LogRecord) -> str:
        fields = event_fields(record)
        try:
            message = record.getMessage()
        except Exception:
            message = f"{_safe_str(record.msg)} % {_safe_str(record.args)}"
        if type(message) is not str:
            message = _safe_str(message)
        return self.encode(record.created, record.levelname, message, record.name, fields)

    def encode(self, created: float, levelname: str, message: str, logger: str, fields: Mapping[str, Any],
               ids: tuple[int, int] | None = None, shared: bool = False) -> str:
        """One JSON line: `ts`, `level`, identity, `message`, `event_type`, `seq`, `logger`, then the
        event's fields (None left out; a field named like a base field, with another value, written
        as `field_<name>`), scrubbed (scrub.scrub_record; the base fields are dora's own).

        Hand-assembled for speed (writer thread, every line): the line is one dict, its fields
        copied in with one C-level update when scrub.event_verdict vouches for them, and encoded
        by one orjson call. `ids`: the line's (trace_id, span_id) as ints, written last as hex
        (`_Line.ids`: formatted here, not on the trading thread).
        `shared`: `fields` is a dora event's dict, which its span shares and nobody changes once
        queued: its scrub verdict is kept for the span (scrub.event_verdict)."""
        if not _PROTECTED.isdisjoint(fields):
            return self._encode_protected(created, levelname, message, logger, fields, ids)
        body = self._line.copy()  # (a copy of a dict of this size is one memcpy: no literal's temporary dicts)
        body["ts"], body["level"], body["message"], body["logger"] = self._ts(created), levelname, message, logger
        nones = event_verdict(fields, shared, (message, logger))
        if nones is not None:
            # Nothing to scrub and no value to convert (scrub.event_verdict): the fields are copied
            # in one C-level update.
            body.update(fields)
            for key in nones:  # (absent, not null; event_type and seq keep their places)
                if key != "event_type" and key != "seq":
                    del body[key]
            if ids is not None:
                body["trace_id"], body["span_id"] = hex_ids(ids)
            try:  # (no fallback hook: the values are plain, str keys)
                line = _orjson_dumps(body).decode("utf-8")
            except Exception:  # (not expected: the values were checked)
                return dumps_line(body)
            # (`dumps_line`'s line-break escape, tested on the text: a line of Latin-1 text, nearly
            # all, answers at once, without a scan)
            if "\u2028" in line or "\u2029" in line:
                line = line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
            return line
        # Scrubbing rides along: the untrusted strings not known clean are gathered for one joined
        # test (scrub.texts_clean); anything else (a container, a str under a sensitive name, an
        # unusual type) sends the body through scrub_record as a whole.
        known = known_clean
        new = [text for text in (message, logger) if text not in known]
        longest = 0
        plain = True
        for key, value in fields.items():
            kind = type(value)
            if kind is int:
                if _INT_MIN <= value < _INT_MAX:
                    body[key] = value
                    continue
            elif kind is float:
                if value - value == 0:  # finite (inf - inf and nan are nan); no math.isfinite call
                    body[key] = value
                    continue
            elif kind is bool or value is None:
                if value is not None:  # (None: absent, not null: lines stay short and queries simple)
                    body[key] = value
                continue
            if kind is not str:
                value = _clean(value)
                kind = type(value)
            body[key] = value
            if key in _LINE_TRUSTED:
                continue
            if kind is str:
                if key not in ordinary_keys and not ordinary_key(key):
                    plain = False
                if value not in known:
                    new.append(value)
                    if len(value) > longest:
                        longest = len(value)
            elif kind is not int and kind is not float and kind is not bool:
                plain = False
        if not plain or (new and not texts_clean(new, max(longest, len(message)))):
            scrub_record(body, _LINE_TRUSTED)  # (ts, level and the identity are trusted: never changed)
        if ids is not None:
            body["trace_id"], body["span_id"] = hex_ids(ids)
        return dumps_line(body)

    def _encode_protected(self, created: float, levelname: str, message: str, logger: str,
                          fields: Mapping[str, Any], ids: tuple[int, int] | None = None) -> str:
        """`encode` for fields that name a base field (rare): compared with the base value, whole line."""
        line: dict[str, Any] = {
            "ts": self._ts(created),
            "level": levelname,
            **self._identity,
            "message": message,
            "event_type": None,
            "seq": None,
            "logger": logger,
        }
        for key, value in fields.items():
            if value is None:  # absent, not null: lines stay short and queries simple
                continue
            if key in _PROTECTED:
                if line.get(key) == value:
                    continue
                key = f"field_{key}"
            line[key] = value if type(value) in _PLAIN else _clean(value)
        if ids is not None:
            line["trace_id"], line["span_id"] = hex_ids(ids)
        return dumps_line(scrub_record(line, _LINE_TRUSTED))

    def encode_line(self, item: _Line) -> str:
        """The JSON line of a queued dora event line (writer thread). Never raises."""
        level, message, fields, created, ids, _check, logger, source = item  # (no property calls)
        try:
            return self.encode(created, _level_name(level), render(message, fields), logger, fields, ids,
                               source is None)
        except Exception as exc:
            return self.error_line(exc)


class BatchStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that collects the lines of one batch and writes them with one `write` and
    one `flush` when the writer thread has drained the queue (`flush()`). Each write or flush may
    release the GIL, and getting it back from a busy trading thread can take a switch interval
    (5 ms): one per batch instead of one per line. Runs on the writer thread."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._buffer: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """Buffer one formatted line (writer thread; `_Writer` calls it directly for dora's lines)."""
        buffer = self._buffer
        buffer.append(line)
        if len(buffer) >= 1000:
            self.flush()

    def flush(self) -> None:
        buffer, self._buffer = self._buffer, []
        if buffer:
            try:
                terminator = self.terminator
                self.stream.write(terminator.join(buffer) + terminator)
            except Exception:
                pass  # stdout gone: nothing else to tell it to
        super().flush()


def stream_handler(stream: Any, formatter: logging.Formatter) -> logging.Handler:
    handler = BatchStreamHandler(stream)
    handler.setFormatter(formatter)
    handler.set_name("dora-otel-stdout")
    return handler


LOG_FILE_MAX_BYTES = 50 * 1024 * 1024
LOG_FILE_BACKUPS = 5


class LogFileHandler(logging.Handler):
    """The rotating JSON log file. Runs on the log writer thread.

    A write that fails (disk full, EIO, a vanished directory) never prints logging's
    "--- Logging error ---" traceback: the line is counted in `lines_dropped` (part of
    `logs_dropped`), the first failure of an episode is reported as one ERROR line on the other
    outputs (stdout), and the first line written after it as one INFO line (`log_file_recovered`)
    on every output, with the number of lines lost in the episode.
    """

    def __init__(self, path: Path, formatter: logging.Formatter, max_bytes: int = LOG_FILE_MAX_BYTES,
                 backups: int = LOG_FILE_BACKUPS) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.set_name("dora-otel-file")
        self.path = path
        self._file = RotatingAppender(path, max_bytes, backups)
        self.lines_dropped = 0
        self.failing = False
        self._episode_dropped = 0
        # Set by LogPipeline: report(level, message, fields, include_self) writes one line.
        self.report: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        self.write_line(self.format(record))

    def write_line(self, line: str) -> None:
        """Write one formatted line (writer thread; `_Writer` calls it directly for dora's lines)."""
        try:
            self._file.write((line + "\n").encode("utf-8", "replace"))
        except Exception as exc:
            self.lines_dropped += 1
            self._episode_dropped += 1
            if not self.failing:
                self.failing = True
                self._report(logging.ERROR, "ERROR", f"dora-otel cannot write the log file {self.path}: "
                             f"{type(exc).__name__}: {_safe_str(exc)}; lines are counted in logs_dropped "
                             "until it works again", {"error_type": type(exc).__name__,
                                                      "error_msg": _safe_str(exc)}, False)
            return
        if self.failing:
            self.failing = False
            lost, self._episode_dropped = self._episode_dropped, 0
            self._report(logging.INFO, "LOG", f"dora-otel writes the log file {self.path} again; "
                         f"{lost} lines could not be written", {"lines_lost": lost,
                                                                 "log_file_recovered": True}, True)

    def _report(self, level: int, event_type: str, message: str, fields: dict[str, Any], include_self: bool) -> None:
        if self.report is None:
            return
        try:
            self.report(level, message, {"event_type": event_type, "target": "log_file", "path": str(self.path),
                                         "logs_dropped": self.lines_dropped, **fields}, include_self)
        except Exception:  # reporting is best effort; the counter is what SHUTDOWN shows
            pass

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            super().close()


def file_handler(data_dir: Path, formatter: logging.Formatter, max_bytes: int = LOG_FILE_MAX_BYTES,
                 backups: int = LOG_FILE_BACKUPS) -> logging.Handler:
    """A rotating file of the same JSON lines: 50 MB per file, 5 kept (see LogFileHandler)."""
    path = log_file_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    return LogFileHandler(path, formatter, max_bytes, backups)


def log_file_path(data_dir: Path) -> Path:
    return data_dir / "logs" / "dora-bot.jsonl"


def _attribute_value(value: Any) -> Any:
    if type(value) in (str, int, bool, float):
        return value if type(value) is not float or math.isfinite(value) else str(value)
    if value is None:
        return None
    return dumps_line({"v": _clean(value)})[5:-1]  # JSON text of the value


# --- otlp attribute mapping (owned by the `eco` helper: deployment conventions) ----------------------
# OpenTelemetry semantic conventions, "Exceptions" on log records: exception.type / exception.message /
# exception.stacktrace. The JSON lines keep the plan's names (error_type, error_msg, stack).
OTLP_RENAMED = {"error_type": "exception.type", "error_msg": "exception.message", "stack": "exception.stacktrace"}
_HEX = frozenset("0123456789abcdef")


def _valid_id(value: Any, length: int) -> bool:
    return (type(value) is str and len(value) == length and value.strip("0") != ""
            and _HEX.issuperset(value))


def otlp_attributes(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The OTLP log-record attributes for a line's (already converted and scrubbed) event fields.

    - `trace_id` / `span_id` are dropped when both are valid ids: the record carries them in its own
      trace_id / span_id fields (the exporter writes them at the top level), so repeating them as
      attributes only doubles them. Malformed values stay as attributes rather than vanish.
    - `error_type` / `error_msg` / `stack` become `exception.type` / `exception.message` /
      `exception.stacktrace`, whichever are present (a watchdog's ERROR has a type but no stack).
    Pure; runs on the log pipeline's writer thread.
    """
    drop_ids = _valid_id(flat.get("trace_id"), 32) and _valid_id(flat.get("span_id"), 16)
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if drop_ids and key in ("trace_id", "span_id"):
            continue
        out[OTLP_RENAMED.get(key, key)] = value
    return out


def otlp_handler(logger_provider: Any) -> logging.Handler:
    """opentelemetry-instrumentation-logging's handler, fed flat underscore-named attributes.

    The CloudWatch exporter stores attributes under `$.attributes`, so an event's `event_type`
    lands at `$.attributes.event_type` — where the metric filters in deploy/ look for it.
    """
    from opentelemetry import context as otel_context
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    class FlatAttributesHandler(LoggingHandler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                fields = event_fields(record)
                flat = scrub_record({k: _attribute_value(v) for k, v in fields.items() if v is not None},
                                    _LINE_TRUSTED)
                message = scrub_text(record.getMessage())
                flat = otlp_attributes(flat)
                copy = logging.makeLogRecord({
                    "name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                    "msg": message, "args": None, "created": record.created, "msecs": record.msecs,
                    "pathname": record.pathname, "lineno": record.lineno, "funcName": record.funcName,
                })
                copy.__dict__.update(flat)
                # This runs on the log pipeline's thread: give the OTel handler the trace context
                # of the thread that logged, which event_fields captured there.
                token = None
                if "trace_id" in fields and "span_id" in fields:
                    span_context = SpanContext(int(fields["trace_id"], 16), int(fields["span_id"], 16),
                                               is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
                    token = otel_context.attach(set_span_in_context(NonRecordingSpan(span_context)))
                try:
                    super().emit(copy)
                finally:
                    if token is not None:
                        otel_context.detach(token)
            except Exception:  # never raise into the bot; the JSON lines still carry the event
                pass

    handler = FlatAttributesHandler(logger_provider=logger_provider)
    handler.set_name("dora-otel-otlp")
    return handler


_new_record = object.__new__
_MILLIS_Z = tuple(f"{n:03d}Z" for n in range(1001))  # (1000: a fraction that rounds up, as `_ts` wrote it)


class _Flush:
    """A marker travelling through the queue: set when every record before it was written."""

    def __init__(self) -> None:
        self.done = threading.Event()


# Every attribute a LogRecord made by dora_otel's own logger has, except the per-line ones set in
# _Line.record (the writer thread is the only user; process/thread are those of the pipeline).
_LINE_TEMPLATE = dict(vars(logging.LogRecord(_OWN_LOGGER, logging.INFO, "dora_otel", 0, "", None, None)))
_START_TIME = _LINE_TEMPLATE["created"] - _LINE_TEMPLATE["relativeCreated"] / 1000.0


def hex_ids(ids: tuple[int, int]) -> tuple[str, str]:
    """(trace_id, span_id) as ints -> as a line writes them (32 and 16 hex digits)."""
    return f"{ids[0]:032x}", f"{ids[1]:016x}"


def render(message: str | Template, fields: Mapping[str, Any]) -> str:
    """A line's message as text: itself, or its template rendered from the line's fields."""
    return message if type(message) is str else message.render(fields)  # type: ignore[union-attr]


class Template:
    """A line's message, made on the event thread from the line's own fields (`str.format_map`):
    the trading thread hands over the fields and does not format their numbers itself. A field the
    template names that the line lacks leaves the template's text as it is."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def render(self, fields: Mapping[str, Any]) -> str:
        try:
            return self.text.format_map(fields)
        except Exception:
            return self.text


class _Line(tuple):  # type: ignore[type-arg]
    """One line as a logging thread queues it, completed and written by the event thread:
    (level, message, fields, created, ids, check, logger, source).

    - `message`: text, or a `Template` rendered from the fields;
    - `fields`: the event's fields (decision, bound fields already captured). For dora's events they
      are shared with the event's span and ledger record: the event thread never changes them;
    - `ids`: the (trace_id, span_id) of the line's span as ints (written as hex), or None;
    - `check`: the event's key-field check when it was not run on the logging thread
      (`check(fields)` logs one ERROR for a malformed event), or None;
    - `logger`: the logger's name; `source`: the bot's own LogRecord for a bot line (handlers that
      take LogRecords, such as the OTLP one, get a copy of it: file, line, function), else None.

    A tuple (made with `tuple.__new__`, read through itemgetter properties): queuing one costs the
    logging thread no Python-level __init__."""

    __slots__ = ()

    level: int = property(itemgetter(0))  # type: ignore[assignment]
    message: str | Template = property(itemgetter(1))  # type: ignore[assignment]
    fields: dict[str, Any] = property(itemgetter(2))  # type: ignore[assignment]
    created: float = property(itemgetter(3))  # type: ignore[assignment]
    ids: tuple[int, int] | None = property(itemgetter(4))  # type: ignore[assignment]
    check: Any = property(itemgetter(5))  # type: ignore[assignment]
    logger: str = property(itemgetter(6))  # type: ignore[assignment]
    source: logging.LogRecord | None = property(itemgetter(7))  # type: ignore[assignment]

    def text(self) -> str:
        return render(self[1], self[2])

    def record(self) -> logging.LogRecord:
        """The LogRecord for handlers that take one: a copy of the bot's own record, else one made
        from a template (LogRecord.__init__ asks the OS for the process and thread each time: a few
        µs per line on the event thread)."""
        record: logging.LogRecord = _new_record(logging.LogRecord)
        rd = record.__dict__
        source = self[7]
        rd.update(_LINE_TEMPLATE if source is None else source.__dict__)
        rd["msg"] = self.text()
        rd["args"], rd["exc_info"], rd["exc_text"] = None, None, None
        if source is None:
            created = self[3]
            rd["levelno"] = self[0]
            rd["levelname"] = logging.getLevelName(self[0])
            rd["created"] = created
            rd["msecs"] = (created - int(created)) * 1000.0
            rd["relativeCreated"] = (created - _START_TIME) * 1000.0
            rd["name"] = self[6]
        fields, ids = self[2], self[4]
        if ids is not None:  # (a copy: the event's own dict is shared, never changed here)
            trace_hex, span_hex = hex_ids(ids)
            fields = dict(fields, trace_id=trace_hex, span_id=span_hex)
        rd["_dora_fields"] = (_OURS, fields)
        return record


_new_line = tuple.__new__


class _EnqueueHandler(logging.handlers.QueueHandler):
    """Runs on the logging thread: O(1), never blocks, never formats the JSON line."""

    def __init__(self, pipeline: LogPipeline) -> None:
        super().__init__(pipeline.queue)
        self._pipeline = pipeline
        self.set_name("dora-otel-enqueue")

    def handle(self, record: logging.LogRecord) -> Any:
        """`Handler.handle` without the handler lock: emitting is one `SimpleQueue.put`, which is
        thread-safe (and safe in a signal handler) on its own; the lock only cost the bot's thread."""
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # (Python 3.12+: a filter may return a replacement)
            record = rv
        if rv:
            self.emit(record)
        return rv

    def prepare(self, record: logging.LogRecord) -> _Line:  # type: ignore[override]
        """The bot's record as a `_Line`: its fields (trace context, decision, bound fields, seq,
        stack: this thread's view, cached on the record so other handlers agree) and its message
        formatted now (its arguments may change later). The record itself is neither copied nor
        changed: the bot's other handlers see it as it was; handlers on the event thread that take
        LogRecords get a copy made there (`_Line.record`)."""
        fields = event_fields(record)
        try:
            message = record.getMessage()
        except Exception:
            message = f"{_safe_str(record.msg)} % {_safe_str(record.args)}"
        if type(message) is not str:
            message = _safe_str(message)
        return _new_line(_Line, (record.levelno, message, fields, record.created, None, None, record.name, record))

    def enqueue(self, record: Any) -> None:
        pipeline = self._pipeline
        if pipeline.closed:  # after SHUTDOWN: nothing may follow it (e.g. an exporter's retry warning)
            return
        if pipeline.queue.qsize() >= pipeline.max_pending:
            pipeline.queue_dropped += 1  # reported in HEARTBEAT / SHUTDOWN as logs_dropped
            return
        pipeline.queue.put_nowait(record)


class _Writer:
    """The writer thread: every `interval_s` (or at once when a flush asks) it drains the queue,
    formats each line and hands it to the output handlers, and builds and hands on each span.

    Why not logging.handlers.QueueListener: its thread blocks on the queue and wakes for every
    single record; that wake-up, and the GIL hand-over it forces, cost the trading thread more
    than formatting the line itself did (measured: ~90 us per line vs ~10 us with batching).
    Logs may lag by up to `interval_s`; they are best effort by design.

    dora's own outputs (stdout, the log file: `write_line`) take the JSON text straight from the
    formatter, encoded once per line for all of them: no LogRecord for a `_Line` and no
    `Handler.handle` (filter, lock) per line. Other handlers (OTLP logs), and any handler a filter
    was added to, get a LogRecord through `handle` as before. Spans bound for the spans file are
    encoded by their tracer and written once per batch (`LiteTracer.export_later` /
    `flush_export`), at the end of the batch and at every flush marker.
    """

    def __init__(self, queue_: queue.SimpleQueue[Any], handlers: list[logging.Handler], interval_s: float) -> None:
        self._queue = queue_
        self._handlers = handlers
        # (handler, its JsonFormatter when the handler takes formatted lines directly, else None)
        self._outputs = [(h, h.formatter if isinstance(h, (BatchStreamHandler, LogFileHandler))
                          and isinstance(h.formatter, JsonFormatter) else None) for h in handlers]
        self._interval_s = interval_s
        self._kick = threading.Event()
        self._stopping = False
        self._span_batches: list[Any] = []  # tracers holding encoded spans until the batch ends
        self.thread = threading.Thread(target=self._run, name="dora-otel-log-writer", daemon=True)

    def kick(self) -> None:
        self._kick.set()

    def stop(self) -> None:
        self._stopping = True
        self._kick.set()

    def _run(self) -> None:
        while True:
            self._kick.wait(self._interval_s)
            self._kick.clear()
            self._drain()
            if self._stopping:
                self._drain()
                return

    def _drain(self) -> None:
        written = False
        try:
            written = self._drain_batch()
        finally:
            self._flush_spans()
            if written:
                self._flush_handlers()

    def _flush_handlers(self) -> None:
        for handler in self._handlers:
            try:
                handler.flush()
            except Exception:  # a broken handler must not stop the writer
                pass

    def _flush_spans(self) -> None:
        batches, self._span_batches = self._span_batches, []
        for tracer in batches:
            try:
                tracer.flush_export()
            except Exception:  # (flush_export never raises; a broken tracer must not stop the writer)
                pass

    def _drain_batch(self) -> bool:
        get = self._queue.get_nowait
        written = False
        while True:
            try:
                item = get()
            except queue.Empty:
                return written
            kind = type(item)
            if kind is _Line:
                self._write_line(item)
            elif kind is logging.LogRecord:
                self._write_record(item)
            elif kind is _Flush:
                self._flush_spans()
                if written:  # everything before the marker is out of the buffers too
                    self._flush_handlers()
                    written = False
                item.done.set()
                continue
            else:  # a dora span (spans.LiteSpan): build it, hand it on
                tracer = item.tracer
                if tracer.export_later(item) and tracer not in self._span_batches:
                    self._span_batches.append(tracer)
                continue
            written = True

    def _write_line(self, item: _Line) -> None:
        check = item[5]  # the deferred key-field check (`_Line.check`), once, before the line is written
        if check is not None:
            try:
                check(item[2])
            except Exception:  # a check never stops the writer
                pass
        level = item[0]
        text, encoded_by, record = "", None, None
        for handler, formatter in self._outputs:
            if level < handler.level:
                continue
            try:
                if formatter is not None and not handler.filters:
                    if formatter is not encoded_by:
                        text, encoded_by = formatter.encode_line(item), formatter
                    handler.write_line(text)  # type: ignore[attr-defined]
                else:
                    if record is None:
                        record = item.record()
                    handler.handle(record)
            except Exception:  # a broken handler must not stop the writer
                pass

    def _write_record(self, record: logging.LogRecord) -> None:
        level = record.levelno
        for handler, formatter in self._outputs:
            if level < handler.level:
                continue
            try:
                if formatter is not None and not handler.filters:
                    handler.write_line(formatter.format(record))  # type: ignore[attr-defined]
                else:
                    handler.handle(record)
            except Exception:  # a broken handler must not stop the writer
                pass


class LogPipeline:
    """Moves JSON formatting and log I/O off the threads that log.

    `queue.SimpleQueue.put` is implemented in C and is safe to call from a signal handler, which a
    SIGTERM shutdown does; the bound (`max_pending`) is checked with `qsize()` before putting.
    """

    def __init__(self, handlers: list[logging.Handler], max_pending: int = 100_000, interval_s: float = 0.05) -> None:
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: set by stop(): records offered after it are not written (SHUTDOWN stays the last line)
        self.closed = False
        self.max_pending = max_pending
        self.queue_dropped = 0
        self.spans_dropped = 0
        self.handler = _EnqueueHandler(self)
        self._writer = _Writer(self.queue, handlers, interval_s)
        self._started = False
        for handler in handlers:
            if isinstance(handler, LogFileHandler):
                handler.report = self._reporter(handler)

    @property
    def dropped(self) -> int:
        """Lines lost: refused by the full queue, or not written by the log file (`logs_dropped`)."""
        return self.queue_dropped + sum(getattr(h, "lines_dropped", 0) for h in self._writer._handlers)

    def stats(self) -> dict[str, int]:
        """The pipeline's loss counters: `logs_dropped` (lines) and `spans_dropped` (spans refused by
        the full event queue). Any thread."""
        return {"logs_dropped": self.dropped, "spans_dropped": self.spans_dropped}

    def put_line(self, level: int, message: str | Template, fields: dict[str, Any], created: float,
                 ids: tuple[int, int] | None = None, check: Any = None) -> None:
        """Queue one dora event line (trading thread; O(1); a full queue drops and counts it).
        `ids` and `check`: see `_Line`."""
        if self.closed:
            return
        if self.queue.qsize() >= self.max_pending:
            self.queue_dropped += 1
            return
        self.queue.put_nowait(_new_line(_Line, (level, message, fields, created, ids, check, _EVENTS_LOGGER, None)))

    def enqueue_span(self, span: Any) -> None:
        """Queue one ended dora span for export (trading thread; O(1); a full queue drops and counts it)."""
        if self.closed:
            return
        if self.queue.qsize() >= self.max_pending:
            self.spans_dropped += 1
            return
        self.queue.put_nowait(span)

    def _reporter(self, source: logging.Handler) -> Any:
        """A function the writer thread calls to write one dora-otel line about `source` straight to
        the other handlers (and to `source` itself when include_self), bypassing the queue."""
        def report(level: int, message: str, fields: dict[str, Any], include_self: bool) -> None:
            record = logging.LogRecord("dora_otel", level, "dora_otel", 0, message, None, None)
            record._dora = fields  # type: ignore[attr-defined]
            for handler in self._writer._handlers:
                if (handler is not source or include_self) and level >= handler.level:
                    try:
                        handler.handle(record)
                    except Exception:
                        pass
        return report

    def start(self) -> None:
        global ACTIVE_PIPELINE
        self._writer.thread.start()
        self._started = True
        _live_pipelines.add(self)
        ACTIVE_PIPELINE = self

    def _after_fork_in_child(self) -> None:
        """A forked child inherits the queue but not the writer thread: give it both afresh
        (lines the parent had queued are the parent's to write)."""
        if not self._started:
            return
        self.queue = queue.SimpleQueue()
        self.closed = False
        handlers = self._writer._handlers
        self._writer = _Writer(self.queue, handlers, self._writer._interval_s)
        self.handler.queue = self.queue
        self._writer.thread.start()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every line logged before this call is written. Any thread; blocks up to timeout_s."""
        if not self._started:
            return True
        marker = _Flush()
        self.queue.put_nowait(marker)
        self._writer.kick()
        return marker.done.wait(max(0.0, timeout_s))

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Write what is queued (within timeout_s) and stop the listener thread."""
        if not self._started:
            return True
        global ACTIVE_PIPELINE
        # SHUTDOWN is already queued: close the gate first, so the last line written is SHUTDOWN and
        # not, say, a retry warning the OTLP log exporter's own thread logs while we flush.
        self.closed = True
        flushed = self.flush(timeout_s)
        self._started = False
        if ACTIVE_PIPELINE is self:
            ACTIVE_PIPELINE = None
        _live_pipelines.discard(self)
        self._writer.stop()
        self._writer.thread.join(timeout=max(0.1, timeout_s))
        return flushed


_live_pipelines: weakref.WeakSet[LogPipeline] = weakref.WeakSet()
#: The started pipeline dora's own lines and spans go to (the event thread); None when not set up.
ACTIVE_PIPELINE: LogPipeline | None = None


def _restart_writers_in_child() -> None:
    for pipeline in list(_live_pipelines):
        try:
            pipeline._after_fork_in_child()
        except Exception:  # the child must come up even if its logging cannot
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_writers_in_child)
