"""The profile on disk: exact round trips, crash safety, damaged and foreign inputs, bounded memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from membench.analyze import analyze_profile
from membench.errors import MembenchError
from membench.profile.metadata import METADATA_FILE, ProfileMetadata
from membench.profile.reader import ProfileReader, ProfileWarning
from membench.profile.schema import SCHEMA, SCHEMA_VERSION, Operation
from membench.profile.writer import ProfileWriter
from tests.conftest import REPO, read_profile, run_membench
from tests.profile.synthetic import metadata, synthetic_operations


def rows_of(ops: list[Operation]) -> list[dict]:
    return [op._asdict() for op in ops]


def part_files(path: Path) -> list[Path]:
    return sorted(path.glob("part-*.parquet"))


def write_profile(path: Path, ops: list[Operation], **options: object) -> Path:
    with ProfileWriter(path, metadata(), **options) as writer:
        writer.write_many(ops)
    return path


def test_round_trip_of_every_column_with_nulls(tmp_path):
    ops = synthetic_operations(5000)
    assert {None} < {v for op in ops for v in op}  # nulls are present in the input
    profile = write_profile(tmp_path / "p", ops, part_rows=700)
    reader = ProfileReader(profile)
    assert reader.problems == []
    assert reader.num_rows == len(ops) == reader.metadata.operations
    assert reader.read_table().to_pylist() == rows_of(ops)
    assert reader.read_table(["status", "key_hash"]).to_pylist() == [
        {"status": op.status, "key_hash": op.key_hash} for op in ops]
    assert reader.metadata.complete
    assert reader.metadata.start_ns == min(op.timestamp_ns for op in ops)
    assert reader.metadata.end_ns == max(op.timestamp_ns for op in ops)
    assert reader.metadata.salt_fingerprint == "0123456789abcdef"


def test_batches_keep_file_order_and_respect_batch_size(tmp_path):
    ops = synthetic_operations(3000)
    profile = write_profile(tmp_path / "p", ops, part_rows=1000, compact=False)
    batches = list(ProfileReader(profile).batches(["batch"], batch_size=256))
    assert max(b.num_rows for b in batches) == 256
    assert [v for b in batches for v in b.column(0).to_pylist()] == [op.batch for op in ops]


def test_compaction_result_equals_the_parts(tmp_path):
    ops = synthetic_operations(20_000, seed=3)
    parts = write_profile(tmp_path / "parts", ops, part_rows=1500, compact=False)
    compacted = write_profile(tmp_path / "compacted", ops, part_rows=1500)
    assert len(part_files(parts)) == 14
    assert [p.name for p in part_files(compacted)] == ["part-000014.parquet"]
    assert json.loads((compacted / METADATA_FILE).read_text())["parts"] == ["part-000014.parquet"]
    assert ProfileReader(compacted).read_table().to_pylist() == ProfileReader(parts).read_table().to_pylist()
    footer = pq.read_metadata(part_files(compacted)[0])
    assert footer.num_row_groups == 1  # one large row group: the key-hash dictionary is stored once
    assert not any(name.startswith(".") for name in os.listdir(compacted))


def test_profile_is_readable_without_membench(tmp_path):
    ops = synthetic_operations(2000)
    profile = write_profile(tmp_path / "p", ops, part_rows=500, compact=False)
    table = pq.ParquetDataset([str(p) for p in part_files(profile)]).read()
    assert table.num_rows == len(ops)
    assert table.column("key_hash").to_pylist() == [op.key_hash for op in ops]
    try:
        import duckdb
    except ImportError:
        duckdb = None
    if duckdb is not None:
        count = duckdb.sql(f"select count(*) from read_parquet('{profile}/*.parquet')").fetchone()[0]
        assert count == len(ops)
    try:
        import pandas
    except ImportError:
        pandas = None
    if pandas is not None:
        frame = pandas.concat(pandas.read_parquet(p) for p in part_files(profile))
        assert int((frame["status"] == "hit").sum()) == sum(op.status == "hit" for op in ops)


def test_rows_reach_disk_within_a_second_while_recording(tmp_path):
    ops = synthetic_operations(100)
    writer = ProfileWriter(tmp_path / "p", metadata(), part_seconds=0.2)
    writer.write_many(ops[:60])
    writer.tick()  # too early: nothing due yet
    assert ProfileReader(tmp_path / "p").num_rows == 0
    time.sleep(0.25)
    writer.tick()
    live = ProfileReader(tmp_path / "p")
    assert live.num_rows == 60 and not live.metadata.complete
    writer.write_many(ops[60:])
    writer.close()
    assert ProfileReader(tmp_path / "p").num_rows == len(ops)


def test_row_bound_rotates_parts(tmp_path):
    ops = synthetic_operations(2500)
    profile = write_profile(tmp_path / "p", ops, part_rows=1000, compact=False)
    assert [pq.read_metadata(p).num_rows for p in part_files(profile)] == [1000, 1000, len(ops) - 2000]


def test_health_counters_are_stored(tmp_path):
    with ProfileWriter(tmp_path / "p", metadata()) as writer:
        writer.write_many(synthetic_operations(10))
        writer.set_health({"capture": {"holes": 2, "bytes_seen": 99}, "pairing": {"unmatched_responses": 1}})
    assert ProfileReader(tmp_path / "p").metadata.health == {
        "capture": {"holes": 2, "bytes_seen": 99}, "pairing": {"unmatched_responses": 1}}


def test_idle_writer_still_records_changed_health(tmp_path):
    writer = ProfileWriter(tmp_path / "p", metadata(), part_seconds=0.1)
    writer.set_health({"capture": {"dropped_events": 4}})
    time.sleep(0.15)
    writer.tick()
    assert ProfileReader(tmp_path / "p").metadata.health == {"capture": {"dropped_events": 4}}
    writer.close()


def test_refuses_to_overwrite_unless_asked(tmp_path):
    profile = write_profile(tmp_path / "p", synthetic_operations(10))
    with pytest.raises(MembenchError, match="not empty"):
        ProfileWriter(profile, metadata())
    write_profile(profile, synthetic_operations(20, seed=9), overwrite=True)
    assert ProfileReader(profile).num_rows == len(synthetic_operations(20, seed=9))
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(MembenchError, match="not a profile"):
        ProfileWriter(foreign, metadata(), overwrite=True)
    assert (foreign / "notes.txt").read_text() == "precious"


def test_an_operation_of_the_wrong_shape_is_counted_and_the_rows_around_it_kept(tmp_path):
    writer = ProfileWriter(tmp_path / "p", metadata())
    writer.write(Operation(1, 0, "get", "text", None, None, None, None, None, "miss", None, 1, False))
    writer.write(Operation(2, -5, "get", "text", None, None, None, None, None, "miss", None, 2, False))
    writer.write(Operation(3, 0, "get", "text", None, None, 2**40, None, None, "hit", None, 3, False))
    writer.write(Operation(4, 0, "get", "text", None, None, None, None, None, "miss", None, 4, False))
    writer.close()
    assert writer.rows_rejected == 2
    assert read_profile(tmp_path / "p")["batch"].to_pylist() == [1, 4]
    assert json.loads((tmp_path / "p" / METADATA_FILE).read_text())["health"]["writer"] == {"rows_rejected": 2}


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from membench.profile.metadata import ProfileMetadata
    from membench.profile.schema import Operation
    from membench.profile.writer import ProfileWriter

    writer = ProfileWriter(Path(sys.argv[1]), ProfileMetadata(source="killed"))
    number = 0
    print("started", flush=True)
    while True:
        for _ in range(500):
            number += 1
            writer.write(Operation(time.time_ns(), number % 5, "get", "text", number, 10, 100, None, None, "hit",
                                   20, number, False))
        writer.tick()
        time.sleep(0.005)
""")


def test_a_writer_left_by_an_error_keeps_the_health_set_after_its_last_part(tmp_path):
    """The counters can say why the rows end where they do (a capture file stopped before its end): set after the
    last part was written, they were dropped when the recording ended in an error."""
    profile, ops = tmp_path / "stopped.profile", synthetic_operations(10)
    with pytest.raises(MembenchError, match="stopped"), ProfileWriter(profile, metadata()) as writer:
        writer.write_many(ops)
        writer.flush()
        writer.set_health({"capture": {"stopped_before_end": 1}})
        raise MembenchError("stopped")
    written = json.loads((profile / METADATA_FILE).read_text())
    assert written["health"] == {"capture": {"stopped_before_end": 1}} and written["operations"] == len(ops)
    assert not written["complete"]


def test_sigkilled_writer_loses_at_most_about_the_last_second(tmp_path):
    profile = tmp_path / "killed.profile"
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(profile)], stdout=subprocess.PIPE,
                             cwd=REPO)
    assert child.stdout is not None and child.stdout.readline() == b"started\n"
    time.sleep(2.5)
    killed_at = time.time_ns()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with warnings.catch_warnings(record=True):  # a kill between a part's rename and its listing is noted
        reader = ProfileReader(profile)
    assert not reader.metadata.complete
    table = reader.read_table(["timestamp_ns", "batch"])
    numbers = table.column("batch").to_pylist()
    assert numbers == list(range(1, len(numbers) + 1))  # a prefix of what was written, nothing lost in between
    assert len(numbers) > 50_000
    newest = max(table.column("timestamp_ns").to_pylist())
    assert killed_at - newest < 1.5e9, "more than about the last second was lost"
    report = analyze_profile(reader)
    assert report.operations == len(numbers)
    assert any("incomplete" in warning for warning in report.warnings)


def test_truncated_and_garbage_parts_are_skipped_with_a_note(tmp_path):
    ops = synthetic_operations(4000)
    profile = write_profile(tmp_path / "p", ops, part_rows=1000, compact=False)
    parts = part_files(profile)
    data = parts[1].read_bytes()
    parts[1].write_bytes(data[: len(data) // 2])  # a copy cut short
    parts[2].write_bytes(b"this is not parquet at all" * 10)
    with pytest.warns(ProfileWarning):
        reader = ProfileReader(profile)
    assert reader.num_rows == len(ops) - 2000
    assert len(reader.problems) >= 2
    assert all("\n" not in problem for problem in reader.problems)
    assert any(parts[1].name in problem for problem in reader.problems)
    kept = [op.batch for op in ops[:1000] + ops[3000:]]
    assert reader.read_table(["batch"]).column(0).to_pylist() == kept
    assert analyze_profile(reader).operations == len(ops) - 2000


def test_a_part_damaged_inside_its_pages_is_reported_not_raised(tmp_path):
    ops = synthetic_operations(3000)
    profile = write_profile(tmp_path / "p", ops, part_rows=1000, compact=False)
    target = part_files(profile)[1]
    data = bytearray(target.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    for offset in range(4, footer_start, 7):  # scribble over every data page, keep the footer
        data[offset] ^= 0x5A
    target.write_bytes(bytes(data))
    reader = ProfileReader(profile)
    table = reader.read_table(["batch"])
    assert any(target.name in problem for problem in reader.problems)
    assert table.num_rows == 2000


def test_missing_metadata_is_rebuilt_from_the_parts(tmp_path):
    ops = synthetic_operations(3000)
    profile = write_profile(tmp_path / "p", ops, part_rows=1000)
    (profile / METADATA_FILE).unlink()
    with pytest.warns(ProfileWarning, match="rebuilt"):
        reader = ProfileReader(profile)
    rebuilt = reader.metadata
    assert (rebuilt.source, rebuilt.salt_fingerprint, rebuilt.operations) == ("synthetic", "0123456789abcdef",
                                                                              len(ops))
    assert rebuilt.start_ns == min(op.timestamp_ns for op in ops)
    assert rebuilt.end_ns == max(op.timestamp_ns for op in ops)
    assert not rebuilt.complete
    assert reader.read_table().to_pylist() == rows_of(ops)


def test_damaged_metadata_is_rebuilt_too(tmp_path):
    profile = write_profile(tmp_path / "p", synthetic_operations(100))
    (profile / METADATA_FILE).write_text('{"format": "membench-prof')
    with pytest.warns(ProfileWarning):
        assert ProfileReader(profile).num_rows == len(synthetic_operations(100))


def test_newer_schema_version_reads_known_columns_and_warns(tmp_path):
    ops = synthetic_operations(500)
    profile = write_profile(tmp_path / "p", ops)
    part = part_files(profile)[0]
    future = pq.read_table(part).append_column("shard", pa.array([7] * len(ops), pa.int16()))
    pq.write_table(future, part)
    stored = json.loads((profile / METADATA_FILE).read_text())
    stored.update(schema_version=SCHEMA_VERSION + 1, replay_hints={"shards": 4})
    (profile / METADATA_FILE).write_text(json.dumps(stored))
    with pytest.warns(ProfileWarning, match="newer"):
        reader = ProfileReader(profile)
    assert reader.read_table().to_pylist() == rows_of(ops)
    assert reader.metadata.unknown == {"replay_hints": {"shards": 4}}
    assert json.loads(reader.metadata.to_json())["replay_hints"] == {"shards": 4}


def test_columns_absent_from_an_older_part_come_back_as_nulls(tmp_path):
    ops = synthetic_operations(300)
    profile = write_profile(tmp_path / "p", ops)
    part = part_files(profile)[0]
    # As a schema-version-1 part lacks the columns version 2 added (a required column's absence is damage).
    pq.write_table(pq.read_table(part).drop_columns(["latency_us", "effect", "delta", "initial"]), part)
    table = ProfileReader(profile).read_table()
    assert table.schema == SCHEMA
    assert all(table.column(name).null_count == len(ops) for name in ("latency_us", "effect", "delta", "initial"))
    assert table.column("key_hash").to_pylist() == [op.key_hash for op in ops]


@pytest.mark.parametrize("make", ["missing", "file", "empty_dir", "foreign_dir", "foreign_format"])
def test_not_a_profile_is_a_one_line_error(tmp_path, make):
    path = tmp_path / "thing"
    if make == "file":
        path.write_text("hello")
    elif make == "empty_dir":
        path.mkdir()
    elif make == "foreign_dir":
        path.mkdir()
        (path / "data.csv").write_text("a,b\n")
    elif make == "foreign_format":
        path.mkdir()
        (path / METADATA_FILE).write_text(json.dumps({"format": "something-else", "source": "x"}))
    with pytest.raises(MembenchError) as error:
        ProfileReader(path)
    assert "\n" not in str(error.value)
    result = run_membench("analyze", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("membench: ")


def test_profile_with_only_unreadable_parts_is_an_error(tmp_path):
    profile = write_profile(tmp_path / "p", synthetic_operations(100))
    part_files(profile)[0].write_bytes(b"PAR1 garbage")
    with pytest.raises(MembenchError, match="no part of this profile is readable"):
        ProfileReader(profile)


def test_metadata_json_round_trip_keeps_unknown_keys():
    original = ProfileMetadata(source="pcap:x.pcap", ports=[11211, 11212], start_ns=5, end_ns=9,
                               salt_fingerprint="ab", health={"capture": {"holes": 1}}, operations=3,
                               extra={"note": "n"})
    data = json.loads(original.to_json())
    data["from_the_future"] = [1, 2]
    parsed = ProfileMetadata.from_json(json.dumps(data))
    assert parsed.to_dict() == data
    assert ProfileMetadata.from_json(original.to_json()) == original
    with pytest.raises(MembenchError):
        ProfileMetadata.from_json('{"source": "x", "ports": "11211"}')
    with pytest.raises(MembenchError):
        ProfileMetadata.from_json("[1]")


MEMORY_WRITER = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from membench.profile.metadata import ProfileMetadata
    from membench.profile.schema import Operation
    from membench.profile.writer import ProfileWriter

    def peak_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    peaks = [peak_kib()]
    writer = ProfileWriter(Path(sys.argv[1]), ProfileMetadata(source="memory"))
    write = writer.write
    for number in range(5_000_000):
        write(Operation(1_700_000_000_000_000_000 + number * 1000, number % 50, "get", "text", number, 10, 100,
                        None, None, "hit", 20, number, False))
        if number == 1_000_000:
            peaks.append(peak_kib())
    peaks.append(peak_kib())
    writer.close()
    peaks.append(peak_kib())
    print(*peaks)
""")


def test_writer_memory_stays_bounded(tmp_path):
    result = subprocess.run([sys.executable, "-c", MEMORY_WRITER, str(tmp_path / "big")], capture_output=True,
                            text=True, cwd=REPO, timeout=240, check=True)
    start, at_1m, at_5m, closed = (kib // 1024 for kib in map(int, result.stdout.split()))
    # Holding the rows would grow by ~220 bytes per tuple: 880 MiB between 1M and 5M rows.
    assert at_5m - at_1m < 40, f"recording grew by {at_5m - at_1m} MiB from 1M to 5M rows"
    assert at_1m - start < 200, f"one part took {at_1m - start} MiB"
    # Compaction holds one 1M-row group (Arrow columns plus the Parquet encoder's dictionaries).
    assert closed - start < 450, f"compaction peaked at {closed - start} MiB above the start"
    assert ProfileReader(tmp_path / "big").num_rows == 5_000_000


def test_columnar_rows_follow_buffered_rows_in_order(tmp_path):
    ops = synthetic_operations(900)
    columnar = ProfileReader(write_profile(tmp_path / "source", ops[300:])).read_table()
    with ProfileWriter(tmp_path / "p", metadata(), part_rows=250) as writer:
        writer.write_many(ops[:300])
        writer.write_batch(columnar)
        with pytest.raises(MembenchError, match="schema"):
            writer.write_batch(columnar.drop_columns(["status"]))
    assert ProfileReader(tmp_path / "p").read_table().to_pylist() == rows_of(ops)


@pytest.mark.parametrize("ahead", [0, 5])  # single rows before the batch: write_batch tabulates them first
def test_single_rows_after_columns_rotate_as_soon_as_they_fill_a_part(tmp_path, ahead):
    ops = synthetic_operations(100)
    columnar = ProfileReader(write_profile(tmp_path / "source", ops[ahead:90])).read_table()
    with ProfileWriter(tmp_path / "p", metadata(), part_rows=100, compact=False) as writer:
        for op in ops[:ahead]:
            writer.write(op)
        writer.write_batch(columnar)
        for op in ops[90:]:
            writer.write(op)
        assert writer.operations_written == 100
    assert ProfileReader(tmp_path / "p").read_table().to_pylist() == rows_of(ops)


def test_dataset_readers_read_the_profile_directory_as_it_is(tmp_path):
    ops = synthetic_operations(3000)
    profile = write_profile(tmp_path / "p", ops, part_rows=1000, compact=False)
    table = pq.read_table(profile)  # what pandas.read_parquet("p") does too: the metadata file is skipped
    assert table.num_rows == len(ops)
    assert sorted(table["batch"].to_pylist()) == sorted(op.batch for op in ops)


def test_a_profile_written_before_the_metadata_file_was_renamed_still_reads(tmp_path):
    ops = synthetic_operations(500)
    profile = write_profile(tmp_path / "p", ops)
    (profile / METADATA_FILE).rename(profile / "profile.json")
    reader = ProfileReader(profile)
    assert reader.problems == [] and reader.metadata.operations == len(ops)
    assert reader.read_table(["batch"]).num_rows == len(ops)
