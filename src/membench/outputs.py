"""Result files: checked before the work that fills them starts, and never lost when writing them fails anyway.

A replay or an analysis can take hours; an output path that cannot be written must be refused at once, in one
line, not after the work. If the disk fills or the directory goes away meanwhile, the result goes to a file in
the temporary directory instead, and the user is told where.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from membench.errors import MembenchError


class OutputLost(MembenchError):
    """The result could not be written where asked; it was kept elsewhere (the message says where)."""

    exit_code = 1


def check_apart(profile: Path, outputs: dict[str, Path | None]) -> None:
    """Refuses, in one line, result files that would land inside the profile they come from (damaging it), or on
    each other (keeping only the last written)."""
    inside = profile.resolve()
    named: dict[Path, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        where = path.resolve()
        if where.is_relative_to(inside):
            raise MembenchError(f"{option} {path} is inside the profile {profile}: writing it there would damage "
                                "the profile")
        if where in named:
            raise MembenchError(f"{named[where]} and {option} both name {path}: one would overwrite the other")
        named[where] = option


def check_writable(path: Path | None, option: str) -> None:
    """Refuses, in one line, an output path that cannot be created or replaced."""
    if path is None:
        return
    if path.is_dir():
        raise MembenchError(f"{option} {path}: is a directory, not a file")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MembenchError(f"{option} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise MembenchError(f"{option} {path}: not writable")


def write_result(path: Path, text: str, option: str) -> None:
    """Writes `text` to `path`; if that fails, to a temporary file, then raises OutputLost naming it."""
    try:
        path.write_text(text, encoding="utf-8")
        return
    except OSError as error:
        reason = error.strerror or str(error)
    descriptor, kept = tempfile.mkstemp(prefix="membench-", suffix=path.suffix or ".txt")
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    raise OutputLost(f"{option} {path}: {reason}; the result was written to {kept} instead")
