"""Helpers of the eBPF source tests: run a capture in the background, rebuild its byte streams, raw clients."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from membench.capture.stream import ConnectionClosed, ConnectionOpened, Direction, StreamChunk, StreamItem


class Capture:
    """An EbpfSource iterated by a background thread; `finish()` stops it and returns every item."""

    def __init__(self, **options: Any) -> None:
        from membench.capture.ebpf.source import EbpfSource

        self.source = EbpfSource(**options)
        self.items: list[StreamItem] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.items.extend(self.source)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> list[StreamItem]:
        time.sleep(0.05)  # the bytes of the peer's last call may still be on their way to the ring
        self.source.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the capture did not stop"
        if self.error is not None:
            raise self.error
        return self.items


@dataclass
class Connection:
    opened: ConnectionOpened | None = None
    closed: ConnectionClosed | None = None
    chunks: dict[Direction, list[StreamChunk]] = field(default_factory=lambda: {d: [] for d in Direction})

    def data(self, direction: Direction) -> bytes:
        """The bytes of one direction; fails on any hole (offset jump or truncated chunk)."""
        expected = 0
        out = bytearray()
        for chunk in self.chunks[direction]:
            assert chunk.offset == expected, f"hole at {expected}: next chunk at {chunk.offset}"
            assert len(chunk.data) == chunk.length, "truncated chunk"
            out += chunk.data
            expected += chunk.length
        return bytes(out)

    @property
    def request(self) -> bytes:
        return self.data(Direction.REQUEST)

    @property
    def response(self) -> bytes:
        return self.data(Direction.RESPONSE)


def connections(items: list[StreamItem]) -> dict[int, Connection]:
    """Items grouped by connection, checking the source's ordering promises on the way."""
    conns: dict[int, Connection] = {}
    for item in items:
        conn = conns.setdefault(item.conn, Connection())
        if isinstance(item, ConnectionOpened):
            assert conn.opened is None, "connection opened twice"
            conn.opened = item
        elif isinstance(item, ConnectionClosed):
            assert conn.opened is not None and conn.closed is None
            conn.closed = item
        else:
            assert conn.opened is not None and conn.closed is None, "data outside the connection's lifetime"
            conn.chunks[item.direction].append(item)
    return conns


def by_client_port(items: list[StreamItem]) -> dict[int, Connection]:
    """Connections keyed by the client's local port (known to the test through getsockname())."""
    out: dict[int, Connection] = {}
    for conn in connections(items).values():
        assert conn.opened is not None and conn.opened.client is not None
        out[conn.opened.client.port] = conn
    return out


class RawClient:
    """A memcached client over a plain socket that keeps every byte it sent and received."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.port: int = self.sock.getsockname()[1]
        self.sent = bytearray()
        self.received = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent += data

    def expect(self, terminator: bytes, count: int = 1) -> bytes:
        """Receive until the reply stream holds `count` more occurrences of `terminator`."""
        start = len(self.received)
        while self.received[start:].count(terminator) < count:
            chunk = self.sock.recv(1 << 20)
            assert chunk, "memcached closed the connection"
            self.received += chunk
        return bytes(self.received[start:])

    def call(self, data: bytes, terminator: bytes = b"\r\n", count: int = 1) -> bytes:
        self.send(data)
        return self.expect(terminator, count)

    def close(self) -> None:
        self.sock.close()
