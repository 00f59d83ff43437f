"""`dora-otel report` opened in a real headless browser (Debian's chromium, installed by .ci/run):
every decision of the range is one mark, drawn in its worst verdict's colour; the page fetches
nothing; a screenshot is saved as a test artefact (the README's docs/img/report.png is made the
same way)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from dora_otel.query.local import LocalSource
from dora_otel.query.report import VERDICT_COLORS
from dora_otel.query.verdicts import judge_decision, worst
from tests.query._helpers import MARKETS, dora_cli

_MARK = re.compile(r'<rect class="mark v-(\w+)" data-verdict="(\w+)" data-decision="([0-9a-f]{32})"[^>]*'
                   r'data-rendered-fill="([^"]+)"')


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed (.ci/run installs Debian's chromium package)"
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120, check=False)


def _rgb(hex_color: str) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def test_the_report_shows_every_decision_in_its_worst_verdicts_colour_in_chromium(cli_run, tmp_path):
    page = tmp_path / "report.html"
    proc = dora_cli("report", "--since", "1h ago", "--out", str(page), "--data-dir", str(cli_run.data_dir))
    assert proc.returncode == 0, proc.stderr
    document = page.read_text()
    assert "http://" not in document and "https://" not in document and "<link" not in document  # self-contained

    # what the ledger says: every decision of the range and its worst slot verdict
    reader = LocalSource(cli_run.data_dir).reader
    assert reader is not None
    expected = {}
    for d in reader.decisions_between("2000-01-01T00:00:00.000000Z", "2100-01-01T00:00:00.000000Z"):
        verdicts, _ = judge_decision(d.get("target_orders") or [], reader.events_for_decision(d["decision_id"]))
        found = worst(v.verdict for v in verdicts)
        expected[d["decision_id"]] = found.value if found else "NONE"

    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    ready = re.search(r'<body data-ready="(\d+)"', dom.stdout)
    assert ready, "the page's script did not run"
    marks = _MARK.findall(dom.stdout)
    assert int(ready.group(1)) == len(marks) == len(expected) > 100
    assert {decision: verdict for _, verdict, decision, _ in marks} == expected
    for css_class, verdict, decision, rendered in marks:
        assert css_class == verdict and rendered == _rgb(VERDICT_COLORS[verdict]), (decision, verdict, rendered)
    shown = Counter(verdict for _, verdict, _, _ in marks)
    # the failures are there to see, and the orders the bot held back on purpose (the demo says why for
    # every order it does not send, so it has no NOT_SENT: tests/query/test_explain.py checks that)
    assert {"UNKNOWN", "REJECTED", "SUPPRESSED"} <= set(shown)
    for market in MARKETS:
        assert f'data-market="{html.escape(market)}"' in dom.stdout
    # every decision has its expandable timeline, the ones that went wrong open
    opened = re.findall(r'<details class="decision" id="d-([0-9a-f]{32})" data-verdict="(\w+)" open', dom.stdout)
    assert {d for d, _ in opened} == {d for d, v in expected.items() if v in ("UNKNOWN", "REJECTED", "NOT_SENT")}

    shot = tmp_path / "report.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1100,760", "--hide-scrollbars", page.as_uri(),
                    profile=tmp_path / "profile2")
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"report screenshot: {shot}")
