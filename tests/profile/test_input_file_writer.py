"""Profiles of rows read from a file: written once, in the final encoding, with nothing left to compact."""

from __future__ import annotations

import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from membench.errors import MembenchError
from membench.profile.compaction import COMPACT_ROW_GROUP_ROWS, staging_directory
from membench.profile.reader import ProfileReader
from membench.profile.schema import SCHEMA
from membench.profile.writer import ProfileWriter
from tests.conftest import PCAP_CORPUS, run_membench
from tests.profile.synthetic import metadata, synthetic_operations


def _encodings(profile: Path) -> set[tuple[str, str]]:
    """(compression, whether the key hashes are dictionary-encoded) of every row group of every part."""
    found = set()
    for part in sorted(profile.glob("part-*.parquet")):
        meta = pq.ParquetFile(part).metadata
        for group in range(meta.num_row_groups):
            key_hash = meta.row_group(group).column(meta.schema.names.index("key_hash"))
            found.add((key_hash.compression, str(key_hash.has_dictionary_page)))
    return found


def test_a_recorded_capture_file_is_in_the_final_encoding(tmp_path: Path) -> None:
    # Before, a capture small enough for one part kept the live parts' encoding (lz4, key hashes plain), and a
    # larger one was written twice: as live parts, then again by compaction.
    profile = tmp_path / "p.profile"
    run_membench("record", str(PCAP_CORPUS / "memcache_text_tcp_multi_store_load.pcap"), str(profile), "-q",
                 check=True)
    assert _encodings(profile) == {("ZSTD", "True")}


def test_an_imported_trace_and_a_merge_are_in_the_final_encoding(tmp_path: Path) -> None:
    # Both read files, as `record FILE` does, and were written like a live recording: one-second lz4 parts, then
    # compaction at close, which left a profile of a single part in the live encoding.
    trace = tmp_path / "trace.bin"
    trace.write_bytes(b"".join(struct.pack("<IQIq", second, key % 50, 100, -1) for second, key in
                               ((i // 1000, i * 7) for i in range(5000))))
    imported = tmp_path / "imported.profile"
    run_membench("import", "oracle-general", str(trace), str(imported), "--salt-file", str(_salt(tmp_path)),
                 check=True)
    recorded = tmp_path / "recorded.profile"
    run_membench("record", str(PCAP_CORPUS / "memcache_text_tcp_multi_store_load.pcap"), str(recorded), "-q",
                 "--salt-file", str(_salt(tmp_path)), check=True)
    merged = tmp_path / "merged.profile"
    run_membench("merge", str(imported), str(recorded), "-o", str(merged), check=True)
    for profile in (imported, merged):
        assert _encodings(profile) == {("ZSTD", "True")}
        assert not staging_directory(profile).exists()
    assert ProfileReader(merged).num_rows == 5000 + ProfileReader(recorded).num_rows


def _salt(tmp_path: Path) -> Path:
    salt = tmp_path / "fleet.salt"
    salt.write_text("fleet")
    return salt


def test_rows_come_back_in_order_past_the_tuple_buffer(tmp_path: Path) -> None:
    # Rows given one by one are turned into tables on the way (not kept as tuples up to a part's size): the
    # profile still holds them in the order written, in one row group of compaction's size.
    ops = synthetic_operations(300_000)
    profile = tmp_path / "p.profile"
    with ProfileWriter.for_input_file(profile, metadata()) as writer:
        for op in ops:
            writer.write(op)
    assert ProfileReader(profile).read_table().to_pylist() == [op._asdict() for op in ops]
    groups = [pq.ParquetFile(part).metadata.num_row_groups for part in profile.glob("part-*.parquet")]
    assert groups == [1]
    assert _encodings(profile) == {("ZSTD", "True")}
    assert not staging_directory(profile).exists()


@pytest.mark.parametrize("method", ["write_columns", "write_batch"])
def test_parts_are_whole_row_groups_and_only_the_last_is_short(tmp_path: Path, method: str) -> None:
    # The compiled pipeline hands its rows over as tables of any size, and so do imports and merges. A rotation
    # used to write all it held, the rows past the part's size too, as a small part of their own after every full
    # one; write_batch wrote every table as a part of its own.
    table = pa.Table.from_pylist([op._asdict() for op in synthetic_operations(1000)], schema=SCHEMA)
    chunks = [table] * 700  # 700,000 rows in tables of 1,000, then as many again
    profile = tmp_path / "p.profile"
    with ProfileWriter.for_input_file(profile, metadata()) as writer:
        for chunk in chunks * 2:
            getattr(writer, method)(chunk)
    sizes = [pq.ParquetFile(part).metadata.num_rows for part in sorted(profile.glob("part-*.parquet"))]
    assert sizes == [COMPACT_ROW_GROUP_ROWS, 1_400_000 - COMPACT_ROW_GROUP_ROWS]


def test_rows_given_after_close_are_refused_not_dropped(tmp_path: Path) -> None:
    table = pa.Table.from_pylist([op._asdict() for op in synthetic_operations(10)], schema=SCHEMA)
    writer = ProfileWriter.for_input_file(tmp_path / "p.profile", metadata())
    writer.close()
    for method in (writer.write_columns, writer.write_batch):
        with pytest.raises(MembenchError, match="already closed"):
            method(table)
