"""A replay against a server that answers nothing, or garbage: Ctrl+C ends it within about a second with its
result written, and a run whose operations mostly failed exits non-zero saying so."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.replay.profiles import mixed_profile, write_profile


class MisbehavingServer:
    """A real TCP server on loopback that accepts memcached clients and then answers nothing, or garbage."""

    def __init__(self, garbage: bool) -> None:
        self.port = free_port()
        self._garbage = garbage
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                while connection.recv(65536):
                    if self._garbage:
                        connection.sendall(b"\x00\xffNOT MEMCACHED\r\n\x13\x37 junk line\r\n")
            except OSError:
                return

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()


@pytest.fixture(params=["silent", "garbage"])
def server(request: pytest.FixtureRequest) -> Iterator[MisbehavingServer]:
    misbehaving = MisbehavingServer(garbage=request.param == "garbage")
    yield misbehaving
    misbehaving.close()


def test_ctrl_c_stops_within_a_second_and_writes_the_result(server: MisbehavingServer, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "membench", "replay", str(profile), "--target",
                             f"127.0.0.1:{server.port}", "--loop", "forever", "--no-warm", "--timeout", "30",
                             "--json", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    assert proc.poll() is None, proc.communicate()
    interrupted_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    # Generous for a loaded 2-core machine; before the fix it was still running after 100 s.
    assert time.monotonic() - interrupted_at < 10, stderr
    assert proc.returncode == 1, stderr
    data = json.loads(out.read_text())
    assert data["interrupted"] is True and data["completed"] is False
    assert "Traceback" not in stderr


def test_a_replay_whose_operations_fail_exits_non_zero_in_one_line(tmp_path: Path) -> None:
    server = MisbehavingServer(garbage=True)
    try:
        profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
        out = tmp_path / "r.json"
        proc = subprocess.run([sys.executable, "-m", "membench", "replay", str(profile), "--target",
                               f"127.0.0.1:{server.port}", "--no-warm", "--json", str(out)],
                              capture_output=True, text=True, timeout=120)
    finally:
        server.close()
    assert proc.returncode == 1, proc.stderr
    verdict = [line for line in proc.stderr.splitlines() if "above --max-error-ratio" in line]
    assert len(verdict) == 1 and "of the operations failed" in verdict[0]
    data = json.loads(out.read_text())
    assert data["completed"] is False and data["error_ratio"] > 0.5


def test_misses_and_refusals_the_recording_had_are_not_failures(memcached, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    proc = subprocess.run([sys.executable, "-m", "membench", "replay", str(profile), "--target", memcached.address,
                           "--max-error-ratio", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
