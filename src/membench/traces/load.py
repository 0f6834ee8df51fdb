"""`membench import` and `membench export`: which format is read or written by what, and the checks before work."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from membench.errors import MembenchError
from membench.profile.reader import ProfileReader
from membench.record.anonymize import KeyHasher
from membench.traces import export, formats
from membench.traces.rows import ImportSummary, ProfileRows, TraceRow

Importer = Callable[[Path, Counter[str]], Iterator[TraceRow]]
IMPORTERS: dict[str, Importer] = {"oracle-general": formats.oracle_general, "twitter": formats.twitter,
                                  "kvtrace": formats.kvtrace}
EXPORTERS: dict[str, Callable[[ProfileReader, Path], int]] = {"oracle-general": export.export_oracle_general,
                                                              "csv": export.export_csv}


def import_trace(kind: str, trace: Path, output: Path, hasher: KeyHasher, overwrite: bool) -> ImportSummary:
    if trace.is_dir():
        raise MembenchError(f"{trace} is a directory, not a trace file")
    if not trace.is_file():
        raise MembenchError(f"no such trace file: {trace}")
    rows = ProfileRows(output, f"{kind}:{trace}", hasher, overwrite)
    return rows.add_all(IMPORTERS[kind](trace, rows.problems))


def export_profile(kind: str, profile: Path, output: Path, overwrite: bool) -> int:
    if output.resolve().is_relative_to(profile.resolve()):
        raise MembenchError(f"{output} is inside the profile {profile}: writing it there would damage the profile")
    # As record, merge and import refuse a profile directory that holds something; only a regular file with
    # contents is refused, so /dev/stdout, a pipe or a file made empty beforehand (mktemp) still take the trace.
    if output.is_file() and output.stat().st_size and not overwrite:
        raise MembenchError(f"{output} already exists and is not empty (choose another path, or --force to "
                            "overwrite it)")
    reader = ProfileReader(profile)
    written = EXPORTERS[kind](reader, output)
    if reader.read_problems:
        raise MembenchError(f"wrote {written:,} requests to {output}, without the rows of {profile} that could not be "
                            f"read ({reader.read_problems[0]})")
    return written
