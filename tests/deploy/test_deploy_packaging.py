"""The wheel says what it is: version from one place, licence text and expression, classifiers, URLs.

Builds the wheel with `pip wheel --no-deps` (hatchling, as a release does) and reads its METADATA.
Installing it in a fresh venv and running it is `.ci/wheel-smoke` (run by .ci/run).
"""

from __future__ import annotations

import email.parser
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = re.search(r'^__version__ = "([^"]+)"$', (REPO / "dora_otel" / "_version.py").read_text(), re.M).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("dora_otel-*.whl")
    return zipfile.ZipFile(path)


def _metadata(wheel: zipfile.ZipFile):
    return email.parser.Parser().parsestr(wheel.read(f"dora_otel-{VERSION}.dist-info/METADATA").decode())


def test_the_version_is_written_once_and_everything_reports_it():
    import dora_otel
    from dora_otel.cli import build_parser

    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject and not re.search(r"^version\s*=", pyproject, re.M)
    assert dora_otel.__version__ == VERSION
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    proc = subprocess.run([sys.executable, "-m", "dora_otel.cli", "--version"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"dora-otel {VERSION}")
    assert f"## {VERSION} " in (REPO / "CHANGELOG.md").read_text(encoding="utf-8")


def test_the_license_file_is_the_apache_2_0_text():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "9. Accepting Warranty or Additional Liability." in text


def test_wheel_metadata_names_version_license_classifiers_and_urls(wheel):
    meta = _metadata(wheel)
    assert meta["Version"] == VERSION
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert wheel.read(f"dora_otel-{VERSION}.dist-info/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
    classifiers = meta.get_all("Classifier")
    assert "Typing :: Typed" in classifiers and "Programming Language :: Python :: 3 :: Only" in classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # PEP 639: the expression says it
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(urls)
    assert "dora_otel/py.typed" in wheel.namelist() and "dora_otel/_version.py" in wheel.namelist()
