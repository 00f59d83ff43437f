"""JSON log lines: one object per line, base fields and types, awkward values, newlines, scrubbing,
reserved base fields (a bot's colliding keys become field_<name>), and a log file that cannot be written."""

from __future__ import annotations

import datetime as dt
import enum
import errno
import json
import logging
import os
import re
import subprocess
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dora_otel
from dora_otel import _rotating, logs
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
    plain = next(l for l in lines if l["message"] == "plain line from bot code")
    assert plain["event_type"] == "LOG" and plain["level"] == "INFO" and plain["logger"] == "bot"
    assert next(l for l in lines if l["level"] == "WARNING")["message"] == "a warning with args"


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
    line = next(l for l in cap.lines() if l["message"] == "odd values")
    assert line["price"] == 0.45 and line["when"].startswith("2026-01-02T03:04:05")
    assert line["colour"] == "red" and line["obj"].startswith("<object object")
    assert line["nan"] == "nan" and line["inf"] == "inf" and line["huge"] == str(2**80)
    assert "bytes" in line["raw"] and line["tags"] == ["a", "b"] and "Unprintable" in line["broken"]
    assert line["nested"]["x"] == ["-inf", "NaN"] and line["nested"]["3"] == "int key"


def test_message_args_that_fail_to_format_still_give_one_line(cap):
    # Fed to our handler directly: pytest's own capture handler would raise on this record first.
    record = logging.LogRecord("bot", logging.INFO, __file__, 1, "needs two %s %s", ("only-one",), None)
    cap.telemetry._pipeline.handler.handle(record)
    line = next(l for l in cap.lines() if l["logger"] == "bot")
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


# --------------------------------------------------------------------------- reserved base fields
RESERVED = ("ts", "level", "service", "env", "bot_version", "bot_run_id", "message", "event_type", "seq",
            "logger", "trace_id", "span_id", "decision_id")
FORGED = {"seq": -1, "event_type": "RISK_HALT", "trace_id": "f" * 32, "span_id": "e" * 16,
          "decision_id": "forged-decision", "ts": "1999-01-01T00:00:00.000Z", "level": "DEBUG",
          "service": "evil", "bot_version": "evil", "logger": "evil"}


def _assert_own_values(line, cap, event_type, message=None):
    assert line["event_type"] == event_type and isinstance(line["seq"], int) and line["seq"] > 0
    assert line["bot_run_id"] == cap.telemetry.bot_run_id and line["service"] == "dora-bot"
    assert line["ts"].startswith("20") and line["ts"] != FORGED["ts"] and line["level"] != "DEBUG"
    assert line.get("trace_id") != FORGED["trace_id"] and line.get("decision_id") != FORGED["decision_id"]
    if message is not None:
        assert line["message"] == message
    for key, value in FORGED.items():  # the bot's values are kept, under field_<name>
        assert line[f"field_{key}"] == value, key


def test_extra_cannot_overwrite_reserved_fields(cap):
    logging.getLogger("bot").info("own line", extra=FORGED)
    _assert_own_values(cap.lines()[-1], cap, "LOG", "own line")


def test_bound_fields_cannot_overwrite_reserved_fields(cap):
    with dora_otel.bind(**FORGED, message="forged message"):
        logging.getLogger("bot").warning("bound line")
    line = cap.lines()[-1]
    _assert_own_values(line, cap, "LOG", "bound line")
    assert line["field_message"] == "forged message"


@pytest.mark.parametrize("helper", ["record_fill", "heartbeat", "risk_halt"])
def test_event_helper_kwargs_cannot_overwrite_reserved_fields(cap, helper):
    kwargs = dict(FORGED, message="forged message")
    if helper == "record_fill":
        dora_otel.record_fill("KXBTC", "yes", 0.4, 1, 0.0, order_id="o-1", **kwargs)
        event_type = "FILL"
    elif helper == "heartbeat":
        dora_otel.heartbeat(1, 0, **kwargs)
        event_type = "HEARTBEAT"
    else:
        dora_otel.risk_halt("daily loss", -5.0, **kwargs)
        event_type = "RISK_HALT"
    line = cap.events(event_type)[-1]
    _assert_own_values(line, cap, event_type)
    assert line["field_message"] == "forged message" and line["message"] != "forged message"


def test_seq_stays_gapless_whatever_the_bot_passes(cap):
    log = logging.getLogger("bot")
    log.info("a", extra={"seq": 10**9})
    with dora_otel.bind(seq="x"):
        log.info("b")
    dora_otel.heartbeat(1, 0, seq=-7)
    seqs = [line["seq"] for line in cap.lines()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_extra_bound_and_helper_values_are_scrubbed(cap):
    pem = ("-----BEGIN RSA PRIVATE KEY-----\n"
           "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6\n"
           "-----END RSA PRIVATE KEY-----")
    log = logging.getLogger("bot")
    log.info("extra", extra={"request": {"private_key": pem, "order_id": "o-9"}, "note": repr(pem)})
    with dora_otel.bind(api_key="a952bcbe-ec3b-4b5b-b8f9-11dae589608c"):
        log.info("bound")
    dora_otel.heartbeat(1, 0, auth="Bearer eyJhbGciOiJIUzI1NiJ9.cGF5bG9hZA.c2ln")
    text = cap.flush() or cap.stream.getvalue()
    for secret in ("MIIEowIBAAKCAQEA", "a952bcbe-ec3b", "eyJhbGciOiJIUzI1NiJ9"):
        assert secret not in text, secret
    extra_line = next(line for line in cap.lines() if line["message"] == "extra")
    assert extra_line["request"] == {"private_key": "[REDACTED]", "order_id": "o-9"}


# --------------------------------------------------------------------------- property: hostile input
_reserved_or_odd_keys = st.one_of(st.sampled_from((*RESERVED, "field_seq", "password", "token", "tokens", "_x")),
                                  st.text(min_size=1, max_size=12))
_values = st.recursive(
    # Integers of any size: beyond 64 bits they become text in every output.
    st.one_of(st.none(), st.booleans(), st.integers(-(2**100), 2**100), st.floats(), st.text(max_size=40),
              st.binary(max_size=10)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)
_LOG_RECORD_ATTRS = frozenset(vars(logging.LogRecord("p", 0, "p", 0, "m", None, None))) | {"message", "asctime"}
# The helpers' own parameters (a duplicate is the caller's TypeError); "runtime" is an ordinary key.
_HELPER_PARAMS = {"market", "side", "price", "size", "pnl_delta", "order_id", "client_order_id", "reason",
                  "daily_pnl", "markets_active", "open_orders_count"}


def test_hostile_extra_bind_and_helper_keys_never_break_a_line_or_its_base_fields(cap):
    log = logging.getLogger("bot")

    @settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(fields=st.dictionaries(_reserved_or_odd_keys, _values, max_size=5),
           via=st.sampled_from(["extra", "bind", "record_fill", "heartbeat", "risk_halt"]))
    def check(fields, via):
        start = len(cap.raw_lines())
        if via == "extra":
            log.info("hostile", extra={k: v for k, v in fields.items() if k not in _LOG_RECORD_ATTRS})
            expected = "LOG"
        elif via == "bind":
            with dora_otel.bind(**fields):
                log.info("hostile")
            expected = "LOG"
        else:
            kwargs = {k: v for k, v in fields.items() if k not in _HELPER_PARAMS}
            if via == "record_fill":
                dora_otel.record_fill("KXP", "yes", 0.5, 1, 0.0, order_id="o-prop", **kwargs)
                expected = "FILL"
            elif via == "heartbeat":
                dora_otel.heartbeat(1, 0, **kwargs)
                expected = "HEARTBEAT"
            else:
                dora_otel.risk_halt("property", -1.0, **kwargs)
                expected = "RISK_HALT"
        raw = cap.raw_lines()[start:]
        assert raw, via
        for text in raw:
            line = json.loads(text)
            assert isinstance(line, dict)
            for field in (*BASE, "logger"):
                assert field in line, (field, line)
            assert line["bot_run_id"] == cap.telemetry.bot_run_id and line["service"] == "dora-bot"
            assert line["env"] == "demo" and TS.match(line["ts"]) and isinstance(line["seq"], int)
        line = json.loads(raw[-1])
        assert line["event_type"] == expected, (via, line)
        if expected == "LOG":
            assert line["message"] == "hostile" and line["logger"] == "bot"

    check()


# --------------------------------------------------------------------------- a failing log file
class _SmallDisk:
    """The logs directory on a 64 KiB tmpfs (root), else a simulated disk: os.write in the log
    file's appender raises ENOSPC while full."""

    def __init__(self, directory, monkeypatch):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.mounted = os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(directory)], capture_output=True,
            check=False).returncode == 0
        self.full = False
        if not self.mounted:
            real_write = _rotating.os.write

            def write(fd, data):
                if self.full:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real_write(fd, data)

            monkeypatch.setattr(_rotating.os, "write", write)

    def fill(self):
        self.full = True
        if self.mounted:
            fd = os.open(self.directory / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)

    def free(self):
        self.full = False
        if self.mounted:
            (self.directory / "filler").unlink()

    def close(self):
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.directory)], check=False)


def test_a_full_disk_gives_one_error_per_episode_counts_lost_lines_and_reports_recovery(tmp_path, monkeypatch, capfd):
    disk = _SmallDisk(tmp_path / "logs", monkeypatch)
    captured = start(tmp_path, container_mode=False)
    try:
        log = logging.getLogger("bot")
        log.info("before")
        captured.flush()
        disk.fill()
        for i in range(500):
            log.info("while full %d %s", i, "x" * 100)
        captured.flush()
        lost = captured.telemetry.stats()["logs_dropped"]
        disk.free()
        log.info("after")
        captured.flush()
        lines = captured.lines()
        errors = [line for line in lines if line.get("target") == "log_file" and line["level"] == "ERROR"]
        recovered = [line for line in lines if line.get("log_file_recovered")]
        assert len(errors) == 1 and "No space left" in errors[0]["error_msg"], errors
        assert len(recovered) == 1 and recovered[0]["lines_lost"] == lost
        assert 450 <= lost <= 501  # the lines that did not fit (a tmpfs takes a few before it is full)
        raw = (tmp_path / "logs" / "dora-bot.jsonl").read_text(errors="replace").splitlines()
        parsed = []
        for text in raw:
            try:
                parsed.append(json.loads(text))
            except ValueError:
                assert "}{" not in text  # at most a torn fragment, never two lines glued together
        written = {line["seq"] for line in parsed}
        on_stdout = {line["seq"] for line in lines if line not in errors}
        assert len(on_stdout - written) == lost  # every line missing from the file is counted
        assert parsed[-2]["message"] == "after" and parsed[-1]["log_file_recovered"]
        captured.telemetry.shutdown()
        shutdown = captured.lines()[-1]
        assert shutdown["event_type"] == "SHUTDOWN" and shutdown["logs_dropped"] == lost
        assert "Logging error" not in capfd.readouterr().err
    finally:
        captured.telemetry.shutdown()
        disk.close()


# --------------------------------------------------------------------------- property: the fast encoder
_SCRUB_TEXTS = st.sampled_from((
    "plain words", "KXBTC-26NOV", "api_key=sk-live-123456", "Bearer abcdefghijklmnopq", "my keyboard",
    "registered-secret-value!", "x" * 70, "QWxhZGRpbjpvcGVuIHNlc2FtZQ0123456789abcdefABCDEFghijklmnopqrstuvwxyz",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "\u212aey=abcdefgh", "line\u2028break"))
_FIELD_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), _SCRUB_TEXTS,
              st.text(max_size=20), st.decimals(allow_nan=True)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.one_of(_SCRUB_TEXTS, st.text(max_size=6)),
                                                                inner, max_size=3),
    max_leaves=6)
_FIELD_KEYS = st.one_of(st.sampled_from(("market", "note", "token", "api_key", "password", "token_count", "keyboard",
                                         "seq", "event_type", "trace_id", "decision_id", "message", "ts", "logger",
                                         "service", "status")), st.text(min_size=1, max_size=10))


def test_the_fast_line_encoder_writes_what_the_whole_line_scrub_writes():
    """JsonFormatter.encode (the writer thread's encoder: body encoded alone, the scrub test riding
    along the loop) gives the bytes of the reference: the whole line dict through scrub_record and
    dumps_line — for any fields, credentials, sensitive names and odd values included."""
    from dora_otel import logs, scrub

    formatter = logs.JsonFormatter({"service": "bot-\u2028svc", "env": "dev", "bot_version": "1.2",
                                    "bot_run_id": "20250101-000000-abcd"})
    scrub.register_secrets(["registered-secret-value!"])
    try:
        @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(fields=st.dictionaries(_FIELD_KEYS, _FIELD_VALUES, max_size=8), message=_SCRUB_TEXTS,
               level=st.sampled_from(["INFO", "WARNING", "Level 5"]))
        def check(fields, message, level):
            for _ in range(2):  # the second time its strings are known clean (or not)
                fast = formatter.encode(1_700_000_000.25, level, message, "dora_otel", fields)
                whole = formatter._encode_protected(1_700_000_000.25, level, message, "dora_otel", fields)
                assert fast == whole

        for fields in ({"token": "plain words"}, {"note": "api_key=sk-live-123456"}, {"api_key": 12},
                       {"note": "registered-secret-value!"}, {"n": [{"password": "x"}]}, {"n": Decimal("1.5")},
                       {"note": "QWxhZGRpbjpvcGVuIHNlc2FtZQ0123456789abcdefABCDEFghijklmnopqrstuvwxyz"},
                       {"big": 2**70, "token": 2**70, "nan": float("nan")}, {"message": "other", "ts": 1}):
            check.hypothesis.inner_test(fields, "plain words", "INFO")
        check()
    finally:
        scrub.clear_secrets()


# A decision's targets and the like: lists of flat rows, with adversarial keys and values.
_ROW_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), _SCRUB_TEXTS,
                        st.text(max_size=8))
_ROW_KEYS = st.one_of(st.sampled_from(("side", "price", "size", "slot", "client_order_id", "api_key", "token",
                                       "token_count", "keyboard", "tokens")), _SCRUB_TEXTS, st.text(max_size=6))
_ROWS = st.lists(st.one_of(st.dictionaries(_ROW_KEYS, _ROW_VALUES, max_size=4),
                           st.dictionaries(st.integers(0, 3), _ROW_VALUES, max_size=2), _ROW_VALUES), max_size=3)
_EVENT_FIELDS = st.dictionaries(_FIELD_KEYS, st.one_of(_FIELD_VALUES, _ROWS, _ROWS), max_size=8)


def test_the_shared_scrub_verdict_never_lets_through_what_scrub_record_would_change():
    """scrub.event_verdict (the one verdict an event's line and span share) says clean only for
    fields that scrub_record leaves as they are and whose values scrub_value copies unchanged —
    for flat values and lists of rows (a decision's targets), credentials, sensitive names at any
    depth, odd numbers and keys included; and the line written through it (remembered or not) is
    the reference line."""
    import copy

    from dora_otel import logs, scrub

    formatter = logs.JsonFormatter({"service": "svc", "env": "dev", "bot_version": "1.2",
                                    "bot_run_id": "20250101-000000-abcd"})
    scrub.register_secrets(["registered-secret-value!"])
    try:
        @settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(fields=_EVENT_FIELDS, message=_SCRUB_TEXTS)
        def check(fields, message):
            for remember in (False, True, True):  # the third time from the remembered verdict
                verdict = scrub.event_verdict(fields, remember)
                if verdict is not None:
                    assert set(verdict) == {k for k, v in fields.items() if v is None}
                    for trusted in (logs._LINE_TRUSTED, scrub.TRUSTED_FIELDS - {"decision_id"}):
                        assert scrub.scrub_record(copy.deepcopy(fields), trusted) == fields
                    untrusted = {k: v for k, v in fields.items() if k not in scrub.EVENT_TRUSTED}
                    assert {k: scrub.scrub_field(k, v) for k, v in untrusted.items()} == untrusted
                fast = formatter.encode(1_700_000_000.25, "INFO", message, "dora_otel", fields, (5, 6), remember)
                whole = formatter._encode_protected(1_700_000_000.25, "INFO", message, "dora_otel", fields, (5, 6))
                assert fast == whole

        for fields in ({"targets": [{"side": "yes", "price": 0.45, "size": 10}]},
                       {"targets": [{"api_key": "sk-live-1234567"}]}, {"targets": [{"token_count": 3}]},
                       {"targets": [{"registered-secret-value!": 1}]}, {"api_key": [{"side": "yes"}]},
                       {"targets": [{"size": 2**64}]}, {"targets": [{"price": float("inf")}]},
                       {"targets": [{1: "yes"}]}, {"targets": ["yes"]}, {"token": 3, "note": None},
                       {"trace_id": "api_key=sk-live-123456", "note": "plain"}):
            check.hypothesis.inner_test(fields, "plain words")
        check()
    finally:
        scrub.clear_secrets()


def test_a_remembered_verdict_is_forgotten_when_a_secret_is_registered():
    from dora_otel import scrub

    fields = {"note": "now-a-hidden-value"}
    try:
        assert scrub.event_verdict(fields, True) == ()
        scrub.register_secrets(["now-a-hidden-value"])
        assert scrub.event_verdict(fields, True) is None
    finally:
        scrub.clear_secrets()


def test_event_trusted_fields_are_trusted_by_both_encoders():
    """event_verdict skips the text test of EVENT_TRUSTED values: both the line encoder and the span
    encoder must trust them too (else the shared verdict would skip a test one of them makes)."""
    from dora_otel import logs, scrub, spans

    assert scrub.EVENT_TRUSTED <= logs._LINE_TRUSTED
    assert scrub.EVENT_TRUSTED <= spans._TRUSTED


def test_a_base64_run_used_as_a_nested_key_is_masked_and_not_remembered_as_clean():
    """Found by the span property test: scrub_record's one-string test did not count a nested key's
    length toward the base64 rule, so a key holding a credential-shaped run passed unmasked and was
    remembered as clean — after which the same run as a value passed too."""
    from dora_otel import scrub

    blob = "QWxhZGRpbjpvcGVuIHNlc2FtZQ0123456789abcdefABCDEFghijklmnopqrstuvwxyz"
    assert scrub.scrub_record({"rows": [{blob: 1}]}) == {"rows": [{scrub.MASK: 1}]}
    assert scrub.scrub_record({"note": blob}) == {"note": scrub.MASK}


def test_the_key_field_pre_test_never_passes_an_event_the_full_check_faults():
    """_runtime._well_formed (the cheap pre-test before events.check, for every event on the trading
    thread or the event thread) says well formed only when events.problems finds nothing — for any
    mix of present, missing, None, empty, numeric and non-numeric key fields and statuses."""
    from dora_otel import _runtime, events

    names = sorted({n for ns in events.KEY_FIELDS.values() for n in ns}
                   | {n for ns in events._CONDITIONAL.values() for n in ns} | {"status"})
    values = st.sampled_from([None, "", "x", 0, 2.5, True, "ACCEPTED", "REJECTED", "ERROR", "FILLED"])

    @settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(event_type=st.sampled_from(sorted(events.KEY_FIELDS)),
           fields=st.dictionaries(st.sampled_from(names), values))
    def check(event_type, fields):
        if _runtime._well_formed(event_type, fields):
            assert events.problems(event_type, fields) == []

    check()
    assert _runtime._well_formed("ORDER_PLACE", {"market": "M", "side": "yes", "price": 0.5, "size": 1,
                                                 "client_order_id": "c", "decision_id": "d"}) == (
        not events.problems("ORDER_PLACE", {"market": "M", "side": "yes", "price": 0.5, "size": 1,
                                            "client_order_id": "c", "decision_id": "d"}))


def test_a_bots_extra_cannot_pass_for_what_dora_caches_on_a_record(cap):
    """`_dora_fields`, `_dora_line` and `_dora` are names dora-otel uses on a LogRecord; a bot's
    `extra=` can set the same attributes. They must never be taken for dora's own: a forged
    `_dora_line` would be written as it is (not JSON, not scrubbed), forged fields would replace
    the line's, and a forged `_dora` would slip past the renaming of reserved fields."""
    secret = "Bearer " + "Zx9" * 20
    forged = {"_dora_fields": [], "_dora_line": f"not json {secret}", "_dora": {"decision_id": "forged-decision"}}
    logging.getLogger("bot").info("own line", extra=forged)
    line = cap.lines()[-1]
    assert line["message"] == "own line" and line["logger"] == "bot"
    assert line["event_type"] == "LOG" and isinstance(line["seq"], int) and line["seq"] > 0
    assert "decision_id" not in line and "forged-decision" not in json.dumps(line)

    # A formatter given the record directly (a bot's own handler with dora's formatter).
    formatter = logs.JsonFormatter({"service": "svc", "env": "dev", "bot_version": "1", "bot_run_id": "r"})
    record = logging.getLogger("bot").makeRecord("bot", logging.INFO, "f.py", 1, "direct", None, None, extra=forged)
    text = formatter.format(record)
    assert json.loads(text)["message"] == "direct" and secret not in text and "not json" not in text
    assert formatter.format(record) == text  # (dora's own cache still works)
