"""Compaction is atomic for every reader, membench or a plain glob, whenever the process dies; on a full disk the
profile keeps its parts and says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from membench.profile.metadata import METADATA_FILE, ProfileWarning
from membench.profile.reader import ProfileReader
from membench.profile.writer import ProfileWriter
from tests.conftest import REPO, fill, small_tmpfs
from tests.profile.synthetic import metadata, synthetic_operations

ROWS = 6000

# Writes a profile in small parts, then closes it (compacting), dying by SIGKILL at the step named in argv[2].
KILLED_COMPACTION = textwrap.dedent("""
    import os, shutil, signal, sys
    from pathlib import Path
    from membench.profile import compaction
    from membench.profile.writer import ProfileWriter
    from tests.profile.synthetic import metadata, synthetic_operations

    step = sys.argv[2]

    def die(original):
        def wrapper(*args, **kwargs):
            if step == "after":
                original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        return wrapper

    if step in ("before", "after"):
        compaction._exchange = die(compaction._exchange)
    elif step == "cleanup":
        real_rmtree = shutil.rmtree
        calls = []
        def rmtree(path, *args, **kwargs):
            calls.append(path)
            if len(calls) == 2:  # the first clears leftovers; the second would remove the old parts
                os.kill(os.getpid(), signal.SIGKILL)
            return real_rmtree(path, *args, **kwargs)
        compaction.shutil.rmtree = rmtree
    with ProfileWriter(Path(sys.argv[1]), metadata(), part_rows=1000, overwrite=True) as writer:
        writer.write_many(synthetic_operations(int(sys.argv[3])))
""")


def glob_rows(profile: Path) -> int:
    """What a reader that knows nothing of membench sees: every *.parquet file in the directory."""
    return ds.dataset(sorted(str(p) for p in profile.glob("*.parquet")), format="parquet").count_rows()


@pytest.mark.parametrize("step", ["before", "after", "cleanup"])
def test_killed_during_compaction_every_reader_sees_each_row_once(tmp_path, step):
    profile = tmp_path / "p"
    proc = subprocess.run([sys.executable, "-c", KILLED_COMPACTION, str(profile), step, str(ROWS)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert glob_rows(profile) == ROWS
    assert ProfileReader(profile).num_rows == ROWS
    # A later compaction of the same path clears what the crash left beside it.
    rerun = subprocess.run([sys.executable, "-c", KILLED_COMPACTION, str(profile), "none", str(ROWS)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert [entry.name for entry in tmp_path.iterdir()] == ["p"]


def test_compaction_on_a_full_disk_keeps_the_parts_and_warns(tmp_path):
    with small_tmpfs(tmp_path, "1m") as disk:
        profile = disk / "p"
        writer = ProfileWriter(profile, metadata(), part_rows=1000)
        writer.write_many(synthetic_operations(ROWS))
        writer.flush()
        fill(disk, leave=64 * 1024)  # too little room for a second copy of the rows: compaction needs one
        with pytest.warns(ProfileWarning, match="not compacted"):
            writer.close()
        assert glob_rows(profile) == ROWS
        assert json.loads((profile / METADATA_FILE).read_text())["complete"] is True
        leftovers = [entry.name for entry in disk.iterdir() if entry.name not in ("p", "filler")]
        assert leftovers == [] and not any(entry.name.endswith(".tmp") for entry in profile.iterdir())


def test_profile_files_are_private_whatever_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        writer = ProfileWriter(tmp_path / "p", metadata(), part_rows=1000)
        writer.write_many(synthetic_operations(3000))
        writer.flush()
        parts = sorted((tmp_path / "p").iterdir())
        writer.close()  # compacts: the new files and directory too
    finally:
        os.umask(previous)
    assert len(parts) > 2
    assert (tmp_path / "p").stat().st_mode & 0o777 == 0o700
    for entry in (tmp_path / "p").iterdir():
        assert entry.stat().st_mode & 0o777 == 0o600, entry.name


def test_metadata_a_full_disk_refuses_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path, "64k") as disk:
        profile = disk / "p.profile"
        profile.mkdir()
        old = metadata()
        old.write_atomic(profile)
        before = (profile / METADATA_FILE).read_text()
        fill(disk)
        grown = metadata()
        grown.extra["padding"] = "x" * 65536  # more than any block the full disk might still have
        with pytest.raises(OSError):
            grown.write_atomic(profile)
        assert sorted(entry.name for entry in profile.iterdir()) == [METADATA_FILE]
        assert (profile / METADATA_FILE).read_text() == before
