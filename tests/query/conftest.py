"""Fixtures for the query tests: a shared demo run with faults, and the logging/global-state
restore that in-process `dora_otel.setup()` tests need."""

from __future__ import annotations

import logging
from typing import Iterator

import pytest

import dora_otel

from ._helpers import FAULTY, DemoRun, run_demo


@pytest.fixture(scope="session")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One demo run with faults, shared read-only by the tests."""
    return run_demo(tmp_path_factory.mktemp("faulty"), *FAULTY)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Every test leaves the root logger and dora_otel's globals as it found them."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    current = dora_otel.current()
    if current is not None:
        current.shutdown(reason="test teardown")
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
