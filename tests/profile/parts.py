"""Damaging a profile the way a foreign writer or a bad disk would: one column of its one part rewritten with
pyarrow, the metadata left as the recorder wrote it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from membench.profile.metadata import ProfileMetadata
from membench.profile.writer import ProfileWriter
from tests.replay.profiles import mixed_profile


def salted_profile(path: Path, protocol: str = "text") -> Path:
    with ProfileWriter(path, ProfileMetadata(source="test", salt_fingerprint="same")) as writer:
        writer.write_many(mixed_profile(protocol).operations)
    return path


def rewrite_column(profile: Path, name: str, values: pa.Array) -> None:
    """Replaces a column of the profile's one part (`values` has a value per row, of the column's type)."""
    (part,) = profile.glob("part-*.parquet")
    table = pq.read_table(part)
    index = table.schema.get_field_index(name)
    pq.write_table(table.set_column(index, table.schema.field(index), values), part)


def column_values(profile: Path, name: str) -> list:
    (part,) = profile.glob("part-*.parquet")
    return pq.read_table(part, columns=[name]).column(name).to_pylist()
