"""Fixtures for the query tests: a shared demo run with faults, and the logging/global-state
restore that in-process `dora_otel.setup()` tests need."""

from __future__ import annotations

import pytest

from ._helpers import FAULTY, DemoRun, run_demo


@pytest.fixture(scope="session")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One demo run with faults, shared read-only by the tests."""
    return run_demo(tmp_path_factory.mktemp("faulty"), *FAULTY)
