"""Parts whose columns break the schema (a required column missing, or holding empty values) cost their rows, said
in one line by every command that reads them; no command counts on those rows as if they had been read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from membench.profile.reader import ProfileReader
from tests.conftest import Memcached, run_membench
from tests.profile.parts import salted_profile
from tests.replay.profiles import mixed_profile


def profile_with_part(tmp_path: Path, change: str) -> Path:
    """A profile whose one part was rewritten: `change` is 'drop' (no connection column) or 'empty' (a connection
    column of nulls)."""
    profile = salted_profile(tmp_path / f"{change}.profile")
    (part,) = profile.glob("part-*.parquet")
    table = pq.read_table(part)
    index = table.schema.get_field_index("connection")
    if change == "drop":
        table = table.remove_column(index)
    else:
        table = table.set_column(index, pa.field("connection", pa.uint32()), pa.nulls(table.num_rows, pa.uint32()))
    pq.write_table(table, part)
    return profile


def one_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("membench: ") and "internal error" not in lines[0], proc.stderr
    return lines[0]


def test_a_part_without_a_required_column_is_not_read(tmp_path: Path) -> None:
    profile = profile_with_part(tmp_path, "drop")
    line = one_line(run_membench("analyze", str(profile)))
    assert "has no connection column (every row needs one), skipped" in line


def test_rows_that_could_not_be_read_are_never_claimed(tmp_path: Path, memcached: Memcached) -> None:
    profile = profile_with_part(tmp_path, "empty")
    good = salted_profile(tmp_path / "good.profile")
    reason = "read failed after 0 of 162 rows (its connection column has empty values)"
    exported = one_line(run_membench("export", str(profile), "csv", str(tmp_path / "out.csv")))
    assert exported.startswith("membench: wrote 0 requests to ") and reason in exported
    merged = tmp_path / "merged.profile"
    refused = one_line(run_membench("merge", str(profile), str(good), "-o", str(merged)))
    assert refused.startswith("membench: nothing merged: rows of the profiles could not be read") and reason in refused
    assert not merged.exists()
    replayed = one_line(run_membench("replay", str(profile), "--target", memcached.address))
    assert replayed.startswith("membench: the profile holds no operations: nothing to replay") and reason in replayed


def test_a_pipe_in_place_of_a_part_or_of_the_metadata_is_skipped_not_waited_on(tmp_path: Path) -> None:
    profile = salted_profile(tmp_path / "p.profile")
    metadata = profile / "_profile.json"
    metadata.unlink()
    os.mkfifo(metadata)
    reader = ProfileReader(profile)
    assert reader.num_rows == len(mixed_profile("text").operations)
    assert reader.problems == ["_profile.json is not a regular file: metadata rebuilt from the parts"]
    listed = salted_profile(tmp_path / "listed.profile")
    (part,) = listed.glob("part-*.parquet")
    part.unlink()
    os.mkfifo(part)
    line = one_line(run_membench("analyze", str(listed)))
    assert f"no part of this profile is readable ({part.name}: not a regular file, skipped)" in line


def test_another_writers_timestamps_without_metadata_are_not_an_internal_error(tmp_path: Path) -> None:
    """Bounds taken from the parts' statistics once assumed nanosecond counts: a timestamp[ns] or string column (as
    pandas or Spark write) made analyze and export internal errors."""
    for kind, values in (("datetime", lambda rows: pa.array([0] * rows, pa.timestamp("ns"))),
                         ("string", lambda rows: pa.array(["2024-01-01"] * rows))):
        profile = salted_profile(tmp_path / f"{kind}.profile")
        (part,) = profile.glob("part-*.parquet")
        table = pq.read_table(part)
        pq.write_table(table.set_column(0, "timestamp_ns", values(table.num_rows)), part)
        (profile / "_profile.json").unlink()
        for command in (["analyze", str(profile)], ["export", str(profile), "csv", str(tmp_path / f"{kind}.csv")]):
            proc = run_membench(*command)
            assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_part_listed_twice_is_read_once_and_said(tmp_path: Path) -> None:
    """A damaged _profile.json naming a part twice doubled its rows in every count, without a word."""
    profile = salted_profile(tmp_path / "twice.profile")
    rows = ProfileReader(profile).num_rows
    metadata = json.loads((profile / "_profile.json").read_text())
    metadata["parts"] = metadata["parts"] * 2
    (profile / "_profile.json").write_text(json.dumps(metadata))
    reader = ProfileReader(profile)
    assert reader.num_rows == rows and reader.read_table(["connection"]).num_rows == rows
    assert any("lists a part more than once" in problem for problem in reader.problems)
