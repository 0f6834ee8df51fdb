"""What the capture follows is the socket, not the fd number that names it.

Its verdict (watched or not) and stream offsets live in storage the kernel keeps with each socket: an fd number
that named an unwatched socket and then names a watched one is captured from its first byte, a socket shared by
two processes is one stream, and bytes moved without a user buffer to copy (sendfile) are a hole of their true
length, not a gap the offsets hide.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from membench.capture.stream import Direction
from tests.conftest import Memcached, start_memcached
from tests.ebpf.ebpf_support import Capture, Connection, RawClient, by_client_port, connections

pytestmark = pytest.mark.ebpf


@pytest.fixture
def unwatched() -> Iterator[Memcached]:
    """A second memcached, on a port the capture does not watch."""
    with start_memcached() as server:
        yield server


def _found_unwatched(port: int) -> RawClient:
    """A connection the capture has seen move bytes, and so has a verdict for."""
    client = RawClient(port)
    for _ in range(20):
        assert client.call(b"version\r\n").startswith(b"VERSION ")
    return client


def _with_holes(conn: Connection, direction: Direction) -> bytes:
    """The bytes of one direction, each byte the capture did not copy shown as '?'; offsets must cover them all."""
    out = bytearray()
    for chunk in conn.chunks[direction]:
        assert chunk.offset >= len(out), "chunks overlap"
        out += b"?" * (chunk.offset - len(out)) + chunk.data + b"?" * (chunk.length - len(chunk.data))
    return bytes(out)


def test_an_unwatched_fd_closed_and_reused_is_captured(memcached: Memcached, unwatched: Memcached,
                                                       capture: Callable[..., Capture]) -> None:
    running = capture(ports=[memcached.port], side="client")
    before = _found_unwatched(unwatched.port)
    fd = before.sock.fileno()
    before.close()
    client = RawClient(memcached.port)
    assert client.sock.fileno() == fd  # the lowest free fd number is handed out again
    assert client.call(b"set reused 0 0 2\r\nok\r\n") == b"STORED\r\n"
    client.close()
    conn = by_client_port(running.finish())[client.port]

    assert conn.opened is not None and not conn.opened.mid_stream
    assert conn.request == b"set reused 0 0 2\r\nok\r\n"
    assert conn.response == b"STORED\r\n"


def test_an_unwatched_fd_replaced_by_dup2_is_captured(memcached: Memcached, unwatched: Memcached,
                                                      capture: Callable[..., Capture]) -> None:
    running = capture(ports=[memcached.port], side="client")
    before = _found_unwatched(unwatched.port)
    fd = before.sock.fileno()
    client = RawClient(memcached.port)
    os.dup2(client.sock.fileno(), fd)  # fd now names the watched socket
    os.write(fd, b"get dup2\r\n")
    assert client.expect(b"END\r\n") == b"END\r\n"
    before.close()
    client.close()
    requests = [conn.request for conn in connections(running.finish()).values()]

    assert b"get dup2\r\n" in requests


def test_a_socket_shared_by_two_processes_is_one_stream(memcached: Memcached,
                                                        capture: Callable[..., Capture]) -> None:
    running = capture(ports=[memcached.port], side="client")
    client = RawClient(memcached.port)
    assert client.call(b"set shared 0 0 1\r\na\r\n") == b"STORED\r\n"
    fd = client.sock.fileno()
    other = f"import os; os.write({fd}, b'get shared\\r\\n')"
    subprocess.run([sys.executable, "-c", other], pass_fds=[fd], check=True, timeout=30)
    client.sent += b"get shared\r\n"
    assert client.expect(b"END\r\n") == b"VALUE shared 0 1\r\na\r\nEND\r\n"
    client.close()
    conn = by_client_port(running.finish())[client.port]

    assert conn.request == client.sent == b"set shared 0 0 1\r\na\r\nget shared\r\n"
    assert conn.response == client.received


def test_bytes_sent_by_sendfile_are_a_hole_of_their_length(memcached: Memcached, tmp_path: Path,
                                                           capture: Callable[..., Capture]) -> None:
    value = tmp_path / "value"
    value.write_bytes(b"hello")
    running = capture(ports=[memcached.port], side="client")
    client = RawClient(memcached.port)
    client.send(b"set filed 0 0 5\r\n")
    with value.open("rb") as source:
        assert os.sendfile(client.sock.fileno(), source.fileno(), 0, 5) == 5
    assert client.call(b"\r\nget filed\r\n", b"END\r\n") == b"STORED\r\nVALUE filed 0 5\r\nhello\r\nEND\r\n"
    client.close()
    conn = by_client_port(running.finish())[client.port]

    assert _with_holes(conn, Direction.REQUEST) == b"set filed 0 0 5\r\n?????\r\nget filed\r\n"
    assert conn.response == client.received
