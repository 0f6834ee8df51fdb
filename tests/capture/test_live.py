"""LiveInterfaceSource on loopback (root): real memcached, real client bytes, stop() and duration."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import pytest
from pymemcache.client.base import Client

from membench.capture.interface import LiveInterfaceSource
from membench.capture.stream import Direction, StreamItem, Transport
from tests.capture.capture_builders import closed, opened, streams
from tests.conftest import Memcached, is_root, profile_counters, read_profile, stats_delta

pytestmark = [pytest.mark.live, pytest.mark.skipif(not is_root(), reason="live capture needs root")]

REQ, RESP = Direction.REQUEST, Direction.RESPONSE


def converse(server: Memcached) -> tuple[bytes, bytes, int]:
    """One connection with a few commands; returns what the client sent, received, and its port."""
    value = b"z" * 200_000
    sent = b"set k 0 0 %d\r\n" % len(value) + value + b"\r\nget k\r\nversion\r\n"
    received = bytearray()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        port = sock.getsockname()[1]
        sock.sendall(sent)
        while not received.endswith(b"\r\n") or b"VERSION" not in received:
            data = sock.recv(1 << 20)
            assert data
            received += data
    return sent, bytes(received), port


def collect(source: LiveInterfaceSource, into: list[StreamItem]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.extend(source), daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("interface", ["lo", "any"])
def test_live_capture_reassembles_real_traffic(memcached: Memcached, interface: str) -> None:
    source = LiveInterfaceSource(interface, [memcached.port])
    items: list[StreamItem] = []
    thread = collect(source, items)
    sent, received, port = converse(memcached)
    time.sleep(0.3)  # let the last packets leave the kernel buffer
    source.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()

    assert source.name == f"interface:{interface}"
    [connection] = opened(items)
    assert connection.transport is Transport.TCP
    assert connection.mid_stream is False
    assert connection.client is not None and connection.client.port == port
    assert streams(items) == {(1, REQ): sent, (1, RESP): received}
    assert [item.conn for item in closed(items)] == [1]
    assert source.health.dropped_events == 0
    assert source.health.holes == 0


def test_duration_ends_the_capture(memcached: Memcached) -> None:
    source = LiveInterfaceSource("lo", [memcached.port], duration=0.5)
    started = time.monotonic()
    assert list(source) == []
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 1.5


def test_stop_from_a_signal_handler(memcached: Memcached) -> None:
    source = LiveInterfaceSource("lo", [memcached.port])

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        source.stop()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        threading.Timer(0.1, converse, args=(memcached,)).start()
        signal.setitimer(signal.ITIMER_REAL, 0.8)
        started = time.monotonic()
        items = list(source)
        elapsed = time.monotonic() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert 0.8 <= elapsed < 1.5
    assert len(streams(items)[1, REQ]) == len(b"set k 0 0 200000\r\n") + 200_000 + len(b"\r\nget k\r\nversion\r\n")


def test_without_capture_privilege_the_error_says_so() -> None:
    code = ("from membench.capture.interface import LiveInterfaceSource\n"
            "from membench.errors import MembenchError\n"
            "try:\n    LiveInterfaceSource('lo', [11311])\n"
            "except MembenchError as error:\n    print(error)\n")
    result = subprocess.run(["setpriv", "--bounding-set=-net_raw,-net_admin", "--inh-caps=-net_raw,-net_admin",
                             sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout == "no permission to capture on lo: run as root or grant CAP_NET_RAW\n"
    assert result.stderr == ""


def test_recording_a_live_interface_gives_memcacheds_counts(memcached: Memcached, tmp_path: Path) -> None:
    """`membench record lo` as a user runs it (the compiled pipeline decodes the packets itself where built, the
    specification's items otherwise): the profile moves memcached's stats exactly as the traffic did."""
    output = tmp_path / "live.profile"
    recorder = subprocess.Popen([sys.executable, "-m", "membench", "record", "lo", str(output), "--port",
                                 str(memcached.port), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    try:
        wait_until_capturing(recorder)
        before = memcached.stats()
        client = Client((memcached.host, memcached.port))
        for index in range(300):
            client.set(f"key{index}", b"v" * index, noreply=False)
            client.get(f"key{index}")
            client.get(f"missing{index}")
        client.delete("key1", noreply=False)
        client.close()
        after = memcached.stats()
        time.sleep(0.5)
    finally:
        recorder.send_signal(signal.SIGINT)
        _, error = recorder.communicate(timeout=60)
    assert recorder.returncode == 0, error
    assert profile_counters(read_profile(output)) == stats_delta(before, after), error


def wait_until_capturing(recorder: subprocess.Popen[str]) -> None:
    """libpcap is active once the CLI printed its first line (the source opens before it)."""
    assert recorder.stderr is not None
    line = recorder.stderr.readline()
    assert line.startswith("recording"), line
    time.sleep(0.5)
