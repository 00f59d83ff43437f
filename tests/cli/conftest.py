"""Fixtures for the CLI tests: one demo run with faults (the same as tests/query's), shared read-only."""

from __future__ import annotations

import pytest

from tests.query._helpers import FAULTY, DemoRun, run_demo


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    return run_demo(tmp_path_factory.mktemp("cli-faulty"), *FAULTY)


@pytest.fixture(scope="session")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The default demo (200 cycles x 3 markets): outputs larger than any pipe buffer (1 MiB at most)."""
    return run_demo(tmp_path_factory.mktemp("cli-big"))
