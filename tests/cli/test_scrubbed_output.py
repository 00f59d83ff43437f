"""Everything explain, reconcile and report print or emit passes one scrubbing function: a private key
or a request signature in an error message never reaches their output; identifiers stay intact."""

from __future__ import annotations

import io
from typing import Any

from dora_otel.query.explain import explain_decision
from dora_otel.query.local import LocalSource
from dora_otel.query.reconcile import reconcile
from dora_otel.query.render import render_explain, render_json, render_reconcile
from dora_otel.query.report import build_report, render_html
from dora_otel.query.times import parse_time

from .test_explain_answer_first import _Reader

PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0"
SIGNATURE = "c2lnbmF0dXJlLW9mLXRoZS1yZXF1ZXN0LTEyMzQ1Njc4OTA"


def test_a_secret_in_an_error_message_never_reaches_explain_reconcile_or_report(tmp_path):
    did = "ef" * 16
    base = {"decision_id": did, "market": "M", "bot_run_id": "r1"}
    decision = dict(base, kind="decision", seq=1, decision_ts="2026-11-24T04:47:54.000000Z",
                    target_orders=[{"slot": 0, "side": "yes", "price": 0.4, "size": 10, "client_order_id": "c0-coid"}])
    leak = (f"auth failed: -----BEGIN RSA PRIVATE KEY-----\\n{PEM_BODY}\\n-----END RSA PRIVATE KEY----- "
            f"KALSHI-ACCESS-SIGNATURE: {SIGNATURE}")
    slot: dict[str, Any] = dict(base, slot=0, client_order_id="c0-coid", side="yes", price=0.4, size=10)
    events = [dict(slot, event_type="ORDER_PLACE", seq=2, event_ts="2026-11-24T04:47:54.000100Z"),
              dict(slot, event_type="ORDER_RESULT", seq=3, event_ts="2026-11-24T04:47:54.000200Z", status="REJECTED",
                   error_type="HTTPError", error_msg=leak, latency_ms=3.0,
                   stack=("Traceback (most recent call last):\n  File \"bot.py\", line 3, in place\n"
                          f"HTTPError: key was\n-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY[:40]}\n{PEM_BODY[40:]}\n"
                          "-----END RSA PRIVATE KEY-----\n"))]
    source = LocalSource(tmp_path, reader=_Reader(decision, events))
    outputs = []
    report = explain_decision(source, did)
    for render in (lambda s: render_explain(report, s, verbose=True), lambda s: render_json(report.to_dict(), s)):
        out = io.StringIO()
        render(out)
        outputs.append(out.getvalue())
    emitted: list[str] = []
    rec = reconcile(source, parse_time("2026-11-24T04:00:00Z"), parse_time("2026-11-24T05:00:00Z"),
                    emit=lambda level, kind, message, fields: emitted.append(f"{message} {fields}"))
    outputs.append("\n".join(emitted))
    out = io.StringIO()
    render_reconcile(rec, out)
    outputs.append(out.getvalue())
    outputs.append(render_html(build_report(source, parse_time("2026-11-24T04:00:00Z"),
                                            parse_time("2026-11-24T05:00:00Z"))))
    for text in outputs:
        assert "REJECTED" in text and did in text  # the answer and its identifiers
        assert PEM_BODY not in text and SIGNATURE not in text, text[:2000]
        assert PEM_BODY[:40] not in text and PEM_BODY[40:] not in text, text[:3000]  # nor a key over several lines
    assert all("c0-coid" in outputs[i] for i in (0, 1, 4))  # explain text, JSON, report
    assert "Traceback" in outputs[0]  # the stack is shown, masked
