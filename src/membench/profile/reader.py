"""Reads a profile directory as a stream of column batches, salvaging what it can from damaged profiles.

A profile may come from a recorder that was killed, a disk that filled up, or a careless copy. Nothing of that is
fatal while some part is readable: a damaged part is skipped with a one-line note in `problems`, a lost
`_profile.json` is rebuilt from the parts, and only a path that holds no readable profile at all is an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from membench.errors import MembenchError
from membench.profile.metadata import (
    FORMER_METADATA_FILE,
    METADATA_FILE,
    PARQUET_METADATA_KEY,
    ProfileMetadata,
    ProfileWarning,
    part_index,
)
from membench.profile.schema import COLUMNS, FORMAT_NAME, SCHEMA, SCHEMA_VERSION

_READ_ERRORS = (OSError, ValueError, pa.ArrowException)


@dataclass(frozen=True)
class _Part:
    name: str
    path: Path
    num_rows: int
    columns: frozenset[str]


class ProfileReader:
    """The rows and metadata of one profile directory. Parts are opened lazily, one at a time."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.problems: list[str] = []
        if not self.path.exists():
            raise MembenchError(f"{self.path}: no such profile")
        if not self.path.is_dir():
            raise MembenchError(f"{self.path} is not a profile (a profile is a directory of Parquet parts)")
        stored = self._read_stored_metadata()
        names = self._part_names(stored)
        self._parts = [part for part in map(self._open_part, names) if part is not None]
        if names and not self._parts:
            raise MembenchError(f"{self.path}: no part of this profile is readable ({self.problems[0]})")
        self.metadata = stored if stored is not None else self._rebuild_metadata()
        if self.metadata.schema_version > SCHEMA_VERSION:
            self._problem(f"profile schema version {self.metadata.schema_version} is newer than this membench's "
                          f"({SCHEMA_VERSION}): columns it does not know are ignored")
        if stored is not None and self.num_rows != stored.operations:
            self._problem(f"{METADATA_FILE} counts {stored.operations} operations but the readable parts hold "
                          f"{self.num_rows}")
        if self.problems:
            warnings.warn(f"{self.path}: {'; '.join(self.problems)}", ProfileWarning, stacklevel=2)
        self._opening_problems = len(self.problems)

    @property
    def read_problems(self) -> list[str]:
        """What reading rows has found so far (a part failing part-way): rows that could not be given. Opening the
        profile warned of its own problems; these are for the reading command to report."""
        return self.problems[self._opening_problems:]

    @property
    def num_rows(self) -> int:
        return sum(part.num_rows for part in self._parts)

    def batches(self, columns: Sequence[str] | None = None, batch_size: int = 1 << 20) -> Iterator[pa.RecordBatch]:
        """Rows in file order, as batches with exactly `columns` (all columns by default) typed as in the schema.

        Columns that an older part lacks come back as nulls. A part that fails part-way is reported in
        `problems` and the rest of it skipped; the rows it gave before the failure stay given.
        """
        schema = self._schema_of(columns)
        for part in self._parts:
            present = [name for name in schema.names if name in part.columns]
            given = 0
            try:
                parquet = pq.ParquetFile(part.path)
                for batch in parquet.iter_batches(batch_size=batch_size, columns=present, use_threads=True):
                    conformed = _conform(batch, schema)
                    given += conformed.num_rows
                    yield conformed
            except _READ_ERRORS as exc:
                self._problem(f"{part.name}: read failed after {given} of {part.num_rows} rows "
                              f"({_reason(exc)}); the rest of it is skipped")

    def read_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole profile in memory: for small profiles and tests; use `batches()` for large ones."""
        return pa.Table.from_batches(list(self.batches(columns)), schema=self._schema_of(columns))

    def _schema_of(self, columns: Sequence[str] | None) -> pa.Schema:
        names = list(COLUMNS if columns is None else columns)
        unknown = [name for name in names if name not in COLUMNS]
        if unknown or not names:
            raise MembenchError(f"unknown profile column(s): {', '.join(unknown) or '(none requested)'}")
        return pa.schema([SCHEMA.field(name) for name in names])

    def _problem(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)

    def _read_stored_metadata(self) -> ProfileMetadata | None:
        metadata_path = self.path / METADATA_FILE
        if not metadata_path.exists():
            metadata_path = self.path / FORMER_METADATA_FILE
            if not metadata_path.exists():
                return None
        if not metadata_path.is_file():
            self._problem(f"{metadata_path.name} is not a regular file: metadata rebuilt from the parts")
            return None
        try:
            metadata = ProfileMetadata.from_json(metadata_path.read_bytes())
        except OSError as exc:
            self._problem(f"{METADATA_FILE} is unreadable ({_reason(exc)}): metadata rebuilt from the parts")
            return None
        except MembenchError as exc:
            self._problem(f"{METADATA_FILE} is damaged ({exc}): metadata rebuilt from the parts")
            return None
        if metadata.format != FORMAT_NAME:
            raise MembenchError(f"{self.path} is not a membench profile (format {metadata.format!r})")
        return metadata

    def _part_names(self, stored: ProfileMetadata | None) -> list[str]:
        # Regular files only: a pipe or device under a part's name would block or never end.
        on_disk = sorted((entry.name for entry in self.path.iterdir()
                          if part_index(entry.name) is not None and entry.is_file()), key=part_index)
        if stored is None:
            if not on_disk:
                raise MembenchError(f"{self.path} is not a membench profile (no {METADATA_FILE}, no part files)")
            if not self.problems:  # a damaged or unreadable file has been reported as such already
                self._problem(f"{METADATA_FILE} is missing: metadata rebuilt from the parts")
            return on_disk
        listed = [name for name in stored.parts if part_index(name) is not None]
        if len(listed) != len(stored.parts):
            self._problem(f"{METADATA_FILE} lists file names that are not part files: they are ignored")
        if len(set(listed)) != len(listed):
            self._problem(f"{METADATA_FILE} lists a part more than once: each is read once")
            listed = list(dict.fromkeys(listed))
        unlisted = sorted(set(on_disk) - set(listed))
        if unlisted:
            self._problem(f"{len(unlisted)} part file(s) not listed in {METADATA_FILE} are ignored "
                          f"(left by an interrupted write or compaction): {', '.join(unlisted[:3])}")
        return listed

    def _open_part(self, name: str) -> _Part | None:
        path = self.path / name
        if path.exists() and not path.is_file():
            self._problem(f"{name}: not a regular file, skipped")
            return None
        try:
            footer = pq.read_metadata(path)
        except FileNotFoundError:
            self._problem(f"{name}: listed in {METADATA_FILE} but missing")
            return None
        except _READ_ERRORS as exc:
            self._problem(f"{name}: unreadable ({_reason(exc)}), skipped")
            return None
        columns = frozenset(footer.schema.names) & frozenset(COLUMNS)
        if not columns:
            self._problem(f"{name}: holds no profile column, skipped")
            return None
        lacking = [field.name for field in SCHEMA if not field.nullable and field.name not in columns]
        if lacking:
            self._problem(f"{name}: has no {', '.join(lacking)} column (every row needs one), skipped")
            return None
        return _Part(name, path, footer.num_rows, columns)

    def _rebuild_metadata(self) -> ProfileMetadata:
        """Best knowledge without _profile.json: the newest embedded copy, with counts and times from the parts."""
        metadata = ProfileMetadata(source="unknown")
        for part in reversed(self._parts):
            embedded = _embedded_metadata(part.path)
            if embedded is not None:
                metadata = embedded
                break
        metadata.parts = [part.name for part in self._parts]
        metadata.operations = self.num_rows
        metadata.complete = False
        metadata.start_ns, metadata.end_ns = self._timestamp_bounds()
        return metadata

    def _timestamp_bounds(self) -> tuple[int | None, int | None]:
        """From the row-group statistics the writer stores for timestamps: no data page is read."""
        low: int | None = None
        high: int | None = None
        for part in self._parts:
            try:
                footer = pq.read_metadata(part.path)
                column = footer.schema.names.index("timestamp_ns")
                for group in range(footer.num_row_groups):
                    stats = footer.row_group(group).column(column).statistics
                    # Another writer's timestamps (a datetime, a string) are not nanosecond counts: no bound.
                    if stats is None or not stats.has_min_max or not isinstance(stats.min, int):
                        continue
                    low = stats.min if low is None else min(low, stats.min)
                    high = stats.max if high is None else max(high, stats.max)
            except (*_READ_ERRORS, IndexError):
                continue
        return low, high


def _embedded_metadata(path: Path) -> ProfileMetadata | None:
    try:
        schema_metadata = pq.read_schema(path).metadata or {}
        text = schema_metadata.get(PARQUET_METADATA_KEY)
        return ProfileMetadata.from_json(text) if text is not None else None
    except (*_READ_ERRORS, MembenchError):
        return None


class _UnusablePart(ValueError):
    """A part whose column that every row needs holds empty values."""


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """The batch with the schema's columns and types; a column added to the schema since the part was written
    (nullable, as every added column is: a part without a required column is not opened) comes back as nulls."""
    arrays = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        column = batch.column(index)
        if not field.nullable and column.null_count:
            raise _UnusablePart(f"its {field.name} column has empty values")
        arrays.append(column if column.type == field.type else column.cast(field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _reason(exc: BaseException) -> str:
    """The first line of an error, short: a reason for a one-line problem note."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
