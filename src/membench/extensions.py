"""The compiled twins of the Python specification, and the switch that turns them off.

Modules with a hot loop keep it readable in Python and have a compiled twin (a Cython `_name.pyx` beside them,
built by pip from source, as aiohttp's parser and uvloop are). `MEMBENCH_NO_EXTENSIONS=1` makes every module use
its Python specification, which is also what happens where the twins were not built; `membench --version` and the
test suite say which one runs.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

DISABLED = os.environ.get("MEMBENCH_NO_EXTENSIONS", "") not in ("", "0")


TWINS = ("membench.record._core", "membench.analyze._stack", "membench.analyze._series",
         "membench.analyze._connections", "membench.replay._keys", "membench.replay._pass_plan",
         "membench.replay._seen")


def describe() -> str:
    """Which implementation runs, for `membench --version`."""
    if DISABLED:
        return "pure Python: MEMBENCH_NO_EXTENSIONS is set"
    built = list(dict.fromkeys(name.rsplit(".", 2)[1] for name in TWINS if compiled(name) is not None))
    if not built:
        return "pure Python: the compiled twins were not built"
    return "compiled twins: " + ", ".join(built)


def compiled(name: str) -> ModuleType | None:
    """The compiled module `name`, or None when extensions are off or it was not built."""
    if DISABLED:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
