"""`record ebpf:any` of a party that moves more than the copy limit in one system call.

A client may hand the kernel any amount in one send (a pipeline of thousands of requests, a multi-get of thousands
of keys) and read many replies in one read; a server reads at most its buffer, but memcached doubles that buffer for
a long get line, so its later reads of the line are larger too. The eBPF source copies such a call in events of the
copy limit (up to 1 MiB in a client, 64 KiB in a server), so what lies past the first one is recorded like the rest.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from pymemcache.client.base import Client

from membench.capture.ebpf.source import CLIENT_CALL_COPY_BYTES, DEFAULT_COPY_LIMIT
from membench.profile.health import losses
from tests.conftest import Memcached, profile_counters, read_profile, stats_delta
from tests.record.test_ebpf_record import Recording

pytestmark = pytest.mark.ebpf


def drain(sock: socket.socket, replies: int, end: bytes) -> None:
    buf = b""
    while buf.count(end) < replies:
        chunk = sock.recv(1 << 16)
        assert chunk, "memcached closed the connection"
        buf += chunk


def test_a_pipeline_sent_in_one_call_is_recorded_whole(memcached: Memcached, tmp_path: Path) -> None:
    requests = 3000  # 3000 x ~22 bytes: four copy limits' worth in one send
    before = memcached.stats()
    recording = Recording(tmp_path / "client.profile", memcached.port, "--side", "client")
    with socket.create_connection((memcached.host, memcached.port)) as sock:
        sock.sendall(b"".join(b"get pipelined%06d\r\n" % i for i in range(requests)))
        drain(sock, requests, b"END\r\n")
    recording.stop()
    delta = stats_delta(before, memcached.stats())
    assert recording.health()["capture"]["dropped_events"] == 0
    table = read_profile(recording.out)
    assert table.num_rows == requests
    assert profile_counters(table) == delta


def test_a_send_past_the_whole_copy_is_recorded_whole(memcached: Memcached, tmp_path: Path) -> None:
    """A call past CLIENT_CALL_COPY_BYTES loses the tail of its last piece: here the rest of a 1.5 MiB value, which
    the parser skips by its length, so the set and the requests after it are recorded as they were."""
    value = b"v" * (3 * CLIENT_CALL_COPY_BYTES // 2)
    big = b"set big 0 0 %d\r\n%s\r\n" % (len(value), value)
    before = memcached.stats()
    recording = Recording(tmp_path / "client.profile", memcached.port, "--side", "client")
    with socket.create_connection((memcached.host, memcached.port)) as sock:
        sock.settimeout(None)  # blocking: one send(2) moves the whole request
        sock.sendall(big)
        drain(sock, 1, b"STORED\r\n")
        sock.sendall(b"get big\r\n")
        drain(sock, 1, b"END\r\n")  # reads of 64 KiB: copied whole
        sock.sendall(b"get missing\r\n")
        drain(sock, 1, b"END\r\n")
    recording.stop()
    delta = stats_delta(before, memcached.stats())
    health = recording.health()
    # The case at hand: one call, cut once, at the end of its last piece.
    assert health["capture"]["truncated_events"] == 1
    assert health["capture"]["truncated_bytes"] == len(big) - CLIENT_CALL_COPY_BYTES
    assert losses(health) == {}
    table = read_profile(recording.out)
    assert [(row["command"], row["status"], row["value_length"]) for row in table.to_pylist()] == [
        ("set", "stored", len(value)), ("get", "hit", len(value)), ("get", "miss", None)]
    assert profile_counters(table) == delta


@pytest.mark.parametrize("side", ["server", "client"])
def test_a_multi_get_of_many_keys_is_recorded_whole(memcached: Memcached, tmp_path: Path, side: str) -> None:
    keys = [f"many-keys-{i:05d}" for i in range(12000)]  # a 204 KB get line
    client = Client((memcached.host, memcached.port), default_noreply=False)
    client.set_many({key: b"v" for key in keys[::2]})
    client.close()
    before = memcached.stats()
    recording = Recording(tmp_path / f"{side}.profile", memcached.port, "--side", side)
    client = Client((memcached.host, memcached.port), default_noreply=False)  # opened while recording: in sync
    assert len(client.get_many(keys)) == len(keys) // 2
    client.close()
    recording.stop()
    assert recording.health()["capture"]["bytes_missing"] == 0
    table = read_profile(recording.out)
    assert profile_counters(table) == stats_delta(before, memcached.stats())
    hits = [row for row in table.to_pylist() if row["command"] == "get" and row["status"] == "hit"]
    assert len(hits) == len(keys) // 2


def test_replies_read_in_one_big_read_are_recorded_whole(memcached: Memcached, tmp_path: Path) -> None:
    requests = 2000  # ~2000 x 130 bytes of replies, waiting in the socket for one read
    client = Client((memcached.host, memcached.port), default_noreply=False)
    client.set_many({f"stored{i:06d}": b"v" * 100 for i in range(requests)})
    client.close()
    before = memcached.stats()
    recording = Recording(tmp_path / "client.profile", memcached.port, "--side", "client")
    with socket.create_connection((memcached.host, memcached.port)) as sock:
        sock.sendall(b"".join(b"get stored%06d\r\n" % i for i in range(requests)))
        time.sleep(0.5)
        buf = b""
        largest_read = 0
        while buf.count(b"END\r\n") < requests:
            chunk = os.read(sock.fileno(), 1 << 20)  # read(2) of all that arrived, as C clients do
            assert chunk, "memcached closed the connection"
            largest_read = max(largest_read, len(chunk))
            buf += chunk
    recording.stop()
    assert largest_read > DEFAULT_COPY_LIMIT  # the case at hand: replies past the copy limit in one read
    delta = stats_delta(before, memcached.stats())
    table = read_profile(recording.out)
    assert [row["status"] for row in table.to_pylist()] == ["hit"] * requests
    assert profile_counters(table) == delta
