"""Streams operations into a profile directory that stays readable if the recorder is killed at any moment.

Rows are buffered as plain tuples (one list append per operation: the cheapest thing Python can do) and turned
into columns once per part, or per _TUPLE_ROWS rows where parts are larger. A part is written to a hidden
temporary name, fsynced and renamed, and only then listed in `_profile.json`, so the directory never holds a
half-written part under its real name and the listing never names a part that is not whole. Rotation happens at
least every `part_seconds` (a Parquet file is unreadable until its footer is written) and at `part_rows` rows (the
memory bound).

A clean close compacts the one-second parts into files of large row groups: the dictionary of key hashes is then
stored once per million rows instead of once per second, which is most of the size win of dictionary encoding.
Rows read from a file need no one-second parts: `for_input_file` writes each part once, already compacted.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import warnings
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from membench.errors import MembenchError
from membench.profile.compaction import COMPACT_ROW_GROUP_ROWS, compact
from membench.profile.metadata import (
    FORMER_METADATA_FILE,
    METADATA_FILE,
    PARQUET_METADATA_KEY,
    PRIVATE_DIRECTORY,
    ProfileMetadata,
    ProfileWarning,
    part_index,
    part_name,
    private,
)
from membench.profile.schema import COLUMNS, INT64_MAX, SCHEMA, Operation

DEFAULT_PART_ROWS = 1 << 17
DEFAULT_PART_SECONDS = 1.0
_CHECK_EVERY_ROWS = 1024  # how often write() looks at the clock: often enough for 1 s rotation at any real rate
# Most rows kept as tuples: more are turned into a table first (a tuple row takes ten times its columns' memory),
# which matters where parts are large (for_input_file).
_TUPLE_ROWS = DEFAULT_PART_ROWS

# Dictionary encoding pays off where few distinct values repeat (hashes of hot keys, a handful of value sizes);
# timestamps and request numbers only grow, so they are stored as bit-packed deltas instead.
_DICTIONARY_COLUMNS = ["connection", "command", "protocol", "key_hash", "key_length", "value_length", "flags", "ttl",
                       "status", "latency_us", "quiet", "effect", "delta", "initial"]
_DELTA_COLUMNS = {"timestamp_ns": "DELTA_BINARY_PACKED", "batch": "DELTA_BINARY_PACKED"}
_PARQUET_OPTIONS: dict[str, Any] = {
    "use_dictionary": _DICTIONARY_COLUMNS,
    "column_encoding": _DELTA_COLUMNS,
    "compression": "zstd",
    "compression_level": 3,
    # A dictionary page larger than this limit makes Parquet fall back to plain encoding for the rest of the row
    # group; 8 MiB holds a million distinct key hashes, the size of one compacted row group.
    "dictionary_pagesize_limit": 8 << 20,
    "write_statistics": ["timestamp_ns"],
}
# Parts written while recording are rewritten by compaction when the profile closes, so they are encoded for the
# writer's CPU rather than for size: uncompressed, and no dictionary for the columns of many distinct values (key
# hashes, latencies), which cost the most to build. Measured on 600k memcaslap rows in 120k-row parts: 0.085 µs per
# row (0.105 with lz4, 0.35 in the final encoding), 9.8 MB (7.6 with lz4, 5.6 final) until compaction.
_LIVE_PARQUET_OPTIONS: dict[str, Any] = {
    **_PARQUET_OPTIONS,
    "use_dictionary": [name for name in _DICTIONARY_COLUMNS if name not in ("key_hash", "latency_us")],
    "compression": "none",
    "compression_level": None,
}


_ROW_TYPE = pa.struct(list(SCHEMA))


class ProfileWriteError(MembenchError):
    """The disk refused a part or the metadata (full, gone, read-only): what was written before stays whole."""


class ProfileWriter:
    """Writes one profile directory. Use as a context manager; `close()` marks the profile complete."""

    def __init__(self, path: Path, metadata: ProfileMetadata, *, overwrite: bool = False,
                 part_rows: int = DEFAULT_PART_ROWS, part_seconds: float = DEFAULT_PART_SECONDS,
                 compact: bool = True, final_encoding: bool = False) -> None:
        if part_rows < 1 or part_seconds <= 0:
            raise ValueError("part_rows and part_seconds must be positive")
        self.path = Path(path)
        self.metadata = copy.deepcopy(metadata)
        self.metadata.parts = []
        self.metadata.operations = 0
        self.metadata.complete = False
        self._part_rows = part_rows
        self._part_seconds = part_seconds
        self._compact = compact and not final_encoding
        self._part_options = _PARQUET_OPTIONS if final_encoding else _LIVE_PARQUET_OPTIONS
        self._rows: list[tuple[Any, ...]] = []
        self._columns: list[pa.Table] = []  # rows that came as columns (the compiled record pipeline)
        self._column_rows = 0
        self._check_at = self._next_check(0)
        self._next_part = 0
        self._closed = False
        self._health_pending = False
        self.rows_rejected = 0  # rows no conversion could fit in the schema: counted in health, never silent
        self.parts_not_written = 0  # parts the disk refused: the rows of the profile end before the recording did
        self._prepare_directory(overwrite)
        self._last_flush = time.monotonic()
        self._write_metadata()

    @classmethod
    def for_input_file(cls, path: Path, metadata: ProfileMetadata, *, overwrite: bool = False) -> Self:
        """A writer for rows read from files (a capture, a trace, profiles to merge), not arriving live.

        Each part is one row group of compaction's size in the final encoding, written once: closing has nothing
        to compact. The price is in what a crash loses, the rows since the last part (up to a row group's worth),
        which reading the file again gives back.
        """
        return cls(path, metadata, overwrite=overwrite, part_rows=COMPACT_ROW_GROUP_ROWS, part_seconds=math.inf,
                   final_encoding=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            # Keep what was recorded, but do not claim the recording ended cleanly.
            self._abandon()

    def write(self, op: Operation) -> None:
        rows = self._rows
        # Kept as a plain tuple: the collector stops tracking those once it sees they hold only atomic values, but
        # never a tuple subclass, so 10^5 buffered Operations would be traversed by every collection and trigger
        # full ones (measured on a 600k-operation recording: 0.5 s of collections -> 0.2 s).
        rows.append(tuple(op))
        if len(rows) >= self._check_at:
            self._rotate_if_due()

    def write_many(self, ops: Iterable[Operation]) -> None:
        iterator = iter(ops)
        while chunk := list(islice(iterator, max(1, min(self._part_rows, _TUPLE_ROWS) - len(self._rows)))):
            self._rows.extend(chunk)
            self._rotate_if_due()

    def write_columns(self, table: pa.Table) -> None:
        """Buffer rows that come as columns in the profile's schema; rotation works as for single rows."""
        if self._closed:
            raise MembenchError("the profile writer is already closed")
        if table.num_rows:
            self._columns.append(table)
            self._column_rows += table.num_rows
            if self._column_rows >= self._part_rows:
                self._flush(whole_parts_only=True)
            else:
                # The rows still to come as tuples now fill a part sooner.
                self._check_at = self._next_check(len(self._rows))

    def write_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Append rows that are already columnar (imports, merges, generated workloads), after the buffered rows.

        They are buffered like the compiled pipeline's tables, so parts have the writer's size whatever the size of
        the batches."""
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        try:
            table = table.select(list(COLUMNS)).cast(SCHEMA)
        except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise MembenchError(f"rows do not match the profile schema: {exc}") from None
        if self._rows:
            self._tabulate_rows()
        self.write_columns(table)

    @property
    def operations_written(self) -> int:
        """Rows that reached a part on disk."""
        return self.metadata.operations

    def set_health(self, counters: dict[str, dict[str, int]]) -> None:
        """Capture, parser and pairing counters, as of now; written with the next part, tick and close."""
        # A counter past int64 (a capture file's claim, sums of them) is kept at int64's largest value: the
        # metadata holds int64 counters, and a value past them would make the whole metadata damaged.
        health = {section: {name: min(value, INT64_MAX) if isinstance(value, int) else value
                            for name, value in values.items()} for section, values in counters.items()}
        if self.rows_rejected:
            health.setdefault("writer", {})["rows_rejected"] = self.rows_rejected
        if self.parts_not_written:
            health.setdefault("writer", {})["parts_not_written"] = self.parts_not_written
        if health != self.metadata.health:
            self.metadata.health = health
            self._health_pending = True

    def tick(self) -> None:
        """Called periodically, even when no operation arrives, so that the last rows reach disk within a second.

        When idle, changed health counters are still written: drops during a quiet spell are news too.
        """
        if time.monotonic() - self._last_flush < self._part_seconds:
            return
        if self._rows or self._columns:
            self._flush()
        elif self._health_pending:
            self._write_metadata()
            self._last_flush = time.monotonic()

    def flush(self) -> None:
        """Write the buffered rows as a part now."""
        self._flush()

    def close(self) -> None:
        if self._closed:
            return
        self._flush()
        if self._compact:
            self._compact_parts()
        self.metadata.complete = True
        self._write_metadata()
        self._closed = True

    def _abandon(self) -> None:
        if not self._closed:
            self._closed = True
            # Keep what can still be kept; the error that brought us here is the one to report.
            with contextlib.suppress(MembenchError):
                if self._rows:
                    self._tabulate_rows()
                if self._columns:
                    self._write_part(pa.concat_tables(self._columns))
            # Even when those rows could not be written: the counters say what the rows alone do not, why they end.
            if self._health_pending:
                with contextlib.suppress(MembenchError):
                    self._write_metadata()

    def _prepare_directory(self, overwrite: bool) -> None:
        path = self.path
        try:
            if path.exists() and not path.is_dir():
                raise MembenchError(f"{path} exists and is not a directory")
            if path.is_dir():
                entries = list(path.iterdir())
                if entries and not overwrite:
                    raise MembenchError(f"{path} already exists and is not empty (choose another path, or --force to "
                                        "overwrite it)")
                foreign = [e for e in entries if not _is_profile_file(e.name)]
                if foreign:
                    raise MembenchError(f"refusing to overwrite {path}: it holds files that are not a profile's")
                for entry in entries:
                    entry.unlink()
            path.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
            path.chmod(PRIVATE_DIRECTORY)  # also when it existed, or the umask narrowed mkdir's mode further
        except OSError as exc:
            raise MembenchError(f"cannot create profile directory {path}: {exc.strerror or exc}") from None

    def _rotate_if_due(self) -> None:
        count = len(self._rows)
        if time.monotonic() - self._last_flush >= self._part_seconds:
            self._flush()
        elif count + self._column_rows >= self._part_rows:
            self._flush(whole_parts_only=True)
        elif count >= _TUPLE_ROWS:
            self._tabulate_rows()
        else:
            self._check_at = self._next_check(count)

    def _next_check(self, count: int) -> int:
        """The tuple count at which write() next looks at the clock and the buffer's size."""
        return min(count + _CHECK_EVERY_ROWS, self._part_rows - self._column_rows, _TUPLE_ROWS)

    def _tabulate_rows(self) -> None:
        """The buffered tuples as a table, after the tables buffered before them."""
        rows, self._rows = self._rows, []
        table = self._table(rows)
        self._columns.append(table)
        self._column_rows += table.num_rows
        self._check_at = self._next_check(0)

    def _flush(self, whole_parts_only: bool = False) -> None:
        """Write the buffered rows as parts. A rotation by size writes whole parts only: the rest waits for the rows
        after it, or for the clock, close or abandon, rather than making a part of its own."""
        if self._closed:
            raise MembenchError("the profile writer is already closed")
        if self._rows:
            self._tabulate_rows()
        if self._columns:
            table = pa.concat_tables(self._columns)
            end = table.num_rows - table.num_rows % self._part_rows if whole_parts_only else table.num_rows
            for offset in range(0, end, self._part_rows):
                part = table.slice(offset, min(self._part_rows, end - offset))
                self._store_part(part)  # if the disk refuses it, its rows stay buffered for the abandon's try
                # Its file is in place: its rows leave the buffer before the metadata is written, so that a
                # failure there does not have the abandon write them a second time.
                self._columns = [table.slice(offset + part.num_rows)]
                self._column_rows = table.num_rows - offset - part.num_rows
                self._write_metadata()
            self._columns = [table.slice(end)] if end < table.num_rows else []
            self._column_rows = table.num_rows - end
        self._check_at = self._next_check(0)
        if not self._column_rows:
            self._last_flush = time.monotonic()

    def _table(self, rows: list[tuple[Any, ...]]) -> pa.Table:
        """The rows as a table; a row that does not fit the schema is left out and counted, never fatal to the
        rows around it (the recorder clamps what it knows of, this is the net under it)."""
        try:
            return _table_from_rows(rows)
        except MembenchError:
            kept = []
            for row in rows:
                try:
                    kept.append(_table_from_rows([row]))
                except MembenchError:
                    self.rows_rejected += 1
            self.metadata.health.setdefault("writer", {})["rows_rejected"] = self.rows_rejected
            return pa.concat_tables(kept) if kept else SCHEMA.empty_table()

    def _write_part(self, table: pa.Table) -> None:
        self._store_part(table)
        self._write_metadata()

    def _store_part(self, table: pa.Table) -> None:
        """Write the rows as the next part file and list it in the metadata (in memory: written by the caller)."""
        if table.num_rows == 0:
            return
        low, high = pc.min_max(table["timestamp_ns"]).values()
        metadata = self.metadata
        metadata.start_ns = low.as_py() if metadata.start_ns is None else min(metadata.start_ns, low.as_py())
        metadata.end_ns = high.as_py() if metadata.end_ns is None else max(metadata.end_ns, high.as_py())
        name = part_name(self._next_part)
        self._next_part += 1
        self._write_parquet(name, table, row_group_rows=table.num_rows)
        metadata.parts.append(name)
        metadata.operations += table.num_rows

    def _write_parquet(self, name: str, table: pa.Table, row_group_rows: int) -> None:
        temporary = self.path / f".{name}.tmp"
        try:
            with open(temporary, "wb", opener=private) as handle:
                with pq.ParquetWriter(handle, self._schema_with_metadata(), **self._part_options) as writer:
                    writer.write_table(table, row_group_size=row_group_rows)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path / name)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            # Said in the profile itself, for whoever reads it later without this run's error message: its rows
            # end where the disk (or the permission) did, not where the recording did.
            self.parts_not_written += 1
            self.metadata.health.setdefault("writer", {})["parts_not_written"] = self.parts_not_written
            self._health_pending = True
            raise ProfileWriteError(f"cannot write profile part {self.path / name}: {exc.strerror or exc}") from None

    def _schema_with_metadata(self) -> pa.Schema:
        # The embedded copy leaves out the part list: it would grow with every part and make parts quadratic.
        embedded = copy.copy(self.metadata)
        embedded.parts = []
        return SCHEMA.with_metadata({PARQUET_METADATA_KEY: embedded.to_json().encode()})

    def _write_metadata(self) -> None:
        self._health_pending = False
        try:
            self.metadata.write_atomic(self.path)
        except OSError as exc:
            raise ProfileWriteError(f"cannot write {self.path / METADATA_FILE}: {exc.strerror or exc}") from None

    def _compact_parts(self) -> None:
        """Rewrite the parts as few files of large row groups (compaction.py: atomic for every reader). If that
        fails (a full disk), the profile keeps its parts, whole, and a warning says so. A single part is rewritten
        too: it is in the live encoding, uncompressed."""
        if not self.metadata.parts:
            return
        try:
            self._next_part = compact(self.path, self.metadata, self._schema_with_metadata(), self._next_part,
                                      _PARQUET_OPTIONS)
        except OSError as exc:
            warnings.warn(f"{self.path}: not compacted ({exc.strerror or exc}); it keeps its "
                          f"{len(self.metadata.parts)} parts, every row readable", ProfileWarning, stacklevel=3)


def _is_profile_file(name: str) -> bool:
    return (name in (METADATA_FILE, FORMER_METADATA_FILE) or part_index(name) is not None
            or (name.startswith(".") and name.endswith(".tmp")))


def _table_from_rows(rows: list[tuple[Any, ...]]) -> pa.Table:
    # One conversion of the tuples as a struct array is ~4x faster than transposing them in Python first.
    try:
        return pa.Table.from_struct_array(pa.array(rows, type=_ROW_TYPE)).cast(SCHEMA)
    except (pa.ArrowException, ValueError, OverflowError, TypeError) as exc:
        raise MembenchError(f"an operation does not fit the profile schema: {exc}") from None
