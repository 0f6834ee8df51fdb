"""`record ebpf:any --side client` of a client that reads big replies in big reads (issue 7.4).

The eBPF source copies only the start of each read; the rest is a hole. A client reading a 1 MiB value gets its
tail and the closing END in its last read, so both fall in a hole: the miss that followed used to be recorded
`unanswered` (its END was taken as the lost one).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.conftest import Memcached, profile_counters, read_profile, stats_delta
from tests.record.test_ebpf_record import Recording

pytestmark = pytest.mark.ebpf
MIB = 1 << 20


def read_until(sock: socket.socket, until: bytes, size: int) -> bytes:
    buf = b""
    while not buf.endswith(until):
        chunk = os.read(sock.fileno(), size)  # read(2), as C clients do
        assert chunk, "memcached closed the connection"
        buf += chunk
    return buf


@pytest.mark.parametrize("read_size", [65536, 2 * MIB])
def test_a_miss_after_a_big_hit_read_in_big_reads_is_recorded_a_miss(memcached: Memcached, tmp_path: Path,
                                                                     read_size: int) -> None:
    before = memcached.stats()
    recording = Recording(tmp_path / "client.profile", memcached.port, "--side", "client")
    with socket.create_connection((memcached.host, memcached.port)) as sock:
        sock.sendall(b"set big 0 0 %d\r\n" % MIB + b"x" * MIB + b"\r\n")
        read_until(sock, b"STORED\r\n", read_size)
        for _ in range(3):
            sock.sendall(b"get big\r\n")
            read_until(sock, b"END\r\n", read_size)
            sock.sendall(b"get missing\r\n")
            read_until(sock, b"END\r\n", read_size)
    recording.stop()
    delta = stats_delta(before, memcached.stats())
    assert recording.health()["capture"]["dropped_events"] == 0
    table = read_profile(recording.out)
    assert [(r["command"], r["status"]) for r in table.to_pylist()] == [("set", "stored")] + [
        ("get", "hit"), ("get", "miss")] * 3
    assert profile_counters(table) == delta
