"""`mypyc_attr` for the modules the compiled build compiles (hatch_build.py), importable without mypy.

mypyc reads the decorator while compiling; at run time it does nothing, so a wheel need not depend
on mypy_extensions. Its one use here: `@mypyc_attr(native_class=False)` on a compiled class that
subclasses a Python class (an OTel SDK SpanExporter or SpanProcessor). mypyc would make it a native
class whose instances crash the interpreter when an object weakly referenced dies (seen with mypyc
from mypy 2.4 on CPython 3.11: a segfault); as an ordinary class its methods are still compiled."""

from __future__ import annotations

from typing import Any

try:
    from mypy_extensions import mypyc_attr as mypyc_attr  # (re-exported)
except ImportError:  # the usual case at run time: mypy_extensions ships with mypy, not with us
    def mypyc_attr(*_attrs: str, **_kwattrs: Any) -> Any:  # type: ignore[no-redef,misc]
        return lambda cls: cls
