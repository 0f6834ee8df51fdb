"""Compaction: a finished profile's many small parts rewritten as a few large files, atomically for every reader.

The compacted files and their metadata are written into a hidden sibling directory, which is then exchanged with
the profile directory in one step (renameat2 RENAME_EXCHANGE), so any reader, membench or a glob such as
`duckdb 'out.profile/*.parquet'`, sees either the old parts or the new files, never both. The old parts leave
with the sibling. A crash at any point leaves the profile whole; what it leaves beside is a hidden directory
that the next compaction of that path removes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from membench.profile.metadata import PRIVATE_DIRECTORY, ProfileMetadata, fsync_directory, part_name, private
from membench.profile.schema import SCHEMA

COMPACT_ROW_GROUP_ROWS = 1 << 20
COMPACT_FILE_ROW_GROUPS = 8
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def staging_directory(profile: Path) -> Path:
    return profile.parent / f".{profile.name}.compacting"


def compact(profile: Path, metadata: ProfileMetadata, schema: pa.Schema, first_number: int,
            options: dict[str, Any]) -> int:
    """Rewrites the listed parts of `profile` and swaps them in; returns the next free part number.

    `metadata` gets the new part list once the swap is done; on an OSError the profile is left as it was.
    """
    staging = staging_directory(profile)
    shutil.rmtree(staging, ignore_errors=True)  # a crashed compaction's leftovers
    try:
        staging.mkdir(mode=PRIVATE_DIRECTORY)
        parts, next_number = _rewrite(profile, staging, metadata.parts, schema, first_number, options)
        staged = ProfileMetadata.from_dict(metadata.to_dict())
        staged.parts = parts
        staged.write_atomic(staging)
        fsync_directory(staging)
        _exchange(staging, profile)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    metadata.parts = parts
    shutil.rmtree(staging, ignore_errors=True)  # now the old parts
    return next_number


def _rewrite(source: Path, target: Path, names: list[str], schema: pa.Schema, first_number: int,
             options: dict[str, Any]) -> tuple[list[str], int]:
    parts: list[str] = []
    number = first_number
    output: _CompactedFile | None = None
    pending: list[pa.Table] = []
    pending_rows = 0

    def emit(table: pa.Table) -> None:
        nonlocal output, number
        if output is not None and output.row_groups >= COMPACT_FILE_ROW_GROUPS:
            output.finish()
            output = None
        if output is None:
            parts.append(part_name(number))
            output = _CompactedFile(target / part_name(number), schema, options)
            number += 1
        output.write(table)

    for name in names:
        pending.append(pq.read_table(source / name, schema=SCHEMA))
        pending_rows += pending[-1].num_rows
        while pending_rows >= COMPACT_ROW_GROUP_ROWS:
            merged = pa.concat_tables(pending)
            emit(merged.slice(0, COMPACT_ROW_GROUP_ROWS))
            pending = [merged.slice(COMPACT_ROW_GROUP_ROWS)]
            pending_rows -= COMPACT_ROW_GROUP_ROWS
    if pending_rows:
        emit(pa.concat_tables(pending))
    if output is not None:
        output.finish()
    return parts, number


def _exchange(staging: Path, profile: Path) -> None:
    """Swaps two directories in one step; where the kernel or filesystem cannot, by renames that leave no moment
    with both sets of files under the profile's name (only a brief one with none)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is not None:
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        if renameat2(_AT_FDCWD, os.fsencode(staging), _AT_FDCWD, os.fsencode(profile), _RENAME_EXCHANGE) == 0:
            fsync_directory(profile.parent)
            return
        error = ctypes.get_errno()
        if error not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(error, os.strerror(error), str(profile))
    aside = profile.parent / f".{profile.name}.previous"
    os.rename(profile, aside)
    os.rename(staging, profile)
    os.rename(aside, staging)
    fsync_directory(profile.parent)


class _CompactedFile:
    """One output file of compaction, written under a temporary name until it is finished."""

    def __init__(self, final: Path, schema: pa.Schema, options: dict[str, Any]) -> None:
        self._final = final
        self._temporary = final.with_name(f".{final.name}.tmp")
        # Closed in finish(), after the Parquet writer.
        self._handle = open(self._temporary, "wb", opener=private)  # noqa: SIM115
        self._writer = pq.ParquetWriter(self._handle, schema, **options)
        self.row_groups = 0

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.row_groups += 1

    def finish(self) -> None:
        self._writer.close()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._temporary, self._final)
