"""Shared fixtures for the deployment-artifact checks (collector, CloudFormation, IAM, systemd, alarms)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# The helper modules beside this file (collector_schema, cw_filter_pattern, ...) are imported by plain
# name; make that work whatever pytest import mode is configured.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

REPO = HERE.parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
