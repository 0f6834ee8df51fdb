"""`membench --version` says which implementation runs, without every command paying to find out."""

from __future__ import annotations

import os
import subprocess
import sys

from membench import __version__, extensions
from tests.conftest import run_membench


def test_version_names_the_implementation_that_runs() -> None:
    proc = run_membench("--version", check=True)
    assert proc.stdout.strip() == f"membench {__version__} ({extensions.describe()})"
    pure = run_membench("--version", env={**os.environ, "MEMBENCH_NO_EXTENSIONS": "1"}, check=True)
    assert pure.stdout.strip() == f"membench {__version__} (pure Python: MEMBENCH_NO_EXTENSIONS is set)"


def test_a_command_does_not_import_the_twins_it_does_not_use() -> None:
    """Building the parser imported every twin (and analyze and replay with them) to fill in --version's text: a
    tenth of a second at every start of the CLI."""
    twins = ", ".join(map(repr, extensions.TWINS))
    code = ("import sys; from membench.cli import build_parser; build_parser(); "
            f"print(sorted(name for name in sys.modules if name in ({twins}) or name.startswith('membench.analyze')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert proc.stdout.strip() == "[]"
