"""Fixtures for the core telemetry tests: a set-up Telemetry writing JSON lines into memory, with
an in-memory span exporter attached, torn down (and global state restored) after each test."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import dora_otel


class Captured:
    def __init__(self, telemetry: dora_otel.Telemetry, stream: io.StringIO, spans: InMemorySpanExporter) -> None:
        self.telemetry = telemetry
        self.stream = stream
        self.exporter = spans

    def lines(self) -> list[dict[str, Any]]:
        self.flush()
        text = self.stream.getvalue()
        return [json.loads(line) for line in text.split("\n") if line]

    def flush(self) -> None:
        if not self.telemetry.closed:
            assert self.telemetry.flush(10), "telemetry did not flush in time"

    def raw_lines(self) -> list[str]:
        self.flush()
        return [line for line in self.stream.getvalue().split("\n") if line]

    def events(self, event_type: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["event_type"] == event_type]

    def spans(self, name: str | None = None) -> list[Any]:
        self.flush()  # dora's spans are built and exported on the event thread
        spans = list(self.exporter.get_finished_spans())
        return [s for s in spans if name is None or s.name == name or s.name.startswith(name + " ")]


def start(tmp_path: Any, **overrides: Any) -> Captured:
    stream = io.StringIO()
    args: dict[str, Any] = {"stream": stream, "container_mode": True, "data_dir": tmp_path, "ledger": "off",
                            "strict": True, "install_signal_handlers": False, "watchdog_seconds": 0}
    args.update(overrides)
    telemetry = dora_otel.setup(**args)
    exporter = InMemorySpanExporter()
    if telemetry.tracer_provider is not None:  # None under OTEL_SDK_DISABLED
        telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Captured(telemetry, stream, exporter)


@pytest.fixture
def cap(tmp_path: Any) -> Iterator[Captured]:
    captured = start(tmp_path)
    yield captured
    captured.telemetry.shutdown(reason="test")
