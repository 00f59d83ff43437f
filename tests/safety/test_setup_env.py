"""setup() never stops a bot because of its environment: a bad DORA_* / OTEL_* value or an unusable
data directory gives one ERROR line naming it and a working fallback; a bad *argument* still raises
ValueError naming it; and whatever fails, the bot's own logging configuration is left as it was."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dora_otel
from dora_otel import telemetry as telemetry_module
from tests.mounts import mounted_tmpfs

REPO = Path(__file__).resolve().parents[2]


class BotLogging:
    """A bot's own logging setup, and a check that it is exactly as it was."""

    def __init__(self) -> None:
        self.root = logging.getLogger()
        self.handler = logging.StreamHandler(io.StringIO())
        self.before: tuple[Any, ...] = ()

    def install(self) -> None:
        self.root.addHandler(self.handler)
        self.root.setLevel(logging.WARNING)
        logging.getLogger("opentelemetry").propagate = False
        self.before = self.snapshot()

    def snapshot(self) -> tuple[Any, ...]:
        # pytest adds and removes its own capture handlers around each test phase: not the bot's
        handlers = [h for h in self.root.handlers if not type(h).__module__.startswith("_pytest")]
        return (handlers, self.root.level, logging.getLogger("opentelemetry").propagate)

    def uninstall(self) -> None:
        self.root.removeHandler(self.handler)
        logging.getLogger("opentelemetry").propagate = True


@pytest.fixture
def bot_logging() -> Iterator[BotLogging]:
    state = BotLogging()
    saved = (list(state.root.handlers), state.root.level)
    state.install()
    yield state
    state.uninstall()
    state.root.setLevel(saved[1])


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def run_bot(data_dir: Path | None, **overrides: Any) -> tuple[dora_otel.Telemetry, io.StringIO]:
    """setup() (data_dir None: from DORA_DATA_DIR, as a deployed bot gets it) and five fills."""
    stream = io.StringIO()
    args: dict[str, Any] = {"stream": stream, "install_signal_handlers": False,
                            "watchdog_seconds": 0, "shutdown_timeout_s": 1.0}
    if data_dir is not None:
        args["data_dir"] = data_dir
    args.update(overrides)
    telemetry = dora_otel.setup(**args)
    for i in range(5):
        dora_otel.record_fill(market="KXBTC-26DEC01-B97000", side="yes", price=0.5, size=1, pnl_delta=0.0,
                              order_id=f"ord-{i}")
    return telemetry, stream


BAD_ENV = [
    ("OTEL_BSP_MAX_QUEUE_SIZE", "99"),  # the SDK raised: batch size 512 > queue size
    ("OTEL_BSP_SCHEDULE_DELAY", "0"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-1"),
    ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "-5"),
    ("DORA_LEDGER_MAX_BYTES", "2048"),  # the journal raised: below its 4096 minimum
    ("DORA_ENV", "staging"),
    ("DORA_LEDGER", "postgres"),
    ("DORA_SHUTDOWN_TIMEOUT", "soon"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
]


@pytest.mark.parametrize(("name", "value"), BAD_ENV, ids=[n for n, _ in BAD_ENV])
def test_a_bad_environment_value_is_one_error_and_telemetry_keeps_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bot_logging: BotLogging, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    telemetry, stream = run_bot(tmp_path)
    try:
        assert telemetry.flush(10)
        stats = telemetry.stats()
        assert stats["shipped"] == 5 and stats["durable"] is True  # the ledger works
    finally:
        telemetry.shutdown(reason="test")
    lines = lines_of(stream)
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1, errors
    assert errors[0]["env_var"] == name and errors[0]["env_value"] == value
    assert name in errors[0]["message"] and repr(value) in errors[0]["message"]
    assert [line["event_type"] for line in lines].count("FILL") == 5
    assert bot_logging.snapshot() == bot_logging.before


@pytest.mark.parametrize(
    ("name", "value"),
    [("OTEL_BLRP_MAX_QUEUE_SIZE", "1"), ("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "many"),
     ("OTEL_ATTRIBUTE_COUNT_LIMIT", "x")],  # the last is read for spans and for log records: one ERROR
)
def test_a_bad_otlp_log_value_is_one_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bot_logging: BotLogging, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    telemetry, stream = run_bot(tmp_path, otlp_endpoint="http://127.0.0.1:9", otlp_protocol="http/protobuf",
                                ledger="off", shutdown_timeout_s=0.5)
    assert telemetry.logger_provider is not None  # OTLP log export still set up
    telemetry.shutdown(reason="test")
    errors = [line for line in lines_of(stream) if line["level"] == "ERROR" and name in line["message"]]
    assert [(e["env_var"], e["env_value"]) for e in errors] == [(name, value)]
    assert bot_logging.snapshot() == bot_logging.before


def test_an_otlp_exporter_that_rejects_its_environment_falls_back_to_the_spans_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bot_logging: BotLogging
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "bogus")  # the gRPC exporters raise on it
    telemetry, stream = run_bot(tmp_path, otlp_endpoint="http://127.0.0.1:9", otlp_protocol="grpc",
                                shutdown_timeout_s=0.5)
    assert telemetry.flush(10) and telemetry.stats()["shipped"] == 5
    telemetry.shutdown(reason="test")
    errors = [line for line in lines_of(stream) if line["level"] == "ERROR"]
    assert errors and all("OTEL_EXPORTER_OTLP_COMPRESSION" in e["message"] for e in errors)
    assert (tmp_path / "spans" / "spans.jsonl").stat().st_size > 0
    assert bot_logging.snapshot() == bot_logging.before


def _check_memory_fallback(telemetry: dora_otel.Telemetry, stream: io.StringIO, data_dir: Path,
                           expected_error: str) -> None:
    stats = telemetry.stats()
    assert stats["durable"] is False and stats["unjournaled"] == 5
    telemetry.shutdown(reason="test")
    lines = lines_of(stream)
    data_dir_errors = [
        line for line in lines if line["level"] == "ERROR" and "data directory" in line["message"]
    ]
    assert len(data_dir_errors) == 1
    error = data_dir_errors[0]
    assert error["error_type"] == expected_error and str(data_dir) in error["message"]
    assert error["env_var"] == "DORA_DATA_DIR" and "NOT durable" in error["message"]
    assert [line["event_type"] for line in lines].count("FILL") == 5  # lines still on the stream
    shutdown = lines[-1]
    assert shutdown["event_type"] == "SHUTDOWN"
    # The SQLite ledger lives in the same unusable directory: the 5 records are counted lost.
    assert shutdown["ledger_dropped"] == 5 and shutdown["flushed"] is False
    assert shutdown["ledger_durable"] is False


def test_data_dir_below_a_regular_file_falls_back_to_stdout_and_a_memory_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bot_logging: BotLogging
) -> None:
    (tmp_path / "file").write_text("x")
    data_dir = tmp_path / "file" / "data"
    monkeypatch.setenv("DORA_DATA_DIR", str(data_dir))
    telemetry, stream = run_bot(None)
    _check_memory_fallback(telemetry, stream, data_dir, "NotADirectoryError")
    assert bot_logging.snapshot() == bot_logging.before


def test_with_an_unusable_data_dir_a_remote_ledger_still_ships_from_memory(
    tmp_path: Path, bot_logging: BotLogging
) -> None:
    """The memory fallback is only lossy when the sink itself lives in that directory: a sink
    elsewhere (here the in-process one standing in for DynamoDB) gets every record."""
    (tmp_path / "file").write_text("x")
    telemetry, stream = run_bot(tmp_path / "file" / "data", ledger="memory")
    assert telemetry.flush(10)
    stats = telemetry.stats()
    assert stats["shipped"] == 5 and stats["durable"] is False and stats["unjournaled"] == 5
    telemetry.shutdown(reason="test")
    shutdown = lines_of(stream)[-1]
    assert shutdown["ledger_dropped"] == 0 and shutdown["flushed"] is True
    assert bot_logging.snapshot() == bot_logging.before


def test_read_only_data_dir_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bot_logging: BotLogging
) -> None:
    data_dir = tmp_path / "ro"
    with mounted_tmpfs(data_dir, "ro,size=64k") as mounted:
        if not mounted:
            pytest.skip("needs mount -t tmpfs -o ro (root)")
        monkeypatch.setenv("DORA_DATA_DIR", str(data_dir))
        telemetry, stream = run_bot(None)
        _check_memory_fallback(telemetry, stream, data_dir, "OSError")  # EROFS
    assert bot_logging.snapshot() == bot_logging.before


@contextlib.contextmanager
def immutable_dir(path: Path) -> Iterator[bool]:
    """A directory nobody, not even root, may create files in (``chattr +i``: EPERM)."""
    path.mkdir(parents=True)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)


def test_data_dir_without_permission_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bot_logging: BotLogging
) -> None:
    """PermissionError (we run as root, so an immutable directory stands in for a foreign one)."""
    data_dir = tmp_path / "immutable"
    with immutable_dir(data_dir) as ok:
        if not ok:
            pytest.skip("needs chattr +i")
        monkeypatch.setenv("DORA_DATA_DIR", str(data_dir))
        telemetry, stream = run_bot(None)
        _check_memory_fallback(telemetry, stream, data_dir, "PermissionError")
    assert bot_logging.snapshot() == bot_logging.before


@pytest.mark.parametrize(
    ("argument", "value", "match"),
    [
        ("ledger_max_bytes", 2048, r"ledger_max_bytes \(2048\) must be an int >= 4096"),
        ("env", "staging", r"env \('staging'\)"),
        ("ledger", "postgres", r"ledger \('postgres'\)"),
    ],
)
def test_a_bad_argument_still_raises_naming_it_and_leaves_logging_alone(
    bot_logging: BotLogging, argument: str, value: Any, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        dora_otel.setup(**{argument: value})
    assert bot_logging.snapshot() == bot_logging.before
    assert dora_otel.current() is None


def test_an_unexpected_failure_inside_setup_restores_the_bots_logging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bot_logging: BotLogging
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom (test)")

    monkeypatch.setattr(telemetry_module, "_install_global_provider", broken)
    with pytest.raises(RuntimeError, match="boom"):
        dora_otel.setup(stream=io.StringIO(), data_dir=tmp_path, install_signal_handlers=False,
                        watchdog_seconds=0)
    assert bot_logging.snapshot() == bot_logging.before
    assert dora_otel.current() is None
