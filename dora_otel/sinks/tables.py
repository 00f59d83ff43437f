"""The ledger's DynamoDB tables: their names, definitions, creation and description.

Owns the table layout from docs/ARCHITECTURE.md ("Tables"):

* ``dora_execution_log_{env}``: PK ``bot_run_id``, SK ``sk``; GSI ``gsi1`` (``decision_id``,
  ``event_ts``); sparse GSI ``gsi_order`` (``order_id``, ``event_ts``: only records that carry an
  order_id); TTL on ``expires_at``.
* ``dora_decision_log_{env}``: PK ``decision_id``; GSI ``market_ts`` (``market``, ``decision_ts``);
  GSI ``day_ts`` (``decision_day``, ``decision_ts``).

Both tables are on-demand (PAY_PER_REQUEST) and project all attributes into their indexes.
``create_tables`` and ``describe_tables`` back the ``dora-otel tables create|describe`` commands.
``create_tables`` also adds a GSI an existing table lacks (tables made before ``gsi_order``
existed: one UpdateTable, DynamoDB backfills it online); ``describe_tables`` names what is missing.
They block on the network (creation waits until the tables are ACTIVE); boto3 is imported only
when they run.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, NamedTuple

__all__ = ["ORDER_INDEX", "TableNames", "create_tables", "describe_tables", "missing_indexes", "table_definitions",
           "table_names"]

logger = logging.getLogger("dora_otel.ledger")

TTL_ATTRIBUTE = "expires_at"
TTL_DAYS_TAG = "dora:ttl_days"
# The execution table's sparse index on order_id: joins a fill or cancel recorded by a later run
# (another host, an empty data directory: `unmatched:<market>`) to the decision that placed the order.
ORDER_INDEX = "gsi_order"
_ENV_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


class TableNames(NamedTuple):
    execution: str
    decision: str


def table_names(env: str) -> TableNames:
    """The two table names for ``env``; raises ValueError for an env DynamoDB cannot name."""
    if not isinstance(env, str) or not _ENV_RE.match(env):
        raise ValueError(
            f"env ({env!r}) must be 1-200 characters of letters, digits, '_', '-' or '.' "
            "(it becomes part of the DynamoDB table names)"
        )
    return TableNames(f"dora_execution_log_{env}", f"dora_decision_log_{env}")


def _gsi(name: str, partition: str, sort: str) -> dict[str, Any]:
    return {
        "IndexName": name,
        "KeySchema": [
            {"AttributeName": partition, "KeyType": "HASH"},
            {"AttributeName": sort, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    }


def _strings(*attributes: str) -> list[dict[str, str]]:
    return [{"AttributeName": a, "AttributeType": "S"} for a in attributes]


def table_definitions(env: str) -> list[dict[str, Any]]:
    """``CreateTable`` arguments for both tables (execution first)."""
    names = table_names(env)
    return [
        {
            "TableName": names.execution,
            "AttributeDefinitions": _strings("bot_run_id", "sk", "decision_id", "event_ts", "order_id"),
            "KeySchema": [
                {"AttributeName": "bot_run_id", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "GlobalSecondaryIndexes": [
                _gsi("gsi1", "decision_id", "event_ts"),
                _gsi(ORDER_INDEX, "order_id", "event_ts"),  # sparse: records without order_id are not in it
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
        {
            "TableName": names.decision,
            "AttributeDefinitions": _strings("decision_id", "market", "decision_ts", "decision_day"),
            "KeySchema": [{"AttributeName": "decision_id", "KeyType": "HASH"}],
            "GlobalSecondaryIndexes": [
                _gsi("market_ts", "market", "decision_ts"),
                _gsi("day_ts", "decision_day", "decision_ts"),
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
    ]


def _client_or_default(client: Any) -> Any:
    if client is not None:
        return client
    from dora_otel.sinks.dynamodb import create_client

    return create_client(read_timeout_s=30.0)


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def create_tables(
    env: str,
    client: Any = None,
    ttl_days: int | None = 90,
    *,
    wait_timeout_s: float = 120.0,
) -> list[str]:
    """Create the ledger tables for ``env`` if they are missing; return both table names.

    Idempotent: existing tables keep their data and keys (a warning is logged when their keys differ
    from the definition); a GSI of the definition that an existing table lacks (``gsi_order`` on
    tables created by an older dora-otel) is added with UpdateTable (DynamoDB backfills it online;
    this waits for it like for a new table). Waits (botocore waiter, then polling the indexes) until each table and
    its GSIs are ACTIVE, then enables TTL on ``expires_at`` unless ``ttl_days`` is ``None``, and
    tags the tables ``dora:ttl_days=<ttl_days>`` — the retention the writer's ``expires_at`` is meant
    to use. Where the server does not support TTL or tags (dynalite), that step is skipped with a
    logged warning.

    Thread: the caller's; blocks on the network for up to ``wait_timeout_s`` per table.
    Raises ``botocore`` errors for anything else (credentials, permissions, bad env raise ValueError).
    """
    if ttl_days is not None and (isinstance(ttl_days, bool) or not isinstance(ttl_days, int) or ttl_days < 1):
        raise ValueError(f"ttl_days ({ttl_days!r}) must be a positive int, or None to leave TTL off")
    client = _client_or_default(client)
    definitions = table_definitions(env)
    for definition in definitions:  # ask for both first: they become ACTIVE in parallel
        name = definition["TableName"]
        try:
            client.create_table(**definition)
            logger.info("created DynamoDB table %s", name, extra={"event_type": "LOG", "table": name})
        except Exception as exc:
            if _error_code(exc) != "ResourceInUseException":
                raise
            _warn_if_keys_differ(client, definition)
            _add_missing_indexes(client, definition)
    created = []
    for definition in definitions:
        name = definition["TableName"]
        _wait_active(client, name, wait_timeout_s)
        if ttl_days is not None:
            _enable_ttl(client, name)
            _tag_ttl_days(client, name, ttl_days)
        created.append(name)
    return created


def _warn_if_keys_differ(client: Any, definition: dict[str, Any]) -> None:
    table = client.describe_table(TableName=definition["TableName"])["Table"]
    if table.get("KeySchema") != definition["KeySchema"]:
        logger.warning(
            "DynamoDB table %s exists with key schema %s; the ledger expects %s",
            definition["TableName"],
            table.get("KeySchema"),
            definition["KeySchema"],
            extra={"event_type": "LOG", "table": definition["TableName"]},
        )


def missing_indexes(definition: dict[str, Any], table: dict[str, Any]) -> list[str]:
    """The GSIs of ``definition`` that ``table`` (a DescribeTable answer) does not have."""
    have = {g.get("IndexName") for g in table.get("GlobalSecondaryIndexes") or []}
    return [g["IndexName"] for g in definition.get("GlobalSecondaryIndexes", []) if g["IndexName"] not in have]


def _add_missing_indexes(client: Any, definition: dict[str, Any]) -> None:
    name = definition["TableName"]
    table = client.describe_table(TableName=name)["Table"]
    for index in missing_indexes(definition, table):
        gsi = next(g for g in definition["GlobalSecondaryIndexes"] if g["IndexName"] == index)
        keys = {k["AttributeName"] for k in gsi["KeySchema"]}
        attrs = [a for a in definition["AttributeDefinitions"] if a["AttributeName"] in keys]
        # one index per UpdateTable call (DynamoDB's rule); wait for it before the next one
        client.update_table(TableName=name, AttributeDefinitions=attrs,
                            GlobalSecondaryIndexUpdates=[{"Create": gsi}])
        logger.info("adding index %s to the existing DynamoDB table %s (DynamoDB backfills it)", index, name,
                    extra={"event_type": "LOG", "table": name})
        _wait_active(client, name, 600.0)


def _wait_active(client: Any, name: str, timeout_s: float) -> None:
    delay = 0.2
    client.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": delay, "MaxAttempts": max(1, int(timeout_s / delay))}
    )
    # The waiter checks TableStatus only; GSIs can still be CREATING.
    deadline = time.monotonic() + timeout_s
    while True:
        table = client.describe_table(TableName=name)["Table"]
        statuses = [g.get("IndexStatus", "ACTIVE") for g in table.get("GlobalSecondaryIndexes", [])]
        if table.get("TableStatus") == "ACTIVE" and all(s == "ACTIVE" for s in statuses):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"DynamoDB table {name} not ACTIVE after {timeout_s:g} s "
                f"(table {table.get('TableStatus')}, indexes {statuses})"
            )
        time.sleep(delay)


def _unsupported(exc: BaseException) -> bool:
    # dynalite answers operations it does not implement with UnknownOperationException.
    return _error_code(exc) in ("UnknownOperationException", "UnknownOperation", "NotImplemented")


def _enable_ttl(client: Any, name: str) -> None:
    try:
        current = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
            return
        client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    except Exception as exc:
        if not _unsupported(exc):
            raise
        logger.warning(
            "TTL not enabled on %s: the DynamoDB server does not support it (%s)",
            name,
            _error_code(exc),
            extra={"event_type": "LOG", "table": name},
        )


def _tag_ttl_days(client: Any, name: str, ttl_days: int) -> None:
    try:
        arn = client.describe_table(TableName=name)["Table"]["TableArn"]
        client.tag_resource(ResourceArn=arn, Tags=[{"Key": TTL_DAYS_TAG, "Value": str(ttl_days)}])
    except Exception as exc:
        if not _unsupported(exc):
            raise
        logger.warning(
            "tag %s not set on %s: the DynamoDB server does not support tags (%s)",
            TTL_DAYS_TAG,
            name,
            _error_code(exc),
            extra={"event_type": "LOG", "table": name},
        )


def describe_tables(env: str, client: Any = None) -> list[dict[str, Any]]:
    """One dict per ledger table: ``name``, ``status`` (``MISSING`` when absent), ``item_count``
    (DynamoDB's estimate, refreshed about every 6 hours), ``keys`` (``{"partition", "sort"}``),
    ``gsis`` (``[{"name", "partition", "sort", "status"}]``), ``ttl`` (``{"status", "attribute"}``,
    status ``UNSUPPORTED`` where the server has no TTL), ``tags``, and ``missing_gsis``: the indexes
    the ledger defines that the table lacks (``gsi_order`` on tables made by an older dora-otel;
    ``dora-otel tables create`` adds them).

    Thread: the caller's; blocks on the network.
    """
    client = _client_or_default(client)
    out = []
    for definition in table_definitions(env):
        name = definition["TableName"]
        try:
            table = client.describe_table(TableName=name)["Table"]
        except Exception as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise
            out.append(
                {
                    "name": name,
                    "status": "MISSING",
                    "item_count": 0,
                    "keys": {},
                    "gsis": [],
                    "ttl": {"status": "MISSING", "attribute": None},
                    "tags": {},
                    "missing_gsis": [g["IndexName"] for g in definition.get("GlobalSecondaryIndexes", [])],
                }
            )
            continue
        out.append(
            {
                "name": name,
                "status": table.get("TableStatus"),
                "item_count": table.get("ItemCount", 0),
                "keys": _keys(table.get("KeySchema", [])),
                "gsis": [
                    {"name": g["IndexName"], **_keys(g["KeySchema"]), "status": g.get("IndexStatus")}
                    for g in table.get("GlobalSecondaryIndexes", [])
                ],
                "ttl": _describe_ttl(client, name),
                "tags": _describe_tags(client, table.get("TableArn")),
                "missing_gsis": missing_indexes(definition, table),
            }
        )
    return out


def _keys(schema: list[dict[str, str]]) -> dict[str, str | None]:
    by_type = {k["KeyType"]: k["AttributeName"] for k in schema}
    return {"partition": by_type.get("HASH"), "sort": by_type.get("RANGE")}


def _describe_ttl(client: Any, name: str) -> dict[str, Any]:
    try:
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    except Exception as exc:
        if not _unsupported(exc):
            raise
        return {"status": "UNSUPPORTED", "attribute": None}
    return {"status": ttl.get("TimeToLiveStatus"), "attribute": ttl.get("AttributeName")}


def _describe_tags(client: Any, arn: str | None) -> dict[str, str]:
    if not arn:
        return {}
    try:
        tags = client.list_tags_of_resource(ResourceArn=arn).get("Tags", [])
    except Exception as exc:
        if not _unsupported(exc):
            raise
        return {}
    return {t["Key"]: t["Value"] for t in tags}
