"""Replay to memcached on a unix socket (`--target unix:PATH`), checked from the server's own counters."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from membench.replay.options import ReplayOptions
from membench.replay.run import replay
from tests.conftest import Memcached, run_membench
from tests.replay.profiles import ProfileBuilder, mixed_profile, write_profile
from tests.replay.test_replay import COUNTERS, MIXED_EXPECTED, delta


def unix_stats(path: Path) -> dict[str, int]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b"stats\r\n")
        buffer = b""
        while not buffer.endswith(b"END\r\n"):
            buffer += sock.recv(65536)
    fields = (line.split(" ") for line in buffer.decode().splitlines() if line.startswith("STAT "))
    return {name: int(value) for _, name, value in fields if name in COUNTERS}


@pytest.fixture
def unix_memcached(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "memcached.sock"
    process = subprocess.Popen([shutil.which("memcached") or "memcached", "-u", "root", "-s", str(path), "-a", "0700",
                                "-m", "64", "-t", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                unix_stats(path)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("memcached did not listen on its unix socket")
                time.sleep(0.05)
        yield path
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_replay_to_a_unix_socket_moves_the_counters_the_profile_says(unix_memcached: Path) -> None:
    before = unix_stats(unix_memcached)
    result = replay(mixed_profile("text").source(), ReplayOptions(targets=[f"unix:{unix_memcached}"]))
    after = unix_stats(unix_memcached)
    assert {name: after[name] - before[name] for name in COUNTERS} == MIXED_EXPECTED
    assert result.completed and result.errors == {}


def test_tcp_and_unix_targets_share_the_keys(memcached: Memcached, unix_memcached: Path) -> None:
    profile = ProfileBuilder(protocol="text")
    for key in range(300):
        profile.add("set", [key], status="stored", value_length=10, connection=key % 3)
    before_tcp, before_unix = memcached.stats(), unix_stats(unix_memcached)
    result = replay(profile.source(), ReplayOptions(targets=[memcached.address, str(unix_memcached)]))
    sets = [delta(memcached, before_tcp)["cmd_set"], unix_stats(unix_memcached)["cmd_set"] - before_unix["cmd_set"]]
    assert sum(sets) == 300 and min(sets) > 50
    assert result.errors == {}


def test_a_unix_target_nobody_listens_on_is_one_line(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    proc = run_membench("replay", str(profile), "--target", f"unix:{tmp_path / 'absent.sock'}")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines() + proc.stdout.strip().splitlines()
    assert any(f"cannot connect to target unix:{tmp_path / 'absent.sock'}" in line for line in lines)
    assert "Traceback" not in proc.stderr
