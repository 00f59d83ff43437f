"""The scrubbing policy (dora_otel/scrub.py) rule by rule: what is masked, and what must never be
(client_order_id, order_id, decision_id, trace and span ids, counters named like credentials)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from dora_otel import scrub
from dora_otel.scrub import (
    MASK,
    is_sensitive_key,
    scrub_record,
    scrub_text,
    scrub_value,
)

PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
       "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n-----END RSA PRIVATE KEY-----")
KEY_ID = "a952bcbe-ec3b-4b5b-b8f9-11dae589608c"
ORDER = "5f085f00-8dd4-511c-a227-15be59e534e3"
TRACE, SPAN = "0af7651916cd43dd8448eb211c80319c", "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def _no_registered_secrets():
    saved = scrub.registered_secrets()
    scrub.clear_secrets()
    yield
    scrub.clear_secrets()
    scrub.register_secrets(saved)


@pytest.mark.parametrize("name", [
    "password", "db_password", "passphrase", "secret", "client_secret", "clientSecret", "token", "access_token",
    "accessToken", "x-auth-token", "api_key", "apiKey", "X-API-KEY", "private_key", "privateKey",
    "private_key_pem", "key_id", "api_key_id", "key", "signature", "sig", "Authorization", "auth", "cookie",
    "Set-Cookie", "credentials", "session", "session_id", "KALSHI-ACCESS-KEY", "KALSHI-ACCESS-SIGNATURE",
    "aws_secret_access_key", "http.request.header.authorization",
])
def test_sensitive_field_names(name):
    assert is_sensitive_key(name)


@pytest.mark.parametrize("name", [
    "client_order_id", "order_id", "decision_id", "trace_id", "span_id", "bot_run_id", "seq", "tokens",
    "max_tokens", "tokens_used", "market", "market_key", "idempotency_key", "author", "KALSHI-ACCESS-TIMESTAMP",
    "dora.record", "exception.message", "expected_orders_hash", "event_id", "sessions",
])
def test_ordinary_field_names(name):
    assert not is_sensitive_key(name)


@pytest.mark.parametrize("text, secret", [
    (f"headers: KALSHI-ACCESS-KEY: {KEY_ID} sent", KEY_ID),
    ("KALSHI-ACCESS-SIGNATURE=dGhpc2lzYXNpZ25hdHVyZQ==", "dGhpc2lzYXNpZ25hdHVyZQ"),
    ("failed: KALSHI-ACCESS-SIGNATURE: abcdefgh1234", "abcdefgh1234"),  # a plain label before it
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.cGF5bG9hZA.c2ln", "eyJhbGciOiJIUzI1NiJ9"),
    ("retry with bearer eyJhbGciOiJIUzI1NiJ9.cGF5bG9hZA.c2ln", "eyJhbGciOiJIUzI1NiJ9"),
    (f"loaded {PEM} ok", "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"),
    (f"bad key {PEM!r}", "VTLw7onLRnrq0"),  # the repr form, newlines as \n
    (PEM[:120], "MIIEowIBAAKCAQEAu1SU1LfVL"),  # a block cut short (a truncated error text)
    ("{'private_key': 'hunter22', 'order_id': 'o-1'}", "hunter22"),
    ('{"password":"hunter22","order_id":"o-1"}', "hunter22"),
    ("config api_key_id=zz9zz9zz9 ok", "zz9zz9zz9"),
    ("session: s3ss10n-t0k, next", "s3ss10n-t0k"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
    ("the AWS secret key is wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
    ("tokens: password=hunter22", "hunter22"),
])
def test_text_rules_mask_the_secret(text, secret):
    out = scrub_text(text)
    assert secret not in out and MASK in out, out


def test_identifiers_are_never_masked():
    ids = [ORDER, TRACE, SPAN, str(uuid.uuid4()), "ord-0001-" + ORDER, "20261201-010101-ab3d", "ab" * 32,
           "C0FFEE" * 11]
    text = (f"order {ids[0]} accepted client_order_id={ids[3]} order_id: {ids[4]} decision_id={TRACE} "
            f"trace_id={TRACE} span_id={SPAN} bot_run_id={ids[5]} hash={ids[6]} ref={ids[7]}")
    assert scrub_text(text) == text
    record = {"client_order_id": ids[3], "order_id": ids[4], "decision_id": TRACE, "trace_id": TRACE,
              "span_id": SPAN, "tokens_used": 12, "session_count": 3, "market": "KXBTC-25DEC31"}
    assert scrub_value(dict(record)) == record
    assert scrub_record(dict(record)) == record


def test_session_label_does_not_swallow_the_next_field():
    out = scrub_text("session=abcdef123 bot_run_id=20261201-010101-ab3d order_id=o-77")
    assert out == f"session={MASK} bot_run_id=20261201-010101-ab3d order_id=o-77"


def test_nested_values_are_masked_by_key_and_by_shape():
    value = {"req": {"headers": {"KALSHI-ACCESS-KEY": KEY_ID, "Accept": "json"}, "body": [f"Bearer {'x' * 20}"]},
             "credentials": {"user": "u", "pw": "p"}, "n": [PEM], "secret_count": 2}
    out = scrub_value(value)
    assert out["req"]["headers"] == {"KALSHI-ACCESS-KEY": MASK, "Accept": "json"}
    assert out["req"]["body"] == [f"Bearer {MASK}"] and out["credentials"] == MASK
    assert "MIIE" not in out["n"][0] and out["secret_count"] == 2


def test_registered_secrets_are_masked_anywhere_even_unlabelled(tmp_path):
    key_file = tmp_path / "kalshi.key"
    key_file.write_text(PEM + "\n")
    found = scrub.secrets_from_env({"KALSHI_API_KEY_ID": KEY_ID, "KALSHI_PRIVATE_KEY_PATH": str(key_file),
                                    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"})
    scrub.register_secrets(found)
    out = scrub_text(f"sent {KEY_ID} and wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY then {ORDER}")
    assert KEY_ID not in out and "wJalrXUtnFEMI" not in out and ORDER in out
    assert scrub_record({"market": KEY_ID})["market"] == MASK  # the fast path sees it too
    assert PEM + "\n" in scrub.secrets_from_env({"KALSHI_PRIVATE_KEY": str(key_file)})  # a path there too


def test_clean_record_is_returned_untouched():
    record = {"market": "KXBTC", "client_order_id": ORDER, "price": 0.45,
              "target_orders": [{"slot": 0, "client_order_id": ORDER}]}
    assert scrub_record(record) is record and record["target_orders"][0]["client_order_id"] == ORDER


def test_spans_are_rebuilt_scrubbed_and_clean_spans_pass_through():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )
    from opentelemetry.trace import Status, StatusCode

    from dora_otel.tracing import ScrubbingSpanExporter, scrub_span

    provider = TracerProvider()
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingSpanExporter(exported)))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span(f"decision Bearer {'t0k' * 5}", attributes={
            "dora.record": json.dumps({"private_key": "pk-123456", "client_order_id": ORDER}),
            "http.request.header.authorization": "Basic dXNlcjpwYXNz", "dora.order_id": ORDER}) as span:
        span.record_exception(RuntimeError(f"401: KALSHI-ACCESS-KEY: {KEY_ID}"))
        span.set_status(Status(StatusCode.ERROR, f"{PEM!r}"))
    with tracer.start_as_current_span("order.place", attributes={"dora.client_order_id": ORDER}):
        pass
    dirty, clean = exported.get_finished_spans()
    text = repr((dirty.name, dict(dirty.attributes), [(e.name, dict(e.attributes)) for e in dirty.events],
                 dirty.status.description))
    for secret in ("t0kt0k", "pk-123456", "dXNlcjpwYXNz", KEY_ID, "MIIEowIBAAKCAQEA"):
        assert secret not in text, secret
    assert ORDER in dirty.attributes["dora.record"] and dirty.attributes["dora.order_id"] == ORDER
    assert dirty.context == span.get_span_context()  # same ids: the trace still joins up
    assert scrub_span(clean) is clean and clean.attributes["dora.client_order_id"] == ORDER


def test_a_str_subclass_is_scrubbed_like_text():
    class Header(str):
        pass

    assert scrub_value({"note": Header(f"Bearer {'t0k' * 5}")}) == {"note": f"Bearer {MASK}"}


def test_the_unrolled_trigger_test_lists_every_trigger_word():
    """scrub._trigger_word (the trigger loop unrolled for the event thread) tests exactly the
    words of _TRIGGERS: each alone is found, in any case and inside other text, and none else."""
    import ast
    import re

    # (the source file, not inspect.getsource: under the compiled build the function is native code)
    source = Path(scrub.__file__).with_name("scrub.py").read_text()
    function = next(node for node in ast.walk(ast.parse(source))
                    if isinstance(node, ast.FunctionDef) and node.name == "_trigger_word")
    listed = re.findall(r'"([^"]+)" in low', ast.get_source_segment(source, function) or "")
    assert sorted(listed) == sorted(scrub._TRIGGERS)
    for word in scrub._TRIGGERS:
        assert scrub._has_trigger(f"x {word.upper()} y") and scrub._trigger_word(f"a{word}b")
    assert not scrub._has_trigger("order o-1 accepted (0.4 ms) on KXBTC-26NOV yes@0.45")
