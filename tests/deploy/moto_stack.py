"""Deploy CloudFormation templates to moto's server (a child process on 127.0.0.1) for tests.

`MotoServer` runs ``moto_server -H 127.0.0.1 -p PORT`` (pip ``moto[server]``): a separate process,
so moto's own warnings and state stay out of the test process. `deploy()` creates a stack, waits for
a terminal status and raises `DeployError` (with moto's reason) unless it is CREATE_COMPLETE and
every resource the template declares exists — moto *silently skips* resource types it does not
implement (../../shared/FACTS.md: AWS::Logs::MetricFilter, AWS::CloudWatch::Alarm,
AWS::Logs::QueryDefinition, checked instead by the project's own filter evaluator in tests/deploy),
so a skip is an error unless its type is in `KNOWN_SKIPPED`.

Every boto3 client here names the region and the endpoint; the tests also set
``AWS_EC2_METADATA_DISABLED=true`` so nothing asks the EC2 metadata address.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import cfn_template
import yaml

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# Resource types moto's CloudFormation accepts but does not create (moto 5.2.5). The first three are
# covered offline (tests/deploy/test_deploy_metric_filters.py, test_deploy_real_exporter.py,
# test_deploy_cloudformation.py); the e-mail subscriptions only by cfn-lint (moto implements
# AWS::SNS::Topic but not AWS::SNS::Subscription in CloudFormation).
KNOWN_SKIPPED = frozenset({"AWS::Logs::MetricFilter", "AWS::CloudWatch::Alarm", "AWS::Logs::QueryDefinition",
                           "AWS::SNS::Subscription"})


class DeployError(AssertionError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """moto's server as a child process on 127.0.0.1; `client(service)` reaches it."""

    def __init__(self) -> None:
        self.port = _free_port()
        exe = Path(sys.executable).with_name("moto_server")
        cmd = str(exe) if exe.exists() else shutil.which("moto_server")
        if cmd is None:
            raise DeployError("moto_server is not installed: pip install -e '.[test]' (moto[server])")
        self._argv = [cmd, "-H", "127.0.0.1", "-p", str(self.port)]
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> MotoServer:
        self._proc = subprocess.Popen(self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise DeployError(f"moto_server exited {self._proc.returncode}: {err[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise DeployError(f"moto_server did not listen on 127.0.0.1:{self.port} within {timeout_s:g} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION, **CREDENTIALS)


def declared_resources(template_body: str) -> dict[str, str]:
    """Logical id -> type of every resource the template declares (deploy with parameters that make
    every Condition true)."""
    template = yaml.load(template_body, Loader=cfn_template._CfnLoader)
    return {name: res["Type"] for name, res in (template.get("Resources") or {}).items()}


def deploy(server: MotoServer, name: str, template_body: str, parameters: dict[str, str] | None = None,
           timeout_s: float = 60.0, known_skipped: frozenset[str] = KNOWN_SKIPPED) -> dict[str, str]:
    """Create stack `name`; return logical id -> physical id of what moto created. Raises DeployError."""
    cfn = server.client("cloudformation")
    try:
        cfn.create_stack(StackName=name, TemplateBody=template_body,
                         Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in (parameters or {}).items()],
                         Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"])
    except Exception as exc:  # moto answers 400/500 for what it cannot even start to create
        raise DeployError(f"{name}: create_stack refused: {type(exc).__name__}: {str(exc)[:500]}") from exc
    deadline = time.monotonic() + timeout_s
    while True:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        status = stack["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            raise DeployError(f"{name}: still {status} after {timeout_s:g} s")
        time.sleep(0.2)
    if status != "CREATE_COMPLETE":
        raise DeployError(f"{name}: {status}: {stack.get('StackStatusReason')}")
    created = {r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
               for r in cfn.describe_stack_resources(StackName=name)["StackResources"] if r.get("LogicalResourceId")}
    skipped = {lid: rtype for lid, rtype in declared_resources(template_body).items() if lid not in created}
    unexpected = {lid: rtype for lid, rtype in skipped.items() if rtype not in known_skipped}
    if unexpected:
        raise DeployError(f"{name}: CREATE_COMPLETE but moto did not create {unexpected} "
                          f"(a type moto silently skips is not a deployment)")
    return created
