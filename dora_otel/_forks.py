"""What a forked child resets: the threads, locks and buffers of the objects alive at the fork.

A forked child has only the thread that forked, so objects with threads or buffers of their own (a
ledger's shipper, an order index's writer, the spans a tracer encoded but had not written) must be
reset there. The registry must not keep those objects alive: it refers weakly to them. But the
compiled build (hatch_build.py) makes some of them mypyc native classes, which cannot be weakly
referenced. So each object keeps an `AfterFork` hook (an ordinary Python object) that calls back
into it, and the registry refers weakly to the hooks: object and hook form a cycle that the garbage
collector frees together, and then the hook leaves the registry.

Not compiled: `AfterFork` must stay a Python class (weakly referenceable).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable

_hooks: weakref.WeakSet[AfterFork] = weakref.WeakSet()
_lock = threading.Lock()
_registered = False


class AfterFork:
    """Calls `reset` in every forked child, for as long as this hook is alive. Keep it on the object
    `reset` belongs to (an attribute), so that it lives exactly as long as that object."""

    __slots__ = ("__weakref__", "reset")

    def __init__(self, reset: Callable[[], None]) -> None:
        global _registered
        self.reset = reset
        with _lock:
            _hooks.add(self)
            if not _registered and hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork_in_child)
                _registered = True


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # (a thread of the parent may have held it at the fork)
    for hook in list(_hooks):
        try:
            hook.reset()
        except Exception:  # noqa: BLE001, S110  a forked child must come up even if one object cannot reset
            pass
