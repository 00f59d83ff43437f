"""Run `systemd-analyze verify` / `security --offline` on our unit files in a throw-away root.

`systemd-analyze verify` loads a unit the way PID 1 would and also checks that every ExecStart=
binary exists and is executable. Our binaries live in /opt/dora-bot/venv on the real host, so the
units are verified inside a temporary root (`--root=`) that holds: a copy of the host's
/usr/lib/systemd/system (the default dependencies sysinit.target, basic.target ... that every
service pulls in), the units under etc/systemd/system, and an executable stub at each ExecStart path.
`verify` exits 0 even for an unknown key or a bad value ("Unknown key ..., ignoring"), so anything it
prints counts as a failure.

Needs systemd-analyze: Debian package `systemd` (`apt-get install -y systemd`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

HOST_UNITS = [Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")]
_EXEC = re.compile(r"^\s*Exec(?:Condition|Start|StartPre|StartPost|Stop|StopPost|Reload)=[-@:+!]*(\S+)", re.MULTILINE)


class VerifyError(AssertionError):
    pass


def tool() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        raise VerifyError("systemd-analyze is not installed: `apt-get install -y systemd` (Debian package "
                          "'systemd') must run before these tests (.ci/run)")
    return path


def make_root(root: Path, units: dict[str, str], dropins: dict[str, dict[str, str]] | None = None) -> Path:
    """Build a verification root with these units (name -> text) and drop-ins (unit -> {file: text})."""
    src = next((p for p in HOST_UNITS if (p / "sysinit.target").exists()), None)
    if src is None:
        raise VerifyError(f"no host unit directory with sysinit.target among {HOST_UNITS}")
    shutil.copytree(src, root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True, exist_ok=True)
    texts = list(units.values())
    for name, text in units.items():
        (etc / name).write_text(text, encoding="utf-8")
    for unit, files in (dropins or {}).items():
        d = etc / f"{unit}.d"
        d.mkdir(parents=True, exist_ok=True)
        for fname, text in files.items():
            (d / fname).write_text(text, encoding="utf-8")
            texts.append(text)
    for text in texts:
        for binary in _EXEC.findall(text):
            stub = root / binary.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
            stub.chmod(0o755)
    return root


def verify(root: Path, *unit_names: str) -> None:
    """Raise VerifyError with systemd-analyze's words unless the units load cleanly."""
    proc = subprocess.run([tool(), "verify", "--man=no", f"--root={root}", *unit_names],
                          capture_output=True, text=True, timeout=60, check=False)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or output:
        raise VerifyError(f"systemd-analyze verify {' '.join(unit_names)} (exit {proc.returncode}):\n{output}")


def exposure(root: Path, unit_name: str) -> float:
    """The overall exposure score of `systemd-analyze security --offline` (0 = locked down, 10 = none)."""
    proc = subprocess.run([tool(), "security", "--offline=true", f"--root={root}", "--no-pager", unit_name],
                          capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout + proc.stderr)
    if match is None:
        raise VerifyError(f"systemd-analyze security printed no score (exit {proc.returncode}):\n"
                          f"{proc.stdout}{proc.stderr}")
    return float(match.group(1))


def settings(text: str) -> dict[str, list[str]]:
    """Key -> every value assigned in a unit file (all sections; comments dropped)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out.setdefault(key.strip(), []).append(value.strip())
    return out
