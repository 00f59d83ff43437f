"""The DynamoDB ledger store: BatchWriteItem into the execution and decision tables, Query to read.

Owns the mapping of ledger records to DynamoDB items (and back), the classification of botocore
errors into the :mod:`dora_otel.protocols` sink errors, and the boto3 client this sink uses.

* Client: injected (``client=``), or created on first use from boto3's standard settings
  (``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_PROFILE``, the usual
  credential chain) with short timeouts and botocore's own retries off: the ledger's shipper
  retries, counts and logs, so botocore must not retry silently underneath it.
  ``boto3``/``botocore`` are imported inside functions only: importing ``dora_otel`` never imports
  boto3.
* Writes: at most 25 records per BatchWriteItem, routed by ``kind`` to
  ``dora_execution_log_{env}`` or ``dora_decision_log_{env}``; floats become ``Decimal(str(x))``;
  NaN/inf, numbers DynamoDB cannot hold and items over 400 KB are per-record
  :class:`~dora_otel.protocols.InvalidRecordError` results, never an exception for the batch.
  A batch the service rejects as invalid is retried record by record to find the culprit.
* Reads: Query only (never Scan), paginated; ``query_count`` counts Query calls. Numbers come back
  as ``int`` or ``float`` (never ``Decimal``; boto3's deserializer is not used because it raises
  ``decimal.Rounded`` on numbers like 1E+125).

Calls block on the network for up to the client's timeouts; run them on the shipper thread or a
reader's thread, never on the bot's trading thread.
"""

from __future__ import annotations

import decimal
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dora_otel.protocols import (
    InvalidRecordError,
    MissingIndexError,
    PermanentSinkError,
    Record,
    RetryableSinkError,
    SinkError,
    TimeArg,
    WriteResult,
)
from dora_otel.sinks import _records
from dora_otel.sinks.tables import ORDER_INDEX, table_names

__all__ = ["DynamoDBSink", "classify_error", "create_client"]

# The same context boto3's TypeSerializer uses (boto3/dynamodb/types.py, DYNAMODB_CONTEXT):
# 38 significant digits, exponent range of DynamoDB numbers, and every loss of precision trapped.
_DYNAMODB_CONTEXT = decimal.Context(
    Emin=-128,
    Emax=126,
    prec=38,
    traps=[decimal.Clamped, decimal.Overflow, decimal.Inexact, decimal.Rounded, decimal.Underflow],
)

# Error codes that mean "try again later" (plus any HTTP 5xx).
_RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "LimitExceededException",
        "TransactionInProgressException",
    }
)


def create_client(
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    connect_timeout_s: float = 2.0,
    read_timeout_s: float = 5.0,
    max_pool_connections: int = 10,
    **client_kwargs: Any,
) -> Any:
    """A DynamoDB client as the sink wants it: boto3's standard settings, short timeouts, and
    botocore retries off (``total_max_attempts=1``) because the ledger's shipper retries.
    The region is ``region_name``, else ``AWS_DEFAULT_REGION``, else ``AWS_REGION``, else the profile's.

    ``endpoint_url``/``region_name`` override the environment; further keyword arguments (e.g.
    ``aws_access_key_id`` for a local server) go to ``boto3.session.Session().client``.
    Runs on the calling thread; imports boto3 (slow the first time, ~0.3 s).
    """
    import boto3.session
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=max_pool_connections,
        # The sink builds every request itself from checked records; botocore's own parameter
        # validation cost ~40 % of the shipper's CPU per BatchWriteItem (profiled), and that CPU
        # holds the GIL the bot's thread needs.
        parameter_validation=False,
    )
    if region_name is None and not os.environ.get("AWS_DEFAULT_REGION") and os.environ.get("AWS_REGION"):
        # botocore reads AWS_DEFAULT_REGION only (botocore/configprovider.py, "region"); the other
        # AWS SDKs and Lambda use AWS_REGION, which our docs promise, so honour it here.
        region_name = os.environ["AWS_REGION"]
    # A Session per client: boto3's default session is not safe to share across threads.
    return boto3.session.Session().client(
        "dynamodb", endpoint_url=endpoint_url, region_name=region_name, config=config, **client_kwargs
    )


def classify_error(exc: BaseException, doing: str) -> SinkError:
    """Map a botocore exception to a :class:`SinkError` (the caller raises it ``from exc``).

    Throttling, 5xx, timeouts and connection failures are retryable; everything else (validation,
    missing table, credentials, region, access) is permanent.
    """
    from botocore.exceptions import (
        ClientError,
        CredentialRetrievalError,
        HTTPClientError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        message = exc.response.get("Error", {}).get("Message", "")
        text = f"DynamoDB {code or 'error'} (HTTP {status}) {doing}: {message}"
        if code in _RETRYABLE_CODES or status >= 500:
            return RetryableSinkError(text)
        return PermanentSinkError(text)
    if isinstance(exc, (HTTPClientError, BotoConnectionError, CredentialRetrievalError)):
        return RetryableSinkError(f"DynamoDB unreachable {doing}: {type(exc).__name__}: {exc}")
    return PermanentSinkError(f"DynamoDB call failed {doing}: {type(exc).__name__}: {exc}")


def _is_validation_error(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "ValidationException"


class DynamoDBSink:
    """Sink and LedgerReader over the ``dora_execution_log_{env}`` and ``dora_decision_log_{env}``
    tables (create them with :func:`dora_otel.sinks.tables.create_tables`).

    Args:
        env: the environment suffix of the table names (``demo``, ``prod``, ...).
        client: a boto3 DynamoDB client to use; by default one is made on first use with
            :func:`create_client` (and re-made in a forked child).
        max_batch: records per BatchWriteItem, 1..25.
        client_factory: what makes the client when none is injected (default :func:`create_client`).
    """

    def __init__(
        self,
        env: str,
        *,
        client: Any = None,
        max_batch: int = _records.MAX_BATCH,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        names = table_names(env)
        self.env = env
        self.execution_table = names.execution
        self.decision_table = names.decision
        self.max_batch = _records.check_max_batch(max_batch)
        self.query_count = 0
        self.write_calls = 0
        self._injected = client is not None
        self._client = client
        self._client_pid = os.getpid()
        self._client_factory = client_factory or create_client
        self._client_lock = threading.Lock()
        self._closed = False

    @property
    def client(self) -> Any:
        """The boto3 client (created on first use). Blocks while creating it."""
        client = self._client
        if client is not None and (self._injected or self._client_pid == os.getpid()):
            return client
        with self._client_lock:
            if self._closed:
                raise PermanentSinkError(f"DynamoDB sink for env {self.env!r} is closed")
            if self._client is None or (not self._injected and self._client_pid != os.getpid()):
                self._client = self._client_factory()
                self._client_pid = os.getpid()
            return self._client

    # --- Sink --------------------------------------------------------------------------------
    def write_batch(self, records: Sequence[Record]) -> WriteResult:
        """One BatchWriteItem (more only to isolate an invalid record). Blocks on the network."""
        _records.check_batch(records, self.max_batch)
        failed: list[InvalidRecordError] = []
        # (table, key) -> (wire item, the records given with that key); a key given twice in one
        # batch is sent once (BatchWriteItem refuses duplicate keys), the last one winning.
        entries: dict[tuple[str, tuple[str, ...]], tuple[dict[str, Any], list[Record]]] = {}
        for record in records:
            try:
                kind, item = _records.prepare(record)
                wire = _to_wire_item(record, item)
            except InvalidRecordError as exc:
                failed.append(exc)
                continue
            key = self._key(kind, item)
            previous = entries.get(key)
            entries[key] = (wire, (previous[1] if previous else []) + [record])
        if not entries:
            return WriteResult(written=0, failed=failed)
        unprocessed, isolated_failures = self._put(entries)
        failed.extend(isolated_failures)
        given = sum(len(e[1]) for e in entries.values())
        return WriteResult(
            written=given - len(unprocessed) - len(isolated_failures),
            unprocessed=unprocessed,
            failed=failed,
        )

    def _key(self, kind: str, item: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
        if kind == "execution":
            return self.execution_table, (item["bot_run_id"], item["sk"])
        return self.decision_table, (item["decision_id"],)

    def _wire_key(self, table: str, wire: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
        if table == self.execution_table:
            return table, (wire["bot_run_id"]["S"], wire["sk"]["S"])
        return table, (wire["decision_id"]["S"],)

    def _put(
        self, entries: dict[tuple[str, tuple[str, ...]], tuple[dict[str, Any], list[Record]]]
    ) -> tuple[list[Record], list[InvalidRecordError]]:
        request: dict[str, list[dict[str, Any]]] = {}
        for (table, _), (wire, _given) in entries.items():
            request.setdefault(table, []).append({"PutRequest": {"Item": wire}})
        try:
            self.write_calls += 1
            response = self.client.batch_write_item(RequestItems=request)
        except SinkError:
            raise
        except Exception as exc:
            if _is_validation_error(exc):
                if len(entries) > 1:
                    return self._put_one_by_one(entries)
                ((_, (_, given)),) = entries.items()
                message = classify_error(exc, "writing the record")
                return [], [InvalidRecordError(str(message), record=r) for r in given]
            raise classify_error(exc, f"writing {len(entries)} records (BatchWriteItem)") from exc
        unprocessed: list[Record] = []
        for table, requests in (response.get("UnprocessedItems") or {}).items():
            for req in requests:
                wire = req.get("PutRequest", {}).get("Item")
                entry = entries.get(self._wire_key(table, wire)) if wire else None
                if entry is not None:
                    unprocessed.extend(entry[1])
        return unprocessed, []

    def _put_one_by_one(
        self, entries: dict[tuple[str, tuple[str, ...]], tuple[dict[str, Any], list[Record]]]
    ) -> tuple[list[Record], list[InvalidRecordError]]:
        unprocessed: list[Record] = []
        failed: list[InvalidRecordError] = []
        for key, entry in entries.items():
            u, f = self._put({key: entry})
            unprocessed.extend(u)
            failed.extend(f)
        return unprocessed, failed

    def close(self) -> None:
        """Close the client if this sink created it. Idempotent."""
        with self._client_lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None and not self._injected and self._client_pid == os.getpid():
            close = getattr(client, "close", None)
            if close is not None:
                close()

    # --- LedgerReader ------------------------------------------------------------------------
    def _query(self, **kwargs: Any) -> list[Record]:
        items: list[Record] = []
        while True:
            try:
                self.query_count += 1
                response = self.client.query(**kwargs)
            except SinkError:
                raise
            except Exception as exc:
                raise classify_error(exc, f"querying {kwargs.get('TableName')}") from exc
            items.extend(_from_wire_item(i) for i in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if not last:
                return items
            kwargs["ExclusiveStartKey"] = last

    def decision(self, decision_id: str) -> Record | None:
        items = self._query(
            TableName=self.decision_table,
            KeyConditionExpression="decision_id = :d",
            ExpressionAttributeValues={":d": {"S": decision_id}},
            ConsistentRead=True,
        )
        return items[0] if items else None

    def events_for_decision(self, decision_id: str) -> list[Record]:
        items = self._query(
            TableName=self.execution_table,
            IndexName="gsi1",
            KeyConditionExpression="decision_id = :d",
            ExpressionAttributeValues={":d": {"S": decision_id}},
        )
        return sorted(items, key=_records.event_order)

    def decisions_for_market(self, market: str, start_ts: TimeArg, end_ts: TimeArg) -> list[Record]:
        items = self._query(
            TableName=self.decision_table,
            IndexName="market_ts",
            KeyConditionExpression="market = :m AND decision_ts BETWEEN :s AND :e",
            ExpressionAttributeValues={
                ":m": {"S": market},
                ":s": {"S": _records.iso(start_ts)},
                ":e": {"S": _records.iso(end_ts)},
            },
        )
        return sorted(items, key=_records.decision_order)

    def decisions_between(self, start_ts: TimeArg, end_ts: TimeArg) -> list[Record]:
        start, end = _records.iso(start_ts), _records.iso(end_ts)
        items: list[Record] = []
        for day in _records.days_between(start, end):
            items.extend(
                self._query(
                    TableName=self.decision_table,
                    IndexName="day_ts",
                    KeyConditionExpression="decision_day = :d AND decision_ts BETWEEN :s AND :e",
                    ExpressionAttributeValues={
                        ":d": {"S": day},
                        ":s": {"S": start},
                        ":e": {"S": end},
                    },
                )
            )
        return sorted(items, key=_records.decision_order)

    def records_for_orders(self, order_ids: Sequence[str]) -> list[Record]:
        """Execution records carrying one of ``order_ids``: one Query of the sparse GSI
        ``gsi_order`` per order_id (DynamoDB has no multi-partition Query; never a Scan).
        Raises MissingIndexError when the table has no ``gsi_order`` (or it is still backfilling)."""
        items: list[Record] = []
        for order_id in sorted({str(o) for o in order_ids if o not in (None, "")}):
            try:
                items.extend(self._query(
                    TableName=self.execution_table,
                    IndexName=ORDER_INDEX,
                    KeyConditionExpression="order_id = :o",
                    ExpressionAttributeValues={":o": {"S": order_id}},
                ))
            except PermanentSinkError as exc:
                cause = exc.__cause__
                if cause is not None and _is_missing_index(cause):
                    raise MissingIndexError(
                        f"DynamoDB table {self.execution_table} has no usable index {ORDER_INDEX} "
                        f"({_message(cause)}); `dora-otel tables create --env {self.env}` adds it "
                        "(or update the CloudFormation stack from deploy/cloudformation/ledger-tables.yaml)",
                        index=ORDER_INDEX, table=self.execution_table) from cause
                raise
        return sorted(items, key=_records.event_order)

    def events_for_run(
        self, bot_run_id: str, start_ts: TimeArg | None = None, end_ts: TimeArg | None = None
    ) -> list[Record]:
        kwargs: dict[str, Any] = {
            "TableName": self.execution_table,
            "KeyConditionExpression": "bot_run_id = :r",
            "ExpressionAttributeValues": {":r": {"S": bot_run_id}},
            "ConsistentRead": True,
        }
        # The sort key starts with decision_id, so time is a filter on the partition's items.
        filters = []
        if start_ts is not None:
            filters.append("event_ts >= :s")
            kwargs["ExpressionAttributeValues"][":s"] = {"S": _records.iso(start_ts)}
        if end_ts is not None:
            filters.append("event_ts <= :e")
            kwargs["ExpressionAttributeValues"][":e"] = {"S": _records.iso(end_ts)}
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        return sorted(self._query(**kwargs), key=_records.event_order)


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message", "")) or str(exc)
    return str(exc)


def _is_missing_index(exc: BaseException) -> bool:
    """DynamoDB's answer to a Query of an index the table lacks ("The table does not have the
    specified index") or one still being built ("Cannot read from backfilling global secondary index")."""
    if not _is_validation_error(exc):
        return False
    text = _message(exc).lower()
    return "index" in text and ("does not have" in text or "backfill" in text or "specified index" in text)


# --- record <-> DynamoDB item ------------------------------------------------------------------
def _to_wire_item(record: Mapping[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
    wire = {name: _to_wire(record, name, value) for name, value in item.items()}
    # order_id keys the GSI gsi_order (type S): DynamoDB refuses a whole item whose index key has
    # another type or is empty, so a numeric id is stored as its text and an empty one not at all.
    order_id = item.get("order_id")
    if order_id is not None and not isinstance(order_id, str):
        wire["order_id"] = {"S": str(order_id)}
    elif order_id == "":
        del wire["order_id"]
    return wire


def _to_wire(record: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, float)):
        return {"N": _number(record, path, value)}
    if value is None:
        return {"NULL": True}
    if isinstance(value, (list, tuple)):
        return {"L": [_to_wire(record, f"{path}[{i}]", v) for i, v in enumerate(value)]}
    if isinstance(value, Mapping):
        return {"M": {str(k): _to_wire(record, f"{path}.{k}", v) for k, v in value.items()}}
    raise InvalidRecordError(
        f"record field {path!r} has a {type(value).__name__} value ({value!r}); ledger records "
        "hold str, int, float, bool, lists and dicts only",
        record=record,
        field=path,
    )


def _number(record: Mapping[str, Any], path: str, value: float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRecordError(
            f"record field {path!r} is {value!r}; NaN and infinity cannot be stored "
            "(DynamoDB numbers must be finite)",
            record=record,
            field=path,
        )
    try:
        # floats via str(): Decimal(0.1) would carry the binary expansion's 55 digits.
        number = _DYNAMODB_CONTEXT.create_decimal(str(value) if isinstance(value, float) else value)
    except decimal.DecimalException as exc:
        raise InvalidRecordError(
            f"record field {path!r} is {value!r}; DynamoDB numbers hold at most 38 significant "
            "digits and magnitudes 1E-130..9.99E+125",
            record=record,
            field=path,
        ) from exc
    return str(number)


def _from_wire_item(wire: Mapping[str, Any]) -> Record:
    return {name: _from_wire(value) for name, value in wire.items()}


def _from_wire(value: Mapping[str, Any]) -> Any:
    ((tag, inner),) = value.items()
    if tag == "S":
        return inner
    if tag == "N":
        return _parse_number(inner)
    if tag == "BOOL":
        return bool(inner)
    if tag == "NULL":
        return None
    if tag == "L":
        return [_from_wire(v) for v in inner]
    if tag == "M":
        return {k: _from_wire(v) for k, v in inner.items()}
    if tag in ("SS", "BS"):
        return list(inner)
    if tag == "NS":
        return [_parse_number(v) for v in inner]
    return inner


def _parse_number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    return float(text)
