"""One exit-code table for every subcommand (dora_otel.query.output.Exit, README "Exit codes"):
0 ok, 1 mismatches, 2 usage error, 3 not found, 4 no data in range, 5 backend unreachable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dora_otel.query.output import EXIT_TABLE, Exit
from tests.query._helpers import MARKETS, clean_env, dora_cli

UNREACHABLE_AWS = {"AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:9", "AWS_REGION": "us-east-1",
                   "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_EC2_METADATA_DISABLED": "true",
                   "AWS_MAX_ATTEMPTS": "1"}


def test_the_table_is_in_every_subcommands_help():
    for command in ((), ("explain",), ("reconcile",), ("report",), ("tables",)):
        proc = dora_cli(*command, "--help")
        assert proc.returncode == 0
        text = " ".join(proc.stdout.split())
        assert " ".join(EXIT_TABLE.split()) in text, command
    assert [int(c) for c in (Exit.OK, Exit.MISMATCHES, Exit.USAGE, Exit.NOT_FOUND, Exit.NO_DATA,
                             Exit.UNREACHABLE)] == [0, 1, 2, 3, 4, 5]


def test_ok_0_and_mismatches_1(cli_run):
    data = str(cli_run.data_dir)
    assert dora_cli("explain", "--market", MARKETS[0], "--data-dir", data).returncode == 0
    assert dora_cli("reconcile", "--since", "1h ago", "--data-dir", data).returncode == 1
    assert dora_cli("report", "--since", "1h ago", "--out", "-", "--data-dir", data).returncode == 0


@pytest.mark.parametrize("args", [
    ("explain", "--market", "M", "--at", "whenever"),
    ("explain", "not-a-decision-id"),
    ("reconcile",),  # --since is required
    ("reconcile", "--since", "now", "--until", "1h ago"),
    ("report", "--since", "soon"),
    ("explain", "--market", "M", "--all", "--limit", "3"),
    ("frobnicate",),
])
def test_usage_errors_exit_2_with_one_line_and_no_telemetry(cli_run, args):
    proc = dora_cli(*args, "--data-dir", str(cli_run.data_dir))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr and "STARTUP" not in proc.stderr


def test_not_found_3(cli_run, tmp_path):
    data = str(cli_run.data_dir)
    proc = dora_cli("explain", "f" * 32, "--data-dir", data)
    assert proc.returncode == 3 and f"decision {'f' * 32} not found" in proc.stderr
    for command in (("explain", "--market", "M"), ("reconcile", "--since", "1h ago"), ("report", "--since", "1h ago")):
        proc = dora_cli(*command, "--data-dir", str(tmp_path / "nowhere"))
        assert proc.returncode == 3 and "does not exist" in proc.stderr, command
    (tmp_path / "no-ledger").mkdir()
    proc = dora_cli("reconcile", "--since", "1h ago", "--data-dir", str(tmp_path / "no-ledger"))
    assert proc.returncode == 3 and "needs a ledger" in proc.stderr


def test_no_data_in_range_4_is_not_clean(cli_run):
    data = str(cli_run.data_dir)
    proc = dora_cli("reconcile", "--since", "2020-01-01T00:00:00Z", "--until", "2020-01-01T01:00:00Z",
                    "--data-dir", data)
    assert proc.returncode == 4, proc.stderr
    assert "NO DATA (exit 4)" in proc.stderr and "clean" not in proc.stderr
    summary = [json.loads(line) for line in proc.stdout.splitlines()][-1]
    assert summary["decisions"] == 0 and summary["clean"] is False and summary["exit_code"] == 4
    proc = dora_cli("reconcile", "--since", "2020-01-01T00:00:00Z", "--until", "2020-01-01T01:00:00Z", "--json",
                    "--data-dir", data)
    assert proc.returncode == 4 and json.loads(proc.stdout)["clean"] is False
    assert dora_cli("explain", "--market", "NO-SUCH-MARKET", "--data-dir", data).returncode == 4
    assert dora_cli("explain", "--market", MARKETS[0], "--at", "2020-01-01T00:00:00Z",
                    "--data-dir", data).returncode == 4
    assert dora_cli("report", "--since", "2020-01-01T00:00:00Z", "--until", "2020-01-02T00:00:00Z",
                    "--out", "-", "--data-dir", data).returncode == 4


def test_backend_unreachable_5():
    env = clean_env(**UNREACHABLE_AWS)
    for command in (("explain", "0" * 32), ("reconcile", "--since", "1h ago"), ("report", "--since", "1h ago")):
        proc = dora_cli(*command, "--ledger", "dynamodb", "--logs", "none", env=env)
        assert proc.returncode == 5 and "Could not connect" in proc.stderr, (command, proc.stderr)
        assert "Traceback" not in proc.stderr
    proc = dora_cli("tables", "describe", env=env)
    assert proc.returncode == 5 and "Traceback" not in proc.stderr


def test_tables_describe_prints_one_document_and_3_when_a_table_is_missing(dynalite_server):
    env = clean_env(AWS_ENDPOINT_URL_DYNAMODB=dynalite_server.endpoint, AWS_REGION="us-east-1",
                    AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.run([sys.executable, "-m", "dora_otel.cli", "tables", "describe", "--env", "prod"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 3, proc.stderr
    document = json.loads(proc.stdout)  # exactly one JSON document (json.loads rejects two)
    assert sorted(document["missing"]) == ["dora_decision_log_prod", "dora_execution_log_prod"]
    assert "tables create --env prod" in proc.stderr
