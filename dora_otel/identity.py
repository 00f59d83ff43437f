"""Run identity: bot_version, bot_run_id, instance id, the per-run `seq`, and the OTel Resource attributes.

`bot_run_id` and `seq` are made once per process: every `setup()` in the same process shares them,
so a gap in `seq` always means telemetry loss, never a restart of the counter.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import string
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

_ALPHABET = string.ascii_lowercase + string.digits
# cloud-init writes the EC2 instance id here; reading a file keeps start-up free of network calls.
CLOUD_INIT_INSTANCE_ID = Path("/var/lib/cloud/data/instance-id")


def new_bot_run_id(now: float | None = None) -> str:
    """`YYYYMMDD-HHMMSS-xxxx` in UTC with a random 4-character suffix."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{''.join(secrets.choice(_ALPHABET) for _ in range(4))}"


def resolve_bot_version(environ: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """BOT_VERSION env, else `git rev-parse --short HEAD`, else "unknown". Never raises."""
    environ = os.environ if environ is None else environ
    version = environ.get("BOT_VERSION", "").strip()
    if version:
        return version
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=cwd, capture_output=True, text=True, timeout=2, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else "unknown"


def resolve_instance_id(environ: Mapping[str, str] | None = None) -> str:
    """DORA_INSTANCE_ID env, else the cloud-init EC2 instance id, else the host name."""
    environ = os.environ if environ is None else environ
    value = environ.get("DORA_INSTANCE_ID", "").strip()
    if value:
        return value
    try:
        value = CLOUD_INIT_INSTANCE_ID.read_text(encoding="utf-8").strip()
    except OSError:
        value = ""
    return value or socket.gethostname() or "unknown-host"


def resource_attributes(
    *, service_name: str, env: str, bot_version: str, bot_run_id: str, instance_id: str
) -> dict[str, str]:
    """The OTel Resource, by semantic-convention names.

    `service.instance.id` is `"{instance_id}/{bot_run_id}"`: the ADOT CloudWatch Logs exporter can
    only vary a stream name through `{InstanceId}` (read from this attribute), and each bot run
    must get its own stream `{instance_id}/{bot_run_id}` (see collector/config.yaml).
    """
    return {
        "service.name": service_name,
        "service.version": bot_version,
        "deployment.environment.name": env,
        "service.instance.id": f"{instance_id}/{bot_run_id}",
        "dora.bot_run_id": bot_run_id,
    }


# Per-process identity. itertools.count's __next__ is atomic under the GIL, so `next_seq` is
# thread-safe without a lock (it is on the hot path: every log line and ledger record takes one).
BOT_RUN_ID: str = new_bot_run_id()
_seq = itertools.count(1)
next_seq = _seq.__next__
