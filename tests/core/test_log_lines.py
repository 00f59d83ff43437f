"""JSON log lines: one object per line, base fields and types, awkward values, newlines, redaction."""

from __future__ import annotations

import datetime as dt
import enum
import logging
import re
from decimal import Decimal

import dora_otel
from tests.core.conftest import start

BASE = ("ts", "level", "service", "env", "bot_version", "bot_run_id", "message", "event_type", "seq")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RUN_ID = re.compile(r"^\d{8}-\d{6}-[a-z0-9]{4}$")


def test_every_line_has_the_base_fields_with_their_types(cap):
    logging.getLogger("bot").info("plain line from bot code")
    logging.getLogger("bot").warning("a warning with %s", "args")
    lines = cap.lines()
    assert lines[0]["event_type"] == "STARTUP"
    for line in lines:
        for field in BASE:
            assert field in line, (field, line)
        assert TS.match(line["ts"]), line["ts"]
        assert RUN_ID.match(line["bot_run_id"])
        assert line["service"] == "dora-bot" and line["env"] == "demo"
        assert isinstance(line["seq"], int)
    plain = [l for l in lines if l["message"] == "plain line from bot code"][0]
    assert plain["event_type"] == "LOG" and plain["level"] == "INFO" and plain["logger"] == "bot"
    assert [l for l in lines if l["level"] == "WARNING"][0]["message"] == "a warning with args"


def test_seq_increases_strictly_across_lines(cap):
    for i in range(20):
        logging.getLogger("bot").info("line %d", i)
    seqs = [line["seq"] for line in cap.lines()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_startup_line_carries_bot_version_and_run_id(tmp_path):
    captured = start(tmp_path, bot_version="abc123", env="prod")
    first = captured.lines()[0]
    assert first["event_type"] == "STARTUP" and first["bot_version"] == "abc123" and first["env"] == "prod"
    assert first["bot_run_id"] == captured.telemetry.bot_run_id
    captured.telemetry.shutdown()


def test_record_with_exc_info_becomes_an_error_event_with_stack(cap):
    try:
        raise ValueError("bad book")
    except ValueError:
        logging.getLogger("bot").exception("book refresh failed")
    line = cap.events("ERROR")[-1]
    assert line["level"] == "ERROR" and line["error_type"] == "ValueError" and line["error_msg"] == "bad book"
    assert "Traceback" in line["stack"] and "raise ValueError" in line["stack"]


class Colour(enum.Enum):
    RED = "red"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")

    def __repr__(self) -> str:
        raise RuntimeError("no")


def test_values_json_cannot_hold_never_break_a_line(cap):
    extra = {
        "price": Decimal("0.45"), "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        "colour": Colour.RED, "obj": object(), "nan": float("nan"), "inf": float("inf"),
        "raw": b"\xff\x00bytes", "tags": {"b", "a"}, "huge": 2**80, "broken": Unprintable(),
        "nested": {"x": [float("-inf"), Decimal("NaN")], 3: "int key"},
    }
    logging.getLogger("bot").info("odd values", extra=extra)
    line = [l for l in cap.lines() if l["message"] == "odd values"][0]
    assert line["price"] == 0.45 and line["when"].startswith("2026-01-02T03:04:05")
    assert line["colour"] == "red" and line["obj"].startswith("<object object")
    assert line["nan"] == "nan" and line["inf"] == "inf" and line["huge"] == str(2**80)
    assert "bytes" in line["raw"] and line["tags"] == ["a", "b"] and "Unprintable" in line["broken"]
    assert line["nested"]["x"] == ["-inf", "NaN"] and line["nested"]["3"] == "int key"


def test_message_args_that_fail_to_format_still_give_one_line(cap):
    # Fed to our handler directly: pytest's own capture handler would raise on this record first.
    record = logging.LogRecord("bot", logging.INFO, __file__, 1, "needs two %s %s", ("only-one",), None)
    cap.telemetry._pipeline.handler.handle(record)
    line = [l for l in cap.lines() if l["logger"] == "bot"][0]
    assert "needs two" in line["message"] and "only-one" in line["message"]


def test_newlines_in_a_message_cannot_split_a_line(cap):
    logging.getLogger("bot").info('evil\n{"event_type": "FILL", "forged": true}\r\nmore\u2028sep')
    raw = cap.raw_lines()
    assert all(line.startswith("{") and line.endswith("}") for line in raw)
    line = cap.lines()[-1]
    assert line["event_type"] == "LOG" and "forged" not in line
    assert "\u2028" not in raw[-1] and line["message"].endswith("more\u2028sep")


def test_credentials_are_redacted_from_messages_and_errors(cap):
    log = logging.getLogger("bot")
    log.info("headers: KALSHI-ACCESS-KEY: a952bcbe-ec3b-4b5b-b8f9-11dae589608c KALSHI-ACCESS-SIGNATURE: "
             "dGhpc2lzYXNpZ25hdHVyZQ==")
    log.info("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig")
    log.info("loaded key -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY----- ok")
    log.info("config api_key_id=a952bcbe-ec3b-4b5b-b8f9-11dae589608c")
    try:
        raise RuntimeError("signing failed for key_id: a952bcbe-ec3b-4b5b-b8f9-11dae589608c")
    except RuntimeError:
        log.exception("oops")
    text = (cap.flush() or cap.stream.getvalue())
    for secret in ("a952bcbe-ec3b", "dGhpc2lzYXNpZ25hdHVyZQ", "eyJhbGciOiJIUzI1NiJ9", "MIIEowIBAAKCAQEA"):
        assert secret not in text, secret
    assert text.count("[REDACTED]") >= 6
    assert "order 5f085f00-8dd4" not in text  # sanity: the assertion above is not vacuous


def test_order_ids_are_not_mistaken_for_credentials(cap):
    logging.getLogger("bot").info("order 5f085f00-8dd4-511c-a227-15be59e534e3 accepted")
    assert "5f085f00-8dd4-511c-a227-15be59e534e3" in cap.lines()[-1]["message"]


def test_bound_fields_reach_every_line_in_the_block_and_reset_after(cap):
    log = logging.getLogger("bot")
    with dora_otel.bind(market="KXBTC", strategy="mm"):
        log.info("inside")
    log.info("outside")
    inside, outside = cap.lines()[-2:]
    assert inside["market"] == "KXBTC" and inside["strategy"] == "mm"
    assert "market" not in outside and "strategy" not in outside


def test_identity_fields_cannot_be_overwritten_by_extras(cap):
    logging.getLogger("bot").info("spoof", extra={"bot_run_id": "forged", "env": "prod"})
    line = cap.lines()[-1]
    assert line["bot_run_id"] == cap.telemetry.bot_run_id and line["field_bot_run_id"] == "forged"
    assert line["env"] == "demo" and line["field_env"] == "prod"
