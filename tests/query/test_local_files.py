"""The embedded backend's files: rotated JSON log files read by time region (binary search, no full
read), and explain without a ledger — from the log lines, or from the spans file."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import datetime, timedelta, timezone

from dora_otel.query.explain import explain_decision, explain_market
from dora_otel.query.local import LocalSource, LogFiles
from dora_otel.query.times import parse_time

from ._helpers import MARKETS, expected_verdict, run_demo

T0 = datetime(2026, 11, 24, 5, 0, tzinfo=timezone.utc)


def write_log(path, start: int, count: int, step_s: float = 0.5) -> list[dict]:
    lines = []
    for i in range(start, start + count):
        ts = (T0 + timedelta(seconds=i * step_s)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        lines.append({"ts": ts, "level": "INFO", "bot_run_id": "r", "message": f"line {i}", "event_type": "LOG",
                      "seq": i + 1, "decision_id": f"{i % 7:032x}", "market": "M"})
    path.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
    return lines


def test_regions_are_found_across_rotated_files_in_time_order(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    write_log(logs / "dora-bot.jsonl.2", 0, 4000)
    write_log(logs / "dora-bot.jsonl.1", 4000, 4000)
    write_log(logs / "dora-bot.jsonl", 8000, 4000)
    files = LogFiles(logs / "dora-bot.jsonl")
    assert [p.name for p in files.files] == ["dora-bot.jsonl.2", "dora-bot.jsonl.1", "dora-bot.jsonl"]
    # 1 minute around the rotation between .1 and the current file (seconds 3970..4030)
    start, end = T0 + timedelta(seconds=3970), T0 + timedelta(seconds=4030)
    got = [line["seq"] for line in files.lines([(start, end)], lambda raw: True)]
    inside = [i + 1 for i in range(12000) if start <= T0 + timedelta(seconds=i * 0.5) <= end]
    assert set(inside) <= set(got) and len(got) < len(inside) + 40  # the region, plus a little slack
    assert got == sorted(got)


def test_only_wanted_lines_are_parsed_and_find_searches_all_files(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    write_log(logs / "dora-bot.jsonl.1", 0, 500)
    write_log(logs / "dora-bot.jsonl", 500, 500)
    files = LogFiles(logs / "dora-bot.jsonl")
    wanted = f"{3:032x}"
    assert {line["decision_id"] for line in files.find(wanted)} == {wanted}
    assert len(list(files.find(wanted))) == len([i for i in range(1000) if i % 7 == 3])


def test_a_torn_last_line_is_skipped(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    write_log(logs / "dora-bot.jsonl", 0, 10)
    with open(logs / "dora-bot.jsonl", "a") as fh:
        fh.write('{"ts":"2026-11-24T05:00:05.000Z","level":"IN')
    got = list(LogFiles(logs / "dora-bot.jsonl").lines(None, lambda raw: True))
    assert [line["seq"] for line in got] == list(range(1, 11))


def test_without_a_ledger_explain_rebuilds_decisions_from_the_log_lines(tmp_path):
    run = run_demo(tmp_path, "--cycles", "20", "--seed", "11", "--fault-rate", "0.2", "--ledger", "off")
    assert not (run.data_dir / "ledger" / "ledger.sqlite3").exists()
    source = LocalSource(run.data_dir)
    checked: Counter[str] = Counter()
    for market in MARKETS:
        report = explain_market(source, market, parse_time("now"), timedelta(hours=1))
        assert any("rebuilt from the log lines" in note for note in report.notes)
        for decision in report.decisions:
            assert decision.records_from == "log"
            for v in decision.verdicts:
                why = run.held_back(market, decision.loop, v.expected)
                truth = run.truth.get(v.client_order_id)
                assert v.verdict.value == expected_verdict(truth, why), (decision.decision_id, v)
                if why is not None:
                    assert v.reason == why
                checked[v.verdict.value] += 1
    assert sum(checked.values()) > 60
    # read from the lines as written: a cancel's request and outcome lines, the bot's why-not lines
    assert {"CANCELLED", "SUPPRESSED", "REJECTED", "UNKNOWN"} <= set(checked), checked
    assert not (run.data_dir / "ledger" / "ledger.sqlite3").exists()  # reading never creates a ledger


def test_without_ledger_or_logs_explain_falls_back_to_the_spans_file(faulty_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(faulty_run.data_dir, data)
    (data / "ledger" / "ledger.sqlite3").unlink()
    decision_id = next(line["decision_id"] for line in faulty_run.lines() if line["event_type"] == "DECISION_MADE")
    for log in (data / "logs").iterdir():
        log.unlink()
    report = explain_decision(LocalSource(data), decision_id)
    (decision,) = report.decisions
    assert decision.records_from == "spans" and decision.targets
    with_ledger = explain_decision(LocalSource(faulty_run.data_dir), decision_id).decisions[0]
    assert [v.verdict for v in decision.verdicts] == [v.verdict for v in with_ledger.verdicts]
