"""`ExecutionLedgerProcessor`: the OTel SpanProcessor that mirrors execution spans into the ledger.

It is independent of the trace pipeline: it is not a BatchSpanProcessor (which drops the oldest span
when full and loses a batch on export failure), and it sees execution spans whatever the trace
sampler says (tracing.ExecutionAwareSampler keeps them as RECORD_ONLY).

- ORDER_PLACE, ORDER_CANCEL (the request), FILL and ORDER_SUPPRESSED are recorded when their spans
  *start* — an attempt or a cancel is on record even if the process dies during the exchange call,
  and a FILL is journaled before its log line is written;
- ORDER_RESULT when its span ends (it starts and ends at the moment the answer arrived, before the
  ORDER_RESULT log line); a cancel's outcome when its span ends, if the decorator set its `dora.status`
  (a second ORDER_CANCEL record: the outcome's flat attributes, with their own seq, win over the
  request's fields);
- one decision record per decision span, when it ends.

`on_start` / `on_end` run on the bot's thread: they build a small dict and call `Ledger.append`,
which journals and enqueues in O(1). They never raise.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from dora_otel.ledger.records import RecordBuilder

_log = logging.getLogger("dora_otel.ledger")
_START_EVENTS = frozenset({"ORDER_PLACE", "ORDER_CANCEL", "FILL", "ORDER_SUPPRESSED"})
_END_EVENTS = frozenset({"ORDER_RESULT", "ORDER_CANCEL"})


class ExecutionLedgerProcessor(SpanProcessor):
    def __init__(self, ledger: Any, builder: RecordBuilder) -> None:
        self._ledger = ledger
        self._builder = builder
        self.errors = 0

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        try:
            attrs = span.attributes
            event_type = attrs.get("dora.event_type") if attrs else None
            if event_type in _START_EVENTS:
                self._ledger.append(self._builder.execution(event_type, attrs, span.context, span.start_time))
        except Exception:
            self._failed()

    def on_end(self, span: ReadableSpan) -> None:
        try:
            attrs = span.attributes
            event_type = attrs.get("dora.event_type") if attrs else None
            if event_type == "ORDER_CANCEL" and "dora.status" not in attrs:
                return  # a cancel whose outcome was never set: its request record is all there is
            if event_type in _END_EVENTS:
                ts = span.end_time if event_type == "ORDER_CANCEL" else span.start_time
                self._ledger.append(self._builder.execution(event_type, attrs, span.context, ts))
            elif event_type == "DECISION_MADE":
                self._ledger.append(self._builder.decision(attrs, span.context, span.start_time, span.end_time))
        except Exception:
            self._failed()

    def _failed(self) -> None:
        self.errors += 1
        try:
            _log.error("could not build a ledger record from a span", exc_info=True,
                       extra={"_dora": {"event_type": "ERROR", "target": "execution_log"}})
        except Exception:
            pass

    def shutdown(self) -> None:
        """The ledger is drained by Telemetry.shutdown() within its budget, not here."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return bool(self._ledger.flush(timeout_millis / 1000))
        except Exception:
            return False
