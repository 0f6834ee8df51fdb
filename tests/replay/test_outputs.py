"""What a replay writes and says: an output path that cannot be written is refused before any work, a write that
fails at the end anyway keeps the result elsewhere and says where, a profile part it could not read is warned of,
and piped output is never cut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from membench.profile.metadata import ProfileMetadata
from membench.profile.writer import ProfileWriter
from tests.conftest import fill, run_membench, small_tmpfs
from tests.replay.profiles import mixed_profile, write_profile


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    return write_profile(tmp_path / "p.profile", mixed_profile("text").operations)


@pytest.mark.parametrize("option", ["--json", "--hdr-log"])
@pytest.mark.parametrize("bad", ["missing-dir/x.json", "."])
def test_an_output_path_that_cannot_be_written_is_refused_before_the_replay(memcached, profile, tmp_path, option,
                                                                            bad):
    before = memcached.stats()["cmd_get"]
    proc = run_membench("replay", str(profile), "--target", memcached.address, option, str(tmp_path / bad))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"membench: {option} ")
    assert memcached.stats()["cmd_get"] == before, "nothing was replayed"


@pytest.mark.parametrize(("options", "said"), [
    (["--json", "{profile}/_profile.json"], "--json {profile}/_profile.json is inside the profile"),
    (["--hdr-log", "{profile}/part-000000.parquet"], "--hdr-log {profile}/part-000000.parquet is inside the profile"),
    (["--json", "{tmp}/r.out", "--memtier-json", "{tmp}/r.out"], "--json and --memtier-json both name {tmp}/r.out"),
    (["--json", "{tmp}/r.out", "--hdr-log", "{tmp}/./r.out"], "--json and --hdr-log both name {tmp}/r.out"),
])
def test_result_files_on_the_profile_or_on_each_other_are_refused_before_the_replay(memcached, profile, tmp_path,
                                                                                    options, said):
    """Each of these once replayed, exit 0, and then wrote over the profile (damaging it) or over another result."""
    before, metadata = memcached.stats()["cmd_get"], (profile / "_profile.json").read_bytes()
    filled = [option.format(profile=profile, tmp=tmp_path) for option in options]
    proc = run_membench("replay", str(profile), "--target", memcached.address, *filled)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("membench: " + said.format(profile=profile, tmp=tmp_path)), proc.stderr
    assert memcached.stats()["cmd_get"] == before and (profile / "_profile.json").read_bytes() == metadata


def test_analyze_refuses_an_output_inside_its_profile(profile):
    (part,) = profile.glob("part-*.parquet")
    proc = run_membench("analyze", str(profile), "--json", str(part))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "is inside the profile" in proc.stderr
    assert part.stat().st_size > 0 and proc.stdout == ""


def test_analyze_refuses_an_unwritable_output_before_reading(profile, tmp_path):
    proc = run_membench("analyze", str(profile), "--html", str(tmp_path / "nowhere" / "r.html"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr
    assert proc.stdout == ""


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path, "64k") as disk:
        fill(disk)
        yield disk


def test_a_result_that_no_longer_fits_is_kept_elsewhere_and_said(memcached, profile, full_disk):
    target = full_disk / "result.json"
    proc = run_membench("replay", str(profile), "--target", memcached.address, "--json", str(target))
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert "No space left on device; the result was written to " in line, proc.stderr
    kept = Path(line.rsplit(" to ", 1)[1].removesuffix(" instead"))
    try:
        assert json.loads(kept.read_text())["completed"] is True
    finally:
        kept.unlink()
    assert "membench replay:" in proc.stderr, "the table was shown before the file was written"


def test_a_part_that_cannot_be_read_is_warned_of_in_one_line(memcached, tmp_path):
    profile = tmp_path / "parts.profile"
    with ProfileWriter(profile, ProfileMetadata(source="test"), part_rows=60, compact=False) as writer:
        writer.write_many(mixed_profile("text").operations)
    damaged = sorted(profile.glob("part-*.parquet"))[1]
    data = bytearray(damaged.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    for offset in range(4, footer_start, 7):  # scribble over the data pages, keep the footer
        data[offset] ^= 0x5A
    damaged.write_bytes(bytes(data))
    proc = run_membench("replay", str(profile), "--target", memcached.address)
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and damaged.name in warnings[0] and "read failed" in warnings[0], proc.stderr


def test_piped_tables_keep_every_digit(memcached, profile):
    proc = run_membench("replay", str(profile), "--target", memcached.address, "--loop", "20")
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stderr
    totals = next(line for line in proc.stderr.splitlines() if "Totals" in line)
    assert f"{20 * len(mixed_profile('text').operations):,}" in totals
    analyzed = run_membench("analyze", str(profile), check=True)
    assert "…" not in analyzed.stdout


def test_a_part_cut_short_is_one_warning_line_when_the_profile_opens(memcached, tmp_path):
    profile = tmp_path / "parts.profile"
    with ProfileWriter(profile, ProfileMetadata(source="test"), part_rows=60, compact=False) as writer:
        writer.write_many(mixed_profile("text").operations)
    cut = sorted(profile.glob("part-*.parquet"))[1]
    cut.write_bytes(cut.read_bytes()[:100])
    proc = run_membench("replay", str(profile), "--target", memcached.address)
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("membench: warning: ") and cut.name in warnings[0]


def test_duration_ends_a_replay_complete_after_as_many_loops_as_fit(memcached, profile, tmp_path):
    out = tmp_path / "r.json"
    started = time.monotonic()
    proc = run_membench("replay", str(profile), "--target", memcached.address, "--duration", "2", "--json", str(out))
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["completed"] is True and data["interrupted"] is False and data["loops"] >= 2
    assert data["duration_s"] >= 1.5 and took < 60  # generous: a loaded 2-core machine
    # Two seconds of replay over loopback cost the client CPU, part of it in the kernel's network stack.
    assert 0 < data["client_cpu_system_us_per_op"] < data["client_cpu_us_per_op"]
    assert "µs per op (" in proc.stderr and "of them in the kernel)" in proc.stderr
    limited = run_membench("replay", str(profile), "--target", memcached.address, "--duration", "30", "--loop", "1",
                           "--json", str(out))
    assert limited.returncode == 0 and json.loads(out.read_text())["loops"] == 1


def _replay_with_json(memcached, profile: Path, out: Path, stream: str, how: str) -> subprocess.CompletedProcess[str]:
    """`membench replay --json`, its `stream` (stdout or stderr, where the table goes) closed or a pipe whose
    reader is gone."""
    command = [sys.executable, "-m", "membench", "replay", str(profile), "--target", memcached.address, "--json",
               str(out), "--no-progress"]
    descriptor = {"stdout": 1, "stderr": 2}[stream]
    if how == "closed":
        return subprocess.run(["sh", "-c", f'exec "$@" {descriptor}>&-', "sh", *command], capture_output=True,
                              text=True, timeout=120)
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to this stream fails (EPIPE)
    try:
        streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: write_end}
        return subprocess.run(command, **streams, text=True, timeout=120)
    finally:
        os.close(write_end)


@pytest.mark.parametrize(("stream", "how", "status"), [("stderr", "broken-pipe", 1), ("stderr", "closed", 0),
                                                       ("stdout", "closed", 0)])
def test_the_json_is_written_when_nobody_reads_the_output(memcached, profile, tmp_path, stream, how, status):
    """A broken pipe on stderr (`2>&1 | head`) ended the replay in the table, before --json was written; with
    stdout closed (`>&-`) a socket took descriptor 1 and libuv aborted. A closed stream is taken as /dev/null;
    a table that reached nobody through a pipe is told by the exit status."""
    out = tmp_path / "r.json"
    result = _replay_with_json(memcached, profile, out, stream, how)
    assert result.returncode == status, result
    assert json.loads(out.read_text())["ops"] == len(mixed_profile("text").operations)
