"""An fd the capture found unwatched, then reused for a watched connection, is captured from its first byte.

The capture keeps, per CPU, the fds it last found unwatched, so that the syscalls of clients beside the server cost
one array read. Every change of what an fd number names (close, socket, accept, dup, a process's exit) must void
those verdicts: these tests reuse such an fd on the same CPU, as a close or a dup2 does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Memcached, start_memcached
from tests.ebpf.ebpf_support import Capture, RawClient, by_client_port, connections

pytestmark = pytest.mark.ebpf


@pytest.fixture
def one_cpu() -> Iterator[None]:
    """This process on one CPU, whose verdict cache its syscalls then all use."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


@pytest.fixture
def unwatched() -> Iterator[Memcached]:
    """A second memcached, on a port the capture does not watch."""
    with start_memcached() as server:
        yield server


def _found_unwatched(port: int) -> RawClient:
    """A connection whose fd the capture has looked up often enough to keep its verdict."""
    client = RawClient(port)
    for _ in range(20):
        assert client.call(b"version\r\n").startswith(b"VERSION ")
    return client


@pytest.mark.usefixtures("one_cpu")
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

    assert conn.request == b"set reused 0 0 2\r\nok\r\n"
    assert conn.response == b"STORED\r\n"


@pytest.mark.usefixtures("one_cpu")
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
