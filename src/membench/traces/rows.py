"""What every trace importer shares: rows gathered a batch at a time into a profile, with what a trace cannot say
(replies' latency, request numbers) filled in one way for all formats, and what it got wrong counted in the
profile's health (section `import`), never dropped silently."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from membench.profile.metadata import ProfileMetadata
from membench.profile.schema import COLUMNS, INT64_MAX, INT64_MIN, SCHEMA, UINT32_MAX
from membench.profile.writer import ProfileWriter
from membench.record.anonymize import KeyHasher

BATCH_ROWS = 1 << 16
_UINT16_MAX = 0xFFFF


@dataclass
class TraceRow:
    """One request of a trace, in the profile's terms."""

    timestamp_ns: int
    connection: int  # a synthetic connection per client of the trace (0 when the trace names none)
    command: str  # a membench Command value
    key: bytes  # the trace's own (already anonymized) key identity, hashed again with the profile's salt
    key_length: int
    value_length: int | None
    ttl: int | None
    status: str  # a membench Status value


@dataclass
class ImportSummary:
    operations: int
    health: dict[str, int] = field(default_factory=dict)


class ProfileRows:
    """Writes TraceRows into a new profile, a batch at a time (bounded memory whatever the trace's size)."""

    def __init__(self, output: Path, source: str, hasher: KeyHasher, overwrite: bool) -> None:
        metadata = ProfileMetadata(source=source, salt_fingerprint=hasher.fingerprint)
        self._writer = ProfileWriter.for_input_file(output, metadata, overwrite=overwrite)
        self._hasher = hasher
        self._columns: dict[str, list[object]] = {name: [] for name in COLUMNS}
        self.problems: Counter[str] = Counter()
        self.operations = 0

    def add_all(self, rows: Iterable[TraceRow]) -> ImportSummary:
        with self._writer:
            for row in rows:
                self._add(row)
                if len(self._columns["batch"]) >= BATCH_ROWS:
                    self._flush()
            self._flush()
            self._writer.set_health({"import": dict(self.problems)})
        return ImportSummary(operations=self.operations, health=dict(self.problems))

    def _add(self, row: TraceRow) -> None:
        self.operations += 1
        columns = self._columns
        columns["timestamp_ns"].append(self._fit(row.timestamp_ns, INT64_MAX, INT64_MIN))
        columns["connection"].append(row.connection)
        columns["command"].append(row.command)
        columns["protocol"].append("text")
        columns["key_hash"].append(self._hasher(row.key))
        columns["key_length"].append(self._fit(row.key_length, _UINT16_MAX))
        columns["value_length"].append(None if row.value_length is None else self._fit(row.value_length,
                                                                                        UINT32_MAX))
        columns["flags"].append(0 if row.command in _STORAGE else None)
        columns["ttl"].append(None if row.ttl is None else self._fit(row.ttl, INT64_MAX, INT64_MIN))
        columns["status"].append(row.status)
        columns["latency_us"].append(None)  # a trace records no reply times
        columns["batch"].append(self.operations)
        columns["quiet"].append(False)
        for name in ("effect", "delta", "initial"):
            columns[name].append(None)

    def _fit(self, value: int, largest: int, smallest: int = 0) -> int:
        """The value, or the nearest the column holds (counted: the row is imported with it)."""
        if smallest <= value <= largest:
            return value
        self.problems["values_out_of_range"] += 1
        return min(max(value, smallest), largest)

    def _flush(self) -> None:
        if not self._columns["batch"]:
            return
        arrays = [pa.array(self._columns[name], type=field.type if not pa.types.is_dictionary(field.type)
                           else pa.string()) for name, field in zip(COLUMNS, SCHEMA, strict=True)]
        self._writer.write_batch(pa.Table.from_arrays(arrays, names=list(COLUMNS)))
        for values in self._columns.values():
            values.clear()


_STORAGE = frozenset({"set", "add", "replace", "append", "prepend", "cas"})
