"""The hot-path cycle (bench/_cycle.py) built with peer libraries, against the same plain-logging
baseline, in one process, paired per round: dora-otel, structlog + OTel SDK, and OTel SDK +
python-json-logger (`pip install -e '.[bench]'`). Each peer cycle does what dora-otel's does by hand:
a decision span with an order.place child per order, trace ids on every JSON line, a BatchSpanProcessor
exporting to the spans-file-like sink (/dev/null), 6 JSON lines to /dev/null.

    python bench/peers.py [--rounds 20] [--cycles 500] [--clock thread|wall]

Prints each contender's median ratio to 6 plain f-string lines (and quartiles). Not a test.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

from _cycle import MARKET, baseline_cycle, instrumented_cycle, scratch_dir, timer

TARGETS = [{"side": "yes", "price": 0.45, "size": 10}, {"side": "no", "price": 0.50, "size": 10}]


def _sdk_tracer(devnull: Any) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=devnull)))
    return provider, provider.get_tracer("peer")


def structlog_cycle(devnull: Any) -> tuple[Callable[[str, int], None], Any]:
    import structlog
    from opentelemetry import trace

    def add_trace(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event["trace_id"], event["span_id"] = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
        return event

    structlog.configure(processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
                                    add_trace, structlog.processors.JSONRenderer()],
                        logger_factory=structlog.WriteLoggerFactory(file=devnull), cache_logger_on_first_use=True)
    log = structlog.get_logger()
    provider, tracer = _sdk_tracer(devnull)

    def cycle(market: str, i: int) -> None:
        with tracer.start_as_current_span("decision", attributes={"dora.market": market}) as span:
            log.info("thinking about", market=market)
            span.set_attribute("dora.target_count", 2)
            log.info("decision", event_type="DECISION_MADE", market=market, target_count=2)
            for n, t in enumerate(TARGETS):
                attrs = {"dora.market": market, "dora.side": t["side"], "dora.price": t["price"],
                         "dora.size": t["size"]}
                with tracer.start_as_current_span("order.place", attributes=attrs):
                    log.info("placing", event_type="ORDER_PLACE", market=market, **t)
                    log.info("result", event_type="ORDER_RESULT", status="ACCEPTED", order_id=f"o-{i}-{n}")

    return cycle, provider


def jsonlogger_cycle(devnull: Any) -> tuple[Callable[[str, int], None], Any]:
    from opentelemetry import trace
    from pythonjsonlogger.json import JsonFormatter

    class TraceFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            ctx = trace.get_current_span().get_span_context()
            if ctx.is_valid:
                record.trace_id, record.span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
            return True

    log = logging.getLogger("bench.jsonlogger")
    log.propagate = False
    handler = logging.StreamHandler(devnull)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(TraceFilter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    provider, tracer = _sdk_tracer(devnull)

    def cycle(market: str, i: int) -> None:
        with tracer.start_as_current_span("decision", attributes={"dora.market": market}) as span:
            log.info("thinking about", extra={"market": market})
            span.set_attribute("dora.target_count", 2)
            log.info("decision", extra={"event_type": "DECISION_MADE", "market": market, "target_count": 2})
            for n, t in enumerate(TARGETS):
                attrs = {"dora.market": market, "dora.side": t["side"], "dora.price": t["price"],
                         "dora.size": t["size"]}
                with tracer.start_as_current_span("order.place", attributes=attrs):
                    log.info("placing", extra={"event_type": "ORDER_PLACE", "market": market, **t})
                    log.info("result", extra={"event_type": "ORDER_RESULT", "status": "ACCEPTED",
                                              "order_id": f"o-{i}-{n}"})

    return cycle, provider


class _Flusher:
    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def flush(self, timeout_s: float) -> bool:
        return bool(self.provider.force_flush(int(timeout_s * 1000)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--clock", choices=("thread", "wall"), default="thread")
    args = parser.parse_args()

    import dora_otel

    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    baseline = baseline_cycle(devnull)
    telemetry = dora_otel.setup(container_mode=True, stream=devnull, data_dir=scratch_dir(),
                                ledger="off", install_signal_handlers=False, watchdog_seconds=0)
    contenders: list[tuple[str, Callable[[str, int], None], Any]] = [("dora-otel", instrumented_cycle(), telemetry)]
    for name, build in (("structlog + OTel SDK", structlog_cycle), ("OTel SDK + python-json-logger", jsonlogger_cycle)):
        try:
            cycle, provider = build(devnull)
        except ImportError as exc:
            print(f"{name}: not installed ({exc}); pip install -e '.[bench]'")
            continue
        contenders.append((name, cycle, _Flusher(provider)))
    timers = [(name, cycle, timer(flusher, args.clock, args.cycles)) for name, cycle, flusher in contenders]
    base_timer = timer(telemetry, args.clock, args.cycles)
    base_timer(baseline, False)
    for _, cycle, timed in timers:
        timed(cycle, True)
    ratios: dict[str, list[float]] = {name: [] for name, _, _ in timers}
    for r in range(args.rounds):
        order = timers if r % 2 == 0 else list(reversed(timers))
        for name, cycle, timed in order:
            b = base_timer(baseline, False)
            ratios[name].append(timed(cycle, True) / b)
    telemetry.shutdown(reason="bench")
    print(f"peers ({args.clock} clock, {args.rounds} paired rounds of {args.cycles} cycles; "
          "1.0 = 6 plain f-string lines):")
    for name, values in ratios.items():
        q = statistics.quantiles(values, n=4)
        print(f"  {name:32s} {statistics.median(values):5.2f}x (quartiles {q[0]:.2f}-{q[2]:.2f})")
    return 0


if __name__ == "__main__":
    _ = MARKET
    sys.exit(main())
