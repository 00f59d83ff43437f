"""Decision-cycle cost with the execution ledger on, paired against the same cycle with the ledger
off and against the plain-logging baseline (issue: execution ledger, benchmark (a)).

One process, one `setup(ledger=...)`; rounds alternate three variants: baseline (6 plain f-string
lines), instrumented with the ledger's span processor detached, instrumented with it attached.
Detaching is done on the provider's processor list — a benchmark-only manoeuvre, so both
instrumented variants share everything else. Clock: the trading thread's CPU time (see
hot_path.py); `--clock wall` for elapsed time including background threads.

    python bench/ledger_cycle.py [--ledger sqlite|memory] [--rounds 20] [--cycles 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ledger", default="sqlite", choices=("sqlite", "memory"))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--clock", choices=("thread", "wall"), default="thread")
    args = parser.parse_args()

    from _cycle import baseline_cycle, instrumented_cycle, timer

    import dora_otel
    from dora_otel.ledger.processor import ExecutionLedgerProcessor

    devnull = open(os.devnull, "w")  # noqa: SIM115  open for the whole run, like a bot's stdout
    baseline = baseline_cycle(devnull)
    telemetry = dora_otel.setup(container_mode=True, stream=devnull, data_dir=tempfile.mkdtemp(prefix="dora-bench-"),
                                ledger=args.ledger, install_signal_handlers=False, watchdog_seconds=0)
    multi = telemetry.tracer_provider._active_span_processor
    with_ledger = multi._span_processors
    without_ledger = tuple(p for p in with_ledger if not isinstance(p, ExecutionLedgerProcessor))
    assert len(without_ledger) == len(with_ledger) - 1, "the ledger processor is not registered"
    cycle = instrumented_cycle()
    time_cycle = timer(telemetry, args.clock, args.cycles)

    def timed(fn, processors=None) -> float:
        if processors is not None:
            multi._span_processors = processors
        return time_cycle(fn, processors is not None)

    timed(cycle, with_ledger)
    timed(baseline)
    on_vs_off, on_vs_base, off_vs_base, added, raw = [], [], [], [], {"base": [], "off": [], "on": []}
    for r in range(args.rounds):
        order = [("base", None), ("off", without_ledger), ("on", with_ledger)]
        if r % 2:
            order.reverse()
        t = {name: timed(baseline if name == "base" else cycle, procs) for name, procs in order}
        on_vs_off.append(t["on"] / t["off"])
        added.append((t["on"] - t["off"]) * 1e6)
        for name, seconds in t.items():
            raw[name].append(seconds * 1e6)
        on_vs_base.append(t["on"] / t["base"])
        off_vs_base.append(t["off"] / t["base"])
    multi._span_processors = with_ledger
    stats = telemetry.stats()
    telemetry.shutdown(reason="bench")
    med = statistics.median
    print(f"ledger_cycle ({args.ledger}, {args.clock} clock, {args.rounds} rounds of {args.cycles} cycles): "
          f"ledger on / ledger off = {med(on_vs_off):.2f}x; ledger on / plain logging = {med(on_vs_base):.2f}x; "
          f"ledger off / plain logging = {med(off_vs_base):.2f}x; records shipped {stats.get('shipped')}, "
          f"rejected {stats.get('rejected')}")
    print(f"  per cycle (medians, us; raw times drift on a busy machine): the ledger adds {med(added):.1f}; "
          + ", ".join(f"{name} {med(values):.1f}" for name, values in raw.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
