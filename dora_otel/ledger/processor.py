"""`ExecutionLedgerProcessor`: the seam that mirrors execution events into the ledger.

It sits in the tracer provider's span processor list (so `setup()` and the benches attach and detach
it like any processor), but its input is the event itself: dora's spans (spans.LiteSpan) call
`on_event` / `on_decision` on the trading thread with the fields the decorator holds — nothing is
parsed back from a span attribute. The span hooks ignore spans (dora's spans are exported off-thread,
after their records were journaled). It is independent of the trace pipeline and of sampling.

- ORDER_PLACE, ORDER_CANCEL (the request), FILL and ORDER_SUPPRESSED are recorded when their spans
  *start* — an attempt or a cancel is on record even if the process dies during the exchange call,
  and a FILL is journaled before its log line is written;
- ORDER_RESULT when its span ends (it starts and ends at the moment the answer arrived, before the
  ORDER_RESULT log line); a cancel's outcome when its span ends, if the decorator set its `dora.status`
  (a second ORDER_CANCEL record: the outcome's flat attributes, with their own seq, win over the
  request's fields);
- one decision record per decision span, when it ends.

`on_event` / `on_decision` run on the bot's thread: they write a compact journal line straight from
the fields (`RecordBuilder.execution_line` / `decision_line`, `Ledger.append_line`: one `write`),
which the shipper thread expands into the full record; when the fields need scrubbing (or are not
plain) they build the full, scrubbed record instead (`Ledger.append`). They never raise.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from dora_otel._mypyc import mypyc_attr
from dora_otel.ledger.records import RecordBuilder

_log = logging.getLogger("dora_otel.ledger")


@mypyc_attr(native_class=False)  # (a Python base class: see dora_otel._mypyc)
class ExecutionLedgerProcessor(SpanProcessor):
    def __init__(self, ledger: Any, builder: RecordBuilder) -> None:
        self._ledger = ledger
        self._builder = builder
        # bound once: these run for every record on the trading thread
        self._execution_line = builder.execution_line
        self._decision_line = builder.decision_line
        self._append_line = ledger.append_line
        self.errors = 0

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        """Spans are not read: records come from events (`on_event`)."""

    def on_end(self, span: ReadableSpan) -> None:
        """Spans are not read: records come from events (`on_event`, `on_decision`)."""

    def on_event(self, event_type: str, fields: dict[str, Any], trace_id: int, span_id: int, ts_ns: int) -> None:
        """Journal one execution record built from the event's fields. Trading thread; never raises."""
        try:
            line = self._execution_line(event_type, fields, trace_id, span_id, ts_ns)
            if line is not None:
                self._append_line(line, event_type)
            else:
                self._ledger.append(self._builder.execution_event(event_type, fields, trace_id, span_id, ts_ns))
        except Exception:
            self._failed()

    def on_decision(self, fields: dict[str, Any], trace_id: int, span_id: int, start_ns: int, end_ns: int) -> None:
        """Journal the decision record (its span ended). Trading thread; never raises."""
        try:
            line = self._decision_line(fields, trace_id, span_id, start_ns, end_ns)
            if line is not None:
                self._append_line(line)
            else:
                self._ledger.append(self._builder.decision_event(fields, trace_id, span_id, start_ns, end_ns))
        except Exception:
            self._failed()

    def _failed(self) -> None:
        self.errors += 1
        try:
            _log.error("could not build a ledger record from an event", exc_info=True,
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
