"""The AWS backend of the query commands: the DynamoDB ledger (through the sink's reader: Query
only, never Scan) and the app's log lines through CloudWatch Logs Insights.

Owns the Insights queries and the reading of their results. Log lines reach CloudWatch on the OTLP
path (app -> ADOT collector -> `awscloudwatchlogs`, `raw_log: false`), so each event is a JSON
object `{body, severity_text, trace_id, span_id, attributes: {app fields}, resource: {...}}` in the
group `/dora-bot/{env}/app`, and Insights addresses the app's fields as `attributes.<field>`
(collector/config.yaml, ../../shared/FACTS.md). This module turns such events back into the flat
lines the JSON formatter writes, so the rest of `query/` does not care where a line came from.

Insights is asynchronous: StartQuery, then GetQueryResults until the status is terminal, within
a time budget (StopQuery when it runs out). The time range goes to StartQuery (`startTime` /
`endTime`, epoch seconds), never into the query text. One query returns at most 10,000 rows;
a range that hits the limit is split in halves and queried again.

The logs client is injectable (`logs_client=`); by default one is made on first use from boto3's
standard settings (AWS_REGION, AWS_PROFILE, the credential chain). Calls block on the network.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from dora_otel.logs import OTLP_RENAMED
from dora_otel.protocols import LedgerReader
from dora_otel.query.sources import (
    LogLines,
    LogsUnavailable,
    Region,
    describe_reader,
    merge_regions,
    unique_lines,
    with_order_join,
)

__all__ = ["AwsSource", "InsightsReader", "decision_insights_query", "line_from_event", "log_group"]

MAX_ROWS = 10_000
_MAX_QUERY_CHARS = 9_000  # Insights takes 10,000 characters of query text
_TERMINAL = {"Complete", "Failed", "Cancelled", "Timeout", "Unknown"}
_STRUCTURED = ("targets", "mismatches", "slots", "client_order_ids")
INGESTION_LAG = timedelta(minutes=5)
# exception.type / .message / .stacktrace on the OTLP path -> the lines' error_type / error_msg / stack.
_LINE_NAME = {otlp: line for line, otlp in OTLP_RENAMED.items()}


def log_group(env: str) -> str:
    """The app's log group for ``env`` (collector/config.yaml: ``/dora-bot/${env:DORA_ENV}/app``)."""
    return f"/dora-bot/{env}/app"


def decision_insights_query(decision_id: str) -> str:
    """A ready Logs Insights query for everything one decision logged (OTLP path)."""
    return (
        "fields @timestamp, attributes.event_type as event, attributes.slot as slot,\n"
        "       attributes.client_order_id as client_order_id, attributes.side as side,\n"
        "       attributes.price as price, attributes.size as size, attributes.status as status,\n"
        "       attributes.order_id as order_id, attributes.latency_ms as latency_ms,\n"
        "       attributes.exception.message as error_msg, attributes.seq as seq, body\n"
        f'| filter attributes.decision_id = "{decision_id}"\n'
        "| sort @timestamp asc\n"
        "| limit 10000"
    )


def _quote(value: str) -> str:
    return json.dumps(str(value))


def _epoch(value: datetime) -> int:
    return int(value.timestamp())


def _ts_from_insights(value: str | None) -> str | None:
    """Insights' `2026-11-24 05:04:26.797` (UTC) as a line's `2026-11-24T05:04:26.797Z`."""
    if not value:
        return None
    text = value.strip().replace(" ", "T", 1)
    if not text.endswith("Z"):
        text += "Z"
    return text


def line_from_event(message: str, timestamp: str | None = None, stream: str | None = None) -> dict[str, Any]:
    """One CloudWatch event (the OTLP path's JSON, or a raw JSON line) as a flat app line."""
    try:
        event = orjson.loads(message)
    except orjson.JSONDecodeError:
        return {"message": message, "ts": _ts_from_insights(timestamp), "event_type": "LOG"}
    if not isinstance(event, dict):
        return {"message": message, "ts": _ts_from_insights(timestamp), "event_type": "LOG"}
    if "attributes" not in event and "body" not in event:  # a raw_log line: already flat
        return event
    line: dict[str, Any] = {}
    for key, value in (event.get("attributes") or {}).items():
        key = _LINE_NAME.get(key, key)
        if key in _STRUCTURED and isinstance(value, str) and value[:1] in "[{":
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        line[key] = value
    body = event.get("body")
    line["message"] = body if isinstance(body, str) else json.dumps(body)
    if event.get("severity_text"):
        line["level"] = event["severity_text"]
    for key in ("trace_id", "span_id"):
        if event.get(key):
            line.setdefault(key, event[key])
    line.setdefault("ts", _ts_from_insights(timestamp))
    resource = event.get("resource") or {}
    run = line.get("bot_run_id") or resource.get("dora.bot_run_id")
    if not run and stream and "/" in stream:
        run = stream.rsplit("/", 1)[-1]
    if run:
        line["bot_run_id"] = run
    if "seq" in line:
        try:
            line["seq"] = int(line["seq"])
        except (TypeError, ValueError):
            pass
    line.setdefault("event_type", "LOG")
    return line


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def create_logs_client(**kwargs: Any) -> Any:
    """A CloudWatch Logs client from boto3's standard settings (AWS_REGION honoured as well)."""
    import boto3.session
    from botocore.config import Config

    region = kwargs.pop("region_name", None)
    if region is None and not os.environ.get("AWS_DEFAULT_REGION") and os.environ.get("AWS_REGION"):
        region = os.environ["AWS_REGION"]
    config = Config(connect_timeout=3, read_timeout=15, retries={"mode": "standard", "max_attempts": 3})
    return boto3.session.Session().client("logs", region_name=region, config=config, **kwargs)


class InsightsReader:
    """Runs Logs Insights queries on one log group and returns flat app lines.

    Args:
        group: the log group (``/dora-bot/{env}/app``).
        client: a boto3 ``logs`` client (or anything with ``start_query`` / ``get_query_results`` /
            ``stop_query``); made on first use when None.
        timeout_s: the budget for one query, from StartQuery to a terminal status.
        poll_s: the pause between GetQueryResults calls.
    """

    def __init__(self, group: str, client: Any = None, *, timeout_s: float = 30.0, poll_s: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.group = group
        self._client = client
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._sleep = sleep
        self._clock = clock
        self.queries = 0

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = create_logs_client()
        return self._client

    def run(self, query: str, start: datetime, end: datetime) -> list[list[dict[str, str]]]:
        """One query's rows (each a list of {field, value}). Raises LogsUnavailable."""
        try:
            started = self.client.start_query(logGroupName=self.group, startTime=_epoch(start),
                                              endTime=_epoch(end) + 1, queryString=query, limit=MAX_ROWS)
        except LogsUnavailable:
            raise
        except Exception as exc:
            raise LogsUnavailable(self._explain_error(exc)) from exc
        self.queries += 1
        query_id = started["queryId"]
        deadline = self._clock() + self.timeout_s
        while True:
            try:
                answer = self.client.get_query_results(queryId=query_id)
            except Exception as exc:
                raise LogsUnavailable(self._explain_error(exc)) from exc
            status = answer.get("status")
            if status == "Complete":
                return list(answer.get("results") or [])
            if status in _TERMINAL:
                raise LogsUnavailable(f"CloudWatch Logs Insights query on {self.group} ended {status}")
            if self._clock() >= deadline:
                try:
                    self.client.stop_query(queryId=query_id)
                except Exception:  # noqa: BLE001, S110  best-effort cancel: the timeout is the error
                    pass
                raise LogsUnavailable(f"CloudWatch Logs Insights query on {self.group} did not complete within "
                                      f"{self.timeout_s:g} s (status {status}); try again or narrow the time range")
            self._sleep(self.poll_s)

    def lines(self, condition: str | None, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every line matching ``condition`` (an Insights filter expression) between start and end,
        splitting the range while a query hits the 10,000-row limit."""
        query = "fields @timestamp, @logStream, @message"
        if condition:
            query += f"\n| filter {condition}"
        query += f"\n| sort @timestamp asc\n| limit {MAX_ROWS}"
        rows = self.run(query, start, end)
        if len(rows) >= MAX_ROWS and end - start > timedelta(seconds=2):
            middle = start + (end - start) / 2
            return unique_lines(self.lines(condition, start, middle) + self.lines(condition, middle, end))
        out = []
        for row in rows:
            fields = {f.get("field"): f.get("value") for f in row}
            if "@message" in fields:
                out.append(line_from_event(str(fields["@message"]), fields.get("@timestamp"), fields.get("@logStream")))
        return out

    def _explain_error(self, exc: BaseException) -> str:
        code = _error_code(exc)
        if code == "ResourceNotFoundException":
            return f"log group {self.group} does not exist (is DORA_ENV right? has the collector sent anything?)"
        if code in ("AccessDeniedException", "UnrecognizedClientException"):
            return f"not allowed to query {self.group}: {code} (use the reader profile, e.g. AWS_PROFILE=dora-reader)"
        if code:
            return f"CloudWatch Logs {code} on {self.group}: {exc}"
        return f"CloudWatch Logs unreachable for {self.group}: {type(exc).__name__}: {exc}"


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class AwsSource:
    """DynamoDB ledger + CloudWatch Logs Insights for one env.

    Args:
        env: names the tables (``dora_*_log_{env}``) and the log group (``/dora-bot/{env}/app``).
        reader: a LedgerReader, or None for none (default: ``DynamoDBSink(env)`` with boto3's
            standard settings).
        logs_client: a boto3 ``logs`` client (default: made on first use).
        use_logs: False to skip CloudWatch entirely (``--logs none``).
        timeout_s: the budget of one Insights query.
        now: the clock used to tell "not ingested yet" from "not there".
    """

    name = "dynamodb"

    def __init__(self, env: str, *, reader: Any = "dynamodb", logs_client: Any = None,
                 use_logs: bool = True, timeout_s: float = 30.0, poll_s: float = 0.5,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.env = env
        self.journal_dir: Any = None  # a local journal to check for unshipped records (query.completeness)
        if reader == "dynamodb":
            from dora_otel.sinks.dynamodb import DynamoDBSink

            reader = DynamoDBSink(env)
            self._own_reader = True
        else:
            self._own_reader = False
        # fills/cancels a later run recorded by order_id alone join their decision at read time
        self.reader: LedgerReader | None = with_order_join(reader)
        self.group = log_group(env)
        self.insights = (InsightsReader(self.group, logs_client, timeout_s=timeout_s, poll_s=poll_s)
                         if use_logs else None)
        self._now = now

    def describe(self) -> str:
        logs = f"CloudWatch Logs Insights {self.group}" if self.insights else "no logs (--logs none)"
        return f"ledger {describe_reader(self.reader)}; logs {logs}"

    def _disabled(self) -> LogLines | None:
        if self.insights is None:
            return LogLines([], available=False, note="log lines not read (--logs none)")
        return None

    def _lag_note(self, lines: list[dict[str, Any]], end: datetime) -> str | None:
        if lines:
            return None
        if self._now() - end < INGESTION_LAG:
            return (f"no lines in {self.group} yet: CloudWatch shows lines a few minutes after the collector "
                    "sends them; try again shortly")
        return f"no lines in {self.group} for this range"

    def decision_lines(self, decision_ids: set[str], regions: Sequence[Region], market: str | None) -> LogLines:
        disabled = self._disabled()
        if disabled is not None:
            return disabled
        assert self.insights is not None
        merged = merge_regions(regions)
        if not merged or not decision_ids:
            return LogLines([])
        start, end = merged[0][0] - timedelta(seconds=2), merged[-1][1] + timedelta(seconds=2)
        ids = sorted(decision_ids)
        lines: list[dict[str, Any]] = []
        try:
            for group in _chunks(ids, 200):
                cond = (f"attributes.decision_id = {_quote(group[0])}" if len(group) == 1
                        else f"attributes.decision_id in [{', '.join(_quote(i) for i in group)}]")
                if market:
                    cond = (f"{cond} or (attributes.market = {_quote(market)} and "
                            "(not ispresent(attributes.decision_id)"
                            f" or attributes.event_type = \"DECISION_MADE\"))")
                    market = None  # context lines once is enough
                lines.extend(self.insights.lines(cond, start, end))
        except LogsUnavailable as exc:
            return LogLines([], available=False, note=str(exc))
        lines = [ln for ln in lines if any(_in_region(ln.get("ts"), r) for r in merged)]
        return LogLines(unique_lines(lines), note=self._lag_note(lines, end))

    def run_lines(self, start: datetime, end: datetime) -> LogLines:
        disabled = self._disabled()
        if disabled is not None:
            return disabled
        assert self.insights is not None
        try:
            lines = self.insights.lines(None, start, end)
        except LogsUnavailable as exc:
            return LogLines([], available=False, note=str(exc))
        return LogLines(lines, note=self._lag_note(lines, end))

    def find_decision_lines(self, decision_id: str) -> LogLines:
        """Lines of a decision the ledger does not know: the last 24 hours of the group."""
        disabled = self._disabled()
        if disabled is not None:
            return disabled
        assert self.insights is not None
        end = self._now()
        try:
            lines = self.insights.lines(f"attributes.decision_id = {_quote(decision_id)}",
                                        end - timedelta(hours=24), end)
        except LogsUnavailable as exc:
            return LogLines([], available=False, note=str(exc))
        return LogLines(lines)

    def spans_for(self, decision_id: str) -> list[dict[str, Any]]:
        return []  # traces are in X-Ray / Jaeger, not readable here

    def close(self) -> None:
        if self._own_reader:
            close = getattr(self.reader, "close", None)
            if close is not None:
                close()


def _in_region(ts: Any, region: Region) -> bool:
    if not ts:
        return True
    text = str(ts)
    lo = region[0] - timedelta(seconds=2)
    hi = region[1] + timedelta(seconds=2)
    from dora_otel.query.times import iso_ms

    return iso_ms(lo)[:23] <= text[:23] <= iso_ms(hi)[:23]
