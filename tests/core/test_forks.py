"""The fork registry (dora_otel._forks): what a forked child resets, for objects that cannot be
weakly referenced (the compiled build's native classes), without keeping them alive."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_resets_live_objects_and_the_registry_does_not_keep_them_alive(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import gc, os, weakref
        from dora_otel import _forks

        class Native:  # like a mypyc native class: no __weakref__ slot
            __slots__ = ("resets", "_after_fork")
            def __init__(self):
                self.resets = 0
                self._after_fork = _forks.AfterFork(self.reset)
            def reset(self):
                self.resets += 1

        class Broken:
            __slots__ = ("_after_fork",)
            def __init__(self):
                self._after_fork = _forks.AfterFork(self.reset)
            def reset(self):
                raise RuntimeError("cannot reset")

        try:
            weakref.ref(Native())
            raise SystemExit("Native must not be weakly referenceable for this test to mean anything")
        except TypeError:
            pass
        broken, live = Broken(), Native()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: every live object was reset, a failing one did not stop the rest
            os.write(write, str(live.resets).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print("child", os.read(read, 10).decode(), "parent", live.resets)
        hook = weakref.ref(live._after_fork)
        del live, broken
        gc.collect()
        print("after collect", hook() is None, len(_forks._hooks))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["child 1 parent 0", "after collect True 0"]


def test_dora_objects_a_library_may_weakly_reference_die_cleanly(tmp_path: Path) -> None:
    """The span exporter and the ledger's span processor sit in the OTel SDK's lists, where a
    library may refer to them weakly. Under the compiled build they must still be ordinary
    (weakly referenceable) objects: a native mypyc class with a Python base crashes the interpreter
    when such an object dies. (Passes trivially on the pure modules; .ci/compiled-tests runs it on
    the compiled ones.)"""
    script = textwrap.dedent("""
        import gc, weakref
        from pathlib import Path
        from dora_otel.ledger.processor import ExecutionLedgerProcessor
        from dora_otel.ledger.records import RecordBuilder
        from dora_otel.spanfile import SpanFileExporter

        class NoLedger:
            def append(self, *args): pass
            def append_line(self, *args): pass

        died = []
        objects = [ExecutionLedgerProcessor(NoLedger(), RecordBuilder(bot_run_id="r", env="test", bot_version="1",
                                                                      ttl_days=1)),
                   SpanFileExporter(Path("spans.jsonl"))]
        refs = [weakref.ref(o, lambda _, name=type(o).__name__: died.append(name)) for o in objects]
        objects[1].shutdown()
        del objects
        gc.collect()
        print(sorted(died), [r() for r in refs])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    assert done.stdout.strip() == "['ExecutionLedgerProcessor', 'SpanFileExporter'] [None, None]"
