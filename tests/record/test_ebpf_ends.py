"""How an eBPF recording ends besides Ctrl+C: its followed processes exit, the terminal hangs up, or it saw
nothing. Real memcached, real signals, as root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pymemcache.client.base import Client

from tests.conftest import Memcached, read_profile, require_ebpf, start_memcached

pytestmark = pytest.mark.ebpf


def start_recording(out: Path, source: str, port: int, *extra: str) -> subprocess.Popen[str]:
    require_ebpf()
    process = subprocess.Popen([sys.executable, "-m", "membench", "record", source, str(out), "--port", str(port),
                                *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    line = process.stderr.readline()
    assert line.startswith("recording"), line + process.stderr.read()
    return process


def some_traffic(server: Memcached) -> None:
    client = Client((server.host, server.port))
    for index in range(50):
        client.set(f"k{index}", b"v")
        client.get(f"k{index}")
    client.close()


def test_a_recording_of_followed_pids_ends_when_they_exit(tmp_path: Path) -> None:
    """memcached restarted under `ebpf:pid=` gets a new pid: the old recording used to watch the dead pid forever,
    recording nothing, and then claim 'nothing lost'."""
    server = start_memcached()
    try:
        recording = start_recording(tmp_path / "p.profile", f"ebpf:pid={server.process.pid}", server.port)
        some_traffic(server)
    finally:
        server.stop()
    try:
        _, stderr = recording.communicate(timeout=30)
    finally:
        recording.kill()
    assert recording.returncode == 0, stderr
    assert f"the processes ebpf:{server.process.pid} follows have exited: the recording ended with them" in stderr
    assert json.loads((tmp_path / "p.profile" / "_profile.json").read_text())["complete"] is True
    commands = read_profile(tmp_path / "p.profile").column("command").to_pylist()
    assert commands.count("set") == 50 and commands.count("get") == 50


def test_a_hang_up_ends_the_recording_as_ctrl_c_does(memcached: Memcached, tmp_path: Path) -> None:
    """A closed terminal or a dropped ssh session: SIGHUP used to kill the recorder, its last second unwritten."""
    recording = start_recording(tmp_path / "p.profile", "ebpf:any", memcached.port)
    some_traffic(memcached)
    recording.send_signal(signal.SIGHUP)
    _, stderr = recording.communicate(timeout=60)
    assert recording.returncode == 0, stderr
    assert json.loads((tmp_path / "p.profile" / "_profile.json").read_text())["complete"] is True
    commands = read_profile(tmp_path / "p.profile").column("command").to_pylist()
    assert commands.count("set") == 50 and commands.count("get") == 50


def test_a_followed_process_that_is_not_memcached_is_said(memcached: Memcached, tmp_path: Path) -> None:
    recording = start_recording(tmp_path / "p.profile", f"ebpf:pid={os.getpid()}", memcached.port,
                                "--duration", "1")
    some_traffic(memcached)
    _, stderr = recording.communicate(timeout=60)
    assert recording.returncode == 0, stderr
    assert (f"no connection on port {memcached.port} was seen in the processes of ebpf:{os.getpid()}: is that "
            "memcached, and --port its port?") in stderr
