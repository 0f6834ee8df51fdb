"""EbpfSource against a real memcached and real clients: the streams it delivers are the bytes that moved.

Every test captures only its own memcached's port, so tests running at the same time do not interfere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import pylibmc
import pytest
from pymemcache.client.base import Client

from membench.capture.ebpf.source import CLIENT_CALL_COPY_BYTES, DEFAULT_COPY_LIMIT
from membench.capture.stream import Direction, Endpoint, StreamChunk
from membench.errors import MembenchError
from tests.conftest import Memcached, require_ebpf, start_memcached
from tests.ebpf.ebpf_support import Capture, RawClient, by_client_port, connections

pytestmark = pytest.mark.ebpf

StartCapture = Callable[..., Capture]


def text_and_meta_session(client: RawClient) -> None:
    assert client.call(b"set alpha 5 0 5\r\nhello\r\n") == b"STORED\r\n"
    assert client.call(b"get alpha missing\r\n", b"END\r\n") == b"VALUE alpha 5 5\r\nhello\r\nEND\r\n"
    assert client.call(b"add alpha 0 0 1\r\nx\r\n") == b"NOT_STORED\r\n"
    assert client.call(b"incr counter 1\r\n") == b"NOT_FOUND\r\n"
    assert client.call(b"ms beta 3 T0\r\nabc\r\n") == b"HD\r\n"
    assert client.call(b"mg beta v f t\r\n", b"\r\n", 2) == b"VA 3 f0 t-1\r\nabc\r\n"
    assert client.call(b"md beta q\r\nmn\r\n") == b"MN\r\n"
    assert client.call(b"delete alpha\r\n") == b"DELETED\r\n"


@pytest.mark.parametrize("side", ["server", "client"])
def test_raw_text_and_meta_streams_are_exact(memcached: Memcached, capture: StartCapture, side: str) -> None:
    running = capture(ports=[memcached.port], side=side)
    client = RawClient(memcached.port)
    text_and_meta_session(client)
    client.close()
    conns = by_client_port(running.finish())

    conn = conns[client.port]
    assert conn.request == client.sent
    assert conn.response == client.received
    assert conn.opened is not None and conn.closed is not None
    assert conn.opened.server == Endpoint("127.0.0.1", memcached.port)
    assert conn.opened.client == Endpoint("127.0.0.1", client.port)
    assert not conn.opened.mid_stream
    assert running.source.health.dropped_events == 0


def test_every_data_syscall_is_seen_once_and_peeks_are_not(memcached: Memcached,
                                                          capture: StartCapture) -> None:
    running = capture(ports=[memcached.port], side="client")
    sock = socket.create_connection(("127.0.0.1", memcached.port), timeout=10)
    fd = sock.fileno()
    received = bytearray()

    def peek(length: int, vectored: bool) -> None:
        """Wait until `length` reply bytes are queued, looking at them without consuming them."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            queued = sock.recvmsg(length, 0, socket.MSG_PEEK)[0] if vectored else sock.recv(length, socket.MSG_PEEK)
            if len(queued) == length:
                return
            time.sleep(0.001)
        raise AssertionError(f"memcached did not send {length} bytes")

    os.write(fd, b"set a 0 0 1\r\nx\r\n")
    peek(8, vectored=False)
    received += os.read(fd, 8)
    sock.send(b"get a\r\n")
    peek(21, vectored=True)
    received += sock.recv(21)
    sock.sendmsg([b"incr ", b"n 1\r\n"])
    peek(11, vectored=True)
    head, tail = bytearray(4), bytearray(7)
    assert sock.recvmsg_into([head, tail])[0] == 11
    received += head + tail
    os.writev(fd, [b"delete ", b"a\r\n"])
    peek(9, vectored=False)
    head, tail = bytearray(3), bytearray(6)
    assert os.readv(fd, [head, tail]) == 9
    received += head + tail
    port = sock.getsockname()[1]
    sock.close()
    conn = by_client_port(running.finish())[port]

    assert received == b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\nNOT_FOUND\r\nDELETED\r\n"
    assert conn.request == b"set a 0 0 1\r\nx\r\nget a\r\nincr n 1\r\ndelete a\r\n"
    assert conn.response == received
    assert len(conn.chunks[Direction.REQUEST]) == len(conn.chunks[Direction.RESPONSE]) == 4


def test_pipelined_multigets_use_many_iovecs(memcached: Memcached, capture: StartCapture) -> None:
    setter = RawClient(memcached.port)
    keys = [b"key%03d" % i for i in range(300)]
    setter.call(b"".join(b"set %s 0 0 100 noreply\r\n%s\r\n" % (key, key * 16 + b"xxxx")
                         for key in keys) + b"mn\r\n")
    setter.close()

    running = capture(ports=[memcached.port])
    client = RawClient(memcached.port)
    # One sendmsg per reply batch with hundreds of iovecs (a header and a value per item).
    client.send(b"get " + b" ".join(keys[:150]) + b"\r\nget " + b" ".join(keys[150:]) + b"\r\n"
                + b"gets " + b" ".join(keys[:10]) + b"\r\n")
    client.expect(b"END\r\n", 3)
    client.close()
    conn = by_client_port(running.finish())[client.port]

    assert conn.request == client.sent
    assert conn.response == client.received
    assert conn.response.count(b"VALUE ") == 310


@pytest.mark.parametrize("side", ["server", "client"])
def test_one_mebibyte_value_keeps_true_lengths(memcached: Memcached, capture: StartCapture, side: str) -> None:
    """A server's calls are cut at the copy limit; a client's are copied in pieces of it, up to a mebibyte."""
    value = bytes(range(256)) * 4096
    running = capture(ports=[memcached.port], side=side)
    client = RawClient(memcached.port)
    assert client.call(b"set big 0 0 %d\r\n%s\r\n" % (len(value), value)) == b"STORED\r\n"
    reply = client.call(b"get big\r\n", b"END\r\n")
    assert reply == b"VALUE big 0 %d\r\n%s\r\nEND\r\n" % (len(value), value)
    client.close()
    conn = by_client_port(running.finish())[client.port]

    for direction, expected in ((Direction.REQUEST, client.sent), (Direction.RESPONSE, client.received)):
        chunks = conn.chunks[direction]
        offset = 0
        for chunk in chunks:
            assert chunk.offset == offset
            assert len(chunk.data) <= chunk.length
            # What was copied is the true prefix of what moved.
            assert chunk.data == expected[offset:offset + len(chunk.data)]
            offset += chunk.length
        assert offset == len(expected)
        copied = sum(len(chunk.data) for chunk in chunks)
        if side == "server":
            assert any(len(chunk.data) < chunk.length for chunk in chunks)
        else:
            assert copied >= min(len(expected), CLIENT_CALL_COPY_BYTES)
    assert conn.chunks[Direction.REQUEST][0].data.startswith(b"set big 0 0 1048576\r\n")
    assert conn.chunks[Direction.RESPONSE][0].data.startswith(b"STORED\r\n")
    health = running.source.health
    assert health.bytes_missing == health.extra.get("truncated_bytes", 0)
    if side == "server":
        assert health.extra["truncated_events"] >= 2
        assert health.bytes_missing > len(value)
    assert health.dropped_events == 0


def test_a_client_call_past_a_mebibyte_ends_in_one_cut_piece(memcached: Memcached, capture: StartCapture) -> None:
    """A client's send is copied in pieces of the copy limit up to CLIENT_CALL_COPY_BYTES; the last piece carries
    the rest of the call as its missing tail, so the stream stays whole in length and the cut is counted once."""
    value = bytes(range(256)) * 6144  # 1.5 MiB
    big = b"set big 0 0 %d\r\n%s\r\n" % (len(value), value)
    running = capture(ports=[memcached.port], side="client")
    client = RawClient(memcached.port)
    client.sock.settimeout(None)  # blocking: one send(2) moves the whole request, where a timeout splits it
    assert client.call(big) == b"STORED\r\n"
    # Read back in reads of at most a mebibyte (whole copies), then a request after the cut one.
    assert client.call(b"get big\r\n", b"END\r\n") == b"VALUE big 0 %d\r\n%s\r\nEND\r\n" % (len(value), value)
    assert client.call(b"get missing\r\n", b"END\r\n") == b"END\r\n"
    client.close()
    conn = by_client_port(running.finish())[client.port]
    chunks = conn.chunks[Direction.REQUEST]

    pieces = CLIENT_CALL_COPY_BYTES // DEFAULT_COPY_LIMIT
    call, after = chunks[:pieces], chunks[pieces:]
    # One system call moved all of it: its pieces alone account for the whole request, a second call would add more.
    assert sum(chunk.length for chunk in call) == len(big) > CLIENT_CALL_COPY_BYTES
    assert [chunk.offset for chunk in call] == [index * DEFAULT_COPY_LIMIT for index in range(pieces)]
    assert [chunk.offset for chunk in chunks if len(chunk.data) < chunk.length] == [(pieces - 1) * DEFAULT_COPY_LIMIT]
    assert [len(chunk.data) for chunk in call] == [DEFAULT_COPY_LIMIT] * pieces
    assert b"".join(chunk.data for chunk in call) == big[:CLIENT_CALL_COPY_BYTES]
    # The stream goes on at its true offset after the cut.
    assert [(chunk.offset, chunk.data, chunk.length) for chunk in after] == [
        (len(big), b"get big\r\n", 9), (len(big) + 9, b"get missing\r\n", 13)]
    assert conn.response == client.received
    health = running.source.health
    assert health.extra["truncated_events"] == 1
    assert health.extra["truncated_bytes"] == len(big) - CLIENT_CALL_COPY_BYTES == health.bytes_missing
    assert health.dropped_events == 0


def test_many_concurrent_connections(memcached: Memcached, capture: StartCapture) -> None:
    running = capture(ports=[memcached.port])
    clients = [RawClient(memcached.port) for _ in range(64)]
    for round_number in range(5):
        for index, client in enumerate(clients):
            client.send(b"set k%d 0 0 4\r\n%04d\r\nget k%d\r\n" % (index, round_number, index))
        for client in clients:
            client.expect(b"END\r\n")
    for client in clients:
        client.close()
    conns = by_client_port(running.finish())

    assert len(conns) == 64
    for client in clients:
        assert conns[client.port].request == client.sent
        assert conns[client.port].response == client.received
        assert conns[client.port].closed is not None
    assert len({conn.opened.conn for conn in conns.values() if conn.opened}) == 64


def test_connection_opened_before_capture_is_joined_mid_stream(memcached: Memcached,
                                                               capture: StartCapture) -> None:
    client = RawClient(memcached.port)
    client.call(b"set early 0 0 2\r\nab\r\n")
    before_sent, before_received = len(client.sent), len(client.received)

    running = capture(ports=[memcached.port])
    client.call(b"get early\r\n", b"END\r\n")
    client.close()
    conn = by_client_port(running.finish())[client.port]

    assert conn.opened is not None and conn.opened.mid_stream
    assert conn.opened.server == Endpoint("127.0.0.1", memcached.port)
    assert conn.request == client.sent[before_sent:] == b"get early\r\n"
    assert conn.response == client.received[before_received:] == b"VALUE early 0 2\r\nab\r\nEND\r\n"
    assert running.source.health.mid_stream_connections == 1


def test_reused_fd_is_a_new_connection(memcached: Memcached, capture: StartCapture) -> None:
    running = capture(ports=[memcached.port], side="client")
    first = RawClient(memcached.port)
    first.call(b"version\r\n")
    first_fd = first.sock.fileno()
    first.close()
    second = RawClient(memcached.port)
    assert second.sock.fileno() == first_fd  # the lowest free fd number is handed out again
    second.call(b"verbosity 1\r\n")
    second.close()
    items = running.finish()
    conns = by_client_port(items)

    old, new = conns[first.port], conns[second.port]
    assert old.opened is not None and new.opened is not None
    assert old.opened.conn != new.opened.conn
    assert old.request == b"version\r\n"
    assert new.request == b"verbosity 1\r\n"
    assert new.response == b"OK\r\n"
    # A connection ends when the kernel frees its socket, once both sides have closed: that may come after the
    # next connection's first bytes, which its own number keeps apart.
    assert old.closed is not None and new.closed is not None


def test_connections_of_an_exiting_process_are_closed(memcached: Memcached, capture: StartCapture) -> None:
    running = capture(ports=[memcached.port], side="client")
    # os._exit leaves the socket to the kernel: no close(2) is ever called on it.
    client = (f"import os, socket; s = socket.create_connection(('127.0.0.1', {memcached.port})); "
              "s.sendall(b'version\\r\\n'); s.recv(100); print(s.getsockname()[1], flush=True); os._exit(0)")
    port = int(subprocess.run([sys.executable, "-c", client], capture_output=True, text=True, check=True).stdout)
    conn = by_client_port(running.finish())[port]

    assert conn.request == b"version\r\n"
    assert conn.response.startswith(b"VERSION ")
    assert conn.closed is not None


def test_pymemcache_at_both_sides_sees_the_same_bytes(memcached: Memcached, capture: StartCapture) -> None:
    server_side = capture(ports=[memcached.port])
    client_side = capture(ports=[memcached.port], side="client")
    client = Client(("127.0.0.1", memcached.port), default_noreply=False)
    client.set("p1", b"v" * 100)
    assert client.get_many(["p1", "p2"]) == {"p1": b"v" * 100}
    client.delete("p1")
    port = client.sock.getsockname()[1]
    client.close()
    at_client = by_client_port(client_side.finish())[port]
    at_server = by_client_port(server_side.finish())[port]

    expected_request = b"set p1 0 0 100\r\n" + b"v" * 100 + b"\r\nget p1 p2\r\ndelete p1\r\n"
    expected_response = b"STORED\r\nVALUE p1 0 100\r\n" + b"v" * 100 + b"\r\nEND\r\nDELETED\r\n"
    assert at_client.request == at_server.request == expected_request
    assert at_client.response == at_server.response == expected_response


@pytest.mark.parametrize("binary", [False, True])
def test_pylibmc_at_both_sides_sees_the_same_bytes(memcached: Memcached, capture: StartCapture,
                                                    binary: bool) -> None:
    server_side = capture(ports=[memcached.port])
    client_side = capture(ports=[memcached.port], side="client")
    client = pylibmc.Client([f"127.0.0.1:{memcached.port}"], binary=binary)
    for index in range(20):
        client.set(f"lm{index}", b"x" * index)
    assert client.get_multi([f"lm{index}" for index in range(25)]) == {
        f"lm{index}": b"x" * index for index in range(20)}
    client.disconnect_all()
    at_client = connections(client_side.finish())
    at_server = connections(server_side.finish())

    assert len(at_client) == len(at_server) == 1
    (client_conn,), (server_conn,) = at_client.values(), at_server.values()
    assert client_conn.opened and server_conn.opened
    assert client_conn.opened.client == server_conn.opened.client
    assert client_conn.request == server_conn.request
    # libmemcached closes right after its binary QUIT, without reading memcached's 24-byte answer to it.
    unread = server_conn.response[len(client_conn.response):]
    assert server_conn.response.startswith(client_conn.response)
    assert unread[:2] == b"\x81\x07" and len(unread) == 24 if binary else unread == b""
    if binary:
        assert client_conn.request[0] == 0x80 and client_conn.response[0] == 0x81
    else:
        assert client_conn.request.count(b"set lm") == 20
        assert client_conn.response.count(b"VALUE lm") == 20


def raw_stats(port: int) -> tuple[dict[str, int], int]:
    """memcached's byte counters and the length of the reply that carried them."""
    client = RawClient(port)
    reply = client.call(b"stats\r\n", b"END\r\n")
    client.close()
    fields = dict(line.split(b" ")[1:3] for line in reply.splitlines() if line.startswith(b"STAT "))
    return {name: int(fields[name.encode()]) for name in ("bytes_read", "bytes_written")}, len(reply)


def test_memcslap_load_matches_memcached_byte_counters(memcached: Memcached, capture: StartCapture) -> None:
    memcslap = shutil.which("memcslap")
    if memcslap is None:
        pytest.fail("memcslap is not installed: run scripts/setup.sh")
    before, before_reply = raw_stats(memcached.port)
    running = capture(ports=[memcached.port])
    subprocess.run([memcslap, f"--servers=127.0.0.1:{memcached.port}", "--concurrency=4",
                    "--execute-number=500"], check=True, capture_output=True, timeout=120)
    after, after_reply = raw_stats(memcached.port)
    items = running.finish()

    requests = sum(item.length for item in items
                   if isinstance(item, StreamChunk) and item.direction == Direction.REQUEST)
    responses = sum(item.length for item in items
                    if isinstance(item, StreamChunk) and item.direction == Direction.RESPONSE)
    # The first stats reply was written before the capture; the second after memcached counted its bytes.
    expected_requests = after["bytes_read"] - before["bytes_read"]
    expected_responses = after["bytes_written"] - before["bytes_written"] - before_reply + after_reply
    assert running.source.health.dropped_events == 0
    assert (requests, responses) == (expected_requests, expected_responses)
    for conn in connections(items).values():
        conn.request  # noqa: B018 - fails on any hole
        conn.response  # noqa: B018


def test_pids_filter(memcached: Memcached, capture: StartCapture) -> None:
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        wrong = capture(ports=[memcached.port], pids=[bystander.pid])
        right = capture(ports=[memcached.port], pids=[memcached.process.pid])
        client = RawClient(memcached.port)
        client.call(b"version\r\n")
        client.close()
        assert wrong.finish() == []
        assert by_client_port(right.finish())[client.port].request == b"version\r\n"
    finally:
        bystander.kill()
        bystander.wait()


def test_ports_filter(memcached: Memcached, capture: StartCapture) -> None:
    other = start_memcached()
    try:
        running = capture(ports=[memcached.port])
        watched, unwatched = RawClient(memcached.port), RawClient(other.port)
        watched.call(b"set w 0 0 1\r\nw\r\n")
        unwatched.call(b"set u 0 0 1\r\nu\r\n")
        watched.close()
        unwatched.close()
        conns = by_client_port(running.finish())
    finally:
        other.stop()
    assert set(conns) == {watched.port}
    assert all(conn.opened and conn.opened.server == Endpoint("127.0.0.1", memcached.port)
               for conn in conns.values())


def test_ring_overflow_is_counted_and_shows_as_offset_jumps(memcached: Memcached) -> None:
    from membench.capture.ebpf.source import EbpfSource

    require_ebpf()
    source = EbpfSource(ports=[memcached.port], ring_bytes=4096, copy_limit=1024)
    client = RawClient(memcached.port)
    payload = b"y" * 1000
    # Nobody drains the 4 KiB ring while this runs: most events cannot be delivered.
    for index in range(50):
        client.call(b"set d%d 0 0 %d\r\n%s\r\n" % (index, len(payload), payload))
    client.close()
    time.sleep(0.05)
    source.stop()
    items = list(source)

    chunks = [item for item in items if isinstance(item, StreamChunk) and item.direction == Direction.REQUEST]
    health = source.health
    assert health.dropped_events > 0
    delivered = sum(chunk.length for chunk in chunks)
    responses = sum(item.length for item in items
                    if isinstance(item, StreamChunk) and item.direction == Direction.RESPONSE)
    assert delivered + responses + health.extra["dropped_bytes"] == len(client.sent) + len(client.received)
    expected_offset = jumps = 0
    for chunk in chunks:
        jumps += chunk.offset != expected_offset
        expected_offset = chunk.offset + chunk.length
    jumps += expected_offset != len(client.sent)
    assert jumps > 0


def test_bad_arguments_are_one_line_errors() -> None:
    from membench.capture.ebpf.source import EbpfSource

    require_ebpf()
    with pytest.raises(MembenchError, match=r"^no process with pid 999999999$"):
        EbpfSource(ports=[11], pids=[999999999])
    with pytest.raises(MembenchError, match="copy limit"):
        EbpfSource(ports=[11], copy_limit=10**6)
