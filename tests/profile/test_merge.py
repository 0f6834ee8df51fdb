"""`membench merge` on profiles recorded from real captures: rows, connections, request numbers and health of
every node kept apart and whole; profiles of different salts refused in one line."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from membench.profile.metadata import ProfileMetadata
from membench.profile.reader import ProfileReader
from membench.profile.schema import Operation
from membench.profile.writer import ProfileWriter
from tests.conftest import PCAP_CORPUS, fill, run_membench, small_tmpfs
from tests.profile.parts import salted_profile
from tests.profile.test_unusable_parts import profile_with_part

TEXT = "memcache_text_tcp_multi_store_load.pcap"
BINARY = "memcache_bin_tcp_multi_store_load.pcap"
DEEPFLOW = "deepflow_app_traffic.pcap"


def record(tmp_path: Path, capture: str, salt: str) -> Path:
    salt_file = tmp_path / f"{salt}.salt"
    salt_file.write_text(salt)
    out = tmp_path / f"{capture}-{salt}.profile"
    run_membench("record", str(PCAP_CORPUS / capture), str(out), "--salt-file", str(salt_file), "--quiet",
                 check=True)
    return out


def test_merge_keeps_every_node_apart_and_whole(tmp_path: Path) -> None:
    nodes = [record(tmp_path, capture, "fleet") for capture in (TEXT, BINARY, DEEPFLOW)]
    merged = tmp_path / "fleet.profile"
    proc = run_membench("merge", *map(str, nodes), "-o", str(merged), check=True)
    readers = [ProfileReader(node) for node in nodes]
    assert f"merged {sum(r.num_rows for r in readers):,} operations of 3 nodes" in proc.stderr

    result = ProfileReader(merged)
    table = result.read_table()
    assert table.num_rows == sum(reader.num_rows for reader in readers)
    assert result.metadata.salt_fingerprint == readers[0].metadata.salt_fingerprint
    timestamps = table["timestamp_ns"].to_pylist()
    assert timestamps == sorted(timestamps)
    ranges = [node["connections"] for node in result.metadata.extra["nodes"]]
    assert [node["profile"] for node in result.metadata.extra["nodes"]] == list(map(str, nodes))
    for reader, (first, end) in zip(readers, ranges, strict=True):
        source = reader.read_table()
        rows = table.filter(pc.and_(pc.greater_equal(table["connection"], first),
                                    pc.less(table["connection"], end)))
        # every row of a node is there, in the node's own connection range, with its own hashes and outcomes
        columns = ["key_hash", "command", "status", "value_length"]
        assert Counter(tuple(r.values()) for r in rows.select(columns).to_pylist()) == Counter(
            tuple(r.values()) for r in source.select(columns).to_pylist())
        assert end - first == len(set(source["connection"].to_pylist()))
    batches_per_node = [set(table.filter(pc.and_(pc.greater_equal(table["connection"], first),
                                                 pc.less(table["connection"], end)))["batch"].to_pylist())
                        for first, end in ranges]
    assert not set.intersection(*batches_per_node[:2]) and not set.intersection(*batches_per_node[1:])
    for section in ("parser", "pairing"):
        for name, value in result.metadata.health[section].items():
            assert value == sum(reader.metadata.health[section].get(name, 0) for reader in readers)

    report = tmp_path / "report.json"
    run_membench("analyze", str(merged), "--json", str(report), check=True)
    assert json.loads(report.read_text())["operations"] == table.num_rows


def test_merge_refuses_profiles_of_different_salts(tmp_path: Path) -> None:
    first, second = record(tmp_path, TEXT, "one"), record(tmp_path, BINARY, "two")
    proc = run_membench("merge", str(first), str(second), "-o", str(tmp_path / "out.profile"))
    assert proc.returncode != 0
    assert "hashed with different salts" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.profile").exists()
    alone = run_membench("merge", str(first), "-o", str(tmp_path / "out.profile"))
    assert alone.returncode != 0 and "at least two profiles" in alone.stderr


def test_merge_refuses_profiles_that_record_no_salt(tmp_path: Path) -> None:
    first, unsalted = record(tmp_path, TEXT, "one"), tmp_path / "unsalted.profile"
    with ProfileWriter(unsalted, ProfileMetadata(source="elsewhere")) as writer:
        writer.write_batch(pq.read_table(first).to_batches()[0])
    proc = run_membench("merge", str(first), str(unsalted), "-o", str(tmp_path / "out.profile"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{unsalted} records no salt fingerprint" in proc.stderr


def test_merge_refuses_to_write_over_one_of_its_profiles(tmp_path: Path) -> None:
    first, second = record(tmp_path, TEXT, "same"), record(tmp_path, BINARY, "same")
    proc = run_membench("merge", str(first), str(second), "-o", f"{first}/", "--force")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "is one of the profiles being merged" in proc.stderr
    assert ProfileReader(first).num_rows == 9  # it was emptied and rewritten with the other node's rows only
    twice = run_membench("merge", str(first), f"{first}/", "-o", str(tmp_path / "out.profile"))
    assert twice.returncode == 2 and "a profile is named twice" in twice.stderr


def test_merge_force_leaves_a_directory_it_refuses_as_it_was(tmp_path: Path) -> None:
    """--force overwrites a profile, never a directory of other files: one it refuses keeps every file."""
    first, second = record(tmp_path, TEXT, "kept"), record(tmp_path, BINARY, "kept")
    for output in (tmp_path / "papers", tmp_path):  # other files; the profiles being merged themselves
        output.mkdir(exist_ok=True)
        (output / "thesis.txt").write_text("years of work")
        proc = run_membench("merge", str(first), str(second), "-o", str(output), "--force")
        assert proc.returncode == 2 and "holds files that are not a profile's" in proc.stderr, proc.stderr
        assert (output / "thesis.txt").read_text() == "years of work"
    assert ProfileReader(first).num_rows > 0 and ProfileReader(second).num_rows > 0


def test_merge_refuses_numbers_past_their_columns(tmp_path: Path) -> None:
    last_connection = tmp_path / "last.profile"
    with ProfileWriter(last_connection, ProfileMetadata(source="t", salt_fingerprint="same")) as writer:
        writer.write_many([Operation(1, 2**32 - 1, "get", "text", 7, 10, None, None, None, "miss", 50, 1, False)])
    other = tmp_path / "other.profile"
    with ProfileWriter(other, ProfileMetadata(source="t", salt_fingerprint="same")) as writer:
        writer.write_many([Operation(2, 0, "get", "text", 8, 10, None, None, None, "miss", 50, 1, False)])
    proc = run_membench("merge", str(last_connection), str(other), "-o", str(tmp_path / "out.profile"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "merge fewer profiles at once" in proc.stderr and not (tmp_path / "out.profile").exists()


def test_a_merge_that_fills_the_disk_leaves_nothing(tmp_path: Path) -> None:
    """A full disk at each file a merge writes (one part, and the metadata before and after it) once left an empty
    directory or an abandoned profile: now nothing, and the one line names the file the disk refused."""
    first, second = record(tmp_path, TEXT, "same"), record(tmp_path, BINARY, "same")
    # The merged profile is one 4 KiB metadata page and one part of 3 pages; rewriting the metadata to list the
    # part, as the merge closes, takes another page while the old one is still there.
    refused_at = {0: "out.profile/_profile.json", 8192: "out.profile/part-000000.parquet",
                  16384: "out.profile/_profile.json"}  # the first metadata, the part, the metadata listing the part
    for leave, refused in refused_at.items():
        with small_tmpfs(tmp_path, "256k") as disk:
            fill(disk, leave)
            proc = run_membench("merge", str(first), str(second), "-o", str(disk / "out.profile"))
            assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            assert proc.stderr.startswith("membench: nothing merged: cannot write ") and "No space left" in proc.stderr
            assert f"{refused}: " in proc.stderr, (leave, proc.stderr)
            assert sorted(path.name for path in disk.iterdir()) == ["filler"]
        (tmp_path / "disk").rmdir()


def test_a_failed_merge_into_an_empty_directory_leaves_it_empty(tmp_path: Path) -> None:
    """An empty directory named by -o is accepted, with --force or without: a merge that fails there (the disk
    refusing the part or the metadata after it, rows of a profile that cannot be read) removes what it wrote, as it
    does for a directory it created, and leaves the directory as it found it."""
    first, second = record(tmp_path, TEXT, "same"), record(tmp_path, BINARY, "same")
    for force in ((), ("--force",)):
        for leave, refused in ((8192, "part-000000.parquet"), (16384, "_profile.json")):  # as in the test above
            with small_tmpfs(tmp_path, "256k") as disk:
                output = disk / "out.profile"
                output.mkdir()
                fill(disk, leave)
                proc = run_membench("merge", str(first), str(second), "-o", str(output), *force)
                assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
                assert f"{output / refused}: No space left" in proc.stderr, (leave, proc.stderr)
                assert output.is_dir() and list(output.iterdir()) == [], (leave, force)
            (tmp_path / "disk").rmdir()
    # Every row of the readable profile is written before the unreadable one is found out: they must not stay as
    # what would look like a merge of fewer nodes.
    unreadable, good = profile_with_part(tmp_path, "empty"), salted_profile(tmp_path / "good.profile")
    output = tmp_path / "merged.profile"
    output.mkdir()
    proc = run_membench("merge", str(good), str(unreadable), "-o", str(output))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("membench: nothing merged: rows of the profiles could not be read"), proc.stderr
    assert output.is_dir() and list(output.iterdir()) == []
