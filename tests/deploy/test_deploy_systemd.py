"""The systemd units load cleanly with systemd-analyze and say what the deployment relies on."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import systemd_verify as sv

from dora_otel.query.output import Exit

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = ("dora-bot.service", "dora-reconcile.service", "dora-reconcile.timer")
# The shape of the unit the aws-otel-collector package installs (tools/packaging/linux/
# aws-otel-collector.service in aws-observability/aws-otel-collector); our drop-in extends it.
ADOT_UNIT = """[Unit]
Description=ADOT Collector
After=network.target

[Service]
Type=simple
EnvironmentFile=/opt/aws/aws-otel-collector/etc/.env
ExecStart=/opt/aws/aws-otel-collector/bin/aws-otel-collector $config
KillMode=process
Restart=on-failure
RestartSec=60s
User=aoc
Group=aoc

[Install]
WantedBy=multi-user.target
"""


def _text(name: str) -> str:
    return (DEPLOY / name).read_text(encoding="utf-8")


@pytest.fixture
def root(tmp_path):
    return sv.make_root(tmp_path / "root", {name: _text(name) for name in UNITS})


def test_systemd_analyze_verify_accepts_the_bot_and_reconcile_units(root):
    sv.verify(root, *UNITS)


def test_systemd_analyze_verify_accepts_the_collector_drop_in(tmp_path):
    dropin = (DEPLOY / "aws-otel-collector.service.d" / "10-dora.conf").read_text(encoding="utf-8")
    root = sv.make_root(tmp_path / "root", {}, {"aws-otel-collector.service": {"10-dora.conf": dropin}})
    (root / "usr/lib/systemd/system/aws-otel-collector.service").write_text(ADOT_UNIT, encoding="utf-8")
    # The package's binary, which ADOT_UNIT's ExecStart names.
    stub = root / "opt/aws/aws-otel-collector/bin/aws-otel-collector"
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("#!/bin/sh\n", encoding="utf-8")
    stub.chmod(0o755)
    sv.verify(root, "aws-otel-collector.service")


@pytest.mark.parametrize("unit", ["dora-bot.service", "dora-reconcile.service"])
def test_services_are_hardened(root, unit):
    # systemd's own scale: below 2.0 is "OK", 10 is an unrestricted service.
    assert sv.exposure(root, unit) <= 2.0


def test_verify_reports_a_misspelled_key(tmp_path):
    broken = _text("dora-bot.service").replace("Restart=on-failure", "Restrat=on-failure")
    root = sv.make_root(tmp_path / "root", {"dora-bot.service": broken})
    with pytest.raises(sv.VerifyError, match="Unknown key 'Restrat'"):
        sv.verify(root, "dora-bot.service")


def test_verify_reports_a_missing_executable(tmp_path):
    root = sv.make_root(tmp_path / "root", {"dora-bot.service": _text("dora-bot.service")})
    (root / "opt/dora-bot/venv/bin/python").unlink()
    with pytest.raises(sv.VerifyError, match="is not executable"):
        sv.verify(root, "dora-bot.service")


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_bot_unit_runs_the_bot_as_dora_with_its_env_and_a_writable_state_dir():
    s = sv.settings(_text("dora-bot.service"))
    assert s["User"] == ["dora"] and s["Group"] == ["dora"]
    assert s["EnvironmentFile"] == ["/etc/dora-bot/env"]
    assert s["ExecStart"] == ["/opt/dora-bot/venv/bin/python -m dora_bot"]
    assert s["Restart"] == ["on-failure"]
    assert s["KillSignal"] == ["SIGTERM"]
    # The app's shutdown budget is 5 s; leave room for a graceful stop before SIGKILL.
    assert _seconds(s["TimeoutStopSec"][0]) >= 15
    assert s["StandardOutput"] == ["journal"]
    assert "CONTAINER_MODE=true" in s["Environment"]
    assert "DORA_DATA_DIR=/var/lib/dora-bot" in s["Environment"]
    assert s["StateDirectory"] == ["dora-bot"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes"}.items():
        assert s[key] == [value], key


def test_reconcile_runs_every_ten_minutes_over_the_last_fifteen_as_reader():
    s = sv.settings(_text("dora-reconcile.service"))
    assert s["Type"] == ["oneshot"]
    assert s["ExecStart"] == ['/opt/dora-bot/venv/bin/dora-otel reconcile --since "15 minutes ago"']
    assert "AWS_PROFILE=dora-reader" in s["Environment"]
    assert "AWS_PROFILE=dora-writer" in sv.settings(_text("dora-bot.service"))["Environment"]
    t = sv.settings(_text("dora-reconcile.timer"))
    assert t["OnCalendar"] == ["*:0/10"]
    assert t["Unit"] == ["dora-reconcile.service"]


def test_env_example_sets_the_documented_variables_and_nothing_the_units_own():
    env = dict(line.split("=", 1) for line in _text("env.example").splitlines()
               if line and not line.startswith("#"))
    assert env["DORA_ENV"] in ("demo", "prod")
    assert env["DORA_LEDGER"] == "dynamodb"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert {"BOT_VERSION", "AWS_REGION"} <= set(env)
    # EnvironmentFile= values override Environment=: these must stay in the units.
    assert not {"CONTAINER_MODE", "DORA_DATA_DIR", "AWS_PROFILE"} & set(env)


# --- the collector refuses to start without a valid DORA_ENV --------------------------------------

def _collector_env_guard() -> list[str]:
    """The drop-in's ExecStartPre as the argv systemd would run ($$ is systemd's escape for $)."""
    (line,) = sv.settings((DEPLOY / "aws-otel-collector.service.d" / "10-dora.conf").read_text(
        encoding="utf-8"))["ExecStartPre"]
    return shlex.split(line.replace("$$", "$"))


@pytest.mark.parametrize("value", [None, "", "staging", "prod "])
def test_collector_env_guard_refuses_an_unset_empty_or_unknown_dora_env(value):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if value is not None:
        env["DORA_ENV"] = value
    proc = subprocess.run(_collector_env_guard(), env=env, capture_output=True, text=True, timeout=10, check=False)
    assert proc.returncode != 0
    assert f"DORA_ENV must be demo or prod, got [{value or ''}]" in proc.stderr


@pytest.mark.parametrize("value", ["demo", "prod"])
def test_collector_env_guard_lets_demo_and_prod_start(value):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DORA_ENV": value}
    proc = subprocess.run(_collector_env_guard(), env=env, capture_output=True, text=True, timeout=10, check=False)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_collector_env_guard_runs_before_the_collector_and_the_unit_sets_a_valid_env():
    s = sv.settings((DEPLOY / "aws-otel-collector.service.d" / "10-dora.conf").read_text(encoding="utf-8"))
    assert s["ExecStartPre"][0].startswith("/bin/sh -c ")
    assert s["Environment"] == ["DORA_ENV=prod"]


# --- the reconcile unit: which exit codes alert, and it runs only while the bot runs --------------

def test_every_reconcile_exit_code_but_ok_fails_the_unit_and_the_unit_says_what_each_means():
    text = _text("dora-reconcile.service")
    s = sv.settings(text)
    # A failed oneshot is what alerts (systemd's "Failed with result" line -> the crashes filter ->
    # dora-bot-errors); declaring 1, 4 or 5 a success would silence mismatches, a bot that decided
    # nothing, or a check that could not read its data.
    assert not {"SuccessExitStatus", "RestartPreventExitStatus", "Restart"} & set(s)
    assert not s["ExecStart"][0].startswith("-")  # "-" would ignore every failure
    documented = set()
    for match in re.finditer(r"^#\s+(\d(?:, \d)*)\s{2}", text, re.MULTILINE):
        documented |= {int(code) for code in match.group(1).split(", ")}
    # Every code dora-otel can end with (bar Ctrl-C and a closed pipe, which a timer run never sees)
    # has a stated treatment in the unit's comments.
    assert documented == {int(code) for code in Exit if code < 128}


def _reconcile_condition() -> list[str]:
    """The reconcile unit's ExecCondition as the argv systemd would run ($$ is systemd's `$`)."""
    (line,) = sv.settings(_text("dora-reconcile.service"))["ExecCondition"]
    return shlex.split(line.replace("$$", "$"))


def _run_condition(tmp_path: Path, stdout: str, status: int) -> subprocess.CompletedProcess[str]:
    """Run the condition with a `systemctl` on PATH that answers `is-active dora-bot.service` so."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text('#!/bin/sh\n[ "$*" = "is-active dora-bot.service" ] || { echo "asked: $*" >&2; exit 99; }\n'
                    f"printf %s {shlex.quote(stdout)}\nexit {status}\n", encoding="utf-8")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    return subprocess.run(_reconcile_condition(), env=env, capture_output=True, text=True, timeout=10, check=False)


def test_reconcile_runs_while_the_bot_is_active(tmp_path):
    proc = _run_condition(tmp_path, "active\n", 0)  # what `systemctl is-active` prints and returns
    assert (proc.returncode, proc.stderr) == (0, "")


@pytest.mark.parametrize("state", ["inactive", "failed", "activating", "deactivating"])
def test_reconcile_is_skipped_not_failed_while_the_bot_is_not_running(tmp_path, state):
    # ExecCondition exit 1..254: systemd skips the run without failing the unit, so a planned stop
    # never pages through exit 4 ("no decisions") every 10 minutes.
    proc = _run_condition(tmp_path, f"{state}\n", 3)
    assert proc.returncode == 1
    assert f"dora-bot.service is {state}, no live bot to reconcile: skipped" in proc.stderr


def test_reconcile_fails_when_systemctl_cannot_say_whether_the_bot_runs(tmp_path):
    # No D-Bus answer: systemctl prints nothing on stdout and exits 1. 255 fails the unit (alert)
    # instead of skipping every run quietly.
    proc = _run_condition(tmp_path, "", 1)
    assert proc.returncode == 255
    assert "cannot tell whether dora-bot.service runs (systemctl is-active said [])" in proc.stderr
